//! Bandwidth limits: the rate a limited container's TCP stream achieves against the rate set
//! (10, 100 and 1000 Mbit/s, policed on loopback, which has no qdisc to pace); what a limit
//! costs `skb_egress` per packet: the same stream from a container with a limit far above it
//! (every packet goes through the schedule, none is held back) against one without; and an
//! unlimited container's stream, and its request-response latency, alone and beside a limited
//! one, round by round.
use std::process::Command;

use anyhow::Context as _;
use serde_json::Value;

use super::{
    bpfstats,
    env::Env,
    plan::{check_interrupted, Plan},
    servers::{wait_listening, Processes},
    workloads::{parse_sockperf, sockperf_ping_pong, Metric},
};
use crate::shell::say;

/// The rates the achieved-versus-set table measures, in Mbit/s.
const RATES_MBIT: [u32; 3] = [10, 100, 1000];
/// A limit no loopback stream here reaches: the schedule runs, nothing waits.
const NON_BINDING: &str = "100gbit";

/// One limited stream: the rate set and the payload rate achieved.
pub struct RateRun {
    pub set_mbit: u32,
    pub achieved_bps: f64,
}

/// `skb_egress`'s nanoseconds per run, without a limit and with a non-binding one.
pub struct LimitCost {
    pub unlimited_ns: f64,
    pub limited_ns: f64,
}

/// An unlimited container's payload rate (bits per second) and request-response p50 (µs),
/// alone and beside a limited container's stream, one of each per round.
#[derive(Default)]
pub struct Neighbour {
    pub alone_bps: Vec<f64>,
    pub beside_bps: Vec<f64>,
    pub alone_p50_us: Vec<f64>,
    pub beside_p50_us: Vec<f64>,
}

/// What the unlimited container measures in one turn.
struct Turn {
    bps: f64,
    p50_us: f64,
}

#[derive(Default)]
pub struct BandwidthResults {
    pub rates: Vec<RateRun>,
    pub cost: Option<LimitCost>,
    pub neighbour: Neighbour,
}

/// The limited neighbour's rate: low, so that what it takes of the machine is small and what
/// is measured is whether its limit reaches anyone else.
const NEIGHBOUR_LIMIT: &str = "10mbit";
const NEIGHBOUR_SECONDS: &str = "3";

pub fn measure(env: &Env, plan: &Plan) -> anyhow::Result<BandwidthResults> {
    let port = env.ports.bandwidth_port();
    // The measured streams' server, the limited neighbour's, and the measured latency's.
    let mut servers = Processes::default();
    let mut sockperf = Command::new("sockperf");
    let rr_port = (port + 2).to_string();
    sockperf.args(["server", "--tcp", "-i", "127.0.0.1", "-p", &rr_port]);
    servers.spawn("bandwidth-sockperf", sockperf, &env.logs)?;
    for server_port in [port, port + 1] {
        let mut iperf3 = Command::new("iperf3");
        iperf3.args(["-s", "-B", "127.0.0.1", "-p", &server_port.to_string()]);
        servers.spawn(
            &format!("bandwidth-iperf3-{server_port}"),
            iperf3,
            &env.logs,
        )?;
    }
    wait_listening(&[port, port + 1, port + 2])?;
    let seconds = plan.bandwidth_seconds.to_string();
    let mut results = BandwidthResults::default();
    for set_mbit in RATES_MBIT {
        check_interrupted()?;
        say(&format!("bandwidth: a stream limited to {set_mbit} Mbit/s"));
        let limit = format!("{set_mbit}mbit");
        let achieved_bps = stream(env, port, &["--egress-rate", &limit], &seconds)?;
        results.rates.push(RateRun {
            set_mbit,
            achieved_bps,
        });
    }
    say("bandwidth: skb_egress per packet without a limit and with one that never binds");
    let stats = bpfstats::enable()?;
    let unlimited_ns = egress_cost(env, port, &[], &seconds)?;
    let limited_ns = egress_cost(env, port, &["--egress-rate", NON_BINDING], &seconds)?;
    drop(stats);
    results.cost = Some(LimitCost {
        unlimited_ns,
        limited_ns,
    });
    say("bandwidth: an unlimited stream alone and beside a limited one, alternately");
    results.neighbour = neighbour(env, plan, port)?;
    env.host.down()?;
    Ok(results)
}

