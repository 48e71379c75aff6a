//! `run`: admit a container (claim its ports), start it through runc with enforcement attached
//! before its first instruction, wait for it, and release everything when it exits.
use std::{fs, path::PathBuf};

use crate::{
    datapath::Datapath,
    host::{Disposition, Host, HostError},
    ownership,
    policy::{OwnedPort, PortDeclarations},
    runtime::Capabilities,
    runtime::{mount_rootfs, oci_config, resolve_user, ProcessSpec, RootfsSource, Volume},
    store::{CgroupRecord, ContainerRecord, ContainerState, PortClaim},
    supervise::{self, become_subreaper, new_container_id, wait_exit_code, SignalForwarder},
};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A validated `hostnetd run`.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub name: Option<String>,
    pub rootfs: RootfsSource,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub volumes: Vec<Volume>,
    pub ports: PortDeclarations,
    pub capabilities: Capabilities,
    pub auto_remove: bool,
}

impl Host {
    /// Runs a container in the foreground and returns its exit code.
    pub fn run(&self, request: RunRequest) -> Result<i32, HostError> {
        let process = self.process_spec(&request)?;
        let forwarder = SignalForwarder::install()
            .map_err(|source| io_error("install signal handlers for", "hostnetd", source))?;
        let record = self.admit(&request)?;
        let outcome = self.start_and_wait(&record, &process, &forwarder);
        let disposition = match (&outcome, request.auto_remove) {
            (Ok(_), true) | (Err(_), _) => Disposition::Forget,
            (Ok(code), false) => Disposition::Keep(Some(*code)),
        };
        let (_lock, mut datapath) = self.lock_datapath()?;
        self.release(&mut datapath, &record, disposition)?;
        outcome
    }

    fn process_spec(&self, request: &RunRequest) -> Result<ProcessSpec, HostError> {
        let RootfsSource::HostDirectory(rootfs) = &request.rootfs;
        let user = resolve_user(rootfs, request.user.as_deref().unwrap_or(""))?;
        let mut env = vec![DEFAULT_PATH.to_string()];
        env.extend(request.env.iter().cloned());
        Ok(ProcessSpec {
            args: request.args.clone(),
            env,
            cwd: request.workdir.clone().unwrap_or_else(|| "/".into()),
            user,
            hostname: String::new(),
            capabilities: request.capabilities.clone(),
            volumes: request.volumes.clone(),
        })
    }

    /// Under the host lock: refuses conflicts, then claims the ports, reserves them, and attaches
    /// the container's hooks to its new cgroup. On any failure nothing is left behind.
    fn admit(&self, request: &RunRequest) -> Result<ContainerRecord, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        self.reconcile(&mut datapath)?;
        let records = self.store.list()?;
        let id = new_container_id().map_err(|e| io_error("generate an id for", "container", e))?;
        let name = request
            .name
            .clone()
            .unwrap_or_else(|| format!("hostnetd-{}", &id[..12]));
        if let Some(existing) = records.iter().find(|record| record.name == name) {
            return Err(HostError::Invalid(format!(
                "the name {name:?} is already used by container {}; pick another --name or remove it with `hostnetd rm {name}`",
                existing.short_id()
            )));
        }
        let ports: Vec<OwnedPort> = request.ports.ports().collect();
        ownership::check_available(datapath.owners_ref(), &records, &self.procfs, &ports)?;
        let cgroup = self
            .cgroup
            .create(&format!("{}/{id}", self.config.cgroup_parent))?;
        let record = ContainerRecord {
            id,
            name,
            rootfs: match &request.rootfs {
                RootfsSource::HostDirectory(dir) => dir.clone(),
            },
            command: request.args.clone(),
            port_specs: request
                .ports
                .specs()
                .iter()
                .map(ToString::to_string)
                .collect(),
            ports: claims(&request.ports),
            cgroup: CgroupRecord {
                path: cgroup.path.clone(),
                id: cgroup.id,
                level: cgroup.level,
            },
            state: ContainerState::Created,
            supervisor: Host::identity(),
            pid: None,
            exit_code: None,
            auto_remove: request.auto_remove,
            created_at: supervise::now(),
            started_at: None,
            finished_at: None,
        };
        self.store.save(&record)?;
        if let Err(error) = self.enforce(&mut datapath, &record, &ports) {
            self.release(&mut datapath, &record, Disposition::Forget)?;
            return Err(error);
        }
        Ok(record)
    }

    fn enforce(
        &self,
        datapath: &mut Datapath,
        record: &ContainerRecord,
        ports: &[OwnedPort],
    ) -> Result<(), HostError> {
        let cgroup = self
            .cgroup
            .open(&format!("{}/{}", self.config.cgroup_parent, record.id))?;
        ownership::claim(datapath.owners(), &cgroup, &record.ports)?;
        ownership::sync_reserved_ports(&self.store, &self.reserved, &self.store.list()?)?;
        // A host process may have bound a port between the check and the claim; now that the
        // claim blocks new binds, one more look closes that window.
        let late = ownership::host_conflicts(&self.procfs, ports)?;
        if !late.is_empty() {
            return Err(ownership::OwnershipError::Conflicts(late).into());
        }
        datapath.attach_container(&record.id, &cgroup)?;
        Ok(())
    }

    fn start_and_wait(
        &self,
        record: &ContainerRecord,
        process: &ProcessSpec,
        forwarder: &SignalForwarder,
    ) -> Result<i32, HostError> {
        let bundle = self.bundle_dir(&record.id);
        mount_rootfs(
            &RootfsSource::HostDirectory(record.rootfs.clone()),
            &bundle.join("rootfs"),
        )?;
        let mut process = process.clone();
        process.hostname = record.name.clone();
        process.env.push(format!("HOSTNAME={}", record.name));
        let cgroups_path = format!("/{}/{}", self.config.cgroup_parent, record.id);
        let config = oci_config(&process, "rootfs", &cgroups_path);
        let config_path = bundle.join("config.json");
        fs::write(&config_path, config.to_string())
            .map_err(|source| io_error("write", config_path.display(), source))?;
        become_subreaper().map_err(|source| io_error("become subreaper for", "runc", source))?;
        let pid_file = bundle.join("pid");
        let log_file = bundle.join("runc.log");
        self.runc
            .create(&record.id, &bundle, &pid_file, &log_file)
            .map_err(crate::runtime::RuntimeError::from)?;
        let pid = read_pid(&pid_file)?;
        forwarder.forward_to(pid);
        if let Some(signal) = forwarder.interrupted_early() {
            return Ok(128 + signal);
        }
        self.store.save(&ContainerRecord {
            state: ContainerState::Running,
            pid: Some(pid),
            started_at: Some(supervise::now()),
            ..record.clone()
        })?;
        self.runc
            .start(&record.id)
            .map_err(crate::runtime::RuntimeError::from)?;
        wait_exit_code(pid).map_err(|source| io_error("wait for", format!("pid {pid}"), source))
    }
}

