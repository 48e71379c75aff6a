//! `hostnetd update`: a running container's ports and egress rules replaced atomically.
//!
//! Ports the update adds go through `run`'s admission (owned by another container, or bound by
//! a host process: refused, naming it) before anything changes. Then, under the host lock:
//! the record is saved with the new values and `update_in_progress`; the new policy is written
//! under the generation not in force ([`Datapath::stage_policy`]) and both port sets reserved;
//! one more look for a host socket that bound an added port in between; the generation flips;
//! the previous one is withdrawn; the record is saved settled and the reservation trimmed.
//! A failure before the flip puts everything back; a crash leaves `update_in_progress`, and
//! the container's next update or release searches the whole owner table for its slots.
use std::sync::Arc;

use super::{
    run::{claims, kernel_policy},
    Host, HostError,
};
use crate::{
    datapath::{transition::StagedPolicy, Datapath},
    ownership::{
        self,
        capacity::{self, Footprint},
        OwnershipError,
    },
    policy::{OwnedPort, PortDeclarations},
    store::{ContainerRecord, PortClaim},
};

/// A validated update (`PATCH /v1/containers/ID`); None keeps what the container has.
#[derive(Clone, Debug)]
pub struct PolicyChange {
    pub ports: Option<PortDeclarations>,
    /// The allow and deny rules, as given.
    pub egress: Option<(Vec<String>, Vec<String>)>,
    pub ingress: Option<Vec<String>>,
    /// A new limit each way (None inside: no limit any more), in canonical text.
    pub egress_rate: Option<Option<String>>,
    pub ingress_rate: Option<Option<String>>,
}

impl PolicyChange {
    /// The record as the update leaves it.
    pub fn applied_to(&self, record: &ContainerRecord) -> ContainerRecord {
        let mut updated = record.clone();
        if let Some(ports) = &self.ports {
            updated.port_specs = ports.specs().iter().map(ToString::to_string).collect();
            updated.ports = claims(ports);
        }
        if let Some((allow, deny)) = &self.egress {
            updated.egress_allow = allow.clone();
            updated.egress_deny = deny.clone();
        }
        if let Some(allow) = &self.ingress {
            updated.ingress_allow = allow.clone();
        }
        if let Some(rate) = &self.egress_rate {
            updated.egress_rate = rate.clone();
        }
        if let Some(rate) = &self.ingress_rate {
            updated.ingress_rate = rate.clone();
        }
        updated
    }
}

/// A failed update, and whether what it wrote into the kernel was cleared away again.
struct Failed {
    error: HostError,
    cleared: bool,
}

