//! Every figure a run collects.
use std::collections::BTreeMap;

use super::{
    bandwidth, bpfstats, control, engines,
    plan::Config,
    startup_peers, targets, tc_attach,
    workloads::{Metric, Workload},
};

/// What each program ran in each workload of the profiling pass.
pub type ProgramRuns = Vec<(Workload, bpfstats::ProgramStats)>;

/// Every figure of one benchmark run.
#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<(Metric, Config), Vec<f64>>,
    pub programs: ProgramRuns,
    /// The TC programs on host traffic (ports nobody owns), with the daemon running.
    pub unowned: Vec<bpfstats::ProgramStats>,
    /// What the statistics report for a program that does nothing (ns per run).
    pub floors: Option<targets::Floors>,
    pub control: control::ControlPlane,
    /// Nanoseconds per loopback packet with lo's TC hooks empty, TCX-attached, clsact-attached.
    pub tc_attach: tc_attach::TcAttachSamples,
    /// `docker run -d` with runc and with hostnetd-runc.
    pub engines: engines::EngineStartup,
    /// Limited streams, and a limit's cost per packet.
    pub bandwidth: bandwidth::BandwidthResults,
    /// `hostnetd run -d`, `docker run -d` and `podman run -d` of the same image.
    pub startup_peers: startup_peers::StartupPeers,
    /// Why docker-bridge-noproxy was not measured, if it was not.
    pub docker_noproxy_absent: Option<String>,
    pub load_per_round: Vec<f64>,
    /// BPF programs others had attached on every process's or every loopback packet's path
    /// at the start of each round, while hostnetd was down.
    pub foreign_hooks_per_round: Vec<Vec<String>>,
}
