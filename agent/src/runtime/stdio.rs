//! One run's stdio: pipes (stdout, stderr, and stdin for `-i`) or a terminal (`-t`, whose
//! master runc sends on a console socket), and the relays that copy the container's output
//! to its log and to attached clients.
use std::{
    fs::File,
    io,
    os::{fd::OwnedFd, unix::net::UnixListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::{
    attach::{receive_console, Attachments},
    logs::{LogWriter, Stream},
    runc::ContainerStdio,
};

/// A run's stdio between its preparation and `runc create`'s end.
pub struct RunIo {
    for_runc: Option<ContainerStdio>,
    wiring: Wiring,
}

enum Wiring {
    Pipes {
        /// The write end of the container's stdin (`-i`).
        stdin: Option<File>,
        stdout: File,
        stderr: File,
    },
    Terminal(ConsoleReceiver),
}

/// The relays of one run, copying its output until the container's side closes.
pub struct Relays(Vec<JoinHandle<()>>);

impl RunIo {
    /// Pipes, or with `tty` a console socket at `console_socket` listening for runc.
    pub fn prepare(tty: bool, open_stdin: bool, console_socket: &Path) -> io::Result<Self> {
        if tty {
            let receiver = ConsoleReceiver::listen(console_socket)?;
            return Ok(Self {
                for_runc: Some(ContainerStdio {
                    stdin: Stdio::null(),
                    stdout: Stdio::null(),
                    stderr: Stdio::null(),
                    console_socket: Some(console_socket.to_path_buf()),
                }),
                wiring: Wiring::Terminal(receiver),
            });
        }
        let (stdin_read, stdin_write) = match open_stdin {
            true => {
                let (read, write) = io::pipe()?;
                (Stdio::from(read), Some(File::from(OwnedFd::from(write))))
            }
            false => (Stdio::null(), None),
        };
        let (stdout_read, stdout_write) = io::pipe()?;
        let (stderr_read, stderr_write) = io::pipe()?;
        Ok(Self {
            for_runc: Some(ContainerStdio {
                stdin: stdin_read,
                stdout: Stdio::from(stdout_write),
                stderr: Stdio::from(stderr_write),
                console_socket: None,
            }),
            wiring: Wiring::Pipes {
                stdin: stdin_write,
                stdout: File::from(OwnedFd::from(stdout_read)),
                stderr: File::from(OwnedFd::from(stderr_read)),
            },
        })
    }

    /// What `runc create` gets (once); the ends runc gets close here when its command ends.
    pub fn for_runc(&mut self) -> Option<ContainerStdio> {
        self.for_runc.take()
    }

    /// After `runc create`: the output relayed to `log` and the clients, their input to the
    /// container.
    pub fn connect(self, attachments: &Attachments, log: &LogWriter) -> io::Result<Relays> {
        match self.wiring {
            Wiring::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                attachments.set_input(stdin, None);
                Ok(Relays(vec![
                    attachments.relay(Stream::Stdout, stdout, log.clone()),
                    attachments.relay(Stream::Stderr, stderr, log.clone()),
                ]))
            }
            Wiring::Terminal(receiver) => {
                let master = File::from(receiver.finish()?);
                let reader = master.try_clone()?;
                attachments.set_input(None, Some(Arc::new(master)));
                Ok(Relays(vec![attachments.relay(
                    Stream::Stdout,
                    reader,
                    log.clone(),
                )]))
            }
        }
    }
}

impl Relays {
    /// Waits until the relays copied the last of the output, at most `within` (a process that
    /// escaped the container's end could hold a pipe open).
    pub fn finish(self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.0.iter().any(|relay| !relay.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Waits on a console socket for the terminal master runc sends while it creates the
/// container.
struct ConsoleReceiver {
    path: PathBuf,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<OwnedFd>>>,
}

impl ConsoleReceiver {
    fn listen(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = thread::spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    return receive_console(&stream);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if stop.load(Ordering::Acquire) {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            "runc sent no terminal on the console socket",
                        ));
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                Err(error) => return Err(error),
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            done,
            thread: Some(thread),
        })
    }

    /// The master runc sent (runc has sent it by the time `runc create` returned).
    fn finish(mut self) -> io::Result<OwnedFd> {
        self.done.store(true, Ordering::Release);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the console receiver failed")),
        }
    }
}

impl Drop for ConsoleReceiver {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        let _ = std::fs::remove_file(&self.path);
    }
}
