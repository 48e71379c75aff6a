//! Reading the accounting maps: per-CPU values summed, rows of one container gathered, and
//! rows of containers that are gone removed.
// The per-CPU cgroup storage the packet hooks count in has no successor: the kernel's
// `BPF_MAP_TYPE_CGRP_STORAGE` is neither per CPU nor handed to the program without a lookup.
#![allow(deprecated)]
use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use aya::maps::{
    CgroupStorageKey, MapData, PerCpuArray, PerCpuCgroupStorage, PerCpuHashMap, PerCpuValues,
};
use hostnetd_common::{
    traffic::{
        ContainerRows, Denials, DeviceCounters, TrafficCounters, TrafficKey, CLASSES, CLASS_TCP,
        CLASS_UDP, HOST_CGROUP, STAT_EVENTS_LOST, STAT_TRAFFIC_TABLE_FULL,
    },
    MapName,
};

/// The attach types whose storage holds a container's rows: `BPF_CGROUP_INET_INGRESS` and
/// `BPF_CGROUP_INET_EGRESS` (the storage is per cgroup and attach type).
const SKB_ATTACH_TYPES: [u32; 2] = [0, 1];

use super::{
    error::{map_error, DatapathError},
    pins::{open_typed as open, per_cpu},
    rows::PortRows,
};
use crate::store::traffic::{Counters, DenialCounts, DeviceTraffic, PortTraffic, TrafficStats};

/// One row of a container's traffic, summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficRow {
    /// The owned port, or 0 for the rest of the class.
    pub port: u16,
    pub class: u8,
    pub socket: TrafficCounters,
    /// What the host's interfaces saw (owned ports only).
    pub device: DeviceCounters,
}

/// The datapath's own health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathHealth {
    pub events_lost: u64,
    pub traffic_table_full: u64,
}

pub struct TrafficTable {
    container_rows: PerCpuCgroupStorage<MapData, ContainerRows>,
    traffic: PerCpuHashMap<MapData, TrafficKey, TrafficCounters>,
    device: PerCpuHashMap<MapData, TrafficKey, DeviceCounters>,
    denials: PerCpuHashMap<MapData, u64, Denials>,
    stats: PerCpuArray<MapData, u64>,
}

impl TrafficTable {
    pub(super) fn open(maps: &Path) -> Result<Self, DatapathError> {
        Ok(Self {
            container_rows: open(maps, MapName::ContainerRows.as_str())?,
            traffic: open(maps, MapName::Traffic.as_str())?,
            device: open(maps, MapName::DeviceTraffic.as_str())?,
            denials: open(maps, MapName::Denials.as_str())?,
            stats: open(maps, MapName::DatapathStats.as_str())?,
        })
    }

    /// Every row of the container `cgroup_id`, socket and device views joined by key.
    pub fn rows(
        &self,
        port_rows: &PortRows,
        cgroup_id: u64,
    ) -> Result<Vec<TrafficRow>, DatapathError> {
        let mut by_container = self.rows_where(port_rows, &HashSet::from([cgroup_id]))?;
        Ok(by_container.remove(&cgroup_id).unwrap_or_default())
    }

    /// The figures of the container `cgroup_id` now.
    pub fn stats(
        &self,
        port_rows: &PortRows,
        cgroup_id: u64,
    ) -> Result<TrafficStats, DatapathError> {
        self.stats_of(cgroup_id, &self.rows(port_rows, cgroup_id)?)
    }

    /// The figures of the container `cgroup_id` from its `rows` (of one [`Self::all_rows`]).
    pub fn stats_of(
        &self,
        cgroup_id: u64,
        rows: &[TrafficRow],
    ) -> Result<TrafficStats, DatapathError> {
        Ok(traffic_stats(rows, &self.denials(cgroup_id)?))
    }

    /// The rows of every container of `containers`, in one pass over each map (one walk
    /// however many containers).
    pub fn all_rows(
        &self,
        port_rows: &PortRows,
        containers: &HashSet<u64>,
    ) -> Result<HashMap<u64, Vec<TrafficRow>>, DatapathError> {
        self.rows_where(port_rows, containers)
    }

