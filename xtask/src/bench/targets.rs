//! The targets, each judged met or missed from the medians.
use std::collections::BTreeMap;

use super::{
    bpfstats::ProgramStats,
    control::ControlPlane,
    plan::Config,
    workloads::{Metric, Workload},
};

/// Medians by metric and configuration.
pub type Medians = BTreeMap<(Metric, Config), f64>;

/// What an empty program costs as the statistics measure it: their clock reads and the call,
/// which every program's figure includes and which are not there when statistics are off.
#[derive(Clone, Debug, Default)]
pub struct Floors {
    /// In a tight BPF_PROG_TEST_RUN loop: hot caches, the least it can be.
    pub test_run_ns: f64,
    /// Attached beside the per-packet programs during the pass, by program type: the same
    /// packets, the same cold caches.
    pub in_place_ns: BTreeMap<String, f64>,
}

impl Floors {
    /// The floor a program of `kind` is judged net of: measured in place where it was.
    pub fn for_kind(&self, kind: &str) -> f64 {
        self.in_place_ns
            .get(kind)
            .copied()
            .unwrap_or(self.test_run_ns)
    }
}

pub struct Target {
    pub name: String,
    pub figure: String,
    /// None: nothing to judge (no such program is attached yet).
    pub met: Option<bool>,
}

/// The workloads (the socket-call loops are extras): one headline figure each.
pub const HEADLINE: [Metric; 5] = [
    Metric::RrP50,
    Metric::ConnRate,
    Metric::Stream,
    Metric::UdpRate,
    Metric::HttpRate,
];

/// A host process may drift this much with the daemon running and still count as unchanged:
/// the run-to-run spread of the figures on an idle machine.
pub const UNCHANGED_TOLERANCE: f64 = 0.03;
/// How much a control-plane cost may rise from 1 container to the most and still count as not
/// growing with the count.
pub const GROWTH_TOLERANCE: f64 = 1.2;
const SKB_NS: f64 = 50.0;
/// A program that ran fewer times than this in a workload (or in all) is not judged: the first
/// runs pay for cold caches and say nothing about the steady cost.
pub const MIN_RUNS: u64 = 1000;
const SOCK_NS: f64 = 200.0;

/// `ratio` of H1 to `base` for `metric`.
pub fn ratio(medians: &Medians, metric: Metric, base: Config) -> Option<f64> {
    Some(medians.get(&(metric, Config::H1))? / medians.get(&(metric, base))?)
}

/// Whether `a` is better than `b` for `metric`.
fn better(metric: Metric, a: f64, b: f64) -> bool {
    if metric.higher_is_better() {
        a > b
    } else {
        a < b
    }
}

pub fn evaluate(
    medians: &Medians,
    programs: &[AggregateCost],
    floors: Option<&Floors>,
    control: &ControlPlane,
) -> Vec<Target> {
    let mut targets = vec![
        ratio_target(
            medians,
            "H1 stream throughput >= 98% of H0",
            Metric::Stream,
            |r| r >= 0.98,
        ),
        ratio_target(
            medians,
            "H1 p50 RR latency <= 103% of H0",
            Metric::RrP50,
            |r| r <= 1.03,
        ),
        ratio_target(
            medians,
            "H1 connection rate >= 95% of H0",
            Metric::ConnRate,
            |r| r >= 0.95,
        ),
        ahead_of_nat(medians),
    ];
    targets.extend(program_targets(programs, floors));
    targets.push(host_unchanged(medians));
    targets.extend(control_targets(control));
    targets
}

fn ratio_target(medians: &Medians, name: &str, metric: Metric, ok: impl Fn(f64) -> bool) -> Target {
    let ratio = ratio(medians, metric, Config::H0);
    Target {
        name: name.to_string(),
        figure: ratio.map_or("not measured".into(), |r| format!("{:.1}%", r * 100.0)),
        met: ratio.map(ok),
    }
}

fn ahead_of_nat(medians: &Medians) -> Target {
    let compared: Vec<(Metric, bool)> = HEADLINE
        .iter()
        .filter_map(|&metric| {
            let h1 = medians.get(&(metric, Config::H1))?;
            let nat = medians.get(&(metric, Config::Nat))?;
            Some((metric, better(metric, *h1, *nat)))
        })
        .collect();
    let behind: Vec<&str> = (compared.iter())
        .filter(|(_, ahead)| !ahead)
        .map(|(metric, _)| metric.label())
        .collect();
    Target {
        name: "H1 ahead of NAT on every workload".into(),
        figure: match (compared.len(), behind.is_empty()) {
            (0, _) => "not measured".into(),
            (n, true) => format!("ahead on all {n}"),
            (_, false) => format!("behind or level on: {}", behind.join(", ")),
        },
        met: (!compared.is_empty()).then_some(behind.is_empty()),
    }
}

