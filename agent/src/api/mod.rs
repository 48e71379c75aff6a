//! The HTTP+JSON API: every body the daemon and the `hostnetd` client exchange, the requests
//! validated into what the Host runs, and the errors as codes and statuses. docs/api.md
//! describes every endpoint.
pub mod client;
pub mod engine;
pub mod exec;
pub mod run;
pub mod update;

/// How bandwidth limits work through a device (`GET /v1/info`'s `devices`).
pub use crate::datapath::PacingMode;
pub use crate::host::{attach::AttachPoint, control::ExitStatus, stats::ContainerStats};
/// The frames of an attach socket.
pub use crate::runtime::attach::Frame;
/// A row of `GET /v1/containers/REF/top`.
pub use crate::sys::process::ProcessInfo;
pub use run::RunSpec;
pub use update::PolicyUpdate;

use serde::{Deserialize, Serialize};

use crate::{
    host::HostError,
    images::{display_name, ImageError, ImageRecord, RunConfig},
    ownership::OwnershipError,
    policy::logs::{DisplaySize, LogLimits},
    runtime::{logs::LogEntry, RuntimeError},
    store::{traffic::TrafficStats, ContainerRecord, PortClaim, StoreError},
    sys::time::rfc3339,
};

/// Every error the API returns: an HTTP status and this body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Stable, machine-readable: not_found, ambiguous, invalid_argument, name_in_use,
    /// port_conflict, table_full, container_running, not_running, engine_owned, start_failed,
    /// exec_failed, no_such_image, image_in_use, registry_error, unauthorized, corrupt_image,
    /// internal.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(&self) -> u16 {
        match self.code.as_str() {
            "not_found" => 404,
            "ambiguous" | "invalid_argument" => 400,
            "name_in_use" | "port_conflict" | "table_full" | "container_running"
            | "not_running" | "engine_owned" => 409,
            "start_failed" | "exec_failed" | "corrupt_image" => 422,
            "no_such_image" => 404,
            "image_in_use" => 409,
            "registry_error" => 502,
            "unauthorized" => 401,
            _ => 500,
        }
    }
}

impl From<&HostError> for ApiError {
    fn from(error: &HostError) -> Self {
        let code = match error {
            HostError::Store(StoreError::NotFound(_)) => "not_found",
            HostError::Store(StoreError::Ambiguous { .. }) => "ambiguous",
            HostError::Invalid(_) | HostError::Runtime(RuntimeError::User(_)) => "invalid_argument",
            HostError::NameInUse { .. } => "name_in_use",
            HostError::Ownership(OwnershipError::Conflicts(_)) => "port_conflict",
            HostError::TableFull(_) => "table_full",
            HostError::StillRunning { .. } => "container_running",
            HostError::NotRunning { .. } => "not_running",
            HostError::StartFailed(_) => "start_failed",
            HostError::ExecFailed { .. } => "exec_failed",
            HostError::EngineOwned { .. } => "engine_owned",
            HostError::Datapath(crate::datapath::DatapathError::ContainerDepth { .. }) => {
                "table_full"
            }
            HostError::Image(error) => image_error_code(error),
            _ => "internal",
        };
        Self::new(code, error.to_string())
    }
}

fn image_error_code(error: &ImageError) -> &'static str {
    match error {
        ImageError::NotFound(_) => "no_such_image",
        ImageError::InvalidReference { .. } | ImageError::InvalidRegistry { .. } => {
            "invalid_argument"
        }
        ImageError::Unauthorized { .. } => "unauthorized",
        ImageError::Login { .. } => "registry_error",
        ImageError::Ambiguous { .. } => "ambiguous",
        ImageError::InUse { .. } => "image_in_use",
        ImageError::Registry { .. } => "registry_error",
        ImageError::DigestMismatch { .. } | ImageError::Corrupt(_) | ImageError::Layer(_) => {
            "corrupt_image"
        }
        ImageError::File(_) | ImageError::Io { .. } | ImageError::Credentials(_) => "internal",
    }
}

/// The answer to `DELETE /v1/engine/containers/ID`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineRelease {
    /// False when hostnetd did not know the container (never admitted, or released already).
    pub released: bool,
}

