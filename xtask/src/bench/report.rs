//! The report: medians, ratios and targets as markdown (target/bench/report.md, printed),
//! every sample as JSON (results.json), two SVG plots, and in full mode the results section of
//! docs/PERFORMANCE.md (between its markers) with the plots beside it.
use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::Context as _;
use serde_json::json;

use super::stats::{self, median, relative_range};
use super::tc_attach::{Attachment, TcAttachSamples};
use super::{
    bpfstats,
    machine::Machine,
    plan::{Config, Plan},
    plot::{Chart, Group},
    results::Results,
    targets::{self, AggregateCost, Medians, Target},
    workloads::Metric,
};
use crate::shell::{say, workspace_root};

const BEGIN: &str = "<!-- bench results: begin (written by `cargo xtask bench`) -->";
const END: &str = "<!-- bench results: end -->";
const DATAPATH_SVG: &str = "performance-datapath.svg";
const CONTROL_SVG: &str = "performance-control-plane.svg";
const STARTUP_SVG: &str = "performance-startup.svg";

pub fn write(out: &Path, plan: &Plan, machine: &Machine, results: &Results) -> anyhow::Result<()> {
    let medians: Medians = (results.samples.iter())
        .map(|(key, values)| (*key, median(values)))
        .collect();
    let programs = targets::aggregate(&results.programs);
    let verdicts = targets::evaluate(
        &results.samples,
        &programs,
        results.floors.as_ref(),
        &results.unowned,
        &results.control,
        &results.startup_peers,
    );
    let markdown = render(plan, machine, results, &medians, &programs, &verdicts);
    fs::write(out.join("report.md"), &markdown)?;
    fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&to_json(machine, results, &medians))?,
    )?;
    fs::write(out.join(DATAPATH_SVG), datapath_chart(&medians).to_svg())?;
    fs::write(out.join(CONTROL_SVG), control_chart(results).to_svg())?;
    fs::write(out.join(STARTUP_SVG), startup_chart(results).to_svg())?;
    println!("{markdown}");
    say(&format!(
        "report, results.json and plots written to {}",
        out.display()
    ));
    if !plan.quick && plan.only.is_none() {
        update_docs(out, &markdown)?;
    }
    Ok(())
}

fn render(
    plan: &Plan,
    machine: &Machine,
    results: &Results,
    medians: &Medians,
    programs: &[AggregateCost],
    verdicts: &[Target],
) -> String {
    let mut md = String::new();
    run_section(&mut md, plan, machine, results);
    datapath_section(&mut md, plan, results, medians);
    targets_section(&mut md, verdicts);
    programs_section(&mut md, programs, results.floors.as_ref());
    unowned_section(&mut md, &results.unowned, results.floors.as_ref());
    control_section(&mut md, plan, results);
    tc_attach_section(&mut md, &results.tc_attach);
    engines_section(&mut md, &results.engines);
    bandwidth_section(&mut md, &results.bandwidth);
    md
}

/// Limited streams against the rate set, and what a limit costs per packet.
fn bandwidth_section(md: &mut String, bandwidth: &super::bandwidth::BandwidthResults) {
    if bandwidth.rates.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Bandwidth limits\n\n\
         A TCP stream (iperf3) over loopback from a container with `--egress-rate`, policed \
         (loopback has no qdisc to pace) with the socket paced under the limit; the payload \
         rate the receiver saw. Loopback's 64 KiB segments make the payload nearly all of the \
         IP bytes the limit counts.\n\n\
         | set | achieved | achieved / set |\n| ---: | ---: | ---: |"
    );
    for run in &bandwidth.rates {
        let set = f64::from(run.set_mbit) * 1e6;
        let _ = writeln!(
            md,
            "| {} Mbit/s | {:.1} Mbit/s | {:.3} |",
            run.set_mbit,
            run.achieved_bps / 1e6,
            run.achieved_bps / set
        );
    }
    if let Some(cost) = &bandwidth.cost {
        let _ = writeln!(
            md,
            "\n`skb_egress` per run (BPF statistics, the same stream): {:.0} ns without a \
             limit, {:.0} ns with one that never binds: the limit adds {:+.0} ns per packet.\n",
            cost.unlimited_ns,
            cost.limited_ns,
            cost.limited_ns - cost.unlimited_ns
        );
    }
    neighbour_lines(md, &bandwidth.neighbour);
}

