//! `hostnetd daemon`: loads and pins the datapath, reconciles what happened while no daemon
//! ran, and serves the HTTP+JSON API on a root-only Unix socket. Containers do not depend on
//! it: each has its own monitor, and enforcement lives in pinned programs and maps.
mod bpf_log;
pub mod feed;
pub mod metrics;
mod sources;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Path as UrlPath, Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::{net::UnixListener, sync::mpsc};

use self::{
    feed::EventHub,
    sources::{spawn_denial_reader, spawn_lifecycle_watch},
};
use crate::{
    api::{
        ApiError, AttachEvent, ContainerView, Created, ImageView, Info, LoadRequest, PolicyUpdate,
        PortEntry, PullRequest, RunSpec,
    },
    config::Settings,
    host::{Host, HostConfig, HostError},
    images::PullOptions,
    runtime::logs::{LogEntry, LogReader},
    store::{ContainerRecord, Store},
    sys::time::parse_since,
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

struct Daemon {
    host: Host,
    /// Registries reached over plain HTTP, from the config file.
    insecure_registries: Vec<String>,
    shutdown: tokio::sync::Notify,
    events: Arc<EventHub>,
}

type Shared = Arc<Daemon>;

/// Runs the daemon until SIGTERM, SIGINT or `POST /v1/teardown`.
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
    let host = Host::open(config.clone())?;
    let (loaded_log_level, program_id) = {
        let (_lock, mut datapath) = host.lock_datapath()?;
        host.reconcile(&mut datapath)?;
        host.restore_policies(&mut datapath)?;
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
        insecure_registries: settings.insecure_registries.clone().unwrap_or_default(),
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
    spawn_lifecycle_watch(daemon.events.clone(), store()?);
    spawn_denial_reader(daemon.events.clone(), store()?, &config.bpf_dir)
        .map_err(|e| DaemonError::Host(e.into()))
}

/// Serves `GET /metrics` on `addr` (TCP) until the process exits.
async fn start_metrics(daemon: &Shared, addr: std::net::SocketAddr) -> Result<(), DaemonError> {
    let listener = (tokio::net::TcpListener::bind(addr).await)
        .map_err(|source| DaemonError::Metrics { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(daemon.clone());
    tracing::info!(%addr, "serving metrics");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(())
}

async fn metrics(State(daemon): State<Shared>) -> Reply {
    let snapshot = blocking(&daemon, |host| host.metrics_snapshot()).await?;
    Ok((
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        metrics::render(&snapshot),
    )
        .into_response())
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
    match crate::sys::files::lock_file(&path, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(file) => Ok(file),
        Err(error) if error.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            Err(DaemonError::AlreadyRunning(socket.to_path_buf()))
        }
        Err(error) => Err(io("lock", error)),
    }
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
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
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

/// The API over `host`, to serve on any listener: [`serve`] without the socket, the signals
/// and the reconciliation (tests serve it in-process).
pub fn api(host: Host, insecure_registries: Vec<String>) -> Router {
    router(Arc::new(Daemon {
        host,
        insecure_registries,
        shutdown: tokio::sync::Notify::new(),
        events: Arc::new(EventHub::default()),
    }))
}

fn router(daemon: Shared) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/containers", get(list).post(create))
        .route("/v1/containers/{reference}", get(inspect).delete(remove))
        .route("/v1/containers/{reference}/logs", get(logs))
        .route("/v1/containers/{reference}/wait", post(wait))
        .route("/v1/containers/{reference}/stop", post(stop))
        .route("/v1/containers/{reference}/kill", post(kill))
        .route("/v1/containers/{reference}/update", post(update))
        .route("/v1/images", get(list_images))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/load", post(load_images))
        .route(
            "/v1/images/{*reference}",
            get(inspect_image).delete(remove_image),
        )
        .route("/v1/ports", get(ports))
        .route("/v1/stats", get(stats))
        .route("/v1/events", get(events))
        .route("/v1/teardown", post(teardown))
        .fallback(|| async { ApiError::new("not_found", "no such endpoint; see docs/api.md") })
        .with_state(daemon)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

/// What every handler returns: its answer, or the API's JSON error.
type Reply = Result<Response, ApiError>;

/// Runs a blocking host operation off the async workers.
async fn blocking<T: Send + 'static>(
    daemon: &Shared,
    operation: impl FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
) -> Result<T, ApiError> {
    let daemon = daemon.clone();
    match tokio::task::spawn_blocking(move || operation(&daemon.host)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::warn!(%error, "request failed");
            Err(ApiError::from(&error))
        }
        Err(join) => Err(ApiError::new("internal", join.to_string())),
    }
}

/// The query string as `T`; a bad one gets the API's JSON error rather than axum's text.
fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(query)| query)
        .map_err(|rejection| {
            let text = uri.query().unwrap_or_default();
            ApiError::new(
                "invalid_argument",
                format!("invalid query {text:?}: {}", rejection.body_text()),
            )
        })
}

