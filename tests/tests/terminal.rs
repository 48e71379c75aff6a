//! Interactive use, driven through a real pseudo-terminal as a user's terminal would drive
//! it: `run -it` and `exec -it` get a terminal of the user's window size that follows it,
//! ctrl-c reaches the container's foreground process, ctrl-p ctrl-q detaches with the user's
//! terminal restored, `attach` goes back; `run -i` streams stdin; a foreground `run` passes
//! signals on and a second interrupt kills.
use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::{describe, skip_unless_root, stdout, TestHost};

/// A pseudo-terminal with a command in it as its session leader.
struct Terminal {
    master: File,
    /// Kept open, so that the terminal's settings can be read after the command ended.
    slave: OwnedFd,
    child: Child,
    seen: String,
}

impl Terminal {
    fn spawn(mut command: Command, rows: u16, cols: u16) -> Self {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors; the name and termios are not asked for.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty just opened both; each is owned once.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = || Stdio::from(slave.try_clone().expect("dup the terminal"));
        command.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe; they make the terminal the child's
        // controlling terminal, as a login shell's is.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn in the terminal");
        // SAFETY: a flag change on our own descriptor.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        Self {
            master,
            slave,
            child,
            seen: String::new(),
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
    }

    /// Reads the screen until `text` shows up after what earlier expectations consumed.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(at) = self.seen.find(text) {
                self.seen.drain(..at + text.len());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared; the terminal shows {:?}",
                self.seen
            );
            match self.master.read(&mut buffer) {
                Ok(read) if read > 0 => self
                    .seen
                    .push_str(&String::from_utf8_lossy(&buffer[..read])),
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Changes the window's size, as a user dragging it does: the command gets SIGWINCH.
    fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize.
        assert_eq!(
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) },
            0
        );
    }

    fn local_flags(&self) -> libc::tcflag_t {
        // SAFETY: a zeroed termios is valid storage for tcgetattr to fill.
        let mut settings: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr fills the termios.
        assert_eq!(
            unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut settings) },
            0
        );
        settings.c_lflag
    }

    /// The command's exit code, once it ends.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the command never ended: {:?}",
                self.seen
            );
            let mut buffer = [0u8; 4096];
            if let Ok(read) = self.master.read(&mut buffer) {
                self.seen
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state(host: &TestHost, name: &str) -> (String, Option<i64>) {
    let view = host.inspect(name);
    (
        view["state"].as_str().expect("state").to_string(),
        view["exit_code"].as_i64(),
    )
}

#[test]
fn run_it_gives_a_terminal_that_follows_the_window_and_detaches_and_attaches_back() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let mut run = host.hostnetd();
    run.args(["run", "-it", "--name", "tty", "--rootfs", "/", "--", "sh"]);
    let mut terminal = Terminal::spawn(run, 30, 100);
    let canonical = terminal.local_flags() & (libc::ICANON | libc::ECHO);

    terminal.type_keys("stty size\r");
    terminal.expect("30 100");
    terminal.resize(40, 120);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        terminal.type_keys("stty size\r");
        thread::sleep(Duration::from_millis(200));
        let mut buffer = [0u8; 4096];
        while let Ok(read) = terminal.master.read(&mut buffer) {
            if read == 0 {
                break;
            }
            terminal
                .seen
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
        if terminal.seen.contains("40 120") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the size never followed: {:?}",
            terminal.seen
        );
    }
    terminal.seen.clear();

    // ctrl-c is a key to the container's terminal, which interrupts its foreground process.
    terminal.type_keys("sleep 100\r");
    thread::sleep(Duration::from_millis(500));
    terminal.type_keys("\x03");
    terminal.type_keys("echo after-$((1+1))\r");
    terminal.expect("after-2");

    // exec -it: a terminal of its own, of the user's size; its exit code comes back.
    let mut exec = host.hostnetd();
    exec.args(["exec", "-it", "tty", "sh", "-c", "stty size; exit 4"]);
    let mut exec_terminal = Terminal::spawn(exec, 25, 90);
    exec_terminal.expect("25 90");
    assert_eq!(exec_terminal.exit_code(), Some(4));

    // ctrl-p ctrl-q: the session ends, the container runs on, the terminal is as it was.
    terminal.type_keys("\x10\x11");
    assert_eq!(terminal.exit_code(), Some(0), "{:?}", terminal.seen);
    assert_eq!(
        terminal.local_flags() & (libc::ICANON | libc::ECHO),
        canonical,
        "the terminal was left in raw mode"
    );
    assert_eq!(state(&host, "tty").0, "running");

    let mut attach = host.hostnetd();
    attach.args(["attach", "tty"]);
    let mut attached = Terminal::spawn(attach, 30, 100);
    attached.type_keys("echo again-$((2+3))\r");
    attached.expect("again-5");
    attached.type_keys("exit 3\r");
    assert_eq!(attached.exit_code(), Some(3), "{:?}", attached.seen);
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(&host, "tty") != ("exited".to_string(), Some(3)) {
        assert!(Instant::now() < deadline, "{:?}", state(&host, "tty"));
        thread::sleep(Duration::from_millis(50));
    }
    assert!(host.exec(&["rm", "tty"]).status.success());
    host.assert_no_container_left();
}

#[test]
fn run_i_streams_stdin_and_a_foreground_run_passes_signals_on() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let mut piped = host.hostnetd();
    let mut child = piped
        .args([
            "run", "-i", "--rm", "--rootfs", "/", "--", "tr", "a-z", "A-Z",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write");
    let output = child.wait_with_output().expect("output");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout(&output), "HELLO\n");

    // A signal to `hostnetd run` reaches the container.
    let termed = foreground(
        &host,
        "termed",
        "trap 'echo got-term; exit 5' TERM; echo ready; while true; do sleep 0.1; done",
    );
    signal(&termed, libc::SIGTERM);
    let output = termed.wait_with_output().expect("output");
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        stdout(&output).contains("got-term"),
        "{}",
        describe(&output)
    );

    // One interrupt is passed on; a second one kills.
    let stubborn = foreground(
        &host,
        "stubborn",
        "trap 'echo ignored' INT; echo ready; while true; do sleep 0.1; done",
    );
    signal(&stubborn, libc::SIGINT);
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(state(&host, "stubborn").0, "running");
    signal(&stubborn, libc::SIGINT);
    let output = stubborn.wait_with_output().expect("output");
    assert_eq!(output.status.code(), Some(137), "{}", describe(&output));
    assert!(stdout(&output).contains("ignored"), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("interrupted twice: killing the container"),
        "{}",
        describe(&output)
    );
    for name in ["termed", "stubborn"] {
        host.exec(&["rm", "-f", name]);
    }
    host.assert_no_container_left();
}

/// `hostnetd run --name NAME --rootfs / -- sh -c SCRIPT` in the foreground, once its script
/// printed "ready".
fn foreground(host: &TestHost, name: &str, script: &str) -> Child {
    let mut child = host
        .hostnetd()
        .args([
            "run", "--name", name, "--rootfs", "/", "--", "sh", "-c", script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = stdout(&host.exec(&["logs", name]));
        if log.contains("ready") {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} ended early: {status}");
        }
        assert!(Instant::now() < deadline, "{name} never got ready");
        thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: signalling the hostnetd this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}