/// `inspect`: one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub state: String,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub rootfs: String,
    /// The image as given (`nginx:latest`), when the container runs one.
    pub image: Option<String>,
    pub image_id: Option<String>,
    /// The image's ExposedPorts (what `--ports` defaults to).
    pub exposed_ports: Vec<String>,
    pub command: Vec<String>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub restart_policy: String,
    pub restart_count: u32,
    /// The cgroup that owns the ports (the process runs in its `ctr` child).
    pub cgroup: String,
    pub cgroup_id: u64,
    pub ports: Vec<PortView>,
    pub policy: PolicyView,
    /// The `hostnetd monitor` process that holds the container's stdio (an engine's
    /// container: its main process).
    pub monitor_pid: u32,
    /// The engine that runs the container through hostnetd-runc (docker, containerd, podman,
    /// kubernetes, oci); None for hostnetd's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The engine's name for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_name: Option<String>,
    /// Its traffic and denials: live figures while it runs, the last ones once it exited.
    pub traffic: Option<TrafficStats>,
    /// It has a terminal (`run -t`).
    #[serde(default)]
    pub tty: bool,
    /// Its stdin is open to attached clients (`run -i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// How its output is kept (as docker's HostConfig.LogConfig); None for an engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_config: Option<LogConfigView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfigView {
    /// `json-file`: JSON lines under the state directory, rotated.
    pub driver: String,
    /// `max-size` (`10m`) and `max-file` (`5`), as `--log-opt` takes them.
    pub config: std::collections::BTreeMap<String, String>,
}

impl From<LogLimits> for LogConfigView {
    fn from(limits: LogLimits) -> Self {
        Self {
            driver: "json-file".into(),
            config: [
                ("max-size", DisplaySize(limits.max_size).to_string()),
                ("max-file", limits.max_file.to_string()),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// `80/tcp`.
    pub port: String,
    /// None: every local address.
    pub addresses: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// The --ports values as given.
    pub ports: Vec<String>,
    /// Binds to any other non-zero port fail with EACCES.
    pub undeclared_binds: String,
    pub egress_allow: Vec<String>,
    pub egress_deny: Vec<String>,
    /// What egress no rule matches gets: "allowed", or "denied (EACCES)" when there are allow
    /// rules.
    pub egress_default: String,
    /// Sources allowed to reach the owned ports; empty: every source.
    pub ingress_allow: Vec<String>,
    /// "allowed" with --cap-add NET_RAW, else "denied (EPERM)".
    pub raw_sockets: String,
    /// The output limit, `RATE[:BURST]`; None: unlimited.
    #[serde(default)]
    pub egress_rate: Option<String>,
    /// The limit on what reaches the owned ports.
    #[serde(default)]
    pub ingress_rate: Option<String>,
}

impl From<&ContainerRecord> for ContainerView {
    fn from(record: &ContainerRecord) -> Self {
        Self {
            id: record.id.clone(),
            name: record.name.clone(),
            state: record.state.as_str().to_string(),
            pid: record.pid,
            exit_code: record.exit_code,
            rootfs: record.rootfs.display().to_string(),
            image: (record.image.as_ref().map(|image| image.name.clone()))
                .or_else(|| record.engine.as_ref().and_then(|e| e.image.clone())),
            image_id: record.image.as_ref().map(|image| image.id.clone()),
            exposed_ports: (record.image.as_ref())
                .map(|image| image.exposed_ports.clone())
                .unwrap_or_default(),
            command: record.command.clone(),
            created: rfc3339(record.created_at),
            started: record.started_at.map(rfc3339),
            finished: record.finished_at.map(rfc3339),
            restart_policy: record.restart.to_string(),
            restart_count: record.restart_count,
            cgroup: record.cgroup.path.display().to_string(),
            cgroup_id: record.cgroup.id,
            ports: record.ports.iter().map(PortView::from).collect(),
            policy: PolicyView {
                ports: record.port_specs.clone(),
                undeclared_binds: "denied (EACCES)".into(),
                egress_allow: record.egress_allow.clone(),
                egress_deny: record.egress_deny.clone(),
                ingress_allow: record.ingress_allow.clone(),
                egress_default: if record.egress_allow.is_empty() {
                    "allowed".into()
                } else {
                    "denied (EACCES)".into()
                },
                raw_sockets: if record.allow_raw_sockets {
                    "allowed".into()
                } else {
                    "denied (EPERM)".into()
                },
                egress_rate: record.egress_rate.clone(),
                ingress_rate: record.ingress_rate.clone(),
            },
            monitor_pid: record.supervisor.pid,
            engine: record.engine.as_ref().map(|engine| engine.engine.clone()),
            engine_name: record.engine.as_ref().map(|engine| engine.name.clone()),
            traffic: record.final_traffic.clone(),
            tty: record.tty,
            open_stdin: record.open_stdin,
            log_config: record
                .is_own()
                .then(|| LogConfigView::from(record.log_limits)),
        }
    }
}

impl From<&PortClaim> for PortView {
    fn from(claim: &PortClaim) -> Self {
        Self {
            port: claim.port.to_string(),
            addresses: claim
                .addresses
                .as_ref()
                .map(|list| list.iter().map(ToString::to_string).collect()),
        }
    }
}

impl ContainerView {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// `POST /v1/containers` answers with this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub id: String,
    pub name: String,
}

/// `GET /v1/ports`: one owned port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    pub port: String,
    pub addresses: Option<Vec<String>>,
    pub container_id: String,
    pub container_name: String,
}

/// One line of an attached `run`'s stream (`POST /v1/containers?attach=true`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachEvent {
    Created(Created),
    Log(LogEntry),
    Exit(ExitStatus),
    Error(ApiError),
}

/// `GET /v1/info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub pid: u32,
    pub bpf_dir: String,
    pub cgroup_parent: String,
    /// Denial events the datapath dropped because the event ring was full (None: unreadable).
    #[serde(default)]
    pub events_lost: Option<u64>,
    /// Packets the datapath could not count because a traffic table was full (None:
    /// unreadable).
    #[serde(default)]
    pub traffic_table_full: Option<u64>,
    /// The kernel's BPF features as probed, and what hostnetd does with or without each.
    #[serde(default)]
    pub features: Vec<crate::datapath::FeatureReport>,
    /// Each interface's root qdisc and how bandwidth limits work through it.
    #[serde(default)]
    pub devices: Vec<crate::datapath::DevicePacing>,
    /// Owned ports' counter rows (`--traffic-rows`): how many there are and how many are given
    /// (None: unreadable).
    #[serde(default)]
    pub port_rows: Option<PortRowUse>,
}