fn view(record: &ContainerRecord) -> Response {
    Json(ContainerView::from(record)).into_response()
}

async fn info(State(daemon): State<Shared>) -> Json<Info> {
    let config = &daemon.host.config;
    let pin_root = crate::datapath::Datapath::pin_root(&config.bpf_dir);
    let health = tokio::task::spawn_blocking(move || crate::datapath::read_health(&pin_root)).await;
    let health = health.ok().and_then(Result::ok);
    Json(Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        bpf_dir: config.bpf_dir.display().to_string(),
        cgroup_parent: config.cgroup_parent.clone(),
        events_lost: health.map(|health| health.events_lost),
        traffic_table_full: health.map(|health| health.traffic_table_full),
        features: crate::datapath::KernelFeatures::host().report(config.tc_attach),
    })
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct EventsQuery {
    /// RFC 3339 or Unix seconds; absent: only new events.
    since: Option<String>,
    follow: bool,
}

/// The kept events since `since`, then (with `follow`) every new one as it happens.
async fn events(State(daemon): State<Shared>, uri: Uri) -> Reply {
    let query: EventsQuery = parse_query(&uri)?;
    let since = match &query.since {
        Some(text) => parse_since(text).map_err(|m| ApiError::new("invalid_argument", m))?,
        None => u64::MAX,
    };
    let (past, mut feed) = daemon.events.follow_since(since);
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        for event in &past {
            if sender.send(Ok(json_line(event))).await.is_err() {
                return;
            }
        }
        if !query.follow {
            return;
        }
        loop {
            let event = match feed.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "an events follower fell behind");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if sender.send(Ok(json_line(&event))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(body)
        .unwrap_or_else(|e| ApiError::new("internal", e.to_string()).into_response()))
}

fn json_line(item: &impl Serialize) -> Bytes {
    let mut line = serde_json::to_vec(item).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ListQuery {
    all: bool,
}

async fn list(State(daemon): State<Shared>, uri: Uri) -> Reply {
    let query: ListQuery = parse_query(&uri)?;
    let records = blocking(&daemon, |host| host.list()).await?;
    let views: Vec<ContainerView> = records
        .iter()
        .filter(|r| query.all || r.state.is_live())
        .map(ContainerView::from)
        .collect();
    Ok(Json(views).into_response())
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CreateQuery {
    attach: bool,
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new("invalid_argument", format!("invalid request body: {e}")))
}

async fn list_images(State(daemon): State<Shared>) -> Reply {
    let images = blocking(&daemon, |host| host.images()).await?;
    Ok(Json(images.iter().map(ImageView::from).collect::<Vec<_>>()).into_response())
}

async fn inspect_image(State(daemon): State<Shared>, UrlPath(reference): UrlPath<String>) -> Reply {
    let image = blocking(&daemon, move |host| host.image(&reference)).await?;
    Ok(Json(ImageView::from(&image)).into_response())
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RemoveImageQuery {
    force: bool,
}

async fn remove_image(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    uri: Uri,
) -> Reply {
    let query: RemoveImageQuery = parse_query(&uri)?;
    let removed = blocking(&daemon, move |host| {
        host.remove_image(&reference, query.force)
    })
    .await?;
    tracing::info!(untagged = ?removed.untagged, deleted = ?removed.deleted, "image removed");
    Ok(Json(removed).into_response())
}

async fn pull_image(State(daemon): State<Shared>, body: Bytes) -> Reply {
    let request: PullRequest = parse_body(&body)?;
    let options = PullOptions {
        insecure_registries: [
            request.insecure_registries,
            daemon.insecure_registries.clone(),
        ]
        .concat(),
    };
    tracing::info!(reference = %request.reference, "pulling");
    let image = daemon
        .host
        .pull_image(&request.reference, &options)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "pull failed");
            ApiError::from(&error)
        })?;
    tracing::info!(id = %image.id, "pulled");
    Ok(Json(ImageView::from(&image)).into_response())
}