/// An unlimited stream beside a limited one against alone, with the verdict on 5%.
fn neighbour_lines(md: &mut String, neighbour: &super::bandwidth::Neighbour) {
    if neighbour.alone_bps.is_empty() {
        return;
    }
    let (alone, beside) = (median(&neighbour.alone_bps), median(&neighbour.beside_bps));
    let interval = stats::ratio_interval(&neighbour.beside_bps, &neighbour.alone_bps, true);
    // Higher is better: only a fall beyond 5% misses.
    let verdict = match interval {
        Some(i) if i.low >= 0.95 => "met",
        Some(i) if i.high < 0.95 => "missed",
        _ => "not resolved (the interval is wider than the margin)",
    };
    let _ = writeln!(
        md,
        "An unlimited container's stream beside a limited one (`--egress-rate 10mbit`, \
         streaming), against alone, {} rounds alternately: {:.2} Gbit/s against {:.2} \
         (ratio {:.3}{}). Target: at most 5% less: {verdict}.\n",
        neighbour.alone_bps.len(),
        beside / 1e9,
        alone / 1e9,
        beside / alone,
        interval.map_or(String::new(), |i| format!(
            ", 95% interval {:.3} to {:.3}",
            i.low, i.high
        )),
    );
    if neighbour.alone_p50_us.is_empty() {
        return;
    }
    let (alone, beside) = (
        median(&neighbour.alone_p50_us),
        median(&neighbour.beside_p50_us),
    );
    let interval = stats::ratio_interval(&neighbour.beside_p50_us, &neighbour.alone_p50_us, true);
    // Lower is better: only a rise beyond 5% misses.
    let verdict = match interval {
        Some(i) if i.high <= 1.05 => "met",
        Some(i) if i.low > 1.05 => "missed",
        _ => "not resolved (the interval is wider than the margin)",
    };
    let _ = writeln!(
        md,
        "Its request-response latency (sockperf TCP ping-pong, p50) beside the limited stream, \
         against alone, the same rounds: {beside:.1} µs against {alone:.1} (ratio {:.3}{}). \
         Target: at most 5% more: {verdict}.\n",
        beside / alone,
        interval.map_or(String::new(), |i| format!(
            ", 95% interval {:.3} to {:.3}",
            i.low, i.high
        )),
    );
}

/// What hostnetd-runc adds to `docker run -d`.
fn engines_section(md: &mut String, startup: &super::engines::EngineStartup) {
    if startup.runc_ms.is_empty() {
        return;
    }
    let (runc, hostnetd) = (median(&startup.runc_ms), median(&startup.hostnetd_runc_ms));
    let _ = writeln!(
        md,
        "### Engines\n\n\
         `docker run -d --network host` of the busybox sample image on a private dockerd \
         (Debian's Engine 20.10), from the command to its return, the container removed after \
         each; runc and hostnetd-runc alternately, medians of {} each:\n\n\
         | runtime | ms | spread |\n| --- | ---: | ---: |\n\
         | runc | {runc:.1} | {:.0}% |\n\
         | hostnetd-runc (`-l io.hostnetd.ports=P`) | {hostnetd:.1} | {:.0}% |\n\n\
         hostnetd-runc adds {:+.1} ms ({:+.0}%){}.\n",
        startup.runc_ms.len(),
        relative_range(&startup.runc_ms) * 100.0,
        relative_range(&startup.hostnetd_runc_ms) * 100.0,
        hostnetd - runc,
        (hostnetd / runc - 1.0) * 100.0,
        stats::difference_interval(&startup.hostnetd_runc_ms, &startup.runc_ms, true).map_or(
            String::new(),
            |i| format!(
                " (95% interval {:+.1} to {:+.1} ms, paired by round)",
                i.low, i.high
            )
        ),
    );
}

