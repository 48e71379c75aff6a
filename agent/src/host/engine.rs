//! Containers an engine (Docker, containerd, podman, Kubernetes) runs through hostnetd-runc:
//! admitted once `runc create` has made their cgroup and before their first instruction,
//! released at `runc delete`. The engine owns the process, the bundle and the cgroup; hostnetd
//! owns the ports and the policy, exactly as for its own containers.
use super::{Disposition, Host, HostError};
use crate::{
    datapath::{Bandwidth, CgroupHistory, KernelPolicy},
    ownership,
    policy::{
        rules::{Action, RuleSet},
        OwnedPort, PortDeclarations,
    },
    store::{CgroupRecord, ContainerRecord, ContainerState, EngineContainer},
    sys::{process::ProcessIdentity, time::now},
};

use super::run::claims;

/// A validated engine admission (see `api::engine`).
#[derive(Clone, Debug)]
pub struct EngineRequest {
    /// The runc container ID the engine chose.
    pub id: String,
    pub engine: EngineContainer,
    /// The container's cgroup as /proc/PID/cgroup names it (`/docker/<id>`).
    pub cgroup: String,
    /// The container's init process, waiting for `runc start`: the container lives as long as it.
    pub init: ProcessIdentity,
    pub command: Vec<String>,
    pub ports: PortDeclarations,
    pub egress: RuleSet,
    pub ingress: RuleSet,
    pub bandwidth: Bandwidth,
}

impl EngineRequest {
    /// The name hostnetd shows: the engine's name for it under the engine's (`docker/web`).
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.engine.engine, self.engine.name)
    }
}

impl Host {
    /// Claims the container's ports and attaches its policy to its cgroup, under the host lock:
    /// a conflict is refused naming the owner, and of racing admissions exactly one wins. On
    /// any failure nothing of it is left behind.
    pub fn admit_engine_container(
        &self,
        request: &EngineRequest,
    ) -> Result<ContainerRecord, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        let records = self.reconcile(&mut datapath)?;
        let name = request.display_name();
        if let Some(existing) = (records.iter()).find(|r| r.id == request.id || r.name == name) {
            return Err(HostError::Invalid(format!(
                "{} is already admitted as container {} ({}); hostnetd-runc delete it first",
                request.id,
                existing.name,
                existing.short_id()
            )));
        }
        let ports: Vec<OwnedPort> = request.ports.ports().collect();
        ownership::check_available(datapath.owners_ref(), &records, &self.procfs, &ports, None)?;
        let policy = KernelPolicy {
            egress: request.egress.clone(),
            ingress: request.ingress.clone(),
            allow_raw_sockets: false,
            bandwidth: request.bandwidth,
        };
        self.check_room_for(&datapath, &policy, &request.ports, &records, &ports)?;
        let cgroup = self.cgroup.open(&request.cgroup)?;
        datapath.policies().add_container_level(cgroup.level)?;
        let record = ContainerRecord {
            id: request.id.clone(),
            name,
            rootfs: Default::default(),
            image: None,
            command: request.command.clone(),
            port_specs: (request.ports.specs().iter())
                .map(ToString::to_string)
                .collect(),
            ports: claims(&request.ports),
            egress_allow: request.egress.texts(Action::Allow),
            egress_deny: request.egress.texts(Action::Deny),
            ingress_allow: request.ingress.texts(Action::Allow),
            allow_raw_sockets: false,
            egress_rate: request.bandwidth.egress.map(|limit| limit.to_string()),
            ingress_rate: request.bandwidth.ingress.map(|limit| limit.to_string()),
            cgroup: CgroupRecord::from(&cgroup),
            update_in_progress: false,
            state: ContainerState::Running,
            supervisor: request.init,
            restart: Default::default(),
            // Its output is the engine's to keep.
            log_limits: Default::default(),
            restart_count: 0,
            stop_requested: false,
            pid: Some(request.init.pid),
            exit_code: None,
            auto_remove: true,
            created_at: now(),
            started_at: Some(now()),
            finished_at: None,
            final_traffic: None,
            engine: Some(request.engine.clone()),
            tty: false,
            open_stdin: false,
        };
        // An engine's container ends with the machine: its record is forgotten then.
        self.store.save_until_reboot(&record)?;
        // The engine made the cgroup, and may have run a container in it before.
        let history = CgroupHistory::MayHaveEntries;
        if let Err(error) = self.enforce(&mut datapath, &record, &ports, &cgroup, history) {
            self.release(&mut datapath, &record, Disposition::Forget)?;
            return Err(error);
        }
        Ok(record)
    }

    /// Releases an engine's container (its `runc delete`); one that is not known (never
    /// admitted: it had its own network namespace; or already released) is fine.
    pub fn release_engine_container(&self, id: &str) -> Result<Option<ContainerRecord>, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        let Some(record) = self.store.get(id)? else {
            return Ok(None);
        };
        if record.is_own() {
            return Err(HostError::Invalid(format!(
                "container {} is hostnetd's own, not an engine's: remove it with `hostnetd rm {}`",
                record.name, record.name
            )));
        }
        self.release(&mut datapath, &record, Disposition::Forget)?;
        Ok(Some(record))
    }

    /// `record` itself when hostnetd runs it; refused, naming the engine's own command, when
    /// an engine does.
    pub(crate) fn own_container(
        &self,
        record: ContainerRecord,
        verb: &'static str,
    ) -> Result<ContainerRecord, HostError> {
        match &record.engine {
            None => Ok(record),
            Some(engine) => Err(HostError::EngineOwned {
                name: record.name.clone(),
                engine: engine.engine.clone(),
                engine_name: engine.name.clone(),
                verb,
            }),
        }
    }
}
