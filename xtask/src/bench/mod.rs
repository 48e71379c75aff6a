//! `cargo xtask bench`: hostnetd's speed measured side by side with bare host processes and
//! with docker-style NAT, the cost of each eBPF program, and the control plane's costs.
//!
//! Configurations (the same server and client programs in each):
//! - H0: bare host processes, hostnetd not running;
//! - H0+daemon: the same host processes while hostnetd runs the H1 containers (host traffic
//!   of no container must not change);
//! - H1: the servers in hostnetd containers with port ownership and [`host::H1_POLICY_FLAGS`];
//! - NAT: the servers in a network namespace behind a bridge and iptables DNAT ([`nat`]).
//!
//! Each round measures every workload in every configuration, the order alternating between
//! rounds, so that the machine's other load falls on all of them alike; medians over rounds
//! are reported. Then a profiling pass reads the programs' costs from the kernel's BPF
//! statistics, and the control plane is timed. Results go to target/bench/ (report.md,
//! results.json, SVG plots) and, in full mode, to docs/PERFORMANCE.md.
mod bpfstats;
mod control;
mod host;
mod image;
mod machine;
mod nat;
mod plot;
mod report;
mod servers;
mod targets;
mod tools;
mod workloads;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{build::workspace_root, images::build_images, setup::say};

use self::{
    host::BenchHost,
    nat::NatNetwork,
    servers::{Nginx, Processes, ServerPorts},
    workloads::{Metric, Workload},
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Short durations and two rounds, to check the harness (docs/PERFORMANCE.md is left alone).
    #[arg(long)]
    quick: bool,
    /// The ports the benchmark may use, FIRST-LAST: its servers, and the control-plane
    /// containers' owned ports (5 port numbers each, TCP and UDP: 10 owned ports).
    #[arg(long, default_value = "24000-26999", value_parser = PortRange::parse)]
    ports: PortRange,
    /// Run one part only (while working on the benchmark); the report leaves the rest empty
    /// and docs/PERFORMANCE.md is left alone.
    #[arg(long, value_enum)]
    only: Option<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Datapath,
    Programs,
    ControlPlane,
}

/// The four configurations, in the report's column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Config {
    H0,
    H0d,
    H1,
    Nat,
}

impl Config {
    pub fn label(self) -> &'static str {
        match self {
            Self::H0 => "H0",
            Self::H0d => "H0+daemon",
            Self::H1 => "H1",
            Self::Nat => "NAT",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::H0 => "h0",
            Self::H0d => "h0d",
            Self::H1 => "h1",
            Self::Nat => "nat",
        }
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
    fn parse(text: &str) -> Result<Self, String> {
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

    /// The first of the five port numbers the scale test's container `index` owns.
    pub fn scale_container(&self, index: usize) -> u16 {
        self.first + SCALE_OFFSET + index as u16 * SCALE_PORTS_PER_CONTAINER
    }

    pub fn scale_capacity(&self) -> usize {
        usize::from(self.last - self.first + 1 - SCALE_OFFSET)
            / usize::from(SCALE_PORTS_PER_CONTAINER)
    }
}

/// Durations and repetitions: full (about 15 minutes on 2 cores) or quick.
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
}

impl Plan {
    fn new(quick: bool, only: Option<Part>, ports: &PortRange) -> Self {
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
            rounds: if quick { 2 } else { 5 },
            duration: Duration::from_secs(if quick { 1 } else { 4 }),
            syscall_duration: Duration::from_millis(if quick { 300 } else { 1000 }),
            profile_duration: Duration::from_secs(if quick { 1 } else { 2 }),
            startup_samples: if quick { 3 } else { 10 },
            scale_counts: counts,
            scale_counts_asked: asked,
            scale_samples: if quick { 3 } else { 7 },
        }
    }
}

/// What every step needs: the binaries, the ports, the hostnetd instance and the NAT network.
/// Fields drop in order: the hostnetd instance is removed before the network.
pub struct Env {
    pub host: BenchHost,
    pub nat: NatNetwork,
    pub benchpeer: PathBuf,
    pub ports: PortRange,
    pub logs: PathBuf,
    pub nginx: Nginx,
    pub nginx_image: PathBuf,
    pub scratch: PathBuf,
}