/// Each attachment's median cost per loopback packet, and what TCX and clsact add.
fn tc_attach_section(md: &mut String, samples: &TcAttachSamples) {
    let Some(none) = samples.get(&Attachment::None).map(|s| median(s)) else {
        return;
    };
    let _ = writeln!(
        md,
        "### TC attach modes\n\n\
         18-byte UDP datagrams over lo (sendmmsg, one pinned thread, dropped at a full \
         socket), nanoseconds per packet, medians of {} rounds; TC programs run on lo's egress \
         and ingress, on their common path (the port is nobody's):\n\n\
         | lo's TC hooks | ns per packet | spread | more than none |\n| --- | ---: | ---: | ---: |",
        samples.get(&Attachment::None).map_or(0, Vec::len)
    );
    for (attachment, values) in samples {
        let value = median(values);
        let _ = writeln!(
            md,
            "| {} | {value:.1} | {:.0}% | {:+.1} |",
            attachment.label(),
            relative_range(values) * 100.0,
            value - none
        );
    }
    if let (Some(tcx), Some(clsact)) = (
        samples.get(&Attachment::Tcx).map(|s| median(s)),
        samples.get(&Attachment::Clsact).map(|s| median(s)),
    ) {
        let _ = writeln!(
            md,
            "
clsact against TCX: {:+.1} ns per packet (both hooks), {:+.1}%.
",
            clsact - tcx,
            (clsact / tcx - 1.0) * 100.0
        );
    }
}

fn run_section(md: &mut String, plan: &Plan, machine: &Machine, results: &Results) {
    let mode = if plan.quick { "quick" } else { "full" };
    let loads: Vec<String> = (results.load_per_round.iter())
        .map(|load| format!("{load:.2}"))
        .collect();
    let _ = writeln!(
        md,
        "### Run\n\n\
         - {} ({mode} mode: {} rounds, {} s per workload, {} s per socket-call loop), commit `{}`\n\
         - {} ({} CPUs), {:.1} GiB memory, Linux {}, {}\n\
         - tools: {}\n\
         - other load: the CPUs were {:.0}% busy in the 2 s before the run; 1-minute load \
         average at each round: {}\n\
         - BPF programs others had attached to the root cgroup or lo as each round began: {}\n",
        machine.date,
        plan.rounds,
        plan.duration.as_secs(),
        plan.syscall_duration.as_secs_f64(),
        machine.commit,
        machine.cpu,
        machine.cpus,
        machine.memory_gib,
        machine.kernel,
        machine.os,
        machine.tools.join(", "),
        machine.busy_before * 100.0,
        loads.join(", "),
        foreign_hooks(&results.foreign_hooks_per_round),
    );
}

fn foreign_hooks(rounds: &[Vec<String>]) -> String {
    if rounds.iter().all(Vec::is_empty) {
        return "none".into();
    }
    let listed: Vec<String> = (rounds.iter().enumerate())
        .map(|(round, hooks)| match hooks.is_empty() {
            true => format!("round {}: none", round + 1),
            false => format!("round {}: {}", round + 1, hooks.join(", ")),
        })
        .collect();
    listed.join("; ")
}

/// The datapath configurations, in column order; Docker's appear when they were measured.
const COLUMNS: [Config; 6] = [
    Config::H0,
    Config::H0d,
    Config::H1,
    Config::Nat,
    Config::DockerBridge,
    Config::DockerNoProxy,
];
/// H1 over each of these, with a 95% interval.
const RATIO_BASES: [Config; 4] = [
    Config::H0,
    Config::Nat,
    Config::DockerBridge,
    Config::DockerNoProxy,
];

fn datapath_section(md: &mut String, plan: &Plan, results: &Results, medians: &Medians) {
    let measured = |config: Config| medians.keys().any(|(_, c)| *c == config);
    let columns: Vec<Config> = COLUMNS.into_iter().filter(|&c| measured(c)).collect();
    let bases: Vec<Config> = RATIO_BASES.into_iter().filter(|&c| measured(c)).collect();
    let header: Vec<String> = (columns.iter().map(|c| c.label().to_string()))
        .chain(bases.iter().map(|b| format!("H1/{}", b.label())))
        .collect();
    let _ = writeln!(
        md,
        "### Datapath (medians of {} rounds)\n\n\
         | workload | unit | {} | spread |\n| --- | --- |{} ---: |",
        plan.rounds,
        header.join(" | "),
        " ---: |".repeat(header.len()),
    );
    let metrics = Metric::ALL
        .into_iter()
        .filter(|&metric| medians.keys().any(|(m, _)| *m == metric));
    for metric in metrics {
        let cells: Vec<String> = (columns.iter())
            .map(|&config| {
                medians
                    .get(&(metric, config))
                    .map_or("-".into(), |&v| format_value(v))
            })
            .chain(
                bases
                    .iter()
                    .map(|&base| ratio_cell(results, medians, metric, base)),
            )
            .collect();
        let arrow = if metric.higher_is_better() {
            "↑"
        } else {
            "↓"
        };
        let _ = writeln!(
            md,
            "| {} | {} {arrow} | {} | {:.0}% |",
            metric.label(),
            metric.unit(),
            cells.join(" | "),
            spread(results, metric) * 100.0,
        );
    }
    md.push_str(
        "\n↑ higher is better, ↓ lower is better. Ratios: the medians' ratio, under it its 95% \
         bootstrap interval over the rounds, paired by round. Spread: the widest range \
         (max - min) over the rounds of any one configuration, relative to its median.\n",
    );
    if let Some(why) = &results.docker_noproxy_absent {
        let _ = writeln!(md, "\ndocker-bridge-noproxy: {why}.");
    }
    md.push('\n');
}

