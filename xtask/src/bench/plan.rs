//! What a benchmark run measures: its parts, configurations, ports and durations; and how it
//! stops early when asked.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::bail;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Datapath,
    Programs,
    /// Start-up (beside runc, Docker and podman), admission and bind with many containers.
    ControlPlane,
    /// TCX against clsact: the TC programs' per-packet cost attached either way.
    TcAttach,
    /// What hostnetd-runc adds to `docker run -d` over runc.
    Engines,
    /// Bandwidth limits: achieved against set, and the limit's cost per packet.
    Bandwidth,
}

/// The configurations, in the report's column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Config {
    H0,
    H0d,
    H1,
    Nat,
    /// Docker's default: a bridge network, `-p` served by docker-proxy.
    DockerBridge,
    /// Docker with `"userland-proxy": false`: `-p` by dockerd's own iptables DNAT.
    DockerNoProxy,
}

impl Config {
    pub fn label(self) -> &'static str {
        match self {
            Self::H0 => "H0",
            Self::H0d => "H0+daemon",
            Self::H1 => "H1",
            Self::Nat => "NAT",
            Self::DockerBridge => "docker-bridge",
            Self::DockerNoProxy => "docker-bridge-noproxy",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::H0 => "h0",
            Self::H0d => "h0d",
            Self::H1 => "h1",
            Self::Nat => "nat",
            Self::DockerBridge => "docker_bridge",
            Self::DockerNoProxy => "docker_bridge_noproxy",
        }
    }

    /// Docker's configurations run the network workloads only: the socket-call loops measure
    /// hostnetd's programs, which a Docker container does not pass.
    pub fn runs_syscall_loops(self) -> bool {
        !matches!(self, Self::DockerBridge | Self::DockerNoProxy)
    }

    /// Whose servers run in a container with a config file mounted from the host.
    pub fn is_containerized(self) -> bool {
        matches!(self, Self::H1 | Self::DockerBridge | Self::DockerNoProxy)
    }
}

/// The port range and where each use falls in it.
#[derive(Clone, Copy, Debug)]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// Ports below this offset are the servers' and probes'; the scale test's containers own the
/// rest, five port numbers each.
const SCALE_OFFSET: u16 = 100;
const SCALE_PORTS_PER_CONTAINER: u16 = 5;

impl PortRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (first, last) = text
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                format!("invalid port range {text:?}: give FIRST-LAST, such as 24000-26999")
            })?;
        if first == 0 || last < first + SCALE_OFFSET + SCALE_PORTS_PER_CONTAINER {
            return Err(format!(
                "port range {text} is too small: the benchmark needs at least {} ports from 1 up",
                SCALE_OFFSET + SCALE_PORTS_PER_CONTAINER
            ));
        }
        Ok(Self { first, last })
    }

    /// H0 and H0+daemon share the very same host servers.
    pub fn servers(&self, config: Config) -> ServerPorts {
        let offset = match config {
            Config::H0 | Config::H0d => 0,
            Config::H1 => 10,
            Config::Nat => 20,
            Config::DockerBridge => 60,
            Config::DockerNoProxy => 70,
        };
        ServerPorts::starting_at(self.first + offset)
    }

    pub fn syscall(&self, config: Config) -> u16 {
        self.first + 30 + config as u16
    }

    /// For the control plane: the startup server, a port a host socket holds (admission
    /// refuses it), the probe container's five, and the bind loop's.
    pub fn startup(&self) -> u16 {
        self.first + 40
    }

    pub fn held(&self) -> u16 {
        self.first + 41
    }

    pub fn probe(&self) -> u16 {
        self.first + 42
    }

    pub fn scale_bind(&self) -> u16 {
        self.first + 47
    }

    /// The TC attach comparison's receiving and sending ports (nobody owns them).
    pub fn tc_blast(&self) -> (u16, u16) {
        (self.first + 48, self.first + 49)
    }

    /// The port the engine benchmark's containers declare.
    pub fn engine_port(&self) -> u16 {
        self.first + 50
    }

    /// The bandwidth benchmark's iperf3 server (on the host, owned by nobody); the next
    /// port is the limited neighbour's server.
    pub fn bandwidth_port(&self) -> u16 {
        self.first + 51
    }

    /// The first of the five port numbers the scale test's container `index` owns.
    pub fn scale_container(&self, index: usize) -> u16 {
        self.first + SCALE_OFFSET + index as u16 * SCALE_PORTS_PER_CONTAINER
    }

    pub fn scale_capacity(&self) -> usize {
        usize::from(self.last - self.first + 1 - SCALE_OFFSET)
            / usize::from(SCALE_PORTS_PER_CONTAINER)
    }
}

