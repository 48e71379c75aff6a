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
use crate::{
    api::PolicyUpdate,
    capacity::{self, Footprint},
    datapath::{Datapath, StagedPolicy},
    host::{Host, HostError},
    lifecycle::{claims, kernel_policy, parse_declarations},
    ownership::{self, OwnershipError},
    policy::{egress::EgressPolicy, OwnedPort, PortDeclarations},
    store::{ContainerRecord, PortClaim},
};

/// A validated [`PolicyUpdate`]; None keeps what the container has.
#[derive(Clone, Debug)]
pub struct PolicyChange {
    ports: Option<PortDeclarations>,
    /// The allow and deny rules, as given.
    egress: Option<(Vec<String>, Vec<String>)>,
    ingress: Option<Vec<String>>,
}

impl PolicyUpdate {
    /// Checks the update before anything is touched: a bad port spec or rule changes nothing.
    pub fn validate(&self) -> Result<PolicyChange, HostError> {
        let egress = (self.egress_allow.is_some() || self.egress_deny.is_some()).then(|| {
            let allow = self.egress_allow.clone().unwrap_or_default();
            (allow, self.egress_deny.clone().unwrap_or_default())
        });
        if self.ports.is_none() && egress.is_none() && self.ingress_allow.is_none() {
            return Err(HostError::Invalid(
                "nothing to update: give the new ports, egress rules or ingress rules".into(),
            ));
        }
        if let Some((allow, deny)) = &egress {
            EgressPolicy::parse(allow, deny).map_err(|e| HostError::Invalid(e.to_string()))?;
        }
        if let Some(allow) = &self.ingress_allow {
            EgressPolicy::parse_ingress(allow).map_err(HostError::Invalid)?;
        }
        let ports = self.ports.as_deref().map(parse_declarations).transpose()?;
        Ok(PolicyChange {
            ports,
            egress,
            ingress: self.ingress_allow.clone(),
        })
    }
}

impl PolicyChange {
    /// The record as the update leaves it.
    fn applied_to(&self, record: &ContainerRecord) -> ContainerRecord {
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
        update: &PolicyUpdate,
    ) -> Result<ContainerRecord, HostError> {
        let change = update.validate()?;
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
        let own = self.cgroup_dir(&record);
        ownership::check_available(
            datapath.owners_ref(),
            &records,
            &self.procfs,
            &added,
            Some(&own),
        )?;
        check_room(&datapath, &updated, &records)?;
        self.store.save(&updated)?;
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
        let cgroup =
            (self.cgroup.open(&self.cgroup_relative(updated))).map_err(|e| untouched(e.into()))?;
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
        let own = self.cgroup_dir(updated);
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
        self.store.save(&settled)?;
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
        let saved = self.store.save(&restored).map_err(HostError::from);
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

    /// The container's cgroup relative to the cgroup2 root (`hostnetd/<id>`).
    /// Puts the record's whole policy (ports, egress and ingress rules) back in force for a
    /// running container whose kernel state differs from it, the way an update switches: the
    /// next generation written, one flip, the previous one retired.
    pub(crate) fn reinstall_policy(
        &self,
        datapath: &mut Datapath,
        record: &ContainerRecord,
    ) -> Result<(), HostError> {
        let cgroup = self.cgroup.open(&self.cgroup_relative(record))?;
        let held = held_ports(datapath, record)?;
        let policy = kernel_policy(record)?;
        let staged = datapath.stage_policy(&cgroup, &held, &record.ports, &policy)?;
        datapath.switch_policy(&staged)?;
        self.settle(datapath, record.clone(), staged)?;
        Ok(())
    }

    fn cgroup_relative(&self, record: &ContainerRecord) -> String {
        format!("{}/{}", self.config.cgroup_parent, record.id)
    }

    /// The container's cgroup as /proc/PID/cgroup names it (`/hostnetd/<id>`).
    fn cgroup_dir(&self, record: &ContainerRecord) -> String {
        format!("/{}", self.cgroup_relative(record).trim_start_matches('/'))
    }
}

/// Refuses an update whose next generation does not fit in the host's shared tables beside
/// the one in force, before anything changes.
fn check_room(
    datapath: &Datapath,
    updated: &ContainerRecord,
    records: &[ContainerRecord],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;

    fn update(
        ports: Option<&[&str]>,
        allow: Option<&[&str]>,
        deny: Option<&[&str]>,
    ) -> PolicyUpdate {
        let owned = |list: &[&str]| list.iter().map(ToString::to_string).collect();
        PolicyUpdate {
            ports: ports.map(owned),
            egress_allow: allow.map(owned),
            egress_deny: deny.map(owned),
            ingress_allow: None,
        }
    }

    fn invalid(update: &PolicyUpdate) -> String {
        match update.validate() {
            Err(HostError::Invalid(message)) => message,
            other => panic!("{update:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn bad_updates_are_refused_naming_what_is_wrong() {
        assert!(invalid(&update(None, None, None)).starts_with("nothing to update"));
        let port_zero = invalid(&update(Some(&["80,0"]), None, None));
        assert!(port_zero.contains("port 0 cannot be owned"), "{port_zero}");
        let too_big = invalid(&update(Some(&["70000"]), None, None));
        assert!(too_big.contains("70000 is out of range"), "{too_big}");
        let rule = invalid(&update(None, Some(&["10.0.0.1/8"]), None));
        assert!(rule.contains("did you mean 10.0.0.0/8"), "{rule}");
    }

    #[test]
    fn ports_alone_keep_the_egress_rules() {
        let mut old = record("abc", "web");
        old.egress_deny = vec!["10.1.0.0/16".into()];
        let change = update(Some(&["26000,[::1]:26001/udp"]), None, None)
            .validate()
            .unwrap();
        let new = change.applied_to(&old);
        assert_eq!(new.port_specs, vec!["26000/tcp", "[::1]:26001/udp"]);
        let ports: Vec<String> = new.ports.iter().map(|c| c.port.to_string()).collect();
        assert_eq!(ports, vec!["26000/tcp", "26001/udp"]);
        assert_eq!(new.ports[1].addresses, Some(vec!["::1".parse().unwrap()]));
        assert_eq!(new.egress_deny, old.egress_deny);
    }

    #[test]
    fn egress_alone_keeps_the_ports_and_one_list_given_empties_the_other() {
        let mut old = record("abc", "web");
        old.egress_deny = vec!["10.1.0.0/16".into()];
        let change = update(None, Some(&["10.0.0.0/8"]), None)
            .validate()
            .unwrap();
        let new = change.applied_to(&old);
        assert_eq!(
            (new.ports.clone(), new.port_specs.clone()),
            (old.ports, old.port_specs)
        );
        assert_eq!(new.egress_allow, vec!["10.0.0.0/8"]);
        assert!(new.egress_deny.is_empty());
        let none = update(Some(&[]), None, None).validate().unwrap();
        assert!(none.applied_to(&new).ports.is_empty(), "[] owns no ports");
    }
}
