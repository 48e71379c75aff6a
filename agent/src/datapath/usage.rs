//! How full the kernel's shared tables are, read from the maps themselves: who holds each
//! entry, and each map's capacity as the kernel made it (a pinned map keeps the size it was
//! created with, whatever this binary's constants say).
//!
//! Only the agent writes the policy and ownership tables, under the host lock, so a snapshot
//! taken under that lock is exact. The traffic tables also get rows from the programs; their
//! snapshot is every row present at that moment.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, Map, MapData, PerCpuHashMap};
use hostnetd_common::{
    traffic::{DeviceCounters, TrafficCounters, TrafficKey},
    BindAddrKey, ContainerPolicy, MapName, PrefixKey, PrefixRules,
};

use super::{
    error::{map_error, DatapathError},
    Datapath,
};

/// One table of entries that belong to a container and a policy generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableFill {
    pub capacity: u32,
    /// Entries per (cgroup id, generation); 0 for tables without generations.
    held: BTreeMap<(u64, u32), u32>,
}

impl TableFill {
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            held: BTreeMap::new(),
        }
    }

    /// A table known to hold at most `entries` (whose holders are not known).
    pub fn at_most(capacity: u32, entries: u32) -> Self {
        let mut fill = Self::new(capacity);
        if entries > 0 {
            fill.held.insert((0, 0), entries);
        }
        fill
    }

    /// Counts one entry of `cgroup_id` under `generation`.
    pub fn add(&mut self, cgroup_id: u64, generation: u32) {
        *self.held.entry((cgroup_id, generation)).or_default() += 1;
    }

    pub fn used(&self) -> u32 {
        self.held.values().sum()
    }

    /// How many cgroups hold entries.
    pub fn holders(&self) -> usize {
        let cgroups: BTreeSet<u64> = self.held.keys().map(|(cgroup, _)| *cgroup).collect();
        cgroups.len()
    }

    /// Entries of `cgroup_id` under exactly `generation`.
    pub fn held(&self, cgroup_id: u64, generation: u32) -> u32 {
        self.held
            .get(&(cgroup_id, generation))
            .copied()
            .unwrap_or(0)
    }
}

/// The rows of a traffic table, and its capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowFill {
    pub capacity: u32,
    pub rows: HashSet<TrafficKey>,
}

/// A snapshot of every shared table a container's admission takes room in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTables {
    /// `BIND_ADDRS`: one entry per (port, listed address, generation).
    pub bind_addresses: TableFill,
    /// `EGRESS_RULES`: one entry per (prefix, generation).
    pub egress: TableFill,
    /// `INGRESS_RULES`: likewise.
    pub ingress: TableFill,
    /// `CONTAINER_POLICIES`: one entry per container.
    pub policies: TableFill,
    /// The generation each container's policy has in force.
    pub generations: BTreeMap<u64, u32>,
    /// Capacity of `DENIALS`, which holds a row per container and one for the host.
    pub denials_capacity: u32,
    /// `TRAFFIC`: rows per (container, owned port or 0, protocol class).
    pub traffic: RowFill,
    /// `DEVICE_TRAFFIC`: rows per (owner, owned port, protocol class).
    pub device_traffic: RowFill,
}

/// At most how many prefixes the agent has written in each rule trie (a bound from the
/// records: every entry is written while a record accounts for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WrittenRules {
    pub egress: u32,
    pub ingress: u32,
}

impl Datapath {
    /// How full each shared table is: a walk over every key of each (the reconciliation
    /// sweeps walk the same maps on every admission).
    pub fn table_fill(&self) -> Result<HostTables, DatapathError> {
        let maps = self.root.join("maps");
        Ok(HostTables {
            egress: trie_fill(&maps, MapName::EgressRules)?,
            ingress: trie_fill(&maps, MapName::IngressRules)?,
            ..self.hash_table_fill(&maps)?
        })
    }

