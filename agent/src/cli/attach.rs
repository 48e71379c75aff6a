//! `hostnetd attach`, and the session `run -i`/`run -t` holds with its container: the
//! container's output as it comes, this terminal's keys (or stdin) and window size to it,
//! detaching with ctrl-p ctrl-q, and the signals this command gets passed on (docker's
//! sig-proxy; a second interrupt kills the container).
use std::{
    io::{IsTerminal as _, Read as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use anyhow::bail;
use hostnetd::{
    api::{
        client::{Client, ClientError},
        AttachPoint, ExitStatus, Frame,
    },
    runtime::logs::{LogEntry, Stream},
};
use hyper::Method;
use signal_hook::{
    consts::signal,
    iterator::{exfiltrator::WithOrigin, SignalsInfo},
};

use super::{
    containers::container_path,
    terminal::{window_size, DetachKeys, RawMode},
};

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long)]
    no_stdin: bool,
    /// Pass the signals this command gets on to the container.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    /// A container name, ID or unique ID prefix.
    container: String,
}

pub fn attach(client: &Client, args: AttachArgs) -> anyhow::Result<ExitCode> {
    let point: AttachPoint = client.get(&container_path(&args.container, "/attach"))?;
    let with_stdin = point.open_stdin && !args.no_stdin;
    if point.tty && with_stdin {
        require_terminal("hostnetd attach")?;
    }
    session(client, &point, with_stdin, args.sig_proxy)
}

/// Refuses keys for a container's terminal from something that is not a terminal.
pub fn require_terminal(command: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY: leave out -t to pipe input, or run `{command}` in a terminal");
    }
    Ok(())
}

/// Attaches to the container `point` names until it exits (its exit code) or the user
/// detaches (success). A container that ended before the session began gets its log shown
/// and its exit code.
pub fn session(
    client: &Client,
    point: &AttachPoint,
    with_stdin: bool,
    sig_proxy: bool,
) -> anyhow::Result<ExitCode> {
    if sig_proxy {
        proxy_signals(client, Arc::new(Mutex::new(Some(point.id.clone()))))?;
    }
    let Ok(stream) = UnixStream::connect(&point.socket) else {
        return finished(client, &point.id);
    };
    let sender = Arc::new(Mutex::new(stream.try_clone()?));
    let interactive_terminal = point.tty && with_stdin && std::io::stdin().is_terminal();
    let _raw = match interactive_terminal {
        true => Some(RawMode::enable(libc::STDIN_FILENO)?),
        false => None,
    };
    if point.tty {
        follow_window_size(Arc::clone(&sender))?;
    }
    let detached = Arc::new(AtomicBool::new(false));
    if with_stdin {
        let detach = interactive_terminal.then(|| (Arc::clone(&detached), stream.try_clone()));
        let sender = Arc::clone(&sender);
        let close_at_end = !point.tty;
        std::thread::spawn(move || forward_stdin(&sender, detach, close_at_end));
    }
    let mut stream = stream;
    while let Ok(Some(frame)) = Frame::read_from(&mut stream) {
        match frame {
            Frame::Stdout(data) => write_out(&mut std::io::stdout(), &data),
            Frame::Stderr(data) => write_out(&mut std::io::stderr(), &data),
            Frame::Exit(code) => return Ok(exit_code(code)),
            Frame::Stdin(_) | Frame::Resize { .. } | Frame::CloseStdin => {}
        }
    }
    if detached.load(Ordering::Acquire) {
        return Ok(ExitCode::SUCCESS);
    }
    // The monitor went away without a word: ask how the container ended.
    wait_for_exit(client, &point.id)
}