    /// Tells the programs of a freshly attached container whose packets they count: written
    /// once, into storage the attachment created zeroed, before the container runs.
    pub fn name_container(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        let name = MapName::ContainerRows.as_str();
        for attach_type in SKB_ATTACH_TYPES {
            let key = CgroupStorageKey::new(cgroup_id, attach_type);
            let values = self.container_rows.get(key, 0).map_err(map_error(name))?;
            if values
                .first()
                .is_some_and(|copy| copy.cgroup_id == cgroup_id)
            {
                continue;
            }
            let named: Vec<ContainerRows> = (values.iter())
                .map(|copy| ContainerRows { cgroup_id, ..*copy })
                .collect();
            let named = per_cpu(named, name)?;
            (self.container_rows.insert(key, named, 0)).map_err(map_error(name))?;
        }
        Ok(())
    }

    /// The container's rows for the rest of each class, both directions added; zero once its
    /// programs are detached (the storage goes with them).
    fn rest_of_classes(&self, cgroup_id: u64) -> Result<[TrafficCounters; CLASSES], DatapathError> {
        let mut classes = [TrafficCounters::default(); CLASSES];
        for attach_type in SKB_ATTACH_TYPES {
            let key = CgroupStorageKey::new(cgroup_id, attach_type);
            let values = match self.container_rows.get(key, 0) {
                Ok(values) => values,
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(source) => return Err(map_error(MapName::ContainerRows.as_str())(source)),
            };
            for copy in values.iter() {
                for (sum, class) in classes.iter_mut().zip(&copy.classes) {
                    sum.add(class);
                }
            }
        }
        Ok(classes)
    }

    /// Rows of the containers `wanted` picks: the owned ports' own rows and the hashes' rows,
    /// added up by key (a port that left and came back has counts in both). Values are read
    /// only for their keys, and rows are joined by key in a hash map: a container may have a
    /// row for each of thousands of owned ports.
    fn rows_where(
        &self,
        port_rows: &PortRows,
        containers: &HashSet<u64>,
    ) -> Result<HashMap<u64, Vec<TrafficRow>>, DatapathError> {
        let wanted = |cgroup_id: u64| containers.contains(&cgroup_id);
        let mut joined: HashMap<TrafficKey, TrafficRow> = HashMap::new();
        for key in self.traffic.keys() {
            let key = key.map_err(map_error(MapName::Traffic.as_str()))?;
            if !wanted(key.cgroup_id) {
                continue;
            }
            if let Some(values) = value(&self.traffic, MapName::Traffic, &key)? {
                row_for(&mut joined, &key).socket = sum(&values, TrafficCounters::add);
            }
        }
        for key in self.device.keys() {
            let key = key.map_err(map_error(MapName::DeviceTraffic.as_str()))?;
            if !wanted(key.cgroup_id) {
                continue;
            }
            if let Some(values) = value(&self.device, MapName::DeviceTraffic, &key)? {
                row_for(&mut joined, &key).device = sum(&values, DeviceCounters::add);
            }
        }
        for row in port_rows.given()?.given() {
            let values = port_rows.read(row)?;
            let Some(holder) = values.first().map(|copy| copy.holder) else {
                continue;
            };
            if holder.cgroup_id == 0 || !wanted(holder.cgroup_id) {
                continue;
            }
            let joined = row_for(&mut joined, &holder);
            for copy in values.iter() {
                joined.socket.add(&copy.socket);
                joined.device.add(&copy.device);
            }
        }
        for &cgroup_id in containers {
            let classes = self.rest_of_classes(cgroup_id)?;
            for (class, counters) in (0u8..).zip(classes) {
                if counters != TrafficCounters::default() {
                    let key = TrafficKey::new(cgroup_id, 0, class);
                    row_for(&mut joined, &key).socket.add(&counters);
                }
            }
        }
        let mut rows: HashMap<u64, Vec<TrafficRow>> = HashMap::new();
        for (key, row) in joined {
            rows.entry(key.cgroup_id).or_default().push(row);
        }
        for container in rows.values_mut() {
            container.sort_by_key(|row| (row.class, row.port));
        }
        Ok(rows)
    }

