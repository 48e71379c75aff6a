//! The targets. Those on sampled figures are judged by a 95% bootstrap interval
//! ([`stats::bootstrap`]): met when the whole interval is on the wanted side of the threshold,
//! missed when it is wholly on the other, not resolved when it straddles the threshold.
//! Program costs (one aggregate over the profiling pass) are judged by their figure.
use std::collections::BTreeMap;

use super::{
    bpfstats::ProgramStats,
    control::ControlPlane,
    plan::Config,
    startup_peers::StartupPeers,
    stats::{self, median, Interval, Verdict, Want},
    workloads::{Metric, Workload},
};

/// Medians by metric and configuration.
pub type Medians = BTreeMap<(Metric, Config), f64>;
/// Every round's figure by metric and configuration, in round order.
pub type Samples = BTreeMap<(Metric, Config), Vec<f64>>;

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
    pub verdict: Verdict,
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
/// growing with the count: the performance issue's "within 10%".
pub const GROWTH_TOLERANCE: f64 = 1.1;
const SKB_NS: f64 = 30.0;
/// A TC program's cost on a packet of a port nobody owns, at most (ns, net).
const UNOWNED_NS: f64 = 10.0;
/// A program that ran fewer times than this in a workload (or in all) is not judged: the first
/// runs pay for cold caches and say nothing about the steady cost.
pub const MIN_RUNS: u64 = 1000;
const SOCK_NS: f64 = 200.0;
/// hostnetd's start-up over Docker's, at most.
const STARTUP_OVER_DOCKER: f64 = 0.5;
/// hostnetd's own start-up time beyond runc's, at most (ms).
const STARTUP_SHARE_MS: f64 = 15.0;

/// `ratio` of H1 to `base` for `metric`.
pub fn ratio(medians: &Medians, metric: Metric, base: Config) -> Option<f64> {
    Some(medians.get(&(metric, Config::H1))? / medians.get(&(metric, base))?)
}

/// The 95% interval of `config`'s median over `base`'s for `metric`, paired by round (every
/// datapath configuration is measured once in every round).
pub fn ratio_interval(
    samples: &Samples,
    metric: Metric,
    config: Config,
    base: Config,
) -> Option<Interval> {
    let (a, b) = (
        samples.get(&(metric, config))?,
        samples.get(&(metric, base))?,
    );
    stats::ratio_interval(a, b, a.len() == b.len())
}

/// "98.2% (95% CI 96.1-100.3%)", or without the interval when there is none.
pub fn percent_with_interval(ratio: f64, interval: Option<Interval>) -> String {
    match interval {
        Some(i) => format!(
            "{:.1}% (95% CI {:.1}-{:.1}%)",
            ratio * 100.0,
            i.low * 100.0,
            i.high * 100.0
        ),
        None => format!("{:.1}% (no interval: too few rounds)", ratio * 100.0),
    }
}

/// The verdict on a figure against `threshold`: by its interval, or not resolved without one.
fn judged(interval: Option<Interval>, threshold: f64, want: Want) -> Verdict {
    interval.map_or(Verdict::NotResolved, |i| Verdict::judge(i, threshold, want))
}

pub fn evaluate(
    samples: &Samples,
    programs: &[AggregateCost],
    floors: Option<&Floors>,
    unowned: &[ProgramStats],
    control: &ControlPlane,
    peers: &StartupPeers,
) -> Vec<Target> {
    let medians: Medians = (samples.iter())
        .map(|(key, values)| (*key, median(values)))
        .collect();
    let mut targets = vec![
        ratio_target(
            samples,
            &medians,
            "H1 stream throughput >= 98% of H0",
            Metric::Stream,
            (0.98, Want::AtLeast),
        ),
        ratio_target(
            samples,
            &medians,
            "H1 p50 RR latency <= 103% of H0",
            Metric::RrP50,
            (1.03, Want::AtMost),
        ),
        ratio_target(
            samples,
            &medians,
            "H1 connection rate >= 95% of H0",
            Metric::ConnRate,
            (0.95, Want::AtLeast),
        ),
    ];
    for peer in [Config::Nat, Config::DockerBridge, Config::DockerNoProxy] {
        targets.push(ahead_of(samples, &medians, peer));
    }
    targets.extend(program_targets(programs, floors));
    targets.push(unowned_target(unowned, floors));
    targets.push(host_unchanged(samples, &medians));
    targets.extend(control_targets(control));
    targets.extend(startup_targets(control, peers));
    targets
}