async fn load_images(State(daemon): State<Shared>, body: Bytes) -> Reply {
    let request: LoadRequest = parse_body(&body)?;
    let images = blocking(&daemon, move |host| {
        host.load_images(std::path::Path::new(&request.path))
    })
    .await?;
    tracing::info!(count = images.len(), "images loaded");
    Ok(Json(images.iter().map(ImageView::from).collect::<Vec<_>>()).into_response())
}

async fn create(State(daemon): State<Shared>, uri: Uri, body: Bytes) -> Reply {
    let query: CreateQuery = parse_query(&uri)?;
    let spec: RunSpec = parse_body(&body)?;
    let (record, log) = blocking(&daemon, move |host| {
        host.create_container(&spec.validate()?)
    })
    .await?;
    tracing::info!(id = %record.id, name = %record.name, ports = ?record.port_specs, "container started");
    let created = Created {
        id: record.id.clone(),
        name: record.name.clone(),
    };
    if !query.attach {
        return Ok((StatusCode::CREATED, Json(created)).into_response());
    }
    Ok(stream_lines(daemon.clone(), move |host, send| {
        if !send(&AttachEvent::Created(created)) {
            return;
        }
        let mut reader = LogReader::from_file(log);
        if !follow(host, &record.id, &mut reader, &mut |entry| {
            send(&AttachEvent::Log(entry))
        }) {
            return;
        }
        let last = match host.wait(&record.id) {
            Ok(status) => AttachEvent::Exit(status),
            Err(error) => AttachEvent::Error(ApiError::from(&error)),
        };
        send(&last);
    }))
}

