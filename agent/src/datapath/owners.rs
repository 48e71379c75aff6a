//! The ownership tables: who owns each (protocol, port), and what the owner itself may bind
//! under each of its two policy generations (any address, or the addresses listed for it).
use std::{collections::HashSet, net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, MapData};
use hostnetd_common::{
    v4_mapped, BindAddrKey, MapName, PortOwner, Proto, OWNER_ANY_ADDRESS, OWNER_LISTED_ADDRESSES,
    PORTS_PER_PROTO,
};

use super::{
    error::{map_error, DatapathError},
    pins::open_map,
};
use crate::{policy::OwnedPort, store::PortClaim, sys::cgroup::ContainerCgroup};

pub struct OwnerTable {
    owners: Array<MapData, PortOwner>,
    addrs: HashMap<MapData, BindAddrKey, u8>,
}

impl OwnerTable {
    pub(super) fn open(maps: &Path) -> Result<Self, DatapathError> {
        let owners = open_map(maps, MapName::PortOwners.as_str())?;
        let addrs = open_map(maps, MapName::BindAddrs.as_str())?;
        Ok(Self {
            owners: Array::try_from(owners).map_err(map_error("PORT_OWNERS"))?,
            addrs: HashMap::try_from(addrs).map_err(map_error("BIND_ADDRS"))?,
        })
    }

    /// The current owner of `port`, if any.
    pub fn owner(&self, port: OwnedPort) -> Result<Option<PortOwner>, DatapathError> {
        let owner = self.slot_value(port)?;
        Ok(owner.is_owned().then_some(owner))
    }

    /// Grants `claim` to the container under `generation`, keeping whatever the other
    /// generation grants it. The address list goes in before the slot that refers to it, so
    /// the programs never see a grant whose addresses are not there yet.
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
                flags: 0,
            },
        };
        for addr in addresses {
            let key = addr_key(cgroup.id, generation, claim.port, *addr);
            self.addrs
                .insert(key, 1, 0)
                .map_err(map_error("BIND_ADDRS"))?;
        }
        self.set_slot(claim.port, owner.with_grant(generation, grant))
    }

    /// Withdraws `generation`'s grants from those of `ports` the container owns, freeing each
    /// slot left with no grant, and removes that generation's address lists.
    pub fn revoke(
        &mut self,
        cgroup_id: u64,
        generation: u32,
        ports: &[OwnedPort],
    ) -> Result<(), DatapathError> {
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
            }
        }
        self.remove_addresses(|key| {
            key.cgroup_id == cgroup_id && u32::from(key.generation) == generation & 1
        });
        Ok(())
    }

    /// Frees those of `ports` that `cgroup_id` still owns, and all its address lists; safe to
    /// repeat after a crash.
    pub fn release(&mut self, cgroup_id: u64, ports: &[OwnedPort]) -> Result<(), DatapathError> {
        for &port in ports {
            if self.slot_value(port)?.cgroup_id == cgroup_id {
                self.set_slot(port, PortOwner::default())?;
            }
        }
        self.remove_addresses(|key| key.cgroup_id == cgroup_id);
        Ok(())
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

fn addr_key(cgroup_id: u64, generation: u32, port: OwnedPort, addr: IpAddr) -> BindAddrKey {
    let bytes = match addr {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    };
    BindAddrKey::new(cgroup_id, generation, bytes, port.port, port.proto)
}