fn ratio_target(
    samples: &Samples,
    medians: &Medians,
    name: &str,
    metric: Metric,
    (threshold, want): (f64, Want),
) -> Target {
    let Some(ratio) = ratio(medians, metric, Config::H0) else {
        return not_measured(name);
    };
    let interval = ratio_interval(samples, metric, Config::H1, Config::H0);
    Target {
        name: name.to_string(),
        figure: percent_with_interval(ratio, interval),
        verdict: judged(interval, threshold, want),
    }
}

fn not_measured(name: &str) -> Target {
    Target {
        name: name.to_string(),
        figure: "not measured".into(),
        verdict: Verdict::NotApplicable,
    }
}

/// H1 better than `peer` on every headline workload: each H1/peer interval wholly on the
/// better side of 1.
fn ahead_of(samples: &Samples, medians: &Medians, peer: Config) -> Target {
    let name = format!("H1 ahead of {} on every workload", peer.label());
    let judged: Vec<(Metric, Verdict)> = HEADLINE
        .iter()
        .filter(|&&metric| medians.contains_key(&(metric, peer)))
        .filter_map(|&metric| {
            let want = if metric.higher_is_better() {
                Want::AtLeast
            } else {
                Want::AtMost
            };
            medians.get(&(metric, Config::H1))?;
            let interval = ratio_interval(samples, metric, Config::H1, peer);
            Some((metric, judged(interval, 1.0, want)))
        })
        .collect();
    if judged.is_empty() {
        return not_measured(&name);
    }
    let listed = |verdict: Verdict| -> Vec<&str> {
        (judged.iter())
            .filter(|(_, v)| *v == verdict)
            .map(|(metric, _)| metric.label())
            .collect()
    };
    let (behind, unresolved) = (listed(Verdict::Missed), listed(Verdict::NotResolved));
    let mut figure = format!(
        "ahead on {} of {}",
        listed(Verdict::Met).len(),
        judged.len()
    );
    if !behind.is_empty() {
        figure.push_str(&format!("; behind: {}", behind.join(", ")));
    }
    if !unresolved.is_empty() {
        figure.push_str(&format!("; not resolved: {}", unresolved.join(", ")));
    }
    if samples
        .get(&(HEADLINE[0], peer))
        .is_some_and(|rounds| rounds.len() < stats::MIN_SAMPLES)
    {
        figure.push_str(" (no interval: too few rounds)");
    }
    Target {
        name,
        figure,
        verdict: Verdict::all(judged.iter().map(|(_, v)| *v)),
    }
}