/// What each program ran in each workload of the profiling pass.
pub type ProgramRuns = Vec<(Workload, bpfstats::ProgramStats)>;

/// Every figure of one benchmark run.
#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<(Metric, Config), Vec<f64>>,
    pub programs: ProgramRuns,
    /// What the statistics report for a program that does nothing (ns per run).
    pub floors: Option<targets::Floors>,
    pub control: control::ControlPlane,
    pub load_per_round: Vec<f64>,
    /// BPF programs others had attached on every process's or every loopback packet's path
    /// at the start of each round, while hostnetd was down.
    pub foreign_hooks_per_round: Vec<Vec<String>>,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    crate::setup::setup()?;
    let binaries = tools::prepare()?;
    let images = build_images()?;
    install_interrupt_handler();
    let plan = Plan::new(args.quick, args.only, &args.ports);
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(out.join("logs"))?;
    let machine = machine::describe()?;
    let scratch = Scratch::create()?;
    let results = {
        let env = Env {
            host: BenchHost::new(&binaries.hostnetd, &scratch.0),
            nat: nat_network(&args.ports)?,
            benchpeer: binaries.benchpeer.clone(),
            ports: args.ports,
            logs: out.join("logs"),
            nginx: Nginx::prepare(&images.join("nginx.tar"), &scratch.0)?,
            nginx_image: images.join("nginx.tar"),
            scratch: scratch.0.clone(),
        };
        run_all(&env, &plan)?
    };
    say("every container, namespace and rule the benchmark made is removed");
    report::write(&out, &plan, &machine, &results)
}

fn nat_network(ports: &PortRange) -> anyhow::Result<NatNetwork> {
    let servers = ports.servers(Config::Nat);
    let untracked: Vec<u16> = [Config::H0, Config::H1]
        .into_iter()
        .flat_map(|config| {
            let mut list = ports.servers(config).tcp().to_vec();
            list.push(ports.syscall(config));
            list
        })
        .chain([ports.syscall(Config::H0d)])
        .collect();
    NatNetwork::create(&servers.tcp(), &[servers.iperf], &untracked)
}

fn run_all(env: &Env, plan: &Plan) -> anyhow::Result<Results> {
    let wanted = |part| plan.only.is_none_or(|only| only == part);
    let mut results = Results::default();
    if wanted(Part::Datapath) || wanted(Part::Programs) {
        let mut processes = Processes::default();
        servers::start_on_host(env, &mut processes)?;
        servers::start_in_namespace(env, &env.nat, &mut processes)?;
        if wanted(Part::Datapath) {
            for round in 0..plan.rounds {
                say(&format!("datapath: round {} of {}", round + 1, plan.rounds));
                results.load_per_round.push(machine::load_average());
                (results.foreign_hooks_per_round)
                    .push(bpfstats::hooks_on_every_path(&cgroup2_mount()));
                datapath_round(env, plan, round, &mut results.samples)?;
                processes.check_alive(&env.logs)?;
            }
        }
        if wanted(Part::Programs) {
            say("program costs: the H1 workloads again, with BPF statistics on");
            let (programs, floors) = profile_programs(env, plan)?;
            results.programs = programs;
            results.floors = Some(floors);
        }
    }
    if wanted(Part::ControlPlane) {
        say("control plane: start-up, admission and bind with many containers");
        results.control = control::measure(env, plan)?;
    }
    Ok(results)
}

/// One round: H0 and NAT with hostnetd down, then H1 and H0+daemon with it up; the order
/// within each pair alternates between rounds.
fn datapath_round(
    env: &Env,
    plan: &Plan,
    round: usize,
    samples: &mut BTreeMap<(Metric, Config), Vec<f64>>,
) -> anyhow::Result<()> {
    let flip = |pair: [Config; 2]| {
        if round.is_multiple_of(2) {
            pair
        } else {
            [pair[1], pair[0]]
        }
    };
    for config in flip([Config::H0, Config::Nat]) {
        measure_config(env, plan, config, samples)?;
    }
    servers::start_in_containers(env, &env.host)?;
    settle(plan);
    for config in flip([Config::H1, Config::H0d]) {
        measure_config(env, plan, config, samples)?;
    }
    env.host.down()?;
    settle(plan);
    Ok(())
}