    /// The container's denials (`HOST_CGROUP`: host processes').
    pub fn denials(&self, cgroup_id: u64) -> Result<Denials, DatapathError> {
        match self.denials.get(&cgroup_id, 0) {
            Ok(values) => Ok(sum(&values, Denials::add)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(Denials::default()),
            Err(source) => Err(map_error(MapName::Denials.as_str())(source)),
        }
    }

    pub fn health(&self) -> Result<DatapathHealth, DatapathError> {
        let stat = |index: u32| -> Result<u64, DatapathError> {
            let values =
                (self.stats.get(&index, 0)).map_err(map_error(MapName::DatapathStats.as_str()))?;
            Ok(values.iter().sum())
        };
        Ok(DatapathHealth {
            events_lost: stat(STAT_EVENTS_LOST)?,
            traffic_table_full: stat(STAT_TRAFFIC_TABLE_FULL)?,
        })
    }

    /// Keeps the counts of owned ports' rows that are being given back in the hashes, under
    /// each row's holder, added to whatever the hashes hold for it already.
    pub fn keep_rows(&mut self, port_rows: &PortRows, rows: &[u32]) -> Result<(), DatapathError> {
        for &row in rows {
            let values = port_rows.read(row)?;
            let Some(holder) = values.first().map(|copy| copy.holder) else {
                continue;
            };
            let socket: Vec<TrafficCounters> = values.iter().map(|copy| copy.socket).collect();
            let device: Vec<DeviceCounters> = values.iter().map(|copy| copy.device).collect();
            add_per_cpu(
                &mut self.traffic,
                MapName::Traffic,
                &holder,
                socket,
                TrafficCounters::add,
            )?;
            add_per_cpu(
                &mut self.device,
                MapName::DeviceTraffic,
                &holder,
                device,
                DeviceCounters::add,
            )?;
        }
        Ok(())
    }

    /// Forgets the container's counters; already absent is fine.
    pub fn remove(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        self.retain(|id| id != cgroup_id)
    }

    /// Removes the counters of every container not in `live`: left by a crash.
    pub fn sweep(&mut self, live: &HashSet<u64>) -> Result<(), DatapathError> {
        self.retain(|id| live.contains(&id))
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) -> Result<(), DatapathError> {
        let traffic: Vec<TrafficKey> = (self.traffic.keys().filter_map(Result::ok))
            .filter(|key| !keep(key.cgroup_id))
            .collect();
        for key in &traffic {
            let _ = self.traffic.remove(key);
        }
        let device: Vec<TrafficKey> = (self.device.keys().filter_map(Result::ok))
            .filter(|key| !keep(key.cgroup_id))
            .collect();
        for key in &device {
            let _ = self.device.remove(key);
        }
        let denials: Vec<u64> = (self.denials.keys().filter_map(Result::ok))
            .filter(|id| *id != HOST_CGROUP && !keep(*id))
            .collect();
        for id in &denials {
            let _ = self.denials.remove(id);
        }
        Ok(())
    }
}

fn row_for<'a>(
    rows: &'a mut HashMap<TrafficKey, TrafficRow>,
    key: &TrafficKey,
) -> &'a mut TrafficRow {
    rows.entry(*key).or_insert_with(|| TrafficRow {
        port: key.port,
        class: key.class,
        ..Default::default()
    })
}

