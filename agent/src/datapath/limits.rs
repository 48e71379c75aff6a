//! Per-container bandwidth limits as `skb_egress` and `tc_ingress` read them (`LIMITS`), and
//! the devices whose fq qdisc paces by departure time (`PACED_DEVICES`).
use std::path::Path;

use aya::maps::{HashMap, MapData};
use hostnetd_common::{
    limit::{ns_per_byte, transmit_ns, ContainerLimits, Pace},
    MapName,
};

use super::{
    error::{map_error, DatapathError},
    interfaces::ethernet_interfaces,
    pins::open_typed as open,
    programs::SYS_CLASS_NET,
    qdisc::{root_qdiscs, PacingMode, RootQdisc},
};
use crate::policy::rate::RateLimit;

/// A container's limits: none, either direction, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub egress: Option<RateLimit>,
    pub ingress: Option<RateLimit>,
}

impl Bandwidth {
    pub fn is_unlimited(&self) -> bool {
        self.egress.is_none() && self.ingress.is_none()
    }
}

pub struct LimitTable {
    limits: HashMap<MapData, u64, ContainerLimits>,
    paced: HashMap<MapData, u32, u32>,
}

impl LimitTable {
    pub(super) fn open(maps: &Path) -> Result<Self, DatapathError> {
        Ok(Self {
            limits: open(maps, MapName::Limits.as_str())?,
            paced: open(maps, MapName::PacedDevices.as_str())?,
        })
    }

    /// Puts `bandwidth` in force for the container, keeping the schedule and the counters of
    /// a limit it already had (an update changes the rate, not the history); an unlimited
    /// container has no entry at all.
    pub(super) fn write(
        &mut self,
        cgroup_id: u64,
        bandwidth: &Bandwidth,
    ) -> Result<(), DatapathError> {
        if bandwidth.is_unlimited() {
            return self.remove(cgroup_id);
        }
        let current = self.limits.get(&cgroup_id, 0).unwrap_or_default();
        let entry = ContainerLimits {
            egress: configured(current.egress, bandwidth.egress),
            ingress: configured(current.ingress, bandwidth.ingress),
        };
        self.limits
            .insert(cgroup_id, entry, 0)
            .map_err(map_error("LIMITS"))
    }

    /// Whether the kernel holds exactly `bandwidth` for the container.
    pub(super) fn holds(&self, cgroup_id: u64, bandwidth: &Bandwidth) -> bool {
        let current = self.limits.get(&cgroup_id, 0).ok();
        let wanted = (!bandwidth.is_unlimited()).then(|| ContainerLimits {
            egress: configured(Pace::default(), bandwidth.egress),
            ingress: configured(Pace::default(), bandwidth.ingress),
        });
        let config = |limits: ContainerLimits| {
            [limits.egress, limits.ingress].map(|pace| (pace.bytes_per_second, pace.burst_ns))
        };
        current.map(config) == wanted.map(config)
    }

    pub(super) fn remove(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        match self.limits.remove(&cgroup_id) {
            Ok(()) => Ok(()),
            // Never limited, or already removed: the kernel says ENOENT, aya a syscall error.
            Err(_) if self.limits.get(&cgroup_id, 0).is_err() => Ok(()),
            Err(error) => Err(map_error("LIMITS")(error)),
        }
    }

    /// The cgroup ids that have limits.
    pub(super) fn limited(&self) -> Vec<u64> {
        self.limits.keys().filter_map(Result::ok).collect()
    }

    /// Whether any container has a limit: one look at the table, not a walk.
    pub(super) fn any(&self) -> bool {
        self.limits.keys().next().is_some()
    }

    /// The container's limits and what they did so far; None for an unlimited container.
    pub fn usage(&self, cgroup_id: u64) -> Option<ContainerLimits> {
        self.limits.get(&cgroup_id, 0).ok()
    }

    /// Tells the hooks which devices fq paces, from the root qdiscs in place now; whether
    /// any does. Called whenever the datapath opens, as the device attachments are.
    pub(super) fn sync_paced_devices(&mut self) -> Result<bool, DatapathError> {
        let paced: Vec<u32> = (roots()?.iter())
            .filter(|root| root.pacing() == PacingMode::Edt)
            .map(|root| root.ifindex)
            .collect();
        let stale: Vec<u32> = (self.paced.keys().filter_map(Result::ok))
            .filter(|ifindex| !paced.contains(ifindex))
            .collect();
        for ifindex in stale {
            let _ = self.paced.remove(&ifindex);
        }
        for &ifindex in &paced {
            self.paced
                .insert(ifindex, 1, 0)
                .map_err(map_error("PACED_DEVICES"))?;
        }
        Ok(!paced.is_empty())
    }
}

/// How a limited container's output through one device is held to its rate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DevicePacing {
    pub device: String,
    pub ifindex: u32,
    /// The device's root qdisc (`fq`, `mq`, `noqueue`, ...).
    pub qdisc: String,
    /// `edt` (fq holds each packet until its departure time) or `police` (what exceeds the
    /// rate is dropped, or ECN-marked).
    pub egress_limits: PacingMode,
}

fn roots() -> Result<Vec<RootQdisc>, DatapathError> {
    root_qdiscs().map_err(|source| DatapathError::Netlink {
        what: "list the devices' root qdiscs",
        source,
    })
}

/// Every interface hostnetd attaches to, with the mode limits work in through it.
pub fn device_pacing() -> Result<Vec<DevicePacing>, DatapathError> {
    let roots = roots()?;
    let interfaces = ethernet_interfaces(Path::new(SYS_CLASS_NET));
    Ok((interfaces.into_iter())
        .map(|interface| {
            let root = roots.iter().find(|root| root.ifindex == interface.index);
            DevicePacing {
                device: interface.name,
                ifindex: interface.index,
                qdisc: root.map_or_else(|| "noqueue".to_string(), |root| root.kind.clone()),
                egress_limits: root.map_or(PacingMode::Police, RootQdisc::pacing),
            }
        })
        .collect())
}

/// `current`'s schedule and counters under the configuration of `limit` (none: zero rate).
fn configured(current: Pace, limit: Option<RateLimit>) -> Pace {
    match limit {
        Some(limit) => {
            let per_byte = ns_per_byte(limit.bytes_per_second);
            Pace {
                bytes_per_second: limit.bytes_per_second,
                ns_per_byte: per_byte,
                burst_ns: transmit_ns(limit.burst_or_default(), per_byte),
                ..current
            }
        }
        None => Pace {
            bytes_per_second: 0,
            ns_per_byte: 0,
            burst_ns: 0,
            ..current
        },
    }
}
