//! The ownership tables: who owns each (protocol, port), what the owner itself may bind under
//! each of its two policy generations (any address, or the addresses listed for it), and the
//! counter row each owned port is given ([`super::rows`]).
use std::{collections::HashSet, net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, MapData};
use hostnetd_common::{
    traffic::{TrafficKey, CLASS_TCP, CLASS_UDP},
    v4_mapped, BindAddrKey, MapName, PortOwner, Proto, NO_ROW, OWNER_ANY_ADDRESS,
    OWNER_LISTED_ADDRESSES, PORTS_PER_PROTO,
};

use super::{
    error::{map_error, DatapathError},
    pins::open_map,
    rows::PortRows,
};
use crate::{policy::OwnedPort, store::PortClaim, sys::cgroup::ContainerCgroup};

pub struct OwnerTable {
    owners: Array<MapData, PortOwner>,
    addrs: HashMap<MapData, BindAddrKey, u8>,
    rows: PortRows,
}

impl OwnerTable {
    pub(super) fn open(maps: &Path) -> Result<Self, DatapathError> {
        let owners = open_map(maps, MapName::PortOwners.as_str())?;
        let addrs = open_map(maps, MapName::BindAddrs.as_str())?;
        Ok(Self {
            owners: Array::try_from(owners).map_err(map_error("PORT_OWNERS"))?,
            addrs: HashMap::try_from(addrs).map_err(map_error("BIND_ADDRS"))?,
            rows: PortRows::open(maps)?,
        })
    }

    /// The owned ports' counter rows.
    pub fn rows(&self) -> &PortRows {
        &self.rows
    }

    /// The current owner of `port`, if any.
    pub fn owner(&self, port: OwnedPort) -> Result<Option<PortOwner>, DatapathError> {
        let owner = self.slot_value(port)?;
        Ok(owner.is_owned().then_some(owner))
    }

    /// Grants `claim` to the container under `generation`, keeping whatever the other
    /// generation grants it; a port newly owned is given a counter row. The address list and
    /// the row go in before the slot that refers to them, so the programs never see a grant
    /// whose addresses are not there yet, nor a row still counting for someone else.
    pub fn grant(
        &mut self,
        cgroup: &ContainerCgroup,
        generation: u32,
        claim: &PortClaim,
    ) -> Result<(), DatapathError> {
        let (grant, addresses) = match &claim.addresses {
            None => (OWNER_ANY_ADDRESS, &[][..]),
            Some(list) => (OWNER_LISTED_ADDRESSES, list.as_slice()),
        };
        let owner = match self.slot_value(claim.port)? {
            owner if owner.cgroup_id == cgroup.id => owner,
            owner if owner.is_owned() => {
                return Err(DatapathError::PortTaken {
                    port: claim.port.to_string(),
                    cgroup_id: owner.cgroup_id,
                })
            }
            _ => PortOwner {
                cgroup_id: cgroup.id,
                cgroup_level: cgroup.level,
                ..PortOwner::default()
            },
        };
        for addr in addresses {
            let key = addr_key(cgroup.id, generation, claim.port, *addr);
            self.addrs
                .insert(key, 1, 0)
                .map_err(map_error("BIND_ADDRS"))?;
        }
        let owner = match owner.grants_anything() {
            true => owner,
            false => PortOwner {
                row: self.rows.take(holder(cgroup.id, claim.port))?,
                ..owner
            },
        };
        self.set_slot(claim.port, owner.with_grant(generation, grant))
    }

    /// Withdraws `generation`'s grants from those of `ports` the container owns, freeing each
    /// slot left with no grant, and removes that generation's address lists. Returns the rows
    /// of the freed slots, still marked given: their counts are the container's until the
    /// caller has kept them elsewhere and given the rows back.
    pub fn revoke(
        &mut self,
        cgroup_id: u64,
        generation: u32,
        ports: &[OwnedPort],
    ) -> Result<Vec<u32>, DatapathError> {
        let mut freed = Vec::new();
        for &port in ports {
            let owner = self.slot_value(port)?;
            if owner.cgroup_id != cgroup_id {
                continue;
            }
            let left = owner.with_grant(generation, 0);
            if left.grants_anything() {
                self.set_slot(port, left)?;
            } else {
                self.set_slot(port, PortOwner::default())?;
                freed.extend(Some(owner.row).filter(|&row| row != NO_ROW));
            }
        }
        self.remove_addresses(|key| {
            key.cgroup_id == cgroup_id && u32::from(key.generation) == generation & 1
        });
        Ok(freed)
    }

    /// Marks rows [`Self::revoke`] returned free.
    pub fn give_back(&mut self, rows: &[u32]) -> Result<(), DatapathError> {
        self.rows.give_back(rows)
    }

