//! Booting a kernel and its initrd in QEMU, watching the serial console: it is streamed (each
//! line prefixed with the kernel's name), kept in a log file, and searched for the guest's
//! exit marker. A machine that outlives its timeout is killed.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::kernels::Kernel;
use crate::shell::say;

/// The guest's memory: its root filesystem (all of the initramfs, twice while it boots) and
/// the tests' scratch directories live in it.
pub const MEMORY: &str = "4G";
const CPUS: &str = "2";
/// `quiet`: the kernel's warnings and errors only. `panic=-1`: a panic resets the machine at
/// once, which ends QEMU (-no-reboot). `random.trust_cpu`: RDRAND seeds the random pool, or
/// early getrandom() could wait for entropy a VM is slow to gather.
/// `loglevel=5`: warnings and the stacks the kernel prints with them (a soft lockup's), not
/// the boot's chatter.
const KERNEL_COMMAND_LINE: &str = "console=ttyS0 panic=-1 loglevel=5 random.trust_cpu=on";

pub const EXIT_MARKER: &str = "HOSTNETD-VM-EXIT";
/// How the failure of a guest that ended by itself without reporting its exit code begins.
pub const SILENT_END: &str = "the guest ended without reporting an exit code";
pub const READY_MARKER: &str = "HOSTNETD-VM-READY";
/// What QEMU prints when KVM cannot run the guest (nested KVM on some hosts); the machine
/// then hangs, so it is stopped at once.
const KVM_FAILURE: &str = "KVM internal error";
/// How long the KVM probe may take to boot and power off.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Self::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "KVM",
            Self::Tcg => "TCG (emulation)",
        }
    }
}

/// A machine to boot.
pub struct Machine<'a> {
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    pub accel: Accel,
    pub timeout: Duration,
    /// Console lines are printed with this prefix; not at all when None.
    pub stream_prefix: Option<String>,
    /// Where the whole console is written.
    pub log: &'a Path,
}

/// A console line and when it came, from QEMU's start.
pub struct Line {
    pub at: Duration,
    pub text: String,
}

/// How a machine ended.
pub struct Outcome {
    pub lines: Vec<Line>,
    /// The payload's exit code, when the guest reported it.
    pub exit_code: Option<i32>,
    /// Why the machine ended without a report: a timeout, KVM's failure, QEMU's.
    pub failure: Option<String>,
    /// From QEMU's start to the guest being ready to run the payload.
    pub boot_time: Option<Duration>,
    pub wall: Duration,
}

/// Boots `machine` and waits for it to end (or kills it at its timeout).
pub fn boot(machine: &Machine) -> anyhow::Result<Outcome> {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(machine.accel.qemu_args())
        .args(["-m", MEMORY, "-smp", CPUS])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&machine.kernel.vmlinuz)
        .arg("-initrd")
        .arg(machine.initrd)
        .args(["-append", KERNEL_COMMAND_LINE])
        // Nothing to type into the guest; and QEMU leaves the terminal's modes alone.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A machine whose xtask was killed would otherwise run on, taking the CPUs, until it
    // powers off: the kernel kills it with its parent.
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .context("cannot start qemu-system-x86_64 (package qemu-system-x86)")?;
    let (sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let readers = [
        forward_lines(stdout, sender.clone(), started),
        forward_lines(stderr, sender, started),
    ];
    let mut log = fs::File::create(machine.log)
        .with_context(|| format!("cannot create {}", machine.log.display()))?;
    let mut outcome = Outcome {
        lines: Vec::new(),
        exit_code: None,
        failure: None,
        boot_time: None,
        wall: Duration::ZERO,
    };
    let deadline = started + machine.timeout;
    loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                writeln!(log, "{}", line.text)?;
                if let Some(prefix) = &machine.stream_prefix {
                    println!("{prefix}{}", line.text);
                }
                if line.text.contains(KVM_FAILURE) {
                    outcome.failure = Some(format!("QEMU: {}", line.text.trim()));
                    stop(&mut child);
                }
                take_markers(&mut outcome, &line);
                outcome.lines.push(line);
            }
            // Both of QEMU's outputs closed: it has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline && outcome.failure.is_none() {
            outcome.failure = Some(format!(
                "timed out after {} minutes; killed",
                machine.timeout.as_secs() / 60
            ));
            stop(&mut child);
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    for reader in readers {
        let _ = reader.join();
    }
    outcome.wall = started.elapsed();
    if outcome.exit_code.is_none() && outcome.failure.is_none() {
        let last = outcome.lines.last().map_or("", |line| line.text.trim());
        outcome.failure = Some(if status.success() {
            format!(
                "{SILENT_END} (a kernel panic or reset? see {})",
                machine.log.display()
            )
        } else {
            format!("QEMU failed ({status}): {last}")
        });
    }
    Ok(outcome)
}

