//! The CLI's side of the API: HTTP/1.1 over the daemon's Unix socket, starting a daemon when
//! none answers.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full};
use hyper::{body::Bytes, Method, Request};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::{net::UnixStream, runtime::Runtime};

use super::{ApiError, Info};
use crate::{config::Settings, runtime::supervise::in_new_session, sys::files::lock_file};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error("{0}")]
    Api(ApiError),
    #[error("{0}")]
    Unreachable(String),
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

pub struct Client {
    socket: PathBuf,
    runtime: Runtime,
}

impl Client {
    /// A client of the daemon at the configured socket; starts the daemon (with the same
    /// settings) when nothing answers there.
    pub fn connect_or_start(
        settings: &Settings,
        global_args: &[std::ffi::OsString],
    ) -> Result<Self, ClientError> {
        let exe = std::env::current_exe().map_err(|e| {
            ClientError::Unreachable(format!(
                "the hostnetd binary cannot be found ({e}); {START_BY_HAND}"
            ))
        })?;
        Self::connect_or_start_with(settings, global_args, &exe)
    }

    /// As [`Client::connect_or_start`], starting `hostnetd` from `exe`.
    pub fn connect_or_start_with(
        settings: &Settings,
        global_args: &[std::ffi::OsString],
        exe: &Path,
    ) -> Result<Self, ClientError> {
        let client = Self::new(&settings.socket())?;
        if client.answers() {
            return Ok(client);
        }
        // One client at a time starts a daemon; the others wait here, then find it answering.
        let _starting = client.start_lock(settings)?;
        if client.answers() {
            return Ok(client);
        }
        client.start_daemon(settings, global_args, exe)?;
        Ok(client)
    }

    fn start_lock(&self, settings: &Settings) -> Result<std::fs::File, ClientError> {
        let run_dir = settings.host_config().run_dir;
        let path = run_dir.join("daemon-start.lock");
        std::fs::create_dir_all(&run_dir)
            .and_then(|()| lock_file(&path, libc::LOCK_EX))
            .map_err(|e| {
                ClientError::Unreachable(format!(
                    "no hostnetd daemon answers and {} cannot be locked to start one ({e})",
                    path.display()
                ))
            })
    }

    /// A client that never starts a daemon.
    pub fn new(socket: &Path) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                ClientError::Unreachable(format!("cannot start the client runtime: {e}"))
            })?;
        Ok(Self {
            socket: socket.to_path_buf(),
            runtime,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether a daemon listens on the socket: a connection accepted (a dead daemon's socket
    /// file refuses it). Cheaper than a request, which every command would pay for.
    fn answers(&self) -> bool {
        std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
    }

    pub fn ping(&self) -> Result<Info, ClientError> {
        self.get("/v1/info")
    }

    fn start_daemon(
        &self,
        settings: &Settings,
        global_args: &[std::ffi::OsString],
        exe: &Path,
    ) -> Result<(), ClientError> {
        let how = START_BY_HAND;
        let config = settings.host_config();
        let log_path = config.run_dir.join("hostnetd.log");
        let _ = std::fs::create_dir_all(&config.run_dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                ClientError::Unreachable(format!(
                    "no hostnetd daemon answers and {} cannot be opened ({e}); {how}",
                    log_path.display()
                ))
            })?;
        let mut command = Command::new(exe);
        command
            .args(global_args)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        in_new_session(&mut command);
        let mut child = command.spawn().map_err(|e| {
            ClientError::Unreachable(format!(
                "no hostnetd daemon answers and starting one failed: {e}; {how}"
            ))
        })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.ping().is_ok() {
                // The daemon lives on; a thread reaps it if it ever ends while we run.
                std::thread::spawn(move || child.wait());
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Another daemon (one a command started without this one's lock) may answer.
                if self.ping().is_ok() {
                    return Ok(());
                }
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output");
                return Err(ClientError::Unreachable(format!(
                    "no hostnetd daemon answers at {} and the one started exited ({status}): {last}; {how}",
                    self.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ClientError::Unreachable(format!(
            "the hostnetd daemon started did not answer at {} within 30 s (log: {}); {how}",
            self.socket.display(),
            log_path.display()
        )))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>)
    }

    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, body)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None::<&()>)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let mut bytes = Vec::new();
        self.stream(method, path, body, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("{e} in {}", String::from_utf8_lossy(&bytes)))
        })
    }

    /// Sends a request and hands each line of a successful response to `on_line` as it comes.
    pub fn stream_lines(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        mut on_line: impl FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let mut pending = Vec::new();
        self.stream(method, path, body, |chunk| {
            pending.extend_from_slice(chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                on_line(&line[..line.len() - 1])?;
            }
            Ok(())
        })?;
        if !pending.is_empty() {
            on_line(&pending)?;
        }
        Ok(())
    }

    fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let payload = match body {
            Some(body) => {
                serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?
            }
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hostnetd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let socket = self.socket.clone();
        self.runtime.block_on(async move {
            let stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| unreachable(&socket, &e))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ClientError::Unreachable(format!("{}: {e}", socket.display())))?;
            tokio::spawn(connection);
            let response = sender.send_request(request).await.map_err(lost)?;
            let status = response.status();
            let mut body = response.into_body();
            if !status.is_success() {
                let bytes = body.collect().await.map_err(lost)?.to_bytes();
                let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| {
                    ApiError::new(
                        "internal",
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                    )
                });
                return Err(ClientError::Api(error));
            }
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map_err(lost)?.into_data() {
                    on_chunk(&data)?;
                }
            }
            Ok(())
        })
    }
}

const START_BY_HAND: &str =
    "start it with `hostnetd daemon` (or `systemctl start hostnetd` where the unit is installed)";

fn unreachable(socket: &Path, error: &std::io::Error) -> ClientError {
    let hint = match error.kind() {
        std::io::ErrorKind::PermissionDenied => "the API is root-only: run hostnetd as root (sudo)",
        _ => "is the daemon running? start it with `hostnetd daemon`",
    };
    ClientError::Unreachable(format!(
        "cannot reach the hostnetd daemon at {}: {error}; {hint}",
        socket.display()
    ))
}

fn lost(error: hyper::Error) -> ClientError {
    ClientError::Unreachable(format!(
        "lost the connection to the hostnetd daemon ({error}); containers keep running: see `hostnetd ps`"
    ))
}