/// A row's per-CPU values; None when it went between listing the keys and reading it.
fn value<V: aya::Pod>(
    map: &PerCpuHashMap<MapData, TrafficKey, V>,
    name: MapName,
    key: &TrafficKey,
) -> Result<Option<PerCpuValues<V>>, DatapathError> {
    match map.get(key, 0) {
        Ok(values) => Ok(Some(values)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(map_error(name.as_str())(source)),
    }
}

/// Adds `counts` (one per CPU) to the hash row `key`, creating it if absent; nothing when
/// every count is zero.
fn add_per_cpu<V: aya::Pod + Default + PartialEq>(
    map: &mut PerCpuHashMap<MapData, TrafficKey, V>,
    name: MapName,
    key: &TrafficKey,
    mut counts: Vec<V>,
    add: fn(&mut V, &V),
) -> Result<(), DatapathError> {
    if counts.iter().all(|count| *count == V::default()) {
        return Ok(());
    }
    let label = name.as_str();
    if let Some(present) = value(map, name, key)? {
        for (count, present) in counts.iter_mut().zip(present.iter()) {
            add(count, present);
        }
    }
    let values = per_cpu(counts, label)?;
    map.insert(key, values, 0).map_err(map_error(label))
}

fn sum<V: aya::Pod + Default>(values: &PerCpuValues<V>, add: fn(&mut V, &V)) -> V {
    let mut total = V::default();
    for value in values.iter() {
        add(&mut total, value);
    }
    total
}

/// A container's rows and denials as the figures hostnetd reports.
pub fn traffic_stats(rows: &[TrafficRow], denials: &Denials) -> TrafficStats {
    let mut stats = TrafficStats {
        denials: DenialCounts::from(denials),
        ..TrafficStats::default()
    };
    for name in ["tcp", "udp", "other"] {
        stats.protocols.insert(name.into(), Counters::default());
    }
    for row in rows {
        let socket = Counters::from(&row.socket);
        stats.total.add(&socket);
        if let Some(protocol) = stats.protocols.get_mut(class_name(row.class)) {
            protocol.add(&socket);
        }
        if row.port != 0 {
            stats.ports.push(PortTraffic {
                port: format!("{}/{}", row.port, class_name(row.class)),
                socket,
                device: DeviceTraffic {
                    counters: Counters::from(&row.device.traffic),
                    dropped_packets: row.device.dropped_packets,
                    dropped_bytes: row.device.dropped_bytes,
                },
            });
        }
    }
    stats
}

fn class_name(class: u8) -> &'static str {
    match class {
        CLASS_TCP => "tcp",
        CLASS_UDP => "udp",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use hostnetd_common::traffic::{CLASS_OTHER, DENIAL_BIND};

    use super::*;

    fn counters(rx: u64, tx: u64) -> TrafficCounters {
        TrafficCounters {
            rx_packets: rx,
            rx_bytes: rx * 100,
            tx_packets: tx,
            tx_bytes: tx * 100,
        }
    }

    #[test]
    fn rows_add_up_to_protocols_and_totals() {
        let rows = [
            TrafficRow {
                port: 80,
                class: CLASS_TCP,
                socket: counters(3, 4),
                device: DeviceCounters {
                    traffic: counters(3, 4),
                    dropped_packets: 2,
                    dropped_bytes: 120,
                },
            },
            TrafficRow {
                port: 0,
                class: CLASS_TCP,
                socket: counters(1, 1),
                device: DeviceCounters::default(),
            },
            TrafficRow {
                port: 0,
                class: CLASS_OTHER,
                socket: counters(0, 2),
                device: DeviceCounters::default(),
            },
        ];
        let mut denials = Denials::default();
        denials.counts[DENIAL_BIND as usize] = 5;
        let stats = traffic_stats(&rows, &denials);
        assert_eq!(stats.total.rx_packets, 4);
        assert_eq!(stats.total.tx_bytes, 700);
        assert_eq!(stats.protocols["tcp"].tx_packets, 5);
        assert_eq!(stats.protocols["udp"], Counters::default());
        assert_eq!(stats.protocols["other"].tx_packets, 2);
        assert_eq!(stats.ports.len(), 1);
        assert_eq!(stats.ports[0].port, "80/tcp");
        assert_eq!(stats.ports[0].device.dropped_packets, 2);
        assert_eq!(stats.denials.binds, 5);
        assert_eq!(stats.denials.total(), 5);
    }
}
