//! The ownership tables: who owns each (protocol, port), and on which addresses.
use std::{net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, Map, MapData};
use hostnetd_common::{v4_mapped, BindAddrKey, MapName, PortOwner, Proto, PORTS_PER_PROTO};

use super::DatapathError;
use crate::policy::OwnedPort;

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
        let owner = self
            .owners
            .get(&slot(port), 0)
            .map_err(map_error("PORT_OWNERS"))?;
        Ok(owner.is_owned().then_some(owner))
    }

    /// Gives `port` to `owner`. Address restrictions are written before the owner slot, so the
    /// programs never see an owner whose allowed addresses are not there yet.
    pub fn claim(
        &mut self,
        port: OwnedPort,
        owner: PortOwner,
        addresses: Option<&[IpAddr]>,
    ) -> Result<(), DatapathError> {
        for addr in addresses.unwrap_or_default() {
            let key = addr_key(owner.cgroup_id, port, *addr);
            self.addrs
                .insert(key, 1, 0)
                .map_err(map_error("BIND_ADDRS"))?;
        }
        self.owners
            .set(slot(port), owner, 0)
            .map_err(map_error("PORT_OWNERS"))
    }

    /// Frees `port` if `cgroup_id` still owns it, with its address restrictions.
    pub fn release(
        &mut self,
        port: OwnedPort,
        cgroup_id: u64,
        addresses: Option<&[IpAddr]>,
    ) -> Result<(), DatapathError> {
        if self
            .owner(port)?
            .is_some_and(|owner| owner.cgroup_id == cgroup_id)
        {
            let unowned = PortOwner::default();
            self.owners
                .set(slot(port), unowned, 0)
                .map_err(map_error("PORT_OWNERS"))?;
        }
        for addr in addresses.unwrap_or_default() {
            // Already absent is fine: release must be safe to repeat after a crash.
            let _ = self.addrs.remove(&addr_key(cgroup_id, port, *addr));
        }
        Ok(())
    }

    /// Removes the address restrictions of every cgroup not in `live`: left by a crash.
    pub fn sweep_addresses(&mut self, live: &[u64]) -> Result<(), DatapathError> {
        let keys: Vec<BindAddrKey> = self.addrs.keys().filter_map(Result::ok).collect();
        for key in keys
            .into_iter()
            .filter(|key| !live.contains(&key.cgroup_id))
        {
            let _ = self.addrs.remove(&key);
        }
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

fn addr_key(cgroup_id: u64, port: OwnedPort, addr: IpAddr) -> BindAddrKey {
    let bytes = match addr {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    };
    BindAddrKey::new(cgroup_id, bytes, port.port, port.proto)
}

pub(super) fn open_map(maps: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let data = MapData::from_pin(maps.join(name)).map_err(map_error(name))?;
    Map::from_map_data(data).map_err(map_error(name))
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}