fn take_markers(outcome: &mut Outcome, line: &Line) {
    if let Some(code) = exit_marker(&line.text) {
        outcome.exit_code = Some(code);
    }
    if line.text.contains(READY_MARKER) && outcome.boot_time.is_none() {
        outcome.boot_time = Some(line.at);
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
}

/// Sends each line of `output` (lossily decoded, without its line ending) until it closes.
fn forward_lines(
    output: impl Read + Send + 'static,
    sender: mpsc::Sender<Line>,
    started: Instant,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(output);
        let mut buffer = Vec::new();
        while reader.read_until(b'\n', &mut buffer).is_ok_and(|n| n > 0) {
            let text = without_terminal_controls(&String::from_utf8_lossy(&buffer));
            let line = Line {
                at: started.elapsed(),
                text,
            };
            if sender.send(line).is_err() {
                return;
            }
            buffer.clear();
        }
    })
}

/// `line` without its line ending, carriage returns and the escape sequences the firmware
/// sends to clear a terminal (ESC c, ESC [ ... letter), which would garble the host's.
pub fn without_terminal_controls(line: &str) -> String {
    let mut text = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                // Parameters, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            '\u{1b}' => {
                chars.next();
            }
            '\r' | '\n' => {}
            c => text.push(c),
        }
    }
    text
}

/// The exit code in a console line holding the guest's marker ("HOSTNETD-VM-EXIT 3"); the
/// kernel's own messages may share the line.
pub fn exit_marker(line: &str) -> Option<i32> {
    let (_, rest) = line.split_once(EXIT_MARKER)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// KVM when it works (HOSTNETD_VM_ACCEL=kvm|tcg decides without trying), else TCG: a
/// /dev/kvm may exist and still fail (nested virtualization), so a tiny guest is booted
/// with it first.
pub fn choose_accel(kernel: &Kernel, run_dir: &Path) -> anyhow::Result<Accel> {
    match std::env::var("HOSTNETD_VM_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        say("VM: no /dev/kvm; using TCG (emulation, slower)");
        return Ok(Accel::Tcg);
    }
    let initrd = run_dir.join("kvm-probe.img");
    super::initramfs::build_probe(&initrd)?;
    let log = run_dir.join("kvm-probe.log");
    let outcome = boot(&Machine {
        kernel,
        initrd: &initrd,
        accel: Accel::Kvm,
        timeout: KVM_PROBE_TIMEOUT,
        stream_prefix: None,
        log: &log,
    })?;
    if outcome.exit_code == Some(0) {
        say("VM: using KVM");
        return Ok(Accel::Kvm);
    }
    let reason = outcome.failure.unwrap_or_else(|| "no exit report".into());
    say(&format!(
        "VM: KVM does not work here ({reason}); using TCG (emulation, slower)"
    ));
    Ok(Accel::Tcg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_dropped() {
        assert_eq!(
            without_terminal_controls("\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS (version 1.16)\r\n"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(
            without_terminal_controls("plain [1] text\n"),
            "plain [1] text"
        );
    }

    #[test]
    fn the_exit_marker_gives_the_code_even_amid_kernel_messages() {
        assert_eq!(exit_marker("HOSTNETD-VM-EXIT 0"), Some(0));
        assert_eq!(exit_marker("HOSTNETD-VM-EXIT 101"), Some(101));
        assert_eq!(
            exit_marker("[   12.5] veth0: link up HOSTNETD-VM-EXIT 3"),
            Some(3)
        );
        assert_eq!(exit_marker("echo \"HOSTNETD-VM-EXIT $1\""), None);
        assert_eq!(exit_marker("HOSTNETD-VM-EXIT"), None);
        assert_eq!(exit_marker("nothing here"), None);
    }
}
