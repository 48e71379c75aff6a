//! `stats`: each container's traffic, live from the kernel maps or, once it exited, from its
//! record.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use hostnetd_common::{limit::Pace, traffic::HOST_CGROUP};

use super::{Host, HostError};
use crate::{
    datapath::{Datapath, DatapathHealth, TrafficRow},
    store::{
        traffic::{DenialCounts, TrafficStats},
        ContainerRecord,
    },
};

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
    /// What its bandwidth limits did, for a live container that has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitStats>,
}

/// A limited container's limits, each way it has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<DirectionLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<DirectionLimit>,
}

/// One direction's limit and what it did since the container started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionLimit {
    /// As configured, `RATE[:BURST]`.
    pub limit: String,
    pub limit_bytes_per_second: u64,
    /// Held back by EDT pacing (they went, later).
    pub delayed_packets: u64,
    pub delayed_bytes: u64,
    /// Dropped above the rate.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Marked Congestion Experienced instead of dropped.
    pub marked_packets: u64,
}

impl DirectionLimit {
    fn new(limit: &str, pace: &Pace) -> Self {
        Self {
            limit: limit.to_string(),
            limit_bytes_per_second: pace.bytes_per_second,
            delayed_packets: pace.delayed_packets,
            delayed_bytes: pace.delayed_bytes,
            dropped_packets: pace.dropped_packets,
            dropped_bytes: pace.dropped_bytes,
            marked_packets: pace.marked_packets,
        }
    }
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
                .map(Arc::unwrap_or_clone)
                .collect()
        } else {
            (references.iter())
                .map(|reference| self.store.find(reference))
                .collect::<Result<_, _>>()?
        };
        // One walk of the traffic maps for every container asked about.
        let live: HashSet<u64> = (records.iter())
            .filter(|record| record.state.is_live())
            .map(|record| record.cgroup.id)
            .collect();
        let rows = datapath.all_traffic_rows(&live)?;
        records
            .iter()
            .map(|record| container_stats(&datapath, &rows, record))
            .collect()
    }
}

/// Everything one scrape reports, read under one look at the store.
pub struct MetricsSnapshot {
    /// Every container, exited ones with their last figures.
    pub stats: Vec<ContainerStats>,
    pub records: Vec<Arc<ContainerRecord>>,
    pub health: DatapathHealth,
    /// Denials of processes outside every container (host protection).
    pub host_denials: DenialCounts,
}

impl Host {
    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot, HostError> {
        let stats = self.stats(&[], true)?;
        let records = self.store.list()?;
        let (health, host_denials) = self.datapath_health()?;
        Ok(MetricsSnapshot {
            stats,
            records,
            health,
            host_denials,
        })
    }

    /// The datapath's own counters, and the host processes' denials.
    pub fn datapath_health(&self) -> Result<(DatapathHealth, DenialCounts), HostError> {
        let (_lock, datapath) = self.lock_datapath()?;
        let traffic = datapath.traffic_ref();
        Ok((
            traffic.health()?,
            DenialCounts::from(&traffic.denials(HOST_CGROUP)?),
        ))
    }
}

fn container_stats(
    datapath: &Datapath,
    rows: &HashMap<u64, Vec<TrafficRow>>,
    record: &ContainerRecord,
) -> Result<ContainerStats, HostError> {
    let traffic = if record.state.is_live() {
        let own = rows.get(&record.cgroup.id).map_or(&[][..], Vec::as_slice);
        datapath.traffic_ref().stats_of(record.cgroup.id, own)?
    } else {
        record.final_traffic.clone().unwrap_or_default()
    };
    Ok(ContainerStats {
        id: record.id.clone(),
        name: record.name.clone(),
        state: record.state.as_str().to_string(),
        pids: count_pids(&record.cgroup.path),
        traffic,
        limits: limit_stats(datapath, record),
    })
}

fn limit_stats(datapath: &Datapath, record: &ContainerRecord) -> Option<LimitStats> {
    if !record.state.is_live() {
        return None;
    }
    let usage = datapath.limits().usage(record.cgroup.id)?;
    let direction = |limit: &Option<String>, pace: &Pace| {
        (limit.as_deref()).map(|limit| DirectionLimit::new(limit, pace))
    };
    Some(LimitStats {
        egress: direction(&record.egress_rate, &usage.egress),
        ingress: direction(&record.ingress_rate, &usage.ingress),
    })
}

/// Processes in a cgroup and every cgroup below it.
fn count_pids(cgroup: &std::path::Path) -> u64 {
    crate::sys::cgroup::processes_below(cgroup).len() as u64
}