fn write_out(out: &mut impl std::io::Write, data: &[u8]) {
    let _ = out.write_all(data);
    let _ = out.flush();
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// This terminal's size now and at every SIGWINCH, to the container's terminal.
fn follow_window_size(sender: Arc<Mutex<UnixStream>>) -> anyhow::Result<()> {
    let send_size = move |sender: &Mutex<UnixStream>| {
        if let Some((rows, cols)) =
            window_size(libc::STDIN_FILENO).or_else(|| window_size(libc::STDOUT_FILENO))
        {
            let mut stream = sender.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = Frame::Resize { rows, cols }.write_to(&mut *stream);
        }
    };
    send_size(&sender);
    let mut changes = signal_hook::iterator::Signals::new([signal::SIGWINCH])?;
    std::thread::spawn(move || {
        for _ in changes.forever() {
            send_size(&sender);
        }
    });
    Ok(())
}

/// Copies stdin to the container. On a terminal, ctrl-p ctrl-q detaches (`detach`: the flag
/// to set and the stream to shut); at the end of a piped stdin the container's is closed.
fn forward_stdin(
    sender: &Mutex<UnixStream>,
    detach: Option<(Arc<AtomicBool>, std::io::Result<UnixStream>)>,
    close_at_end: bool,
) {
    let mut keys = DetachKeys::default();
    let mut input = std::io::stdin().lock();
    let mut buffer = [0u8; 4096];
    loop {
        let read = match input.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let (data, detaching) = match &detach {
            Some(_) => keys.filter(&buffer[..read]),
            None => (buffer[..read].to_vec(), false),
        };
        let mut stream = sender.lock().unwrap_or_else(PoisonError::into_inner);
        if !data.is_empty() && Frame::Stdin(data).write_to(&mut *stream).is_err() {
            return;
        }
        if detaching {
            if let Some((flag, Ok(stream))) = &detach {
                flag.store(true, Ordering::Release);
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
    }
    if close_at_end {
        let mut stream = sender.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = Frame::CloseStdin.write_to(&mut *stream);
    }
}

/// A container that ended before the session could begin: its output from the log, then
/// its exit code.
fn finished(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let path = format!("{}?follow=false", container_path(id, "/logs"));
    let shown = client.stream_lines(Method::GET, &path, None::<&()>, |line| {
        let entry: LogEntry =
            serde_json::from_slice(line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match entry.stream {
            Stream::Stdout => write_out(&mut std::io::stdout(), entry.log.as_bytes()),
            Stream::Stderr => write_out(&mut std::io::stderr(), entry.log.as_bytes()),
        }
        Ok(())
    });
    match shown {
        // Removed already (`--rm`): its exit code is still known.
        Ok(()) | Err(ClientError::Api(_)) => wait_for_exit(client, id),
        Err(error) => Err(error.into()),
    }
}

fn wait_for_exit(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let status: ExitStatus = client.post(&container_path(id, "/wait"), None::<&()>)?;
    match status.exit_code {
        Some(code) => Ok(exit_code(code)),
        None => bail!("the container ended without an exit code (its monitor died)"),
    }
}

/// docker's sig-proxy: the signals this command gets go to the container `target` names,
/// once it is known; a second SIGINT (ctrl-c twice at a container that does not stop) kills
/// it. A signal its own terminal sends to a container's terminal is the container's already.
pub fn proxy_signals(client: &Client, target: Arc<Mutex<Option<String>>>) -> anyhow::Result<()> {
    let mut signals = SignalsInfo::<WithOrigin>::new(hostnetd::runtime::supervise::FORWARDED)?;
    let socket: PathBuf = client.socket().to_path_buf();
    std::thread::spawn(move || {
        let Ok(client) = Client::new(&socket) else {
            return;
        };
        let mut interrupted = false;
        for origin in signals.forever() {
            let mut signal = origin.signal;
            if signal == libc::SIGINT && std::mem::replace(&mut interrupted, true) {
                eprintln!("hostnetd: interrupted twice: killing the container");
                signal = libc::SIGKILL;
            }
            let id = target
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(id) = id {
                send_signal(&client, &id, signal);
            }
        }
    });
    Ok(())
}

/// How long a signal waits for a container that has just started to be recorded as running.
const START_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `signal` to the container. One that has just started may already print while its
/// record still says created, and a kill is refused until it says running: the signal is
/// sent again until it is taken, for a moment, rather than lost.
fn send_signal(client: &Client, id: &str, signal: i32) {
    let path = format!("{}?signal={signal}", container_path(id, "/kill"));
    let deadline = std::time::Instant::now() + START_GRACE;
    loop {
        match client.post::<serde_json::Value>(&path, None::<&()>) {
            Err(ClientError::Api(error))
                if error.code == "not_running" && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return,
        }
    }
}