fn host_unchanged(medians: &Medians) -> Target {
    let mut worst: Option<(Metric, f64)> = None;
    for metric in HEADLINE {
        let (Some(&daemon), Some(&bare)) = (
            medians.get(&(metric, Config::H0d)),
            medians.get(&(metric, Config::H0)),
        ) else {
            continue;
        };
        // As a loss: how much worse the host process did with the daemon running.
        let loss = if metric.higher_is_better() {
            1.0 - daemon / bare
        } else {
            daemon / bare - 1.0
        };
        if worst.is_none_or(|(_, w)| loss > w) {
            worst = Some((metric, loss));
        }
    }
    Target {
        name: format!(
            "host traffic of no container unchanged with the daemon running (within {:.0}%)",
            UNCHANGED_TOLERANCE * 100.0
        ),
        figure: worst.map_or("not measured".into(), |(metric, loss)| {
            format!("worst: {} {:+.1}%", metric.label(), -loss * 100.0)
        }),
        met: worst.map(|(_, loss)| loss <= UNCHANGED_TOLERANCE),
    }
}

/// One program's cost over the whole profiling pass, and its costliest workload.
pub struct AggregateCost {
    pub name: String,
    pub kind: String,
    pub runs: u64,
    pub ns_per_run: f64,
    pub worst: (String, f64),
}

/// Sums each program's runs over the workloads of the profiling pass.
pub fn aggregate(programs: &[(Workload, ProgramStats)]) -> Vec<AggregateCost> {
    let mut by_name: BTreeMap<String, AggregateCost> = BTreeMap::new();
    for (workload, stats) in programs {
        let Some(ns) = stats.ns_per_run() else {
            continue;
        };
        let entry = by_name
            .entry(stats.name.clone())
            .or_insert_with(|| AggregateCost {
                name: stats.name.clone(),
                kind: stats.kind.clone(),
                runs: 0,
                ns_per_run: 0.0,
                worst: (String::new(), 0.0),
            });
        let total = entry.ns_per_run * entry.runs as f64 + stats.run_time_ns as f64;
        entry.runs += stats.run_cnt;
        entry.ns_per_run = total / entry.runs as f64;
        if stats.run_cnt >= MIN_RUNS && ns > entry.worst.1 {
            entry.worst = (workload.name().to_string(), ns);
        }
    }
    by_name.into_values().collect()
}

/// The per-run budget of a program type, if the issue sets one.
pub fn budget(kind: &str) -> Option<f64> {
    match kind {
        "cgroup_skb" | "sched_cls" | "sched_act" => Some(SKB_NS),
        "cgroup_sock_addr" | "cgroup_sock" => Some(SOCK_NS),
        _ => None,
    }
}

/// Judged net of what an empty program measures (the statistics' own clock reads), when
/// that was measured: the reads are not there when statistics are off.
fn program_targets(programs: &[AggregateCost], floors: Option<&Floors>) -> Vec<Target> {
    let floor = |p: &AggregateCost| floors.map_or(0.0, |f| f.for_kind(&p.kind));
    let net_note = floors.map_or(String::new(), |_| {
        ", net of an empty program's cost at the same hook".to_string()
    });
    let judge = |name: &str, kinds: &[&str], limit: f64| {
        let relevant: Vec<&AggregateCost> = programs
            .iter()
            .filter(|p| kinds.contains(&p.kind.as_str()) && p.runs >= MIN_RUNS)
            .collect();
        let describe = |p: &AggregateCost| {
            format!(
                "{} {:.0} ns ({:.0} net)",
                p.name,
                p.ns_per_run,
                p.ns_per_run - floor(p)
            )
        };
        let over: Vec<String> = (relevant.iter())
            .filter(|p| p.ns_per_run - floor(p) > limit)
            .map(|p| describe(p))
            .collect();
        let slowest = relevant
            .iter()
            .max_by(|a, b| a.ns_per_run.total_cmp(&b.ns_per_run));
        Target {
            name: format!("{name}{net_note}"),
            figure: match (slowest, over.is_empty()) {
                (None, _) => "no such program is attached yet".into(),
                (Some(p), true) => format!("slowest: {}", describe(p)),
                (Some(_), false) => format!("over: {}", over.join(", ")),
            },
            met: slowest.map(|_| over.is_empty()),
        }
    };
    vec![
        judge(
            "every cgroup_skb and TC program <= 50 ns per run",
            &["cgroup_skb", "sched_cls", "sched_act"],
            SKB_NS,
        ),
        judge(
            "bind and connect programs (cgroup sock_addr and sock) <= 200 ns per run",
            &["cgroup_sock_addr", "cgroup_sock"],
            SOCK_NS,
        ),
    ]
}