/// Rounds of an unlimited stream alone and beside a limited one, the first of each pair
/// alternating, so that the machine's drift falls on both.
fn neighbour(env: &Env, plan: &Plan, port: u16) -> anyhow::Result<Neighbour> {
    let mut figures = Neighbour::default();
    for round in 0..plan.neighbour_rounds {
        check_interrupted()?;
        let (alone, beside) = if round % 2 == 0 {
            let alone = unlimited_turn(env, port)?;
            (alone, beside_limited(env, port)?)
        } else {
            let beside = beside_limited(env, port)?;
            (unlimited_turn(env, port)?, beside)
        };
        figures.alone_bps.push(alone.bps);
        figures.alone_p50_us.push(alone.p50_us);
        figures.beside_bps.push(beside.bps);
        figures.beside_p50_us.push(beside.p50_us);
    }
    Ok(figures)
}

/// The unlimited container's stream, then its request-response latency.
fn unlimited_turn(env: &Env, port: u16) -> anyhow::Result<Turn> {
    Ok(Turn {
        bps: stream(env, port, &[], NEIGHBOUR_SECONDS)?,
        p50_us: rr_p50(env, port + 2)?,
    })
}

/// The p50 round trip (µs) of sockperf's TCP ping-pong from an unlimited container.
fn rr_p50(env: &Env, port: u16) -> anyhow::Result<f64> {
    let port = port.to_string();
    let mut args = vec!["run", "--rm", "--rootfs", "/", "--"];
    args.extend(sockperf_ping_pong(&port, NEIGHBOUR_SECONDS));
    let output = env.host.exec(&args)?;
    let figures = parse_sockperf(&output)?;
    (figures.into_iter())
        .find_map(|(metric, value)| (metric == Metric::RrP50).then_some(value))
        .context("sockperf printed no p50")
}

/// The unlimited container's turn while a limited container streams to a server of its own.
fn beside_limited(env: &Env, port: u16) -> anyhow::Result<Turn> {
    let limited_port = (port + 1).to_string();
    let name = "hnbench-limited";
    env.host.exec(&[
        "run",
        "-d",
        "--name",
        name,
        "--rootfs",
        "/",
        "--egress-rate",
        NEIGHBOUR_LIMIT,
        "--",
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        &limited_port,
        "-t",
        "60",
    ])?;
    // Its stream under way before the measured one starts.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let measured = unlimited_turn(env, port);
    env.host.exec(&["rm", "-f", name])?;
    measured
}

/// `skb_egress`'s ns per run over one stream from a container with `limits`.
fn egress_cost(env: &Env, port: u16, limits: &[&str], seconds: &str) -> anyhow::Result<f64> {
    let before = bpfstats::snapshot(env.host.bpf_dir())?;
    stream(env, port, limits, seconds)?;
    let after = bpfstats::snapshot(env.host.bpf_dir())?;
    let egress = (bpfstats::delta(&before, &after).into_iter())
        .find(|program| program.name == "skb_egress")
        .context("skb_egress did not run")?;
    egress.ns_per_run().context("skb_egress did not run")
}

/// The payload rate (bits per second) of a TCP stream over loopback from a container with
/// `limits` to an iperf3 server on the host.
fn stream(env: &Env, port: u16, limits: &[&str], seconds: &str) -> anyhow::Result<f64> {
    let port = port.to_string();
    let mut args = vec!["run", "--rm", "--rootfs", "/"];
    args.extend(limits);
    args.extend([
        "--",
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        seconds,
        "-J",
    ]);
    let report: Value = serde_json::from_str(&env.host.exec(&args)?)
        .context("iperf3 in the limited container printed no JSON report")?;
    (report["end"]["sum_received"]["bits_per_second"].as_f64())
        .context("iperf3's report has no received rate")
}