/// Sends every log entry until the container's output is complete; false if the client left.
fn follow(
    host: &Host,
    id: &str,
    reader: &mut LogReader,
    send: &mut dyn FnMut(LogEntry) -> bool,
) -> bool {
    let mut gone_since: Option<std::time::Instant> = None;
    loop {
        let complete = host.has_finished(id) || {
            match host.store.get(id) {
                Ok(Some(record)) => !record.supervisor.is_alive(),
                // Forgotten but no exit file yet: the monitor is still draining the output.
                _ => {
                    gone_since
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                        > Duration::from_secs(10)
                }
            }
        };
        for entry in reader.next_entries().unwrap_or_default() {
            if !send(entry) {
                return false;
            }
        }
        if complete {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response of JSON lines produced by a blocking `producer`; it stops when the client leaves.
fn stream_lines<T: Serialize + Send + 'static>(
    daemon: Shared,
    producer: impl FnOnce(&Host, &mut dyn FnMut(&T) -> bool) + Send + 'static,
) -> Response {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        let mut send = |item: &T| {
            let mut line = serde_json::to_vec(item).unwrap_or_default();
            line.push(b'\n');
            sender.blocking_send(Ok(Bytes::from(line))).is_ok()
        };
        producer(&daemon.host, &mut send);
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(body)
        .unwrap_or_else(|e| ApiError::new("internal", e.to_string()).into_response())
}

async fn inspect(State(daemon): State<Shared>, UrlPath(reference): UrlPath<String>) -> Reply {
    let (record, stats) = blocking(&daemon, move |host| {
        let record = host.inspect(&reference)?;
        let stats = host.stats(std::slice::from_ref(&record.id), true)?;
        Ok((record, stats))
    })
    .await?;
    let mut view = ContainerView::from(&record);
    view.traffic = stats.into_iter().next().map(|stats| stats.traffic);
    Ok(Json(view).into_response())
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StatsQuery {
    /// Comma-separated names or IDs; every container when absent.
    containers: Option<String>,
    all: bool,
}

async fn stats(State(daemon): State<Shared>, uri: Uri) -> Reply {
    let query: StatsQuery = parse_query(&uri)?;
    let references: Vec<String> = (query.containers.unwrap_or_default().split(','))
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    let stats = blocking(&daemon, move |host| host.stats(&references, query.all)).await?;
    Ok(Json(stats).into_response())
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LogsQuery {
    follow: bool,
    tail: Option<usize>,
}

async fn logs(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    uri: Uri,
) -> Reply {
    let query: LogsQuery = parse_query(&uri)?;
    let (id, log_path) = blocking(&daemon, move |host| {
        let record = host.inspect(&reference)?;
        Ok((record.id.clone(), host.store.log_path(&record.id)))
    })
    .await?;
    let mut reader = LogReader::open(&log_path).map_err(|e| {
        ApiError::new(
            "internal",
            format!("cannot open {}: {e}", log_path.display()),
        )
    })?;
    Ok(stream_lines(daemon.clone(), move |host, send| {
        for entry in reader.initial(query.tail).unwrap_or_default() {
            if !send(&entry) {
                return;
            }
        }
        if query.follow {
            follow(host, &id, &mut reader, &mut |entry| send(&entry));
        }
    }))
}

async fn wait(State(daemon): State<Shared>, UrlPath(reference): UrlPath<String>) -> Reply {
    Ok(Json(blocking(&daemon, move |host| host.wait(&reference)).await?).into_response())
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StopQuery {
    t: Option<u64>,
}

async fn stop(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    uri: Uri,
) -> Reply {
    let query: StopQuery = parse_query(&uri)?;
    let timeout = Duration::from_secs(query.t.unwrap_or(10));
    Ok(view(
        &blocking(&daemon, move |host| host.stop(&reference, timeout)).await?,
    ))
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct KillQuery {
    signal: Option<String>,
}

async fn kill(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    uri: Uri,
) -> Reply {
    let query: KillQuery = parse_query(&uri)?;
    let signal = crate::runtime::supervise::parse_signal(query.signal.as_deref().unwrap_or("KILL"))
        .map_err(|message| ApiError::new("invalid_argument", message))?;
    Ok(view(
        &blocking(&daemon, move |host| host.kill(&reference, signal)).await?,
    ))
}

async fn update(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    body: Bytes,
) -> Reply {
    let update: PolicyUpdate = parse_body(&body)?;
    let record = blocking(&daemon, move |host| {
        host.update_policy(&reference, &update.validate()?)
    })
    .await?;
    tracing::info!(id = %record.id, ports = ?record.port_specs, allow = ?record.egress_allow, deny = ?record.egress_deny, "policy updated");
    Ok(view(&record))
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RemoveQuery {
    force: bool,
}

async fn remove(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    uri: Uri,
) -> Reply {
    let query: RemoveQuery = parse_query(&uri)?;
    Ok(view(
        &blocking(&daemon, move |host| host.remove(&reference, query.force)).await?,
    ))
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PortsQuery {
    kernel: bool,
}

async fn ports(State(daemon): State<Shared>, uri: Uri) -> Reply {
    let query: PortsQuery = parse_query(&uri)?;
    if query.kernel {
        let owned = blocking(&daemon, |host| host.kernel_owners()).await?;
        let table: Vec<_> = (owned.iter())
            .map(|(port, owner)| {
                // The policy generations whose grant lets the owner bind it; while an update
                // is under way a port may have both, or (leaving) only the old one.
                let generations: Vec<u32> = (0..2).filter(|&g| owner.grant(g) != 0).collect();
                serde_json::json!({
                    "port": port,
                    "cgroup_id": owner.cgroup_id,
                    "generations": generations,
                })
            })
            .collect();
        return Ok(Json(table).into_response());
    }
    let owned = blocking(&daemon, |host| host.owned_ports()).await?;
    let entries: Vec<PortEntry> = (owned.iter())
        .map(|(claim, record)| PortEntry {
            port: claim.port.to_string(),
            addresses: claim
                .addresses
                .as_ref()
                .map(|a| a.iter().map(ToString::to_string).collect()),
            container_id: record.id.clone(),
            container_name: record.name.clone(),
        })
        .collect();
    Ok(Json(entries).into_response())
}

async fn teardown(State(daemon): State<Shared>) -> Reply {
    blocking(&daemon, |host| host.teardown()).await?;
    daemon.shutdown.notify_one();
    Ok(Json(serde_json::json!({ "detached": true })).into_response())
}
