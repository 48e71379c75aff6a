//! Traffic figures as hostnetd reports them: totals, per protocol and per owned port, with
//! the container's denials. An exited container's last figures are kept in its record.
use std::collections::BTreeMap;

use hostnetd_common::traffic::{
    Denials, DENIAL_BIND, DENIAL_CONNECT, DENIAL_INGRESS, DENIAL_RAW_SOCKET, DENIAL_SEND,
};
use serde::{Deserialize, Serialize};

/// Packets and bytes each way, from the IP header on, GSO/GRO super-packets as their segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
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
