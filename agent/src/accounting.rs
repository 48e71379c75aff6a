//! Traffic accounting as hostnetd reports it: a container's counters from the kernel maps,
//! summed into totals, per protocol and per owned port, with its denials. An exited
//! container's last figures are kept in its record until `rm`.
use std::collections::{BTreeMap, HashMap};

use hostnetd_common::traffic::{
    Denials, CLASS_TCP, CLASS_UDP, DENIAL_BIND, DENIAL_CONNECT, DENIAL_INGRESS, DENIAL_RAW_SOCKET,
    DENIAL_SEND,
};
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{Datapath, DatapathError, TrafficRow},
    host::{Host, HostError},
    store::ContainerRecord,
};

/// Packets and bytes each way, from the IP header on, GSO/GRO super-packets as their segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.rx_bytes += other.rx_bytes;
        self.rx_packets += other.rx_packets;
        self.tx_bytes += other.tx_bytes;
        self.tx_packets += other.tx_packets;
    }
}

impl From<&hostnetd_common::traffic::TrafficCounters> for Counters {
    fn from(kernel: &hostnetd_common::traffic::TrafficCounters) -> Self {
        Self {
            rx_bytes: kernel.rx_bytes,
            rx_packets: kernel.rx_packets,
            tx_bytes: kernel.tx_bytes,
            tx_packets: kernel.tx_packets,
        }
    }
}

/// One owned port's traffic: as the container's sockets saw it, and as the host's interfaces
/// saw it (including packets ingress policy dropped there, and packets that never reached a
/// socket).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortTraffic {
    /// `80/tcp`.
    pub port: String,
    #[serde(flatten)]
    pub socket: Counters,
    pub device: DeviceTraffic,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTraffic {
    #[serde(flatten)]
    pub counters: Counters,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

/// Calls and packets the container's policy refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenialCounts {
    pub binds: u64,
    pub connects: u64,
    pub sends: u64,
    pub raw_sockets: u64,
    pub ingress_drops: u64,
}

impl DenialCounts {
    pub fn total(&self) -> u64 {
        self.binds + self.connects + self.sends + self.raw_sockets + self.ingress_drops
    }
}

impl From<&Denials> for DenialCounts {
    fn from(kernel: &Denials) -> Self {
        let count = |kind: u8| kernel.counts[kind as usize];
        Self {
            binds: count(DENIAL_BIND),
            connects: count(DENIAL_CONNECT),
            sends: count(DENIAL_SEND),
            raw_sockets: count(DENIAL_RAW_SOCKET),
            ingress_drops: count(DENIAL_INGRESS),
        }
    }
}

/// Everything hostnetd counts for one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficStats {
    /// All of it, as the container's sockets saw it.
    #[serde(flatten)]
    pub total: Counters,
    /// By protocol: `tcp`, `udp`, `other`.
    pub protocols: BTreeMap<String, Counters>,
    /// By owned port, busiest first is up to the reader: sorted by protocol, then port.
    pub ports: Vec<PortTraffic>,
    pub denials: DenialCounts,
}

impl TrafficStats {
    /// The container's figures now.
    pub fn read(datapath: &Datapath, cgroup_id: u64) -> Result<Self, DatapathError> {
        let rows = datapath.traffic_ref().rows(cgroup_id)?;
        Self::with_denials(datapath, cgroup_id, &rows)
    }

    fn with_denials(
        datapath: &Datapath,
        cgroup_id: u64,
        rows: &[TrafficRow],
    ) -> Result<Self, DatapathError> {
        let denials = datapath.traffic_ref().denials(cgroup_id)?;
        Ok(Self::from_rows(rows, &denials))
    }

    fn from_rows(rows: &[TrafficRow], denials: &Denials) -> Self {
        let mut stats = Self {
            denials: DenialCounts::from(denials),
            ..Self::default()
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
}

/// `GET /v1/stats`: one container's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    pub state: String,
    /// Processes in the container now.
    pub pids: u64,
    #[serde(flatten)]
    pub traffic: TrafficStats,
}

impl Host {
    /// The figures of the named containers (every container when `references` is empty, live
    /// ones only unless `all`): live ones from the kernel, exited ones from their record.
    pub fn stats(
        &self,
        references: &[String],
        all: bool,
    ) -> Result<Vec<ContainerStats>, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        self.reconcile(&mut datapath)?;
        let records: Vec<ContainerRecord> = if references.is_empty() {
            (self.store.list()?.into_iter())
                .filter(|record| all || record.state.is_live())
                .collect()
        } else {
            (references.iter())
                .map(|reference| self.store.find(reference))
                .collect::<Result<_, _>>()?
        };
        // One walk of the traffic maps for every container asked about.
        let rows = datapath.traffic_ref().all_rows()?;
        records
            .iter()
            .map(|record| container_stats(&datapath, &rows, record))
            .collect()
    }
}

fn container_stats(
    datapath: &Datapath,
    rows: &HashMap<u64, Vec<TrafficRow>>,
    record: &ContainerRecord,
) -> Result<ContainerStats, HostError> {
    let traffic = if record.state.is_live() {
        let own = rows.get(&record.cgroup.id).map_or(&[][..], Vec::as_slice);
        TrafficStats::with_denials(datapath, record.cgroup.id, own)?
    } else {
        record.final_traffic.clone().unwrap_or_default()
    };
    Ok(ContainerStats {
        id: record.id.clone(),
        name: record.name.clone(),
        state: record.state.as_str().to_string(),
        pids: count_pids(&record.cgroup.path),
        traffic,
    })
}

/// Processes in a cgroup and every cgroup below it.
fn count_pids(cgroup: &std::path::Path) -> u64 {
    let own = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .map_or(0, |procs| procs.lines().count() as u64);
    let children: u64 = std::fs::read_dir(cgroup).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| count_pids(&entry.path()))
            .sum()
    });
    own + children
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
    use hostnetd_common::traffic::{DeviceCounters, TrafficCounters, CLASS_OTHER};

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
        let stats = TrafficStats::from_rows(&rows, &denials);
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