/// "1.051<br>0.99-1.10": H1 over `base`, and its interval.
fn ratio_cell(results: &Results, medians: &Medians, metric: Metric, base: Config) -> String {
    let Some(ratio) = targets::ratio(medians, metric, base) else {
        return "-".into();
    };
    match targets::ratio_interval(&results.samples, metric, Config::H1, base) {
        Some(i) => format!("{ratio:.3}<br>{:.2}-{:.2}", i.low, i.high),
        None => format!("{ratio:.3}"),
    }
}

/// The largest (max - min) / median of the rounds' samples among the configurations.
fn spread(results: &Results, metric: Metric) -> f64 {
    (results.samples.iter())
        .filter(|((m, _), values)| *m == metric && !values.is_empty())
        .map(|(_, values)| relative_range(values))
        .fold(0.0, f64::max)
}

fn format_value(value: f64) -> String {
    match value {
        v if v >= 1000.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

fn targets_section(md: &mut String, verdicts: &[Target]) {
    md.push_str("### Targets\n\n| target | measured | result |\n| --- | --- | --- |\n");
    for target in verdicts {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            target.name,
            target.figure,
            target.verdict.label()
        );
    }
    md.push_str(
        "\nIntervals: 95% percentile bootstrap over the rounds (4000 resamples, fixed seed), \
         paired by round where both figures were measured in every round. Met: the whole \
         interval is on the target's side of its threshold; missed: wholly on the other side; \
         not resolved: it straddles the threshold, and this run cannot tell.\n\n",
    );
}

/// What the TC programs cost on host traffic, which only looks up the port's owner.
fn unowned_section(
    md: &mut String,
    unowned: &[bpfstats::ProgramStats],
    floors: Option<&targets::Floors>,
) {
    let figures: Vec<String> = (unowned.iter())
        .filter_map(|p| {
            let ns = p.ns_per_run()?;
            let floor = floors.map_or(0.0, |f| f.for_kind(&p.kind));
            Some(format!(
                "{} {ns:.1} ns per run ({:.1} net, {} runs)",
                p.name,
                ns - floor,
                p.run_cnt
            ))
        })
        .collect();
    if !figures.is_empty() {
        let _ = writeln!(
            md,
            "\nOn host traffic with the daemon running (H0+daemon, UDP rate: ports nobody owns, \
             so each run returns after the owner lookup): {}.",
            figures.join(", ")
        );
    }
}

fn programs_section(md: &mut String, programs: &[AggregateCost], floors: Option<&targets::Floors>) {
    md.push_str(
        "### Program costs (H1 workloads with BPF run-time statistics on)\n\n\
         | program | type | runs | ns per run | less an empty program at the same hook | costliest workload | budget |\n\
         | --- | --- | ---: | ---: | ---: | --- | ---: |\n",
    );
    let net = |program: &AggregateCost| {
        floors.map_or("-".into(), |f| {
            format!("{:.1}", program.ns_per_run - f.for_kind(&program.kind))
        })
    };
    for program in programs {
        let budget = match targets::budget(&program.kind) {
            Some(_) if program.runs < targets::MIN_RUNS => "(too few runs to judge)".into(),
            Some(ns) => format!("{ns:.0} ns"),
            None => "-".into(),
        };
        let worst = match &program.worst {
            (workload, ns) if !workload.is_empty() => format!("{workload} ({ns:.1} ns)"),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {} | {worst} | {budget} |",
            program.name,
            program.kind,
            program.runs,
            program.ns_per_run,
            net(program),
        );
    }
    if programs.is_empty() {
        md.push_str("| (no hostnetd program ran) | | | | | | |\n");
    }
    if let Some(floors) = floors {
        let in_place: Vec<String> = (floors.in_place_ns.iter())
            .map(|(kind, ns)| format!("{ns:.1} ns as {kind}"))
            .collect();
        let _ = writeln!(
            md,
            "\nAn empty program (`r0 = 0; exit`) measures {:.1} ns per run in a tight \
             BPF_PROG_TEST_RUN loop here, and {} attached beside hostnetd's programs during the \
             pass (TCX on lo, cgroup_skb on the containers' parent cgroup): the statistics' own \
             clock reads and the call, which every figure above includes, and which are not \
             there when statistics are off. Each program is judged net of the empty one at its \
             own kind of hook where that was measured, else net of the tight loop's figure.",
            floors.test_run_ns,
            if in_place.is_empty() {
                "nothing".to_string()
            } else {
                in_place.join(", ")
            },
        );
    }
}

fn control_section(md: &mut String, plan: &Plan, results: &Results) {
    let control = &results.control;
    let (hostnetd, runc) = (
        median(&control.startup_hostnetd_ms),
        median(&control.startup_runc_ms),
    );
    let _ = writeln!(
        md,
        "### Control plane\n\n\
         Start-up to the first accepted connection (median of {} each, the two alternating):\n\n\
         | command | ms |\n| --- | ---: |\n\
         | `hostnetd run -d --rootfs / --ports P ...` | {hostnetd:.1} |\n\
         | `runc run -d` of the same OCI config | {runc:.1} |\n\
         | hostnetd's own share | {:.1} |\n\
         | of which any command's cost (`hostnetd ps`: client start, API round trip) | {:.1} |\n",
        plan.startup_samples,
        hostnetd - runc,
        median(&control.ps_ms),
    );
    startup_peers_table(md, plan, results);
    let counts: Vec<String> = plan
        .scale_counts_asked
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(
        md,
        "With N idle containers running, each owning 10 ports (5 port numbers, TCP and UDP); \
         medians of {} (counts asked: {}):\n\n\
         | containers | admission (refused run), ms | `run -d`, ms | `rm -f`, ms | bind() in a container, ns | bind4 program, ns/run |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |",
        plan.scale_samples,
        counts.join(", ")
    );
    for point in &control.scale {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            point.containers,
            point.admission_ms,
            point.create_ms,
            point.remove_ms,
            point.bind_ns,
            point
                .bind_program_ns
                .map_or("-".into(), |ns| format!("{ns:.1}"))
        );
    }
    md.push('\n');
}