fn claims(ports: &PortDeclarations) -> Vec<PortClaim> {
    ports
        .ports()
        .map(|port| PortClaim {
            port,
            addresses: ports.addresses(port).map(<[_]>::to_vec),
        })
        .collect()
}

fn read_pid(path: &std::path::Path) -> Result<u32, HostError> {
    let text =
        fs::read_to_string(path).map_err(|source| io_error("read", path.display(), source))?;
    text.trim()
        .parse()
        .map_err(|_| HostError::Invalid(format!("runc wrote no pid to {}", path.display())))
}

fn io_error(
    action: &'static str,
    what: impl std::fmt::Display,
    source: std::io::Error,
) -> HostError {
    HostError::Io {
        action,
        path: PathBuf::from(what.to_string()),
        source,
    }
}

impl Host {
    /// Every port a live container owns, with its owner, from the records.
    pub fn owned_ports(&self) -> Result<Vec<(PortClaim, ContainerRecord)>, HostError> {
        let records = self.store.list()?;
        Ok(records
            .iter()
            .filter(|record| record.state != ContainerState::Exited)
            .flat_map(|record| {
                record
                    .ports
                    .iter()
                    .map(|claim| (claim.clone(), record.clone()))
            })
            .collect())
    }

    /// Every owned slot of the kernel's owner table (a full scan: for checks, not hot paths).
    pub fn kernel_owners(&self) -> Result<Vec<(OwnedPort, hostnetd_common::PortOwner)>, HostError> {
        let (_lock, datapath) = self.lock_datapath()?;
        Ok(datapath.owners_ref().all()?)
    }
}

/// Container names as docker accepts them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 long.
pub fn validate_name(name: &str) -> Result<(), HostError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "invalid container name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

pub fn validate_workdir(workdir: &str) -> Result<(), HostError> {
    if workdir.starts_with('/') {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "invalid working directory {workdir:?}: it must be an absolute path inside the container"
        )))
    }
}

/// `KEY=VALUE` as given; a bare `KEY` takes this process's value, and is dropped when unset.
pub fn parse_env(entry: &str) -> Option<String> {
    if entry.contains('=') {
        return Some(entry.to_string());
    }
    std::env::var(entry)
        .ok()
        .map(|value| format!("{entry}={value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert!(validate_name("web1").is_ok());
        assert!(validate_name("db_2.prod-x").is_ok());
        for bad in ["", "-web", "web one", "web/1", "ü"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn env_entries_pass_or_inherit() {
        assert_eq!(parse_env("A=b=c").as_deref(), Some("A=b=c"));
        assert_eq!(parse_env("HOSTNETD_SURELY_UNSET_VARIABLE"), None);
        std::env::set_var("HOSTNETD_TEST_ENV", "x");
        assert_eq!(
            parse_env("HOSTNETD_TEST_ENV").as_deref(),
            Some("HOSTNETD_TEST_ENV=x")
        );
    }

    #[test]
    fn workdir_must_be_absolute() {
        assert!(validate_workdir("/srv").is_ok());
        assert!(validate_workdir("srv").is_err());
    }
}
