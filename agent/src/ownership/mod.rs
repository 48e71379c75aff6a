//! Port ownership: admission before a container starts, claiming and releasing its ports in the
//! kernel's owner table, and keeping owned ports out of the ephemeral range.
pub mod capacity;
pub mod reserved_ports;
pub mod sockets;

use std::{
    collections::{BTreeSet, HashSet},
    fmt,
    sync::Arc,
};

use hostnetd_common::PortOwner;

use self::{
    reserved_ports::{ReservedPorts, ReservedPortsError},
    sockets::{ProcFs, SocketScanError},
};
use crate::{
    datapath::{DatapathError, OwnerTable},
    policy::OwnedPort,
    store::{ContainerRecord, ContainerState, PortClaim, Store, StoreError},
    sys::cgroup::ContainerCgroup,
};

/// Why a port cannot be given to a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    OwnedByContainer {
        port: OwnedPort,
        name: String,
        id: String,
    },
    OwnedByUnknownCgroup {
        port: OwnedPort,
        cgroup_id: u64,
    },
    BoundOnHost {
        port: OwnedPort,
        holders: Vec<String>,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnedByContainer { port, name, id } => {
                write!(
                    f,
                    "port {port} is owned by container {name} ({})",
                    &id[..12.min(id.len())]
                )
            }
            Self::OwnedByUnknownCgroup { port, cgroup_id } => write!(
                f,
                "port {port} is owned by cgroup {cgroup_id}, which no hostnetd container \
                 claims; `hostnetd teardown` resets the owner table"
            ),
            Self::BoundOnHost { port, holders } if holders.is_empty() => {
                write!(
                    f,
                    "port {port} is already bound on the host (by no visible process)"
                )
            }
            Self::BoundOnHost { port, holders } => {
                write!(
                    f,
                    "port {port} is already bound on the host by {}",
                    holders.join(", ")
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Sockets(#[from] SocketScanError),
    #[error(transparent)]
    ReservedPorts(#[from] ReservedPortsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    let lines: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
    format!("cannot own the requested ports: {}", lines.join("; "))
}

/// Refuses `ports` if a container owns any of them or a host process has one bound. Sockets
/// held only by processes in cgroup `own` (the container being updated) are its own: it keeps
/// what it bound on a port an update took away, and may be given the port back.
pub fn check_available(
    owners: &OwnerTable,
    records: &[Arc<ContainerRecord>],
    procfs: &ProcFs,
    ports: &[OwnedPort],
    own: Option<&str>,
) -> Result<(), OwnershipError> {
    let mut conflicts = Vec::new();
    let mut unowned = Vec::new();
    for &port in ports {
        match owners.owner(port)? {
            Some(owner) => conflicts.push(owned_conflict(port, owner, records)),
            None => unowned.push(port),
        }
    }
    // A socket on an owned port is its owner's: naming the owner container says it all.
    conflicts.extend(host_conflicts(procfs, &unowned, own, records)?);
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(OwnershipError::Conflicts(conflicts))
    }
}

/// Host sockets already bound to any of `ports`, with the processes that hold them; those held
/// only by processes in cgroup `own` do not count. `records` name hostnetd's own processes,
/// which the holder search looks through last.
pub fn host_conflicts(
    procfs: &ProcFs,
    ports: &[OwnedPort],
    own: Option<&str>,
    records: &[Arc<ContainerRecord>],
) -> Result<Vec<Conflict>, OwnershipError> {
    let wanted: Vec<_> = ports.iter().map(|p| (p.proto, p.port)).collect();
    let hostnetd_pids = hostnetd_processes(records);
    let mut conflicts: Vec<Conflict> = Vec::new();
    for socket in procfs.find_bound(&wanted)? {
        let port = OwnedPort {
            proto: socket.proto,
            port: socket.local.port(),
        };
        if conflicts
            .iter()
            .any(|c| matches!(c, Conflict::BoundOnHost { port: p, .. } if *p == port))
        {
            continue;
        }
        let holders = procfs.socket_holders(&socket, &hostnetd_pids);
        let owns_it = |dir: &str| !holders.is_empty() && holders.iter().all(|h| h.is_within(dir));
        if own.is_some_and(owns_it) {
            continue;
        }
        let holders = holders.iter().map(ToString::to_string).collect();
        conflicts.push(Conflict::BoundOnHost { port, holders });
    }
    Ok(conflicts)
}

/// This process, and each live container's supervisor and init.
fn hostnetd_processes(records: &[Arc<ContainerRecord>]) -> HashSet<u32> {
    let containers = (records.iter())
        .filter(|record| record.state.is_live())
        .flat_map(|record| [Some(record.supervisor.pid), record.pid])
        .flatten();
    containers.chain([std::process::id()]).collect()
}

fn owned_conflict(port: OwnedPort, owner: PortOwner, records: &[Arc<ContainerRecord>]) -> Conflict {
    match records
        .iter()
        .find(|record| record.cgroup.id == owner.cgroup_id)
    {
        Some(record) => Conflict::OwnedByContainer {
            port,
            name: record.name.clone(),
            id: record.id.clone(),
        },
        None => Conflict::OwnedByUnknownCgroup {
            port,
            cgroup_id: owner.cgroup_id,
        },
    }
}

/// Writes the container's claims into the owner table, granted under `generation` (the one
/// its policy has in force).
pub fn claim(
    owners: &mut OwnerTable,
    cgroup: &ContainerCgroup,
    generation: u32,
    claims: &[PortClaim],
) -> Result<(), OwnershipError> {
    for claim in claims {
        owners.grant(cgroup, generation, claim)?;
    }
    Ok(())
}

/// Frees every slot the container still holds; safe to repeat. After an interrupted update it
/// may hold slots its record does not list: the whole table is searched for them.
pub fn release(owners: &mut OwnerTable, record: &ContainerRecord) -> Result<(), OwnershipError> {
    let mut ports: Vec<OwnedPort> = record.ports.iter().map(|claim| claim.port).collect();
    if record.update_in_progress {
        ports.extend(owners.owned_by(record.cgroup.id)?);
    }
    owners.release(record.cgroup.id, &ports)?;
    Ok(())
}

/// Makes the reserved-ports sysctl hold exactly the ports of live containers (plus whatever the
/// administrator reserved), and remembers which entries are hostnetd's.
pub fn sync_reserved_ports(
    store: &Store,
    reserved: &ReservedPorts,
    records: &[Arc<ContainerRecord>],
) -> Result<(), OwnershipError> {
    let wanted: BTreeSet<u16> = records
        .iter()
        .filter(|record| record.state != ContainerState::Exited)
        .flat_map(|record| record.ports.iter().map(|claim| claim.port.port))
        .collect();
    reserved.sync(&store.reserved_by_us()?, &wanted, |ours| {
        store
            .save_reserved_by_us(ours)
            .map_err(OwnershipError::from)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnetd_common::Proto;

    #[test]
    fn conflicts_name_the_owner() {
        let port = OwnedPort {
            proto: Proto::Tcp,
            port: 20080,
        };
        let id = "0123456789abcdef".repeat(4);
        let by_container = Conflict::OwnedByContainer {
            port,
            name: "web1".into(),
            id,
        };
        assert_eq!(
            by_container.to_string(),
            "port 20080/tcp is owned by container web1 (0123456789ab)"
        );
        let holders = vec!["pid 42 (busybox httpd -f -p 20080)".to_string()];
        let on_host = Conflict::BoundOnHost { port, holders };
        assert_eq!(
            on_host.to_string(),
            "port 20080/tcp is already bound on the host by pid 42 (busybox httpd -f -p 20080)"
        );
    }
}