    /// Frees those of `ports` that `cgroup_id` still owns, and all its address lists; safe to
    /// repeat after a crash.
    pub fn release(&mut self, cgroup_id: u64, ports: &[OwnedPort]) -> Result<(), DatapathError> {
        let mut freed = Vec::new();
        for &port in ports {
            let owner = self.slot_value(port)?;
            if owner.cgroup_id == cgroup_id {
                self.set_slot(port, PortOwner::default())?;
                freed.extend(Some(owner.row).filter(|&row| row != NO_ROW));
            }
        }
        self.rows.give_back(&freed)?;
        self.remove_addresses(|key| key.cgroup_id == cgroup_id);
        Ok(())
    }

    /// Gives back the rows no owner slot names (a process died between marking a row and
    /// naming it, or between freeing a slot and its row); returns how many.
    pub fn sweep_rows(&mut self) -> Result<usize, DatapathError> {
        let owners = &self.owners;
        let named = |row: u32, holder: &TrafficKey| {
            let Some(port) = port_of_holder(holder) else {
                return Ok(false);
            };
            let owner = owners
                .get(&slot(port), 0)
                .map_err(map_error("PORT_OWNERS"))?;
            Ok(owner.row == row && owner.cgroup_id == holder.cgroup_id)
        };
        Ok(self.rows.sweep(named)?.len())
    }

    /// Every port whose slot `cgroup_id` holds, whatever its grants: a full scan of the table,
    /// for a container whose update was interrupted.
    pub fn owned_by(&self, cgroup_id: u64) -> Result<Vec<OwnedPort>, DatapathError> {
        Ok((self.all()?.into_iter())
            .filter(|(_, owner)| owner.cgroup_id == cgroup_id)
            .map(|(port, _)| port)
            .collect())
    }

    fn slot_value(&self, port: OwnedPort) -> Result<PortOwner, DatapathError> {
        self.owners
            .get(&slot(port), 0)
            .map_err(map_error("PORT_OWNERS"))
    }

    fn set_slot(&mut self, port: OwnedPort, owner: PortOwner) -> Result<(), DatapathError> {
        self.owners
            .set(slot(port), owner, 0)
            .map_err(map_error("PORT_OWNERS"))
    }

    /// Removes the address-list entries `doomed` picks; one already gone is fine.
    fn remove_addresses(&mut self, doomed: impl Fn(&BindAddrKey) -> bool) {
        let keys: Vec<BindAddrKey> = (self.addrs.keys().filter_map(Result::ok))
            .filter(|key| doomed(key))
            .collect();
        for key in keys {
            let _ = self.addrs.remove(&key);
        }
    }

    /// Removes the address restrictions of every cgroup not in `live`: left by a crash.
    pub fn sweep_addresses(&mut self, live: &HashSet<u64>) -> Result<(), DatapathError> {
        self.remove_addresses(|key| !live.contains(&key.cgroup_id));
        Ok(())
    }

    /// Every owned slot, for reconciliation and listing.
    pub fn all(&self) -> Result<Vec<(OwnedPort, PortOwner)>, DatapathError> {
        let mut owned = Vec::new();
        for (index, owner) in self.owners.iter().enumerate() {
            let owner = owner.map_err(map_error("PORT_OWNERS"))?;
            if let (true, Some(port)) = (owner.is_owned(), port_of_slot(index as u32)) {
                owned.push((port, owner));
            }
        }
        Ok(owned)
    }
}

fn port_of_slot(slot: u32) -> Option<OwnedPort> {
    let proto = match slot / PORTS_PER_PROTO {
        0 => Proto::Tcp,
        1 => Proto::Udp,
        _ => return None,
    };
    Some(OwnedPort {
        proto,
        port: (slot % PORTS_PER_PROTO) as u16,
    })
}

fn slot(port: OwnedPort) -> u32 {
    port.proto.owner_slot(port.port)
}

/// The traffic key a port's row counts under: its owner, the port, the protocol's class.
fn holder(cgroup_id: u64, port: OwnedPort) -> TrafficKey {
    let class = match port.proto {
        Proto::Tcp => CLASS_TCP,
        Proto::Udp => CLASS_UDP,
    };
    TrafficKey::new(cgroup_id, port.port, class)
}

fn port_of_holder(holder: &TrafficKey) -> Option<OwnedPort> {
    let proto = match holder.class {
        CLASS_TCP => Proto::Tcp,
        CLASS_UDP => Proto::Udp,
        _ => return None,
    };
    Some(OwnedPort {
        proto,
        port: holder.port,
    })
}

fn addr_key(cgroup_id: u64, generation: u32, port: OwnedPort, addr: IpAddr) -> BindAddrKey {
    let bytes = match addr {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    };
    BindAddrKey::new(cgroup_id, generation, bytes, port.port, port.proto)
}
