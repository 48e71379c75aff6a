//! `cargo xtask bench`: hostnetd's speed measured side by side with bare host processes and
//! with docker-style NAT, the cost of each eBPF program, and the control plane's costs.
//!
//! Configurations (the same server and client programs in each):
//! - H0: bare host processes, hostnetd not running;
//! - H0+daemon: the same host processes while hostnetd runs the H1 containers (host traffic
//!   of no container must not change);
//! - H1: the servers in hostnetd containers with port ownership and [`host::H1_POLICY_FLAGS`];
//! - NAT: the servers in a network namespace behind a bridge and iptables DNAT ([`nat`]);
//! - docker-bridge and docker-bridge-noproxy: the servers in Docker containers on a bridge
//!   network, published with `-p` through docker-proxy and through dockerd's own DNAT
//!   ([`docker_bridge`]).
//!
//! Each round measures every workload in every configuration, the order rotating between
//! rounds, so that the machine's other load falls on all of them alike; medians over rounds
//! are reported, and every ratio a target judges gets a bootstrap confidence interval over
//! the rounds ([`stats`]). Then a profiling pass reads the programs' costs from the kernel's BPF
//! statistics, the control plane is timed, and the TC programs' per-packet cost is compared
//! attached as TCX links and as clsact filters ([`tc_attach`]); bandwidth limits are measured
//! against the rate set, in their cost per packet and beside an unlimited neighbour
//! ([`bandwidth`]). Results go to target/bench/ (report.md,
//! results.json, SVG plots) and, in full mode, to docs/PERFORMANCE.md.
mod bandwidth;
mod bpfstats;
mod control;
mod docker_bridge;
mod engines;
mod env;
mod host;
mod image;
mod machine;
mod nat;
mod nginx;
mod plan;
mod plot;
mod report;
mod results;
mod servers;
mod startup_peers;
mod stats;
mod targets;
mod tc_attach;
mod tools;
mod workloads;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{
    images::build_images,
    shell::{say, workspace_root},
};

use self::{
    env::Env,
    host::BenchHost,
    nat::NatNetwork,
    nginx::Nginx,
    plan::{check_interrupted, install_interrupt_handler, Config, Part, Plan, PortRange},
    results::{ProgramRuns, Results},
    servers::Processes,
    workloads::{Metric, Workload},
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Short durations and one round, to check the harness in under 2 minutes (too few rounds
    /// for intervals; docs/PERFORMANCE.md is left alone).
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
            host: BenchHost::new(&binaries.hostnetd),
            nat: nat_network(&args.ports)?,
            benchpeer: binaries.benchpeer.clone(),
            ports: args.ports,
            logs: out.join("logs"),
            nginx: Nginx::prepare(&images.join("nginx.tar"), &scratch.0)?,
            nginx_image: images.join("nginx.tar"),
            images: images.clone(),
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
            let docker = docker_bridge::DockerBridges::start(env)?;
            results.docker_noproxy_absent = docker.absent.clone();
            let hostnetd_down: Vec<Config> = [Config::H0, Config::Nat]
                .into_iter()
                .chain(docker.configs())
                .collect();
            for round in 0..plan.rounds {
                say(&format!("datapath: round {} of {}", round + 1, plan.rounds));
                results.load_per_round.push(machine::load_average());
                (results.foreign_hooks_per_round).push(bpfstats::hooks_on_every_path(
                    &hostnetd_tests::mounts::cgroup2_mount(),
                ));
                datapath_round(env, plan, round, &hostnetd_down, &mut results.samples)?;
                processes.check_alive(&env.logs)?;
            }
        }
        if wanted(Part::Programs) {
            say("program costs: the H1 workloads again, with BPF statistics on");
            let (programs, unowned, floors) = profile_programs(env, plan)?;
            results.programs = programs;
            results.unowned = unowned;
            results.floors = Some(floors);
        }
    }
    if wanted(Part::ControlPlane) {
        say("control plane: start-up, admission and bind with many containers");
        results.control = control::measure(env, plan)?;
        say("control plane: start-up beside docker run -d and podman run -d");
        results.startup_peers = startup_peers::measure(env, plan)?;
    }
    if wanted(Part::TcAttach) {
        say("TC attach modes: loopback packets with no TC program, TCX links, clsact filters");
        results.tc_attach = tc_attach::measure(env, plan)?;
    }
    if wanted(Part::Engines) {
        say("engines: docker run -d with runc and with hostnetd-runc, alternately");
        results.engines = engines::measure(env, plan)?;
    }
    if wanted(Part::Bandwidth) {
        say("bandwidth limits: limited streams over loopback, and a limit's cost per packet");
        results.bandwidth = bandwidth::measure(env, plan)?;
    }
    Ok(results)
}