/// `hostnetd run -d` beside `docker run -d` and `podman run -d` of the same image.
fn startup_peers_table(md: &mut String, plan: &Plan, results: &Results) {
    let peers = &results.startup_peers;
    if peers.hostnetd_ms.is_empty() {
        return;
    }
    let hostnetd = median(&peers.hostnetd_ms);
    let row = |command: &str, values: &[f64], paired_base: bool| {
        let value = median(values);
        let against = if paired_base {
            "".to_string()
        } else {
            match stats::ratio_interval(&peers.hostnetd_ms, values, true) {
                Some(i) => format!("{:.2} ({:.2}-{:.2})", hostnetd / value, i.low, i.high),
                None => format!("{:.2}", hostnetd / value),
            }
        };
        format!(
            "| {command} | {value:.1} | {:.0}% | {against} |\n",
            relative_range(values) * 100.0
        )
    };
    let _ = writeln!(
        md,
        "Start-up beside other engines: `run -d` of the busybox sample image (`sleep 600`) on \
         the host network, from the command to its return, each engine once per round in a \
         rotating order, the container removed after each; medians of {} rounds. Docker and \
         podman are Debian's (Engine 20.10 on a private dockerd, podman 4.3), both with runc:\n\n\
         | command | ms | spread | hostnetd over it (95% CI) |\n| --- | ---: | ---: | ---: |\n{}{}{}",
        plan.peer_rounds,
        row("`hostnetd run -d --ports P busybox`", &peers.hostnetd_ms, true),
        row("`docker run -d --network host busybox`", &peers.docker_ms, false),
        row(
            "`podman run -d --network host busybox`",
            &peers.podman_ms,
            false
        ),
    );
}