/// The per-CPU array of owned ports' counter rows: ports claimed once all `capacity` are
/// given are counted in hashes, exactly but at a higher cost per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRowUse {
    pub capacity: u32,
    pub given: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_codes_and_statuses() {
        let missing = HostError::Store(StoreError::NotFound("web9".into()));
        let api = ApiError::from(&missing);
        assert_eq!((api.code.as_str(), api.status()), ("not_found", 404));
        assert_eq!(api.message, "no such container: web9");
        let running = HostError::StillRunning {
            name: "web1".into(),
            state: "running",
        };
        assert_eq!(ApiError::from(&running).status(), 409);
    }
}

/// `images` and `image inspect`: one stored image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageView {
    /// `sha256:...`, the digest of its configuration.
    pub id: String,
    /// As docker shows them: `nginx:latest`, `registry:5000/app:v2`.
    pub tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Unpacked size of its layers, in bytes.
    pub size: u64,
    /// When the image was built (from its configuration), if it says.
    pub created: Option<String>,
    /// When it was pulled or loaded here.
    pub stored: String,
    pub architecture: String,
    pub os: String,
    /// The layers' diff IDs, bottom first.
    pub layers: Vec<String>,
    pub config: RunConfig,
}

impl From<&ImageRecord> for ImageView {
    fn from(image: &ImageRecord) -> Self {
        Self {
            id: image.id.to_string(),
            tags: image.tags.iter().map(|tag| display_name(tag)).collect(),
            repo_digests: image.repo_digests.clone(),
            size: image.size,
            created: image.config.created.clone(),
            stored: rfc3339(image.stored_at),
            architecture: image.config.architecture.clone(),
            os: image.config.os.clone(),
            layers: (image.layers.iter())
                .map(|layer| layer.diff_id.to_string())
                .collect(),
            config: image.config.config.clone(),
        }
    }
}

/// The body of `POST /v1/images/pull`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullRequest {
    pub reference: String,
    /// Registries (`host[:port]`) to reach over plain HTTP, besides the daemon's own list.
    pub insecure_registries: Vec<String>,
}

/// The body of `POST /v1/auth`. Its Debug form hides the password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginRequest {
    /// `host[:port]` [default: docker.io].
    pub registry: String,
    pub username: String,
    pub password: String,
    /// Registries (`host[:port]`) to reach over plain HTTP, besides the daemon's own list.
    pub insecure_registries: Vec<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The answer to `POST /v1/auth` and `DELETE /v1/auth/REGISTRY`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthReply {
    /// The registry as stored: `host[:port]`.
    pub registry: String,
    /// `Login Succeeded`, `Removed`, or `Not logged in`.
    pub status: String,
}

/// The body of `POST /v1/images/load`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadRequest {
    /// An absolute path on the daemon's host to a docker-archive or oci-archive tarball.
    pub path: String,
}