/// One round: the configurations of `hostnetd_down` (H0, NAT, Docker's) with hostnetd down,
/// then H1 and H0+daemon with it up; the order within each group rotates between rounds.
fn datapath_round(
    env: &Env,
    plan: &Plan,
    round: usize,
    hostnetd_down: &[Config],
    samples: &mut BTreeMap<(Metric, Config), Vec<f64>>,
) -> anyhow::Result<()> {
    for config in rotated(hostnetd_down, round) {
        measure_config(env, plan, config, samples)?;
    }
    servers::start_in_containers(env, &env.host)?;
    settle(plan);
    for config in rotated(&[Config::H1, Config::H0d], round) {
        measure_config(env, plan, config, samples)?;
    }
    env.host.down()?;
    settle(plan);
    Ok(())
}

/// `configs` rotated left by `round`: each goes first, second... in turn.
fn rotated(configs: &[Config], round: usize) -> Vec<Config> {
    let mut order = configs.to_vec();
    if !order.is_empty() {
        order.rotate_left(round % configs.len());
    }
    order
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
    let workloads = (Workload::DATAPATH.into_iter())
        .filter(|workload| config.runs_syscall_loops() || !workload.is_syscall());
    for workload in workloads {
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

/// Every H1 workload once more with the kernel's statistics on: what each program cost, what
/// the TC programs cost on host traffic (ports nobody owns), and what an empty program costs
/// as measured the same way, in a tight loop and in place.
fn profile_programs(
    env: &Env,
    plan: &Plan,
) -> anyhow::Result<(ProgramRuns, Vec<bpfstats::ProgramStats>, targets::Floors)> {
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
    let before = bpfstats::snapshot(env.host.bpf_dir())?;
    workloads::measure(env, Config::H0d, Workload::UdpRate, plan.profile_duration)?;
    let after = bpfstats::snapshot(env.host.bpf_dir())?;
    let unowned = (bpfstats::delta(&before, &after).into_iter())
        .filter(|program| program.kind == "sched_cls")
        .collect();
    let in_place_ns = bpfstats::floors_by_kind(&empty_before, &empty.counters()?);
    drop(empty);
    drop(stats);
    env.host.down()?;
    Ok((
        programs,
        unowned,
        targets::Floors {
            test_run_ns,
            in_place_ns,
        },
    ))
}

/// The scratch directory (the nginx root filesystem, the servers' configs), removed on drop.
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
        // Never through a mount: a container's rootfs left mounted here (`--rootfs /` binds
        // the host's root) would make a recursive removal descend into the host.
        hostnetd_tests::mounts::remove_scratch(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_configuration_goes_first_in_turn() {
        let group = [Config::H0, Config::Nat, Config::DockerBridge];
        let firsts: Vec<Config> = (0..4).map(|round| rotated(&group, round)[0]).collect();
        assert_eq!(
            firsts,
            [Config::H0, Config::Nat, Config::DockerBridge, Config::H0]
        );
        assert_eq!(
            rotated(&group, 1),
            [Config::Nat, Config::DockerBridge, Config::H0]
        );
        assert!(rotated(&[], 3).is_empty());
    }
}
