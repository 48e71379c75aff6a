//! Attaching to a container: its monitor serves a Unix socket through which clients (`run -i
//! -t`, `hostnetd attach`) receive the container's output as it comes and send its input
//! (stdin, or keys to its terminal) and their window size.
//!
//! On the socket both ways go frames: a kind byte, a big-endian u32 length, the payload.
//! Client to monitor: [`Frame::Stdin`], [`Frame::Resize`], [`Frame::CloseStdin`]. Monitor
//! to client: [`Frame::Stdout`], [`Frame::Stderr`], and [`Frame::Exit`] when the container
//! exits, after all its output.
use std::{
    fs::File,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    thread::{self, JoinHandle},
    time::Duration,
};

use super::logs::{LogWriter, Stream};

/// Output kept for the first client while none has attached yet (`run -i -t` attaches just
/// after the container started, and must not miss its first prompt).
const REPLAY_LIMIT: usize = 1024 * 1024;
/// A client that takes longer than this to take a chunk of output is dropped rather than
/// holding up the container's output for everyone.
const SLOW_CLIENT: Duration = Duration::from_secs(5);
const MAX_FRAME: usize = 1024 * 1024;
const CHUNK: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Resize { rows: u16, cols: u16 },
    CloseStdin,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
}

impl Frame {
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Stdin(data) => (0, data.clone()),
            Frame::Resize { rows, cols } => (1, [rows.to_be_bytes(), cols.to_be_bytes()].concat()),
            Frame::CloseStdin => (2, Vec::new()),
            Frame::Stdout(data) => (3, data.clone()),
            Frame::Stderr(data) => (4, data.clone()),
            Frame::Exit(code) => (5, code.to_be_bytes().to_vec()),
        };
        let mut bytes = Vec::with_capacity(5 + payload.len());
        bytes.push(kind);
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        out.write_all(&bytes)
    }

    /// The next frame; None at a clean end of the stream.
    pub fn read_from(input: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match input.read_exact(&mut head) {
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            other => other?,
        }
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if length > MAX_FRAME {
            return Err(invalid(format!("attach frame of {length} bytes")));
        }
        let mut payload = vec![0; length];
        input.read_exact(&mut payload)?;
        let frame = match (head[0], payload.as_slice()) {
            (0, _) => Frame::Stdin(payload),
            (1, [r0, r1, c0, c1]) => Frame::Resize {
                rows: u16::from_be_bytes([*r0, *r1]),
                cols: u16::from_be_bytes([*c0, *c1]),
            },
            (2, []) => Frame::CloseStdin,
            (3, _) => Frame::Stdout(payload),
            (4, _) => Frame::Stderr(payload),
            (5, [a, b, c, d]) => Frame::Exit(i32::from_be_bytes([*a, *b, *c, *d])),
            (kind, _) => return Err(invalid(format!("bad attach frame of kind {kind}"))),
        };
        Ok(Some(frame))
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Where a container's attach socket is: short, as a socket's path must be (108 bytes).
pub fn socket_path(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join("attach").join(&id[..id.len().min(16)])
}

/// The monitor's side: the socket, the clients, and where their input goes.
#[derive(Clone)]
pub struct Attachments {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

#[derive(Default)]
struct State {
    clients: Vec<UnixStream>,
    /// Output kept until the first client attaches; None once one has, or when not kept.
    replay: Option<Vec<u8>>,
    /// The container's stdin pipe or its terminal; None when its input is closed.
    input: Option<Arc<File>>,
    /// The container's terminal, for window sizes.
    console: Option<Arc<File>>,
    /// Set once a client closed stdin: later runs (restarts) get no input either.
    stdin_closed: bool,
}

impl Attachments {
    /// Listens on `path` (replacing a stale socket) and accepts clients until dropped with the
    /// monitor. `replay` keeps the output for the first client.
    pub fn serve(path: &Path, replay: bool) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        // Root only, as the API socket: attaching is running commands in the container.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let attachments = Self {
            state: Arc::new(Mutex::new(State {
                replay: replay.then(Vec::new),
                ..State::default()
            })),
            path: path.to_path_buf(),
        };
        let accepting = attachments.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                accepting.accept(client);
            }
        });
        Ok(attachments)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn accept(&self, client: UnixStream) {
        let _ = client.set_write_timeout(Some(SLOW_CLIENT));
        let Ok(reader) = client.try_clone() else {
            return;
        };
        {
            let mut state = self.state();
            let mut client = client;
            if let Some(replay) = state.replay.take() {
                if !replay.is_empty() && Frame::Stdout(replay).write_to(&mut client).is_err() {
                    return;
                }
            }
            state.clients.push(client);
        }
        let attachments = self.clone();
        thread::spawn(move || attachments.take_input(reader));
    }

    /// A client's frames: its keys or stdin to the container, its window size to the terminal.
    fn take_input(&self, mut client: UnixStream) {
        while let Ok(Some(frame)) = Frame::read_from(&mut client) {
            match frame {
                Frame::Stdin(data) => {
                    // Taken out of the lock: a write may wait for the container to read.
                    let input = self.state().input.clone();
                    if let Some(input) = input {
                        let _ = (&*input).write_all(&data);
                    }
                }
                Frame::Resize { rows, cols } => {
                    if let Some(console) = self.state().console.clone() {
                        let _ = set_window_size(&console, rows, cols);
                    }
                }
                Frame::CloseStdin => {
                    let mut state = self.state();
                    // A terminal stays: closing it would hang up the container.
                    if state.console.is_none() {
                        state.input = None;
                        state.stdin_closed = true;
                    }
                }
                Frame::Stdout(_) | Frame::Stderr(_) | Frame::Exit(_) => {}
            }
        }
    }

    /// Where clients' input goes for this run: the stdin pipe's write end (unless a client
    /// closed stdin), or the terminal.
    pub fn set_input(&self, input: Option<File>, console: Option<Arc<File>>) {
        let mut state = self.state();
        state.input = match (&console, input) {
            (Some(console), _) => Some(Arc::clone(console)),
            (None, Some(_)) if state.stdin_closed => None,
            (None, input) => input.map(Arc::new),
        };
        state.console = console;
    }

    /// Copies what the container writes on `source` (a pipe, or its terminal) to its log and to
    /// every client, until the container's side is closed (for a terminal: EIO).
    pub fn relay(&self, stream: Stream, source: File, log: LogWriter) -> JoinHandle<()> {
        let attachments = self.clone();
        thread::spawn(move || {
            let mut source = source;
            let mut lines = LineSplitter::default();
            let mut chunk = vec![0u8; CHUNK];
            loop {
                let read = match source.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                let data = &chunk[..read];
                attachments.broadcast(stream, data);
                for line in lines.push(data) {
                    // A full disk loses output, never the container: it keeps running.
                    let _ = log.write(stream, &line);
                }
            }
            if let Some(rest) = lines.finish() {
                let _ = log.write(stream, &rest);
            }
        })
    }

    fn broadcast(&self, stream: Stream, data: &[u8]) {
        let frame = match stream {
            Stream::Stdout => Frame::Stdout(data.to_vec()),
            Stream::Stderr => Frame::Stderr(data.to_vec()),
        };
        let mut state = self.state();
        if let Some(replay) = &mut state.replay {
            let room = REPLAY_LIMIT.saturating_sub(replay.len());
            replay.extend_from_slice(&data[..data.len().min(room)]);
        }
        state
            .clients
            .retain_mut(|client| frame.write_to(client).is_ok());
    }

    /// Tells every client the container exited with `code` (after all its output, which the
    /// caller has relayed), and lets them go.
    pub fn exited(&self, code: i32) {
        let mut state = self.state();
        for mut client in state.clients.drain(..) {
            let _ = Frame::Exit(code).write_to(&mut client);
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
        state.input = None;
        state.console = None;
    }
}