/// H0+daemon within the tolerance of H0 on every headline workload, as a loss: judged on
/// each H0+daemon/H0 interval, oriented so that a loss is positive.
fn host_unchanged(samples: &Samples, medians: &Medians) -> Target {
    let name = format!(
        "host traffic of no container unchanged with the daemon running (within {:.0}%)",
        UNCHANGED_TOLERANCE * 100.0
    );
    let mut worst: Option<(Metric, f64)> = None;
    let mut verdicts = Vec::new();
    for metric in HEADLINE {
        let (Some(&daemon), Some(&bare)) = (
            medians.get(&(metric, Config::H0d)),
            medians.get(&(metric, Config::H0)),
        ) else {
            continue;
        };
        let interval = ratio_interval(samples, metric, Config::H0d, Config::H0);
        // As a loss: how much worse the host process did with the daemon running.
        let (loss, verdict) = if metric.higher_is_better() {
            (
                1.0 - daemon / bare,
                judged(interval, 1.0 - UNCHANGED_TOLERANCE, Want::AtLeast),
            )
        } else {
            (
                daemon / bare - 1.0,
                judged(interval, 1.0 + UNCHANGED_TOLERANCE, Want::AtMost),
            )
        };
        verdicts.push(verdict);
        if worst.is_none_or(|(_, w)| loss > w) {
            worst = Some((metric, loss));
        }
    }
    let Some((metric, loss)) = worst else {
        return not_measured(&name);
    };
    let unresolved = verdicts
        .iter()
        .filter(|v| **v == Verdict::NotResolved)
        .count();
    Target {
        name,
        figure: format!(
            "worst: {} {:+.1}%; {unresolved} of {} not resolved",
            metric.label(),
            -loss * 100.0,
            verdicts.len()
        ),
        verdict: Verdict::all(verdicts),
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
            verdict: slowest.map_or(Verdict::NotApplicable, |_| {
                Verdict::from_met(over.is_empty())
            }),
        }
    };
    vec![
        judge(
            "every cgroup_skb and TC program <= 30 ns per run",
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

/// The TC programs on packets of ports nobody owns (host traffic with the daemon running): they
/// must return after the owner lookup.
fn unowned_target(unowned: &[ProgramStats], floors: Option<&Floors>) -> Target {
    let floor = |p: &ProgramStats| floors.map_or(0.0, |f| f.for_kind(&p.kind));
    let judged: Vec<(&ProgramStats, f64)> = (unowned.iter())
        .filter(|p| p.run_cnt >= MIN_RUNS)
        .filter_map(|p| Some((p, p.ns_per_run()? - floor(p))))
        .collect();
    let figure = (judged.iter())
        .map(|(p, net)| format!("{} {net:.1} ns net", p.name))
        .collect::<Vec<_>>()
        .join(", ");
    Target {
        name: format!(
            "TC programs on a packet of a port nobody owns <= {UNOWNED_NS:.0} ns per run, net (host \
             traffic, H0+daemon UDP rate)"
        ),
        figure: if judged.is_empty() {
            "not measured".into()
        } else {
            figure
        },
        verdict: if judged.is_empty() {
            Verdict::NotApplicable
        } else {
            Verdict::from_met(judged.iter().all(|(_, net)| *net <= UNOWNED_NS))
        },
    }
}

fn control_targets(control: &ControlPlane) -> Vec<Target> {
    let (Some(first), Some(last)) = (control.scale.first(), control.scale.last()) else {
        return Vec::new();
    };
    let name = |what: &str| {
        format!(
            "{what} does not grow with the container count ({} -> {})",
            first.containers, last.containers
        )
    };
    // Admission and `run -d` are sampled at each count (not side by side: unpaired); the
    // bind figures are one loop each, judged by their figure.
    let sampled = |what: &str, first_ms: f64, last_ms: f64, first: &[f64], last: &[f64]| {
        let interval = stats::ratio_interval(last, first, false);
        Target {
            name: name(what),
            figure: format!(
                "{first_ms:.1} -> {last_ms:.1} ms ({:.2}x{})",
                last_ms / first_ms,
                interval.map_or(String::new(), |i| format!(
                    ", 95% CI {:.2}-{:.2}x",
                    i.low, i.high
                ))
            ),
            verdict: judged(interval, GROWTH_TOLERANCE, Want::AtMost),
        }
    };
    let admission = sampled(
        "a refused admission",
        first.admission_ms,
        last.admission_ms,
        &first.admission_samples_ms,
        &last.admission_samples_ms,
    );
    let create = sampled(
        "`run -d`",
        first.create_ms,
        last.create_ms,
        &first.create_samples_ms,
        &last.create_samples_ms,
    );
    let growth = |what: &str, unit: &str, a: Option<f64>, b: Option<f64>| Target {
        name: name(what),
        figure: match (a, b) {
            (Some(a), Some(b)) => format!("{a:.1} -> {b:.1} {unit} ({:.2}x)", b / a),
            _ => "not measured".into(),
        },
        verdict: a.zip(b).map_or(Verdict::NotApplicable, |(a, b)| {
            Verdict::from_met(b <= a * GROWTH_TOLERANCE)
        }),
    };
    vec![
        admission,
        create,
        growth(
            "bind() in a container",
            "ns",
            Some(first.bind_ns),
            Some(last.bind_ns),
        ),
        growth(
            "the bind4 program",
            "ns",
            first.bind_program_ns,
            last.bind_program_ns,
        ),
    ]
}

/// hostnetd's start-up at most half Docker's; its own share over runc at most 15 ms. Both
/// paired by round: each round started every engine once.
fn startup_targets(control: &ControlPlane, peers: &StartupPeers) -> Vec<Target> {
    let mut targets = Vec::new();
    let over_docker =
        "`hostnetd run -d` at most half of `docker run -d --network host` (same image)";
    targets.push(if peers.docker_ms.is_empty() {
        not_measured(over_docker)
    } else {
        let ratio = median(&peers.hostnetd_ms) / median(&peers.docker_ms);
        let interval = stats::ratio_interval(&peers.hostnetd_ms, &peers.docker_ms, true);
        Target {
            name: over_docker.into(),
            figure: percent_with_interval(ratio, interval),
            verdict: judged(interval, STARTUP_OVER_DOCKER, Want::AtMost),
        }
    });
    let share = "hostnetd's own start-up share over `runc run -d` <= 15 ms";
    targets.push(if control.startup_runc_ms.is_empty() {
        not_measured(share)
    } else {
        let (hostnetd, runc) = (&control.startup_hostnetd_ms, &control.startup_runc_ms);
        let difference = median(hostnetd) - median(runc);
        let interval = stats::difference_interval(hostnetd, runc, hostnetd.len() == runc.len());
        Target {
            name: share.into(),
            figure: match interval {
                Some(i) => format!("{difference:.1} ms (95% CI {:.1}-{:.1} ms)", i.low, i.high),
                None => format!("{difference:.1} ms (no interval: too few samples)"),
            },
            verdict: judged(interval, STARTUP_SHARE_MS, Want::AtMost),
        }
    });
    targets
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
        // skb: 100 - 70 (in place) = 30 ns <= 30; sock_addr: 240 - 60 = 180 <= 200, `cold`
        // not judged.
        assert_eq!(targets[0].verdict, Verdict::Met, "{}", targets[0].figure);
        assert_eq!(targets[1].verdict, Verdict::Met, "{}", targets[1].figure);
        let targets = program_targets(&programs, None);
        assert_eq!(targets[0].verdict, Verdict::Missed);
        assert!(targets[1].figure.contains("connect4 240 ns"));
    }

    #[test]
    fn nothing_to_judge_is_not_a_miss() {
        let targets = program_targets(&[], Some(&Floors::default()));
        assert!(targets.iter().all(|t| t.verdict == Verdict::NotApplicable));
        let (samples, medians) = (Samples::new(), Medians::new());
        assert_eq!(
            ahead_of(&samples, &medians, Config::Nat).verdict,
            Verdict::NotApplicable
        );
        assert_eq!(
            host_unchanged(&samples, &medians).verdict,
            Verdict::NotApplicable
        );
    }

    /// Eight rounds of `center`, each a little off in turn (+-0.5%).
    fn rounds(center: f64) -> Vec<f64> {
        [1.0, 1.005, 0.995, 1.002, 0.998, 1.004, 0.996, 1.0]
            .iter()
            .map(|f| center * f)
            .collect()
    }

    fn medians_of(samples: &Samples) -> Medians {
        (samples.iter())
            .map(|(key, values)| (*key, median(values)))
            .collect()
    }

    #[test]
    fn direction_counts() {
        let samples = Samples::from([
            ((Metric::RrP50, Config::H0), rounds(40.0)),
            ((Metric::RrP50, Config::H0d), rounds(41.0)),
            ((Metric::RrP50, Config::H1), rounds(42.0)),
            ((Metric::RrP50, Config::Nat), rounds(45.0)),
            ((Metric::Stream, Config::H0), rounds(10.0)),
            ((Metric::Stream, Config::H0d), rounds(9.0)),
            ((Metric::Stream, Config::H1), rounds(9.9)),
            ((Metric::Stream, Config::Nat), rounds(10.5)),
        ]);
        let medians = medians_of(&samples);
        let nat = ahead_of(&samples, &medians, Config::Nat);
        assert_eq!(nat.verdict, Verdict::Missed);
        assert!(nat.figure.contains("behind: TCP stream") && !nat.figure.contains("p50"));
        // Latency 2.5% worse is within 3%; stream 10% worse is not.
        let host = host_unchanged(&samples, &medians);
        assert_eq!(host.verdict, Verdict::Missed);
        assert!(host.figure.contains("stream"), "{}", host.figure);
    }

    /// The p50 target judged on rounds of H0 and H1.
    fn p50_target(h0: Vec<f64>, h1: Vec<f64>) -> Target {
        let samples = Samples::from([
            ((Metric::RrP50, Config::H0), h0),
            ((Metric::RrP50, Config::H1), h1),
        ]);
        let medians = medians_of(&samples);
        ratio_target(
            &samples,
            &medians,
            "p50",
            Metric::RrP50,
            (1.03, Want::AtMost),
        )
    }

    #[test]
    fn a_ratio_near_its_threshold_in_noisy_rounds_is_not_resolved() {
        // H1 at 102% of H0's latency, rounds varying by +-10% on their own: the interval
        // reaches past 103%.
        let noisy = [1.0, 1.1, 0.9, 1.05, 0.95, 1.08, 0.92, 1.0];
        let h1: Vec<f64> = noisy.iter().map(|f| 51.0 * f).collect();
        let h0: Vec<f64> = noisy.iter().rev().map(|f| 50.0 * f).collect();
        let target = p50_target(h0, h1);
        assert_eq!(target.verdict, Verdict::NotResolved, "{}", target.figure);
        assert!(
            target.figure.starts_with("102.0% (95% CI"),
            "{}",
            target.figure
        );
        // The same ratio in quiet rounds is met.
        let target = p50_target(rounds(50.0), rounds(51.0));
        assert_eq!(target.verdict, Verdict::Met, "{}", target.figure);
    }
}
