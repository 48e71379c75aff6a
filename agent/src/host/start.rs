//! `start` and `restart`: an exited container runs again, as docker's do. Its ports are
//! admitted again under the host lock exactly as at `run` (refused, naming the owner, when
//! another container or a host process took one meanwhile), and it keeps its name, id,
//! writable layer, log and configuration.
use std::time::Duration;

use super::{
    run::{kernel_policy, write_bundle_config},
    Disposition, Host, HostError,
};
use crate::{
    ownership,
    policy::{self, OwnedPort},
    store::{CgroupRecord, ContainerRecord, ContainerState},
};

impl Host {
    /// Starts an exited container again; one that runs already is left as it is.
    pub fn start(&self, reference: &str) -> Result<ContainerRecord, HostError> {
        let Some(record) = self.readmit(reference)? else {
            return Ok(self.store.find(reference)?);
        };
        let previous_exit = record.exit_code;
        let _ = std::fs::remove_file(self.exit_file(&record.id));
        let monitor = self
            .restore_bundle(&record)
            .and_then(|()| self.start_monitor(&record));
        let monitor = match monitor {
            Ok(monitor) => monitor,
            Err(error) => {
                let (_lock, mut datapath) = self.lock_datapath()?;
                self.release(&mut datapath, &record, Disposition::Keep(previous_exit))?;
                return Err(error);
            }
        };
        self.await_monitor(monitor, &record)?;
        Ok(self.store.get(&record.id)?.unwrap_or(record))
    }

    /// Stops the container if it runs (as `stop` does, `timeout` before SIGKILL), then starts
    /// it again.
    pub fn restart(
        &self,
        reference: &str,
        timeout: Duration,
    ) -> Result<ContainerRecord, HostError> {
        let record = self.stop(reference, timeout)?;
        self.start(&record.id)
    }

    /// Under the host lock: admits an exited container again (ports checked and claimed, a new
    /// cgroup with the hooks attached). None when it is running already.
    fn readmit(&self, reference: &str) -> Result<Option<ContainerRecord>, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        let records = self.reconcile(&mut datapath)?;
        let record = self.own_container(self.store.find(reference)?, "start")?;
        if record.state.is_live() {
            return Ok(None);
        }
        if self.store.spec(&record.id)?.is_none() {
            return Err(HostError::Invalid(format!(
                "container {} was made by an older hostnetd, which did not keep its configuration; remove it and run it again",
                record.name
            )));
        }
        let declarations = policy::parse_declarations(&record.port_specs)
            .map_err(|error| HostError::Invalid(format!("container {}: {error}", record.name)))?;
        let ports: Vec<OwnedPort> = record.ports.iter().map(|claim| claim.port).collect();
        ownership::check_available(datapath.owners_ref(), &records, &self.procfs, &ports, None)?;
        self.check_room_for(
            &datapath,
            &kernel_policy(&record)?,
            &declarations,
            &records,
            &ports,
        )?;
        let (cgroup, made_now) = self
            .cgroup
            .create(&self.config.container_cgroup(&record.id))?;
        let record = ContainerRecord {
            cgroup: CgroupRecord::from(&cgroup),
            state: ContainerState::Created,
            supervisor: Host::identity(),
            restart_count: 0,
            stop_requested: false,
            pid: None,
            final_traffic: None,
            ..record
        };
        let previous_exit = record.exit_code;
        // Until it has run again, the exited record on disk is the one a reboot should find.
        if let Err(error) = self.store.save_until_reboot(&record) {
            let _ = cgroup.remove();
            return Err(error.into());
        }
        let history = super::run::cgroup_history(made_now);
        if let Err(error) = self.enforce(&mut datapath, &record, &ports, &cgroup, history) {
            self.release(&mut datapath, &record, Disposition::Keep(previous_exit))?;
            return Err(error);
        }
        Ok(Some(record))
    }

    /// The bundle as the container first had it: its kept configuration, and the mount point
    /// where the monitor mounts its root filesystem again (the same writable layer).
    fn restore_bundle(&self, record: &ContainerRecord) -> Result<(), HostError> {
        let config = self.store.spec(&record.id)?.ok_or_else(|| {
            HostError::Invalid(format!("the configuration of {} is gone", record.name))
        })?;
        let bundle = self.make_bundle_dir(&record.id)?;
        write_bundle_config(&bundle, &config)
    }
}
