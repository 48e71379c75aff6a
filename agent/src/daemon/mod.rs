//! `hostnetd daemon`: loads and pins the datapath, reconciles what happened while no daemon
//! ran, and serves the HTTP+JSON API on a root-only Unix socket. Containers do not depend on
//! it: each has its own monitor, and enforcement lives in pinned programs and maps.
mod bpf_log;
pub mod feed;
pub mod metrics;
mod routes;
mod sources;

pub use routes::api;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{routing::get, Router};
use tokio::net::UnixListener;

use self::{
    feed::EventHub,
    routes::{metrics_page, router, Daemon, Shared},
    sources::{spawn_denial_reader, spawn_lifecycle_watch},
};
use crate::{
    config::Settings,
    host::{Host, HostConfig, HostError},
    store::Store,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("another hostnetd daemon already answers on {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Forwards the programs' log when they were loaded with one; says when the level asked for is
/// not the one loaded (it is fixed at load: `teardown` and start again to change it).
fn forward_bpf_log(config: &HostConfig, loaded: u8, program_id: u32) {
    if loaded != config.bpf_log_level.as_u8() {
        tracing::warn!(
            asked = config.bpf_log_level.as_str(),
            loaded,
            "the datapath was loaded with another eBPF log level; run `hostnetd teardown` and start again to change it"
        );
    }
    if loaded == 0 {
        return;
    }
    match bpf_log::forward(program_id) {
        Ok(()) => tracing::info!(level = loaded, "forwarding the eBPF programs' log"),
        Err(error) => tracing::warn!(%error, "cannot read the eBPF programs' log"),
    }
}

/// Runs the daemon until SIGTERM, SIGINT or `POST /v1/teardown`.
pub async fn serve(settings: Settings) -> Result<(), DaemonError> {
    let config = settings.host_config();
    let socket = settings.socket();
    // Bad settings are refused before anything changes.
    let metrics_addr = settings.metrics_addr().map_err(DaemonError::Invalid)?;
    settings.bpf_log_level().map_err(DaemonError::Invalid)?;
    settings.tc_attach().map_err(DaemonError::Invalid)?;
    // A kernel below the floor is refused before anything on the host changes.
    config.datapath_options()?;
    let _only_daemon = only_daemon(&config.run_dir, &socket)?;
    // The state files the daemon writes reach the disk in the background, off every
    // command's path.
    crate::sys::files::BackgroundSync::start().map_err(|source| DaemonError::Io {
        action: "start the state files' sync for",
        path: config.state_dir.clone(),
        source,
    })?;
    // A detached `exec` is re-parented here when its runc exits, and reaped here.
    crate::runtime::supervise::become_subreaper().map_err(|source| DaemonError::Io {
        action: "become the subreaper of",
        path: "detached execs".into(),
        source,
    })?;
    let host = Host::open(config.clone())?;
    host.watch_records()?;
    let (loaded_log_level, program_id) = {
        let (_lock, mut datapath) = host.lock_datapath()?;
        host.reconcile(&mut datapath)?;
        host.restore_policies(&mut datapath)?;
        host.manage_qdiscs(&mut datapath)?;
        datapath
            .log_source()
            .map_err(crate::host::HostError::from)?
    };
    forward_bpf_log(&config, loaded_log_level, program_id);
    tracing::info!(bpf_dir = %config.bpf_dir.display(), "datapath loaded and pinned; containers reconciled");
    let listener = bind_socket(&socket).await?;
    let pid_file = config.run_dir.join("hostnetd.pid");
    let _ = fs::write(&pid_file, std::process::id().to_string());
    tracing::info!(socket = %socket.display(), "serving the API");
    let daemon = Arc::new(Daemon {
        host,
        registries: settings.pull_options(),
        shutdown: tokio::sync::Notify::new(),
        events: Arc::new(EventHub::default()),
    });
    start_event_sources(&daemon)?;
    if let Some(addr) = metrics_addr {
        start_metrics(&daemon, addr).await?;
    }
    let app = router(daemon.clone());
    let stop = {
        let daemon = daemon.clone();
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                _ = daemon.shutdown.notified() => {}
            }
            tracing::info!("shutting down; containers and enforcement stay in place");
        }
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    crate::sys::files::BackgroundSync::flush();
    let _ = fs::remove_file(&socket);
    let _ = fs::remove_file(&pid_file);
    served.map_err(|source| DaemonError::Io {
        action: "serve on",
        path: socket,
        source,
    })
}

/// Denials from the datapath's ring, lifecycle events from the container records.
fn start_event_sources(daemon: &Shared) -> Result<(), DaemonError> {
    let config = &daemon.host.config;
    let store = || Store::open(&config.state_dir).map_err(|e| DaemonError::Host(e.into()));
    // Watched, as the host's own store is: a listing then reads again only the records
    // that changed, where it read every record's metadata and each recent one whole.
    let records = store()?;
    records.watch().map_err(|e| DaemonError::Host(e.into()))?;
    spawn_lifecycle_watch(daemon.events.clone(), records);
    spawn_denial_reader(daemon.events.clone(), store()?, &config.bpf_dir)
        .map_err(|e| DaemonError::Host(e.into()))
}

/// Serves `GET /metrics` on `addr` (TCP) until the process exits.
async fn start_metrics(daemon: &Shared, addr: std::net::SocketAddr) -> Result<(), DaemonError> {
    let listener = (tokio::net::TcpListener::bind(addr).await)
        .map_err(|source| DaemonError::Metrics { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .with_state(daemon.clone());
    tracing::info!(%addr, "serving metrics");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(())
}

/// Holds `<run_dir>/daemon.lock` for the daemon's life: a second daemon for the same run
/// directory, started in the same instant, gives up at once instead of racing for the socket.
fn only_daemon(run_dir: &Path, socket: &Path) -> Result<fs::File, DaemonError> {
    let path = run_dir.join("daemon.lock");
    let io = |action, source| DaemonError::Io {
        action,
        path: path.clone(),
        source,
    };
    fs::create_dir_all(run_dir).map_err(|e| io("create the directory of", e))?;
    // A daemon being killed holds the lock for a moment after it stopped answering, while its
    // files close: a command that found no daemon and started this one must not fail on that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match crate::sys::files::lock_file(&path, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(file) => return Ok(file),
            Err(error) if error.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if std::time::Instant::now() >= deadline {
                    return Err(DaemonError::AlreadyRunning(socket.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => return Err(io("lock", error)),
        }
    }
}

/// Whether something keeps answering on `socket` for a second. The caller holds the daemon
/// lock, so a hostnetd daemon that answers is one being killed: it gives its lock back as it
/// exits before it closes its socket, and stops answering a moment later.
async fn still_answers(socket: &Path) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while tokio::net::UnixStream::connect(socket).await.is_ok() {
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Binds the API socket, root-only. A socket left by a dead daemon is replaced; one that
/// answers belongs to a live daemon and is left alone.
async fn bind_socket(socket: &Path) -> Result<UnixListener, DaemonError> {
    let io = |action, source| DaemonError::Io {
        action,
        path: socket.to_path_buf(),
        source,
    };
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    }
    if socket.exists() {
        if still_answers(socket).await {
            return Err(DaemonError::AlreadyRunning(socket.to_path_buf()));
        }
        fs::remove_file(socket).map_err(|e| io("remove the stale socket", e))?;
    }
    // Created under a umask that leaves it to root alone from its first moment.
    // SAFETY: umask only changes this process's file creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(socket);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener = listener.map_err(|e| io("listen on", e))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
        .map_err(|e| io("restrict", e))?;
    Ok(listener)
}