/// A pause after starting or removing containers: the kernel finishes tearing down cgroups,
/// mounts and processes in the background, which the next measurement must not pay for.
fn settle(plan: &Plan) {
    std::thread::sleep(if plan.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    });
}

fn measure_config(
    env: &Env,
    plan: &Plan,
    config: Config,
    samples: &mut BTreeMap<(Metric, Config), Vec<f64>>,
) -> anyhow::Result<()> {
    for workload in Workload::DATAPATH {
        let duration = if workload.is_syscall() {
            plan.syscall_duration
        } else {
            plan.duration
        };
        for (metric, value) in measure_retrying(env, config, workload, duration)? {
            samples.entry((metric, config)).or_default().push(value);
        }
    }
    Ok(())
}

/// One measurement, tried a second time if the first fails: load generators fail now and then
/// on a busy machine (iperf3 loses its control connection's final report), and one lost
/// sample should not cost a 15-minute run. A second failure ends the run.
fn measure_retrying(
    env: &Env,
    config: Config,
    workload: Workload,
    duration: Duration,
) -> anyhow::Result<Vec<(Metric, f64)>> {
    workloads::measure(env, config, workload, duration).or_else(|error| {
        check_interrupted()?;
        say(&format!(
            "{} against {}: {error:#}; measuring once more",
            workload.name(),
            config.label()
        ));
        std::thread::sleep(Duration::from_secs(1));
        workloads::measure(env, config, workload, duration)
    })
}

/// Every H1 workload once more with the kernel's statistics on: what each program cost, and
/// what an empty program costs as measured the same way, in a tight loop and in place.
fn profile_programs(env: &Env, plan: &Plan) -> anyhow::Result<(ProgramRuns, targets::Floors)> {
    servers::start_in_containers(env, &env.host)?;
    let stats = bpfstats::enable()?;
    let test_run_ns = bpfstats::empty_program_ns(1_000_000)?;
    let empty = bpfstats::EmptyHooks::attach(&env.host.cgroup_parent_path())?;
    let empty_before = empty.counters()?;
    let mut programs = Vec::new();
    for workload in Workload::PROFILED {
        let before = bpfstats::snapshot(env.host.bpf_dir())?;
        workloads::measure(env, Config::H1, workload, plan.profile_duration)?;
        let after = bpfstats::snapshot(env.host.bpf_dir())?;
        programs.extend(
            bpfstats::delta(&before, &after)
                .into_iter()
                .map(|program| (workload, program)),
        );
    }
    let in_place_ns = bpfstats::floors_by_kind(&empty_before, &empty.counters()?);
    drop(empty);
    drop(stats);
    env.host.down()?;
    Ok((
        programs,
        targets::Floors {
            test_run_ns,
            in_place_ns,
        },
    ))
}

/// The scratch directory (hostnetd's state, the nginx root filesystem), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("hnbench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A container's rootfs left mounted here (`--rootfs /` binds the host's root) would
        // make a recursive removal descend into the host: then nothing is removed.
        let mounted = mounts_under(&self.0);
        if !mounted.is_empty() {
            eprintln!(
                "xtask: bench: {} left in place: still mounted below it: {}",
                self.0.display(),
                mounted.join(", ")
            );
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            eprintln!("xtask: bench: cannot remove {}: {error}", self.0.display());
        }
    }
}

/// Mount points at or below `dir`, from this process's mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec!["(the mount table is unreadable)".into()];
    };
    table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|mount_point| Path::new(mount_point).starts_with(dir))
        .map(str::to_string)
        .collect()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C (or SIGTERM) ends the benchmark at the next step, so that every guard runs and
/// removes what it made; the clients running then are interrupted along with us.
fn install_interrupt_handler() {
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

/// The cgroup2 mount, from the mount table.
pub fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .unwrap_or_else(|| Path::new("/sys/fs/cgroup").to_path_buf())
}
