//! The HTTP+JSON API's routes over the Host, each call of the Host made on a blocking thread.
//! docs/api.md describes every endpoint.
use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Path as UrlPath, Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{feed::EventHub, metrics};
use crate::{
    api::{
        engine::EngineAdmission,
        exec::{ExecPlan, ExecSpec},
        run::validate_name,
        ApiError, AttachEvent, AuthReply, ContainerView, Created, EngineRelease, ImageView, Info,
        LoadRequest, LoginRequest, PolicyUpdate, PortEntry, PullRequest, RunSpec,
    },
    host::{Host, HostError},
    images::{Credentials, PullOptions},
    runtime::logs::{LogEntry, LogReader},
    store::ContainerRecord,
    sys::time::parse_since,
};

pub(super) struct Daemon {
    pub(super) host: Host,
    /// How registries are reached (plain HTTP, CAs, credentials), from the settings.
    pub(super) registries: PullOptions,
    pub(super) shutdown: tokio::sync::Notify,
    pub(super) events: Arc<EventHub>,
}

pub(super) type Shared = Arc<Daemon>;

impl Daemon {
    /// The daemon's registry settings, with more plain-HTTP registries named by a request.
    fn registry_options(&self, insecure_registries: Vec<String>) -> PullOptions {
        let mut options = self.registries.clone();
        options.insecure_registries.extend(insecure_registries);
        options
    }
}

/// The API over `host`, to serve on any listener: [`serve`] without the socket, the signals
/// and the reconciliation (tests serve it in-process).
pub fn api(host: Host, registries: PullOptions) -> Router {
    router(Arc::new(Daemon {
        host,
        registries,
        shutdown: tokio::sync::Notify::new(),
        events: Arc::new(EventHub::default()),
    }))
}