fn control_targets(control: &ControlPlane) -> Vec<Target> {
    let (Some(first), Some(last)) = (control.scale.first(), control.scale.last()) else {
        return Vec::new();
    };
    let growth =
        |name: &str, unit: &str, value: &dyn Fn(&super::control::ScalePoint) -> Option<f64>| {
            let (a, b) = (value(first), value(last));
            Target {
                name: format!(
                    "{name} does not grow with the container count ({} -> {})",
                    first.containers, last.containers
                ),
                figure: match (a, b) {
                    (Some(a), Some(b)) => format!("{a:.1} -> {b:.1} {unit} ({:.2}x)", b / a),
                    _ => "not measured".into(),
                },
                met: a.zip(b).map(|(a, b)| b <= a * GROWTH_TOLERANCE),
            }
        };
    vec![
        growth("admission", "ms", &|p| Some(p.admission_ms)),
        growth("bind() in a container", "ns", &|p| Some(p.bind_ns)),
        growth("the bind4 program", "ns", &|p| p.bind_program_ns),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(name: &str, kind: &str, runs: u64, ns: f64) -> AggregateCost {
        AggregateCost {
            name: name.into(),
            kind: kind.into(),
            runs,
            ns_per_run: ns,
            worst: (String::new(), ns),
        }
    }

    #[test]
    fn programs_are_judged_net_of_the_empty_program_and_only_when_run_enough() {
        let programs = [
            cost("connect4", "cgroup_sock_addr", 5000, 240.0),
            cost("cold", "cgroup_sock_addr", 10, 5000.0),
            cost("skb_egress", "cgroup_skb", 5000, 100.0),
        ];
        let floors = Floors {
            test_run_ns: 60.0,
            in_place_ns: BTreeMap::from([("cgroup_skb".to_string(), 70.0)]),
        };
        let targets = program_targets(&programs, Some(&floors));
        // skb: 100 - 70 (in place) = 30 ns <= 50; sock_addr: 240 - 60 = 180 <= 200, `cold`
        // not judged.
        assert_eq!(targets[0].met, Some(true), "{}", targets[0].figure);
        assert_eq!(targets[1].met, Some(true), "{}", targets[1].figure);
        let targets = program_targets(&programs, None);
        assert_eq!(targets[0].met, Some(false));
        assert!(targets[1].figure.contains("connect4 240 ns"));
    }

    #[test]
    fn nothing_to_judge_is_not_a_miss() {
        let targets = program_targets(&[], Some(&Floors::default()));
        assert!(targets.iter().all(|t| t.met.is_none()));
        assert_eq!(ahead_of_nat(&Medians::new()).met, None);
        assert_eq!(host_unchanged(&Medians::new()).met, None);
    }

    #[test]
    fn direction_counts() {
        let medians = Medians::from([
            ((Metric::RrP50, Config::H0), 40.0),
            ((Metric::RrP50, Config::H0d), 41.0),
            ((Metric::RrP50, Config::H1), 42.0),
            ((Metric::RrP50, Config::Nat), 45.0),
            ((Metric::Stream, Config::H0), 10.0),
            ((Metric::Stream, Config::H0d), 9.0),
            ((Metric::Stream, Config::H1), 9.9),
            ((Metric::Stream, Config::Nat), 10.5),
        ]);
        let nat = ahead_of_nat(&medians);
        assert_eq!(nat.met, Some(false));
        assert!(nat.figure.contains("stream") && !nat.figure.contains("p50"));
        // Latency 2.5% worse is within 3%; stream 10% worse is not.
        let host = host_unchanged(&medians);
        assert_eq!(host.met, Some(false));
        assert!(host.figure.contains("stream"), "{}", host.figure);
    }
}
