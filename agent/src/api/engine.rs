//! The body of `POST /v1/engine/containers` (hostnetd-runc's admission of an engine's
//! container, after `runc create`) and its validation into the request the Host admits.
use serde::{Deserialize, Serialize};

use super::run::rate_flag;
use crate::{
    datapath::Bandwidth,
    host::{engine::EngineRequest, HostError},
    policy::{parse_declarations, rules::RuleSet},
    store::EngineContainer,
    sys::process::ProcessIdentity,
};

/// What hostnetd-runc found in the bundle and the engine's own records at `create`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineAdmission {
    /// The runc container ID.
    pub id: String,
    /// `docker`, `containerd`, `podman`, `kubernetes` or `oci`.
    pub engine: String,
    /// The engine's name for the container (docker's `--name`), else its ID.
    pub name: String,
    /// The container's cgroup as /proc/PID/cgroup names it: `/docker/<id>`.
    pub cgroup: String,
    /// The container's init process (`runc create` has made it; `runc start` runs it).
    pub init_pid: u32,
    pub command: Vec<String>,
    /// The image as the engine names it.
    pub image: Option<String>,
    /// The `io.hostnetd.*` declarations, in `hostnetd run`'s grammars.
    pub ports: Vec<String>,
    pub egress_allow: Vec<String>,
    pub egress_deny: Vec<String>,
    pub ingress_allow: Vec<String>,
    /// Bandwidth limits, `RATE[:BURST]`.
    pub egress_rate: Option<String>,
    pub ingress_rate: Option<String>,
}

/// The label and annotation names that declare an engine's container's policy.
pub const PORTS_KEY: &str = "io.hostnetd.ports";
pub const EGRESS_ALLOW_KEY: &str = "io.hostnetd.egress-allow";
pub const EGRESS_DENY_KEY: &str = "io.hostnetd.egress-deny";
pub const INGRESS_ALLOW_KEY: &str = "io.hostnetd.ingress-allow";
pub const EGRESS_RATE_KEY: &str = "io.hostnetd.egress-rate";
pub const INGRESS_RATE_KEY: &str = "io.hostnetd.ingress-rate";

impl EngineAdmission {
    pub fn validate(&self) -> Result<EngineRequest, HostError> {
        let invalid = |message: String| HostError::Invalid(message);
        validate_id(&self.id)?;
        if self.engine.is_empty() || !self.engine.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(invalid(format!(
                "engine {:?}: give the engine's name in lower case (docker, containerd, podman, kubernetes, oci)",
                self.engine
            )));
        }
        if self.name.is_empty()
            || self
                .name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(format!(
                "container name {:?}: it must be non-empty, without spaces or control characters",
                self.name
            )));
        }
        if !self.cgroup.starts_with('/') || self.cgroup.split('/').any(|part| part == "..") {
            return Err(invalid(format!(
                "cgroup {:?}: give the path /proc/PID/cgroup shows, from the cgroup2 root",
                self.cgroup
            )));
        }
        let init = ProcessIdentity::of(self.init_pid).ok_or_else(|| {
            invalid(format!(
                "the container's init process {} is gone: its runc create failed or it was deleted",
                self.init_pid
            ))
        })?;
        let ports =
            parse_declarations(&self.ports).map_err(|e| invalid(format!("{PORTS_KEY}: {e}")))?;
        let egress = RuleSet::parse(&self.egress_allow, &self.egress_deny)
            .map_err(|e| invalid(format!("{EGRESS_ALLOW_KEY}/{EGRESS_DENY_KEY}: {e}")))?;
        let ingress = RuleSet::parse_ingress(&self.ingress_allow)
            .map_err(|e| invalid(format!("{INGRESS_ALLOW_KEY}: {e}")))?;
        let bandwidth = Bandwidth {
            egress: rate_flag(EGRESS_RATE_KEY, self.egress_rate.as_deref())?,
            ingress: rate_flag(INGRESS_RATE_KEY, self.ingress_rate.as_deref())?,
        };
        Ok(EngineRequest {
            id: self.id.clone(),
            engine: EngineContainer {
                engine: self.engine.clone(),
                name: self.name.clone(),
                image: self.image.clone(),
            },
            cgroup: self.cgroup.clone(),
            init,
            command: self.command.clone(),
            ports,
            egress,
            ingress,
            bandwidth,
        })
    }
}

/// A runc container ID becomes a file name in the store: runc's own rule (letters, digits,
/// `_+-.`, not `.` or `..`) keeps it one.
pub fn validate_id(id: &str) -> Result<(), HostError> {
    let valid = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && (id.bytes()).all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "container ID {id:?}: runc accepts only letters, digits and _+-. in an ID"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> EngineAdmission {
        EngineAdmission {
            id: "abc123".into(),
            engine: "docker".into(),
            name: "web".into(),
            cgroup: "/docker/abc123".into(),
            init_pid: std::process::id(),
            command: vec!["nginx".into()],
            ports: vec!["80,443".into(), "53/udp".into()],
            ..Default::default()
        }
    }

    fn error_of(admission: EngineAdmission) -> String {
        admission.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_good_admission_is_the_request_with_its_ports() {
        let request = admission().validate().unwrap();
        assert_eq!(request.display_name(), "docker/web");
        assert_eq!(request.ports.ports().count(), 3);
        assert_eq!(request.init.pid, std::process::id());
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad_ports = EngineAdmission {
            ports: vec!["http".into()],
            ..admission()
        };
        assert!(error_of(bad_ports).starts_with("io.hostnetd.ports: "));
        let bad_rule = EngineAdmission {
            egress_allow: vec!["10.0.0.0/33".into()],
            ..admission()
        };
        assert!(error_of(bad_rule).contains("io.hostnetd.egress-allow"));
        for id in ["", "..", "a/b", "a b"] {
            let bad_id = EngineAdmission {
                id: id.into(),
                ..admission()
            };
            assert!(error_of(bad_id).contains("container ID"), "{id:?}");
        }
        let escaping = EngineAdmission {
            cgroup: "/docker/../../etc".into(),
            ..admission()
        };
        assert!(error_of(escaping).contains("cgroup"));
        let gone = EngineAdmission {
            init_pid: u32::MAX,
            ..admission()
        };
        assert!(error_of(gone).contains("is gone"));
    }
}