impl Attachments {
    /// Removes the socket (the monitor is ending).
    pub fn close(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Splits a byte stream into log entries: whole lines, and pieces of a line longer than a
/// chunk, so one runaway line never holds the whole log in memory.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &byte in data {
            self.partial.push(byte);
            if byte == b'\n' || self.partial.len() >= CHUNK {
                lines.push(std::mem::take(&mut self.partial));
            }
        }
        lines
    }

    fn finish(self) -> Option<Vec<u8>> {
        Some(self.partial).filter(|rest| !rest.is_empty())
    }
}

/// Sets the window size of the terminal whose master (or slave) is `terminal`; its foreground
/// process group gets SIGWINCH.
pub fn set_window_size(
    terminal: &impl std::os::fd::AsRawFd,
    rows: u16,
    cols: u16,
) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives the terminal master runc sends on `--console-socket` (SCM_RIGHTS).
pub fn receive_console(stream: &UnixStream) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let mut name = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: name.as_mut_ptr().cast(),
        iov_len: name.len(),
    };
    // Room for one descriptor's control message, aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg fills the buffers message points to.
    if unsafe { libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages recvmsg wrote, within msg_controllen.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        if header.is_null()
            || (*header).cmsg_level != libc::SOL_SOCKET
            || (*header).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(invalid("runc sent no terminal".into()));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Stdin(b"ls\r".to_vec()),
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::CloseStdin,
            Frame::Stdout(vec![0, 1, 2]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            frame.write_to(&mut bytes).unwrap();
        }
        let mut input = bytes.as_slice();
        for frame in frames {
            assert_eq!(Frame::read_from(&mut input).unwrap(), Some(frame));
        }
        assert_eq!(Frame::read_from(&mut input).unwrap(), None);
        let bad = [9u8, 0, 0, 0, 0];
        assert!(Frame::read_from(&mut bad.as_slice()).is_err());
    }

    #[test]
    fn output_is_logged_by_line_and_a_long_line_in_chunks() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"a\nb"), vec![b"a\n".to_vec()]);
        assert_eq!(lines.push(b"c\n"), vec![b"bc\n".to_vec()]);
        let long = vec![b'x'; CHUNK + 3];
        assert_eq!(lines.push(&long).len(), 1);
        assert_eq!(lines.finish(), Some(b"xxx".to_vec()));
    }

    #[test]
    fn the_first_client_gets_what_came_before_it_and_all_get_the_exit() {
        let dir = std::env::temp_dir().join(format!("hostnetd-attach-{}", std::process::id()));
        let path = dir.join("sock");
        let attachments = Attachments::serve(&path, true).unwrap();
        attachments.broadcast(Stream::Stdout, b"prompt$ ");
        let mut client = UnixStream::connect(&path).unwrap();
        assert_eq!(
            Frame::read_from(&mut client).unwrap(),
            Some(Frame::Stdout(b"prompt$ ".to_vec()))
        );
        // Accepted on another thread: wait until it is a client.
        while attachments.state().clients.is_empty() {
            thread::sleep(Duration::from_millis(5));
        }
        attachments.broadcast(Stream::Stderr, b"oops\n");
        attachments.exited(3);
        assert_eq!(
            Frame::read_from(&mut client).unwrap(),
            Some(Frame::Stderr(b"oops\n".to_vec()))
        );
        assert_eq!(Frame::read_from(&mut client).unwrap(), Some(Frame::Exit(3)));
        assert_eq!(Frame::read_from(&mut client).unwrap(), None);
        attachments.close();
        let _ = std::fs::remove_dir(&dir);
    }
}