impl Host {
    /// Replaces a live container's ports and egress rules as one switch: no bind or connect
    /// sees neither policy or a mix of both.
    pub fn update_policy(
        &self,
        reference: &str,
        change: &PolicyChange,
    ) -> Result<ContainerRecord, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        self.reconcile(&mut datapath)?;
        let record = self.store.find(reference)?;
        if !record.state.is_live() {
            return Err(HostError::NotRunning {
                name: record.name,
                state: record.state.as_str(),
            });
        }
        let updated = ContainerRecord {
            update_in_progress: true,
            ..change.applied_to(&record)
        };
        let held = held_ports(&datapath, &record)?;
        let added: Vec<OwnedPort> = (updated.ports.iter())
            .map(|claim| claim.port)
            .filter(|port| !held.contains(port))
            .collect();
        let records = self.store.list()?;
        let own = self.config.container_cgroup_dir(&record.id);
        ownership::check_available(
            datapath.owners_ref(),
            &records,
            &self.procfs,
            &added,
            Some(&own),
        )?;
        check_room(&datapath, &updated, &records)?;
        self.store.save_until_reboot(&updated)?;
        match self.stage_and_switch(&mut datapath, &updated, &held, &added) {
            Ok(staged) => self.settle(&mut datapath, updated, staged),
            Err(failed) => Err(self.restore(record, failed)),
        }
    }

    /// Writes the next generation, reserves both port sets, looks once more for a host socket
    /// on an added port (the new claims keep any from binding from now on), and flips.
    fn stage_and_switch(
        &self,
        datapath: &mut Datapath,
        updated: &ContainerRecord,
        held: &[OwnedPort],
        added: &[OwnedPort],
    ) -> Result<StagedPolicy, Failed> {
        let untouched = |error: HostError| Failed {
            error,
            cleared: true,
        };
        let cgroup = updated.cgroup.to_cgroup();
        let policy = kernel_policy(updated).map_err(untouched)?;
        // Staging clears what it wrote before an error; should that fail too, what stays is
        // never in force, and the record is marked for a full sweep.
        let staged =
            (datapath.stage_policy(&cgroup, held, &updated.ports, &policy)).map_err(|e| {
                Failed {
                    error: e.into(),
                    cleared: false,
                }
            })?;
        let switched = self
            .reserve_both(updated, held)
            .and_then(|()| self.refuse_late_binds(updated, added))
            .and_then(|()| Ok(datapath.switch_policy(&staged)?));
        match switched {
            Ok(()) => Ok(staged),
            Err(error) => Err(Failed {
                error,
                cleared: datapath.abandon_policy(staged).is_ok(),
            }),
        }
    }

    fn refuse_late_binds(
        &self,
        updated: &ContainerRecord,
        added: &[OwnedPort],
    ) -> Result<(), HostError> {
        let own = self.config.container_cgroup_dir(&updated.id);
        let late = ownership::host_conflicts(&self.procfs, added, Some(&own), &self.store.list()?)?;
        if late.is_empty() {
            Ok(())
        } else {
            Err(OwnershipError::Conflicts(late).into())
        }
    }

    /// After the flip: withdraws the previous generation and saves the record settled. A
    /// failure here leaves `update_in_progress` for the next update or release to finish.
    fn settle(
        &self,
        datapath: &mut Datapath,
        updated: ContainerRecord,
        staged: StagedPolicy,
    ) -> Result<ContainerRecord, HostError> {
        datapath.retire_previous(staged)?;
        let settled = ContainerRecord {
            update_in_progress: false,
            ..updated
        };
        self.store.save_until_reboot(&settled)?;
        ownership::sync_reserved_ports(&self.store, &self.reserved, &self.store.list()?)?;
        Ok(settled)
    }

    /// After a failure before the flip: the record as it was (marked for a full sweep when the
    /// kernel could not be cleared), the reservation trimmed back. Returns the failure, or the
    /// error that kept the record from being restored.
    fn restore(&self, record: ContainerRecord, failed: Failed) -> HostError {
        let restored = ContainerRecord {
            update_in_progress: record.update_in_progress || !failed.cleared,
            ..record
        };
        let saved = self
            .store
            .save_until_reboot(&restored)
            .map_err(HostError::from);
        let synced = saved.and_then(|()| {
            let records = self.store.list()?;
            Ok(ownership::sync_reserved_ports(
                &self.store,
                &self.reserved,
                &records,
            )?)
        });
        synced.err().unwrap_or(failed.error)
    }

    /// Reserves the old and the new ports alike while the switch is under way, so that no
    /// client socket autobinds onto either meanwhile.
    fn reserve_both(&self, updated: &ContainerRecord, held: &[OwnedPort]) -> Result<(), HostError> {
        let mut records = self.store.list()?;
        for record in records.iter_mut().filter(|r| r.id == updated.id) {
            let record = Arc::make_mut(record);
            let old = held.iter().map(|&port| PortClaim {
                port,
                addresses: None,
            });
            record.ports.extend(old);
        }
        Ok(ownership::sync_reserved_ports(
            &self.store,
            &self.reserved,
            &records,
        )?)
    }

    /// Installs again the policy of each live container whose kernel state is not what its
    /// record says: a daemon killed mid-`update` may have changed one and not the other. The
    /// record wins. A container whose policy cannot be put back is named, and the rest go on.
    pub(crate) fn restore_policies(&self, datapath: &mut Datapath) -> Result<(), HostError> {
        for record in self.store.list()?.iter().filter(|r| r.state.is_live()) {
            let policy = kernel_policy(record)?;
            let restored = match datapath.policies().holds(record.cgroup.id, &policy) {
                Ok(true) => continue,
                Ok(false) => self.reinstall_policy(datapath, record),
                Err(error) => Err(error.into()),
            };
            match restored {
                Ok(()) => {
                    tracing::warn!(container = %record.name, "kernel policy differed from the record; restored")
                }
                Err(error) => {
                    tracing::error!(container = %record.name, %error, "cannot restore the kernel policy")
                }
            }
        }
        Ok(())
    }

    /// Puts the record's whole policy (ports, egress and ingress rules) back in force for a
    /// running container whose kernel state differs from it, the way an update switches: the
    /// next generation written, one flip, the previous one retired.
    pub(crate) fn reinstall_policy(
        &self,
        datapath: &mut Datapath,
        record: &ContainerRecord,
    ) -> Result<(), HostError> {
        let cgroup = record.cgroup.to_cgroup();
        let held = held_ports(datapath, record)?;
        let policy = kernel_policy(record)?;
        let staged = datapath.stage_policy(&cgroup, &held, &record.ports, &policy)?;
        datapath.switch_policy(&staged)?;
        self.settle(datapath, record.clone(), staged)?;
        Ok(())
    }
}

/// Refuses an update whose next generation does not fit in the host's shared tables beside
/// the one in force, before anything changes.
fn check_room(
    datapath: &Datapath,
    updated: &ContainerRecord,
    records: &[Arc<ContainerRecord>],
) -> Result<(), HostError> {
    let footprint = Footprint::of(&kernel_policy(updated)?, &updated.ports)
        .map_err(|error| HostError::Invalid(error.to_string()))?;
    let ports: Vec<OwnedPort> = updated.ports.iter().map(|claim| claim.port).collect();
    let tables = datapath.table_fill()?;
    Ok(capacity::check_update(
        &tables,
        records,
        updated.cgroup.id,
        footprint,
        &ports,
    )?)
}

/// The ports whose slots the container may hold: its record's, or after an interrupted update
/// every slot it has (a full scan of the owner table).
fn held_ports(datapath: &Datapath, record: &ContainerRecord) -> Result<Vec<OwnedPort>, HostError> {
    let mut held: Vec<OwnedPort> = record.ports.iter().map(|claim| claim.port).collect();
    if record.update_in_progress {
        held.extend(datapath.owners_ref().owned_by(record.cgroup.id)?);
        held.sort();
        held.dedup();
    }
    Ok(held)
}
