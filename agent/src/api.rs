//! The HTTP+JSON API's types, shared by the daemon and the `hostnetd` client. docs/api.md
//! describes every endpoint.
use serde::{Deserialize, Serialize};

use crate::{
    control::ExitStatus,
    host::HostError,
    logs::LogEntry,
    ownership::OwnershipError,
    store::{ContainerRecord, PortClaim, StoreError},
};

/// Every error the API returns: an HTTP status and this body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Stable, machine-readable: not_found, ambiguous, invalid_argument, name_in_use,
    /// port_conflict, container_running, not_running, start_failed, internal.
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
            "name_in_use" | "port_conflict" | "container_running" | "not_running" => 409,
            "start_failed" => 422,
            _ => 500,
        }
    }
}

impl From<&HostError> for ApiError {
    fn from(error: &HostError) -> Self {
        let code = match error {
            HostError::Store(StoreError::NotFound(_)) => "not_found",
            HostError::Store(StoreError::Ambiguous { .. }) => "ambiguous",
            HostError::Invalid(_) | HostError::Runtime(crate::runtime::RuntimeError::User(_)) => {
                "invalid_argument"
            }
            HostError::NameInUse { .. } => "name_in_use",
            HostError::Ownership(OwnershipError::Conflicts(_)) => "port_conflict",
            HostError::StillRunning { .. } => "container_running",
            HostError::NotRunning { .. } => "not_running",
            HostError::StartFailed(_) => "start_failed",
            _ => "internal",
        };
        Self::new(code, error.to_string())
    }
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
    /// The `hostnetd monitor` process that holds the container's stdio.
    pub monitor_pid: u32,
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
            },
            monitor_pid: record.supervisor.pid,
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
}

/// Seconds since the epoch as `2026-11-22T10:04:05Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_359_063), "2026-11-22T14:51:03Z");
    }

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
