//! Switching a running container to a new policy, its owned ports and its egress rules at once.
//!
//! Each container has two policy generations; `CONTAINER_POLICIES` says which is in force. The
//! next policy is written beside the one in force: ports get the next generation's grant on
//! their owner slot (kept ports then carry both grants, new ones only the next), address lists
//! and egress rules are keyed by generation. One map update flips the generation, and only then
//! is the previous one withdrawn: slots left with no grant are freed. The container sees the
//! whole old policy or the whole new one, never neither nor a mix, and everyone else finds
//! every port of either set owned until the switch is over. See [`super::barrier`] for why
//! the hooks cannot straddle the flip.
use super::{
    barrier::wait_for_running_programs,
    error::DatapathError,
    policies::{KernelPolicy, PolicyEntry},
    Datapath,
};
use crate::{policy::OwnedPort, store::PortClaim, sys::cgroup::ContainerCgroup};

/// A policy written under the generation not in force: switched to, or abandoned.
#[derive(Debug)]
#[must_use = "a staged policy must be switched to or abandoned"]
pub struct StagedPolicy {
    cgroup_id: u64,
    previous: u32,
    entry: PolicyEntry,
    /// Every port the container may hold a slot for: before, after, and leftovers.
    touched: Vec<OwnedPort>,
    /// The ports of the staged policy.
    staged: Vec<OwnedPort>,
}

impl Datapath {
    /// Writes the container's next policy under the generation not in force. `held` are the
    /// ports whose slots the container may hold now: its record's, or after an interrupted
    /// update every slot it has. Their grants under the next generation are cleared first, so
    /// nothing left from an earlier attempt comes into force with the flip. On an error, what
    /// was written is cleared again; the caller still marks the container for a full sweep,
    /// in case clearing failed too.
    pub fn stage_policy(
        &mut self,
        cgroup: &ContainerCgroup,
        held: &[OwnedPort],
        ports: &[PortClaim],
        policy: &KernelPolicy,
    ) -> Result<StagedPolicy, DatapathError> {
        let previous = self.policies.generation(cgroup.id).unwrap_or(1);
        let next = 1 - previous;
        let staged: Vec<OwnedPort> = ports.iter().map(|claim| claim.port).collect();
        let mut touched = held.to_vec();
        touched.extend(&staged);
        touched.sort();
        touched.dedup();
        self.revoke(cgroup.id, next, &touched)?;
        let entry = match self.write_next(cgroup, next, ports, policy) {
            Ok(entry) => entry,
            Err(error) => {
                // A slot granted under the next generation would keep its port owned (everyone
                // else gets EADDRINUSE) though no record lists it: clear what was written.
                let _ = self.revoke(cgroup.id, next, &touched);
                let _ = self.policies.remove_generation(cgroup.id, next);
                return Err(error);
            }
        };
        Ok(StagedPolicy {
            cgroup_id: cgroup.id,
            previous,
            entry,
            touched,
            staged,
        })
    }

    /// The next generation's grants, address lists and rules; returns its policy entry.
    fn write_next(
        &mut self,
        cgroup: &ContainerCgroup,
        next: u32,
        ports: &[PortClaim],
        policy: &KernelPolicy,
    ) -> Result<PolicyEntry, DatapathError> {
        for claim in ports {
            self.owners.grant(cgroup, next, claim)?;
        }
        self.policies.stage(cgroup.id, next, policy)
    }

    /// Puts a staged policy in force: one map update. On an error nothing was switched.
    pub fn switch_policy(&mut self, staged: &StagedPolicy) -> Result<(), DatapathError> {
        wait_for_running_programs()?;
        self.policies.put_in_force(staged.cgroup_id, staged.entry)
    }

    /// After the switch, once no hook still decides by it: withdraws the previous generation's
    /// grants (freeing the ports that left), address lists and egress rules.
    pub fn retire_previous(&mut self, staged: StagedPolicy) -> Result<(), DatapathError> {
        wait_for_running_programs()?;
        let (cgroup_id, previous) = (staged.cgroup_id, staged.previous);
        self.revoke(cgroup_id, previous, &staged.touched)?;
        self.policies.remove_generation(cgroup_id, previous)
    }

    /// Withdraws `generation`'s grants from the container's `ports`. The counts of a port that
    /// leaves stay the container's: they move from the port's row to the traffic hashes, under
    /// the same key, before the row is given back.
    fn revoke(
        &mut self,
        cgroup_id: u64,
        generation: u32,
        ports: &[OwnedPort],
    ) -> Result<(), DatapathError> {
        let freed = self.owners.revoke(cgroup_id, generation, ports)?;
        if freed.is_empty() {
            return Ok(());
        }
        // A program that read a slot before it was freed may still be adding to its row.
        wait_for_running_programs()?;
        self.traffic.keep_rows(self.owners.rows(), &freed)?;
        self.owners.give_back(&freed)
    }

    /// Undoes a staged policy that was never put in force: the ports it added are freed, the
    /// kept ones lose the grant it gave them.
    pub fn abandon_policy(&mut self, staged: StagedPolicy) -> Result<(), DatapathError> {
        let next = 1 - staged.previous;
        self.revoke(staged.cgroup_id, next, &staged.staged)?;
        self.policies.remove_generation(staged.cgroup_id, next)
    }
}
