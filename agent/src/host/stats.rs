//! `stats`: each container's traffic, live from the kernel maps or, once it exited, from its
//! record.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use hostnetd_common::traffic::HOST_CGROUP;

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

/// Everything one scrape reports, read under one look at the store.
pub struct MetricsSnapshot {
    /// Every container, exited ones with their last figures.
    pub stats: Vec<ContainerStats>,
    pub records: Vec<ContainerRecord>,
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
    })
}

/// Processes in a cgroup and every cgroup below it.
fn count_pids(cgroup: &std::path::Path) -> u64 {
    crate::sys::cgroup::processes_below(cgroup).len() as u64
}