    /// As [`Datapath::table_fill`], with the rule tries taken as `written` says rather than
    /// walked: the kernel walks a trie a key per system call, each finding its place again
    /// from the root, and with hundreds of containers that walk was most of an admission.
    /// The hash tables are still walked: the programs add traffic rows, and the others are
    /// cheap to walk and exact whoever wrote them.
    pub fn table_fill_within(&self, written: WrittenRules) -> Result<HostTables, DatapathError> {
        let maps = self.root.join("maps");
        Ok(HostTables {
            egress: TableFill::at_most(capacity(&maps, MapName::EgressRules)?, written.egress),
            ingress: TableFill::at_most(capacity(&maps, MapName::IngressRules)?, written.ingress),
            ..self.hash_table_fill(&maps)?
        })
    }

    /// Every table but the rule tries, walked.
    fn hash_table_fill(&self, maps: &std::path::Path) -> Result<HostTables, DatapathError> {
        let (addrs_capacity, addrs) =
            open::<HashMap<MapData, BindAddrKey, u8>>(maps, &MapName::BindAddrs)?;
        let mut bind_addresses = TableFill::new(addrs_capacity);
        for key in addrs.keys() {
            let key = key.map_err(map_error(MapName::BindAddrs.as_str()))?;
            bind_addresses.add(key.cgroup_id, u32::from(key.generation));
        }
        let (policies_capacity, policies) =
            open::<HashMap<MapData, u64, ContainerPolicy>>(maps, &MapName::ContainerPolicies)?;
        let mut fill = TableFill::new(policies_capacity);
        let mut generations = BTreeMap::new();
        for entry in policies.iter() {
            let (cgroup_id, policy) =
                entry.map_err(map_error(MapName::ContainerPolicies.as_str()))?;
            fill.add(cgroup_id, 0);
            generations.insert(cgroup_id, policy.generation & 1);
        }
        Ok(HostTables {
            bind_addresses,
            egress: TableFill::default(),
            ingress: TableFill::default(),
            policies: fill,
            generations,
            denials_capacity: capacity(maps, MapName::Denials)?,
            traffic: rows::<TrafficCounters>(maps, MapName::Traffic)?,
            device_traffic: rows::<DeviceCounters>(maps, MapName::DeviceTraffic)?,
        })
    }
}

fn capacity(maps: &std::path::Path, name: MapName) -> Result<u32, DatapathError> {
    let label = name.as_str();
    let data = MapData::from_pin(maps.join(label)).map_err(map_error(label))?;
    Ok(data.info().map_err(map_error(label))?.max_entries())
}

fn trie_fill(maps: &std::path::Path, name: MapName) -> Result<TableFill, DatapathError> {
    let (capacity, trie) = open::<LpmTrie<MapData, PrefixKey, PrefixRules>>(maps, &name)?;
    let mut fill = TableFill::new(capacity);
    for key in trie.keys() {
        let key: Key<PrefixKey> = key.map_err(map_error(name.as_str()))?;
        let data = key.data();
        fill.add(data.cgroup_id, data.generation);
    }
    Ok(fill)
}

fn rows<V: aya::Pod>(maps: &std::path::Path, name: MapName) -> Result<RowFill, DatapathError> {
    let label = name.as_str();
    let (capacity, table) = open::<PerCpuHashMap<MapData, TrafficKey, V>>(maps, &name)?;
    let rows = (table.keys())
        .collect::<Result<HashSet<_>, _>>()
        .map_err(map_error(label))?;
    Ok(RowFill { capacity, rows })
}

/// A pinned map, typed, with its capacity.
fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(
    maps: &std::path::Path,
    name: &MapName,
) -> Result<(u32, T), DatapathError> {
    let label = name.as_str();
    let data = MapData::from_pin(maps.join(label)).map_err(map_error(label))?;
    let capacity = data.info().map_err(map_error(label))?.max_entries();
    let map = Map::from_map_data(data).map_err(map_error(label))?;
    Ok((capacity, T::try_from(map).map_err(map_error(label))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_counts_entries_per_container_and_generation() {
        let mut fill = TableFill::new(10);
        fill.add(7, 0);
        fill.add(7, 0);
        fill.add(7, 1);
        fill.add(9, 1);
        assert_eq!(fill.used(), 4);
        assert_eq!(fill.holders(), 2);
        assert_eq!(fill.held(7, 0), 2);
        assert_eq!(fill.held(7, 1), 1);
        assert_eq!(fill.held(9, 0), 0);
        assert_eq!(fill.held(8, 1), 0);
    }
}