/// Durations and repetitions: full (about 20 minutes on 2 cores) or quick (under 2).
/// Rounds are many and short: a ratio's bootstrap interval narrows with the number of rounds
/// and hardly with their length, as the rounds' spread is the machine's, not the clients'.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub only: Option<Part>,
    pub rounds: usize,
    pub duration: Duration,
    pub syscall_duration: Duration,
    pub profile_duration: Duration,
    pub startup_samples: usize,
    /// Container counts the control plane is measured at, as asked and as the range allows.
    pub scale_counts: Vec<usize>,
    pub scale_counts_asked: Vec<usize>,
    pub scale_samples: usize,
    /// Rounds of the TC attach comparison (each: none, TCX, clsact).
    pub tc_rounds: usize,
    /// Rounds of the engine comparison (each: one start with runc, one with hostnetd-runc).
    pub engine_rounds: usize,
    /// Rounds of the start-up peers (each: `hostnetd run -d`, `docker run -d` and
    /// `podman run -d` of the busybox image, in a rotating order).
    pub peer_rounds: usize,
    /// Seconds of each limited stream.
    pub bandwidth_seconds: u32,
    /// Rounds of the unlimited stream alone and beside a limited one.
    pub neighbour_rounds: usize,
}

impl Plan {
    pub fn new(quick: bool, only: Option<Part>, ports: &PortRange) -> Self {
        let asked = if quick {
            vec![1, 10, 25]
        } else {
            vec![1, 100, 500]
        };
        let mut counts: Vec<usize> = (asked.iter())
            .map(|&n| n.min(ports.scale_capacity()))
            .collect();
        counts.dedup();
        Self {
            quick,
            only,
            rounds: if quick { 1 } else { 8 },
            duration: Duration::from_secs(if quick { 1 } else { 2 }),
            syscall_duration: Duration::from_millis(if quick { 200 } else { 500 }),
            profile_duration: Duration::from_secs(if quick { 1 } else { 2 }),
            // hostnetd's share over runc is a difference of two noisy figures: 15 pairs left
            // its interval wider than the target's margin.
            startup_samples: if quick { 3 } else { 31 },
            tc_rounds: if quick { 2 } else { 9 },
            engine_rounds: if quick { 3 } else { 30 },
            bandwidth_seconds: if quick { 2 } else { 10 },
            neighbour_rounds: if quick { 3 } else { 7 },
            peer_rounds: if quick { 3 } else { 15 },
            scale_counts: counts,
            scale_counts_asked: asked,
            // Cheap beside creating the containers: each count's medians and intervals need
            // more than a handful on a machine whose noise is a millisecond.
            scale_samples: if quick { 3 } else { 15 },
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C (or SIGTERM) ends the benchmark at the next step, so that every guard runs and
/// removes what it made; the clients running then are interrupted along with us.
pub fn install_interrupt_handler() {
    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: everything the benchmark started has been removed");
    }
    Ok(())
}

/// The ports one configuration's servers listen on.
#[derive(Clone, Copy, Debug)]
pub struct ServerPorts {
    pub rr: u16,
    pub conn: u16,
    /// iperf3's, TCP (control and stream) and UDP.
    pub iperf: u16,
    pub http: u16,
}

impl ServerPorts {
    pub fn starting_at(first: u16) -> Self {
        Self {
            rr: first,
            conn: first + 1,
            iperf: first + 2,
            http: first + 3,
        }
    }

    pub fn tcp(&self) -> [u16; 4] {
        [self.rr, self.conn, self.iperf, self.http]
    }
}