/// Start-up medians in milliseconds: hostnetd beside each peer.
fn startup_chart(results: &Results) -> Chart<'static> {
    let peers = &results.startup_peers;
    let control = &results.control;
    let engines = &results.engines;
    let value = |values: &[f64]| (!values.is_empty()).then(|| median(values));
    let group = |label: &str, hostnetd: &[f64], peer: &[f64]| Group {
        label: label.to_string(),
        values: vec![value(hostnetd), value(peer)],
    };
    Chart {
        title: "Start-up, ms (median): hostnetd beside each peer (lower is better)",
        y_label: "ms",
        series: &["hostnetd (hostnetd-runc under Docker)", "the peer"],
        groups: vec![
            group("vs docker run -d", &peers.hostnetd_ms, &peers.docker_ms),
            group("vs podman run -d", &peers.hostnetd_ms, &peers.podman_ms),
            group(
                "vs runc run -d (to 1st conn.)",
                &control.startup_hostnetd_ms,
                &control.startup_runc_ms,
            ),
            group(
                "docker: hostnetd-runc vs runc",
                &engines.hostnetd_runc_ms,
                &engines.runc_ms,
            ),
        ],
        reference: None,
        y_max: 1000.0,
    }
}

/// Relative performance against H0, oriented so that above 100% is better.
fn datapath_chart(medians: &Medians) -> Chart<'static> {
    const SERIES: [Config; 5] = [
        Config::H0d,
        Config::H1,
        Config::Nat,
        Config::DockerBridge,
        Config::DockerNoProxy,
    ];
    let groups = Metric::ALL
        .iter()
        .filter(|&&metric| medians.contains_key(&(metric, Config::H0)))
        .map(|&metric| Group {
            label: metric.short().to_string(),
            values: SERIES
                .iter()
                .map(|&config| {
                    let base = medians.get(&(metric, Config::H0))?;
                    let value = medians.get(&(metric, config))?;
                    let relative = if metric.higher_is_better() {
                        value / base
                    } else {
                        base / value
                    };
                    Some(relative * 100.0)
                })
                .collect(),
        })
        .collect();
    Chart {
        title:
            "Datapath: performance relative to bare host processes (H0 = 100%, higher is better)",
        y_label: "% of H0",
        series: &[
            "H0+daemon",
            "H1 (hostnetd)",
            "NAT (bridge+DNAT)",
            "docker-bridge (proxy)",
            "docker-bridge-noproxy",
        ],
        groups,
        reference: Some((100.0, "H0")),
        y_max: 150.0,
    }
}

/// Each control-plane cost at each count, relative to its cost with the fewest containers.
fn control_chart(results: &Results) -> Chart<'static> {
    let scale = &results.control.scale;
    let first = scale.first();
    let relative = |value: f64, base: Option<f64>| base.map(|b| value / b);
    let groups = scale
        .iter()
        .map(|point| Group {
            label: format!("{} containers", point.containers),
            values: vec![
                relative(point.admission_ms, first.map(|f| f.admission_ms)),
                relative(point.create_ms, first.map(|f| f.create_ms)),
                relative(point.remove_ms, first.map(|f| f.remove_ms)),
                relative(point.bind_ns, first.map(|f| f.bind_ns)),
                point
                    .bind_program_ns
                    .and_then(|ns| relative(ns, first.and_then(|f| f.bind_program_ns))),
            ],
        })
        .collect();
    Chart {
        title: "Control plane: cost relative to the fewest containers (flat is the target)",
        y_label: "x cost at the fewest",
        series: &[
            "admission",
            "run -d",
            "rm -f",
            "bind() in a container",
            "bind4 program",
        ],
        groups,
        reference: Some((1.0, "no growth")),
        y_max: 5.0,
    }
}