pub(super) fn router(daemon: Shared) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/containers", get(list).post(create))
        .route("/v1/containers/{reference}", get(inspect).delete(remove))
        .route("/v1/containers/{reference}/logs", get(logs))
        .route("/v1/containers/{reference}/wait", post(wait))
        .route("/v1/containers/{reference}/stop", post(stop))
        .route("/v1/containers/{reference}/start", post(start))
        .route("/v1/containers/{reference}/restart", post(restart))
        .route("/v1/containers/{reference}/kill", post(kill))
        .route("/v1/containers/{reference}/update", post(update))
        .route("/v1/containers/{reference}/top", get(top))
        .route("/v1/containers/{reference}/rename", post(rename))
        .route("/v1/containers/{reference}/exec", post(exec))
        .route("/v1/containers/{reference}/attach", get(attach))
        .route("/v1/images", get(list_images))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/load", post(load_images))
        .route("/v1/auth", post(login))
        .route("/v1/auth/{registry}", axum::routing::delete(logout))
        .route(
            "/v1/images/{*reference}",
            get(inspect_image).delete(remove_image),
        )
        .route("/v1/ports", get(ports))
        .route("/v1/stats", get(stats))
        .route("/v1/events", get(events))
        .route("/v1/engine/containers", post(admit_engine))
        .route(
            "/v1/engine/containers/{id}",
            axum::routing::delete(release_engine),
        )
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
    let rows_root = pin_root.clone();
    let health = tokio::task::spawn_blocking(move || crate::datapath::read_health(&pin_root)).await;
    let health = health.ok().and_then(Result::ok);
    let rows = tokio::task::spawn_blocking(move || crate::datapath::read_row_use(&rows_root)).await;
    let port_rows = (rows.ok().and_then(Result::ok))
        .map(|(capacity, given)| crate::api::PortRowUse { capacity, given });
    let devices = tokio::task::spawn_blocking(crate::datapath::device_pacing).await;
    Json(Info {
        devices: devices.ok().and_then(Result::ok).unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        bpf_dir: config.bpf_dir.display().to_string(),
        cgroup_parent: config.cgroup_parent.clone(),
        events_lost: health.map(|health| health.events_lost),
        traffic_table_full: health.map(|health| health.traffic_table_full),
        features: crate::datapath::KernelFeatures::host().report(config.tc_attach),
        port_rows,
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
        .map(|record| ContainerView::from(&**record))
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
    let options = daemon.registry_options(request.insecure_registries);
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

/// `POST /v1/auth`: the password is checked against the registry, stored, and never logged.
async fn login(State(daemon): State<Shared>, body: Bytes) -> Reply {
    let request: LoginRequest = parse_body(&body)?;
    let options = daemon.registry_options(request.insecure_registries);
    let credentials = Credentials {
        username: request.username,
        secret: request.password,
    };
    let registry = if request.registry.is_empty() {
        "docker.io"
    } else {
        &request.registry
    };
    let registry = daemon
        .host
        .login(registry, &credentials, &options)
        .await
        .map_err(|error| {
            tracing::warn!(registry, %error, "login failed");
            ApiError::from(&error)
        })?;
    tracing::info!(%registry, username = %credentials.username, "logged in");
    Ok(Json(AuthReply {
        registry,
        status: "Login Succeeded".into(),
    })
    .into_response())
}

/// `DELETE /v1/auth/REGISTRY`.
async fn logout(State(daemon): State<Shared>, UrlPath(registry): UrlPath<String>) -> Reply {
    let options = daemon.registries.clone();
    let (registry, removed) =
        blocking(&daemon, move |host| host.logout(&registry, &options)).await?;
    tracing::info!(%registry, removed, "logged out");
    let status = if removed { "Removed" } else { "Not logged in" };
    Ok(Json(AuthReply {
        registry,
        status: status.into(),
    })
    .into_response())
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
        let max_file = record.log_limits.max_file;
        let path = host.store.log_path(&record.id);
        let mut reader = match LogReader::from_first_file(log, &path, max_file) {
            Ok(reader) => reader,
            Err(error) => {
                let message = format!("cannot read {}: {error}", path.display());
                send(&AttachEvent::Error(ApiError::new("internal", message)));
                return;
            }
        };
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
        if !send_available(reader, send) {
            return false;
        }
        if complete {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends every entry written so far, a batch at a time; false if the client left.
fn send_available(reader: &mut LogReader, send: &mut dyn FnMut(LogEntry) -> bool) -> bool {
    loop {
        let entries = reader.next_entries().unwrap_or_default();
        if entries.is_empty() {
            return true;
        }
        for entry in entries {
            if !send(entry) {
                return false;
            }
        }
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
    let (id, log_path, max_file) = blocking(&daemon, move |host| {
        let record = host.own_container(host.inspect(&reference)?, "logs")?;
        let path = host.store.log_path(&record.id);
        Ok((record.id, path, record.log_limits.max_file))
    })
    .await?;
    let mut reader = LogReader::open(&log_path, max_file).map_err(|e| {
        ApiError::new(
            "internal",
            format!("cannot open {}: {e}", log_path.display()),
        )
    })?;
    Ok(stream_lines(daemon.clone(), move |host, send| {
        if let Some(count) = query.tail {
            for entry in reader.tail(count).unwrap_or_default() {
                if !send(&entry) {
                    return;
                }
            }
        }
        if query.follow {
            follow(host, &id, &mut reader, &mut |entry| send(&entry));
        } else {
            send_available(&mut reader, &mut |entry| send(&entry));
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

async fn start(State(daemon): State<Shared>, UrlPath(reference): UrlPath<String>) -> Reply {
    Ok(view(
        &blocking(&daemon, move |host| host.start(&reference)).await?,
    ))
}

async fn restart(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    uri: Uri,
) -> Reply {
    let query: StopQuery = parse_query(&uri)?;
    let timeout = Duration::from_secs(query.t.unwrap_or(10));
    Ok(view(
        &blocking(&daemon, move |host| host.restart(&reference, timeout)).await?,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameQuery {
    name: String,
}

async fn rename(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    uri: Uri,
) -> Reply {
    let query: RenameQuery = parse_query(&uri)?;
    let renamed = blocking(&daemon, move |host| {
        validate_name(&query.name)?;
        host.rename(&reference, &query.name)
    })
    .await?;
    Ok(view(&renamed))
}

async fn attach(State(daemon): State<Shared>, UrlPath(reference): UrlPath<String>) -> Reply {
    let point = blocking(&daemon, move |host| host.attach_point(&reference)).await?;
    Ok(Json(point).into_response())
}

async fn exec(
    State(daemon): State<Shared>,
    UrlPath(reference): UrlPath<String>,
    body: Bytes,
) -> Reply {
    let spec: ExecSpec = parse_body(&body)?;
    let request = spec.validate().map_err(|error| ApiError::from(&error))?;
    let start = blocking(&daemon, move |host| host.exec(&reference, &request)).await?;
    Ok(Json(ExecPlan::from(start)).into_response())
}

async fn top(State(daemon): State<Shared>, UrlPath(reference): UrlPath<String>) -> Reply {
    let processes = blocking(&daemon, move |host| host.top(&reference)).await?;
    Ok(Json(processes).into_response())
}

/// hostnetd-runc's `create`: the container's ports claimed and its policy attached.
async fn admit_engine(State(daemon): State<Shared>, body: Bytes) -> Reply {
    let admission: EngineAdmission = parse_body(&body)?;
    let record = blocking(&daemon, move |host| {
        host.admit_engine_container(&admission.validate()?)
    })
    .await?;
    tracing::info!(id = %record.id, name = %record.name, ports = ?record.port_specs, "engine container admitted");
    Ok((StatusCode::CREATED, Json(ContainerView::from(&record))).into_response())
}

/// hostnetd-runc's `delete`: the container's ports and policy released.
async fn release_engine(State(daemon): State<Shared>, UrlPath(id): UrlPath<String>) -> Reply {
    let released = blocking(&daemon, move |host| host.release_engine_container(&id)).await?;
    if let Some(record) = &released {
        tracing::info!(id = %record.id, name = %record.name, "engine container released");
    }
    Ok(Json(EngineRelease {
        released: released.is_some(),
    })
    .into_response())
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

pub(super) async fn metrics_page(State(daemon): State<Shared>) -> Reply {
    let snapshot = blocking(&daemon, |host| host.metrics_snapshot()).await?;
    Ok((
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        metrics::render(&snapshot),
    )
        .into_response())
}
