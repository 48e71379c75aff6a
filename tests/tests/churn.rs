//! Load and leaks: 200 containers started and removed, five rounds (1000 containers in all),
//! through one daemon. After every round nothing of them is left (records, cgroups, owner
//! table slots, link pins, rows of the kernel's policy and accounting maps, monitor and runc
//! processes); across rounds the daemon's file descriptors stay put and its memory flat. And
//! the per-container limits of the rule and address tables refuse clearly, changing nothing.
use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::{describe, fetch, netprobe, skip_unless_root, stderr, TestHost};
use serde_json::Value;

const CONTAINERS: u16 = 200;
const ROUNDS: usize = 5;
/// `hostnetd run -d` and `rm -f` calls in flight at once.
const PARALLEL: u16 = 4;
/// Container i owns 127.0.0.1:(FIRST_PORT + i).
const FIRST_PORT: u16 = 23000;
/// Every tenth container listens and is fetched from, so the accounting maps get rows.
const LISTENER_EVERY: u16 = 10;
/// Container 1 of each round tries this port, which it does not own: a denial row.
const UNDECLARED_PORT: u16 = 23990;
/// Memory the daemon may gain between round 1 and the last before it counts as a leak.
const RSS_GROWTH_LIMIT_KIB: u64 = 20 * 1024;
/// File descriptors it may gain (a lazily opened map or log file, not one per container).
const FD_GROWTH_LIMIT: usize = 4;

/// The maps that hold a row per container (or per container and port): all empty once every
/// container is gone. DENIALS keeps the host's own row (cgroup id 0).
const PER_CONTAINER_MAPS: [&str; 7] = [
    "BIND_ADDRS",
    "CONTAINER_POLICIES",
    "EGRESS_RULES",
    "INGRESS_RULES",
    "TRAFFIC",
    "DEVICE_TRAFFIC",
    "DENIALS",
];

#[test]
fn a_thousand_containers_leave_nothing_behind_and_the_daemon_stays_flat() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    assert!(host.exec(&["ps"]).status.success(), "the daemon starts");
    let daemon = host.daemon_pid().expect("a daemon runs");
    let mut after_first = None;
    for round in 1..=ROUNDS {
        let started = Instant::now();
        start_round(&host, round);
        let running = started.elapsed();
        assert_rows_while_running(&host);
        remove_round(&host, round);
        assert_nothing_left(&host, daemon);
        let usage = Usage::of(daemon);
        eprintln!(
            "round {round}: {CONTAINERS} started in {:.1}s, removed in {:.1}s; daemon {usage}",
            running.as_secs_f64(),
            (started.elapsed() - running).as_secs_f64()
        );
        after_first.get_or_insert(usage);
    }
    assert_eq!(
        host.daemon_pid(),
        Some(daemon),
        "one daemon served every round"
    );
    let (first, last) = (after_first.unwrap(), Usage::of(daemon));
    eprintln!("daemon after round 1: {first}; after round {ROUNDS}: {last}");
    assert!(
        last.rss_kib < first.rss_kib + RSS_GROWTH_LIMIT_KIB,
        "the daemon's memory grew from {first} to {last}"
    );
    assert!(
        last.fds <= first.fds + FD_GROWTH_LIMIT,
        "the daemon's file descriptors grew from {first} to {last}"
    );
}

/// Starts the round's containers, PARALLEL `run -d` calls at a time, and fetches from the
/// listeners.
fn start_round(host: &TestHost, round: usize) {
    let probe = netprobe();
    in_parallel(|index| {
        let name = container_name(round, index);
        let port = (FIRST_PORT + index).to_string();
        let owned = format!("127.0.0.1:{port}");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--rootfs",
            "/",
            "--ports",
            &owned,
            // A rule that matches nothing the test sends: the policy maps get rows.
            "--egress-deny",
            "198.18.0.0/24:9",
            "--ingress-allow",
            "127.0.0.0/8",
            "--",
        ];
        // Denied, then kept running: an exited container's rows may go before `rm`.
        let denied = format!("{probe} bind tcp 0.0.0.0 {UNDECLARED_PORT}; exec {probe} sleep 120");
        match index {
            1 => args.extend(["/bin/sh", "-c", &denied]),
            i if i % LISTENER_EVERY == 0 => {
                args.extend([probe.as_str(), "listen", "127.0.0.1", &port, "120"])
            }
            _ => args.extend([probe.as_str(), "sleep", "120"]),
        }
        let output = host.exec(&args);
        assert!(output.status.success(), "run {name}: {}", describe(&output));
        if index % LISTENER_EVERY == 0 {
            fetch_when_listening(FIRST_PORT + index);
        }
    });
}