fn to_json(machine: &Machine, results: &Results, medians: &Medians) -> serde_json::Value {
    let mut samples = BTreeMap::new();
    for ((metric, config), values) in &results.samples {
        samples
            .entry(metric.key())
            .or_insert_with(BTreeMap::new)
            .insert(
                config.key(),
                json!({ "median": medians[&(*metric, *config)], "samples": values }),
            );
    }
    let programs: Vec<_> = (results.programs.iter())
        .map(|(workload, p)| {
            json!({ "workload": workload.name(), "program": p.name, "type": p.kind,
                    "run_cnt": p.run_cnt, "run_time_ns": p.run_time_ns })
        })
        .collect();
    let control = &results.control;
    let scale: Vec<_> = (control.scale.iter())
        .map(|p| {
            json!({ "containers": p.containers, "admission_ms": p.admission_ms,
                    "create_ms": p.create_ms, "remove_ms": p.remove_ms, "bind_ns": p.bind_ns,
                    "bind_program_ns": p.bind_program_ns,
                    "admission_samples_ms": p.admission_samples_ms,
                    "create_samples_ms": p.create_samples_ms })
        })
        .collect();
    json!({
        "machine": machine.to_json(),
        "load_per_round": results.load_per_round,
        "foreign_hooks_per_round": results.foreign_hooks_per_round,
        "datapath": samples,
        "programs": programs,
        "unowned_programs": (results.unowned.iter())
            .map(|p| json!({ "program": p.name, "type": p.kind, "run_cnt": p.run_cnt,
                             "run_time_ns": p.run_time_ns }))
            .collect::<Vec<_>>(),
        "tc_attach_ns_per_packet": (results.tc_attach.iter())
            .map(|(attachment, values)| (attachment.key(), values.clone()))
            .collect::<BTreeMap<_, _>>(),
        "startup_peers_ms": {
            "hostnetd": results.startup_peers.hostnetd_ms,
            "docker": results.startup_peers.docker_ms,
            "podman": results.startup_peers.podman_ms,
        },
        "docker_bridge_noproxy_absent": results.docker_noproxy_absent,
        "engine_startup_ms": {
            "runc": results.engines.runc_ms,
            "hostnetd_runc": results.engines.hostnetd_runc_ms,
        },
        "bandwidth": {
            "achieved_bps_by_set_mbit": (results.bandwidth.rates.iter())
                .map(|run| (run.set_mbit.to_string(), run.achieved_bps))
                .collect::<BTreeMap<_, _>>(),
            "neighbour_alone_bps": results.bandwidth.neighbour.alone_bps,
            "neighbour_beside_limited_bps": results.bandwidth.neighbour.beside_bps,
            "neighbour_alone_p50_us": results.bandwidth.neighbour.alone_p50_us,
            "neighbour_beside_limited_p50_us": results.bandwidth.neighbour.beside_p50_us,
            "skb_egress_ns": results.bandwidth.cost.as_ref().map(|cost| {
                serde_json::json!({"unlimited": cost.unlimited_ns, "limited": cost.limited_ns})
            }),
        },
        "empty_program_ns": results.floors.as_ref().map(|f| f.test_run_ns),
        "empty_program_in_place_ns": results.floors.as_ref().map(|f| &f.in_place_ns),
        "control_plane": {
            "startup_hostnetd_ms": control.startup_hostnetd_ms,
            "startup_runc_ms": control.startup_runc_ms,
            "ps_ms": control.ps_ms,
            "create_ms_by_count": control.create_ms_by_count,
            "scale": scale,
        },
    })
}

/// Replaces the results section of docs/PERFORMANCE.md and copies the plots beside it.
fn update_docs(out: &Path, markdown: &str) -> anyhow::Result<()> {
    let docs = workspace_root().join("docs");
    let path = docs.join("PERFORMANCE.md");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let section = format!(
        "{BEGIN}\n\n{markdown}\n![datapath]({DATAPATH_SVG})\n\n![control plane]({CONTROL_SVG})\n\n\
         ![start-up]({STARTUP_SVG})\n\n{END}"
    );
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{section}{}", &text[..begin], &text[end + END.len()..])
        }
        _ => format!("{}# Performance\n\n{section}\n", text),
    };
    fs::write(&path, updated).with_context(|| format!("cannot write {}", path.display()))?;
    for svg in [DATAPATH_SVG, CONTROL_SVG, STARTUP_SVG] {
        fs::copy(out.join(svg), docs.join(svg))?;
    }
    say(&format!("{} updated with these results", path.display()));
    Ok(())
}