fn fetch_when_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fetch(port) {
            Ok(body) if body.contains("hello") => return,
            result => assert!(Instant::now() < deadline, "no answer on {port}: {result:?}"),
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn remove_round(host: &TestHost, round: usize) {
    in_parallel(|index| {
        let name = container_name(round, index);
        let output = host.exec(&["rm", "-f", &name]);
        assert!(
            output.status.success(),
            "rm -f {name}: {}",
            describe(&output)
        );
    });
}

/// Calls `job` for every container index, PARALLEL threads sharing them out.
fn in_parallel(job: impl Fn(u16) + Sync) {
    thread::scope(|scope| {
        for worker in 0..PARALLEL {
            let job = &job;
            scope.spawn(move || {
                for index in (worker..CONTAINERS).step_by(PARALLEL as usize) {
                    job(index);
                }
            });
        }
    });
}

fn container_name(round: usize, index: u16) -> String {
    format!("churn-{round}-{index}")
}

/// The emptiness checks below would pass on maps that never get rows: they do get them.
fn assert_rows_while_running(host: &TestHost) {
    let rows = |map: &str| map_rows(host, map).len();
    assert_eq!(rows("CONTAINER_POLICIES"), usize::from(CONTAINERS));
    assert_eq!(rows("BIND_ADDRS"), usize::from(CONTAINERS));
    assert!(rows("EGRESS_RULES") >= 1, "no egress rule rows");
    assert!(rows("INGRESS_RULES") >= 1, "no ingress rule rows");
    // Each container's port has a counter row of its own (the listeners' count their
    // fetches there), none in the TRAFFIC hash.
    assert_eq!(host.port_rows().1, u64::from(CONTAINERS));
    let deadline = Instant::now() + Duration::from_secs(10);
    // Container 1 records its denial when its probe has run.
    while container_rows(host, "DENIALS").is_empty() {
        assert!(Instant::now() < deadline, "no denial row for container 1");
        thread::sleep(Duration::from_millis(50));
    }
}

fn assert_nothing_left(host: &TestHost, daemon: i32) {
    host.assert_no_container_left();
    assert_eq!(host.port_rows().1, 0, "port counter rows still given");
    for map in PER_CONTAINER_MAPS {
        let left = container_rows(host, map);
        assert!(left.is_empty(), "{map} rows left: {left:?}");
    }
    let stats = host.exec(&["stats", "-a", "--no-stream", "--format", "json"]);
    assert!(stats.status.success(), "stats: {}", describe(&stats));
    let listed: Vec<Value> = serde_json::from_slice(&stats.stdout).expect("stats json");
    assert_eq!(
        listed,
        Vec::<Value>::new(),
        "stats lists removed containers"
    );
    let strays = processes_of(host.scratch(), daemon);
    assert!(strays.is_empty(), "processes left: {strays:?}");
}

/// A map's rows, without the host's own DENIALS row (key 0).
fn container_rows(host: &TestHost, map: &str) -> Vec<Value> {
    let rows = map_rows(host, map);
    if map != "DENIALS" {
        return rows;
    }
    rows.into_iter()
        .filter(|row| !key_bytes(row).iter().all(|byte| *byte == 0))
        .collect()
}

/// `bpftool map dump` of one of the datapath's pinned maps.
fn map_rows(host: &TestHost, map: &str) -> Vec<Value> {
    let path = host.pin_root().join("maps").join(map);
    let output = Command::new("bpftool")
        .args(["--json", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .expect("run bpftool (installed by `cargo xtask setup`)");
    assert!(output.status.success(), "bpftool: {}", describe(&output));
    serde_json::from_slice(&output.stdout).expect("bpftool json")
}

/// The raw key of a `bpftool --json map dump` row: `["0x00", ...]`.
fn key_bytes(row: &Value) -> Vec<u8> {
    (row["key"].as_array().expect("raw key"))
        .iter()
        .map(|byte| {
            let text = byte.as_str().expect("hex byte");
            u8::from_str_radix(text.trim_start_matches("0x"), 16).expect("hex byte")
        })
        .collect()
}

/// Processes other than the daemon whose command line or environment names the test host's
/// scratch directory: its monitors, runc calls and containers carry it.
fn processes_of(scratch: &Path, daemon: i32) -> Vec<String> {
    let needle = scratch.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let entries = std::fs::read_dir("/proc").expect("/proc");
    (entries.filter_map(Result::ok))
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != daemon && *pid != me)
        .filter_map(|pid| {
            let read = |file: &str| std::fs::read(format!("/proc/{pid}/{file}")).ok();
            let cmdline = String::from_utf8_lossy(&read("cmdline")?).replace('\0', " ");
            let environ =
                String::from_utf8_lossy(&read("environ").unwrap_or_default()).into_owned();
            (cmdline.contains(&needle) || environ.contains(&needle))
                .then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// The daemon's resident memory and open file descriptors.
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

impl Usage {
    fn of(pid: i32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss_kib = (status.lines())
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fd dir")
            .count();
        Self { rss_kib, fds }
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VmRSS {} KiB, {} fds", self.rss_kib, self.fds)
    }
}

/// `hostnetd run ARGS` that must be refused with `message`, leaving no container behind.
fn assert_refused(host: &TestHost, args: &[&str], message: &str) {
    let output = host.exec(args);
    assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
    assert_eq!(stderr(&output).trim_end(), format!("hostnetd: {message}"));
    host.assert_no_container_left();
}

fn run_args<'a>(extra: &[&'a str], probe: &'a str) -> Vec<&'a str> {
    let mut args = vec!["run", "-d", "--rootfs", "/", "--ports", "23900"];
    args.extend(extra);
    args.extend(["--", probe, "sleep", "30"]);
    args
}

#[test]
fn full_rule_and_address_tables_are_refused_clearly() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    // 257 rules, one /24 each: one over the 256 a container may have.
    let too_many: Vec<String> = (0..=256)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let joined = too_many.join(",");
    assert_refused(
        &host,
        &run_args(&["--egress-allow", &joined], &probe),
        "too many egress rules: 257 (at most 256 per container)",
    );
    // 17 rules covering 10.0.0.0/8: one over the 16 a prefix's entry holds.
    let covering: Vec<String> = (1..=17).map(|port| format!("10.0.0.0/8:{port}")).collect();
    let joined = covering.join(",");
    assert_refused(
        &host,
        &run_args(&["--egress-deny", &joined], &probe),
        "too many egress rules apply to 10.0.0.0/8: 17 (at most 16 rules may cover one prefix, its own and those of wider prefixes)",
    );
    assert_refused(
        &host,
        &run_args(&["--ingress-allow", &joined], &probe),
        "too many ingress rules apply to 10.0.0.0/8: 17 (at most 16 rules may cover one prefix, its own and those of wider prefixes)",
    );
    // A port restricted to five addresses: one over the four the address table keeps.
    let addresses: Vec<String> = (1..=5).map(|i| format!("127.0.0.{i}:23901")).collect();
    let joined = addresses.join(",");
    assert_refused(
        &host,
        &run_args(&["--ports", &joined], &probe),
        "invalid port spec \"127.0.0.5:23901/tcp\": port 23901/tcp is restricted to more than 4 addresses",
    );
    // At the limits exactly, the container runs.
    let at_limit = too_many[..256].join(",");
    let output = host.exec(&run_args(
        &["--name", "full", "--egress-allow", &at_limit],
        &probe,
    ));
    assert!(output.status.success(), "256 rules: {}", describe(&output));
    assert_eq!(map_rows(&host, "CONTAINER_POLICIES").len(), 1);
    assert_eq!(
        map_rows(&host, "EGRESS_RULES").len(),
        256,
        "one row per prefix"
    );
    assert!(host.exec(&["rm", "-f", "full"]).status.success());
    host.assert_no_container_left();
}
