//! Load and leaks: the kernel tables that all containers share fill up. A `run` or `update`
//! that does not fit is refused at admission with an error naming the table, how full it is
//! and what to do, exit code 125 (`409 table_full` over the API), and nothing is created or
//! changed; once room is freed the same command succeeds. Packets the datapath cannot count
//! because the traffic table is full are counted themselves, and shown.
//!
//! The rule tries are filled through real `run`s: 64 containers of 256 prefixes each. The
//! bind address table cannot be filled through real claims from this file's 1500 ports (four
//! addresses each make at most 12000 of its 16384 entries), so its `update` case is real and
//! its `run` case tops the table up directly with bpftool, under a live container and its
//! generation not in force, as an interrupted update leaves entries. The traffic table only
//! overflows through rows of ports that updates took away; 262144 of those through real
//! traffic would take minutes, so it is filled directly likewise, under live containers. So is
//! the container table, with entries of cgroups that do not exist.
use std::{
    net::UdpSocket,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::{
    describe, netprobe, reserved_ports, skip_unless_root, stderr, stdout, TestHost,
};
use serde_json::Value;

/// Containers of 256 egress and 256 ingress prefixes that fill both 16384-prefix tries.
const RULE_CONTAINERS: usize = 64;
const PARALLEL: usize = 4;
/// This file's ports (28500-29999), split between its tests, which may run at once: an owned
/// port is kept from every other process on the host, and reserved host-wide.
const ADDRESS_PORTS: RangeInclusive<u16> = 28500..=29899;
const TALKER_PORT: u16 = 29950;
const LATE_PORT: u16 = 29951;
const RULE_PORT: u16 = 29990;
const CONTAINER_PORTS: RangeInclusive<u16> = 29960..=29961;

/// Containers the host takes: a policy entry each, and a denial row each beside the host's.
const MOST_CONTAINERS: usize = 16383;
const CONTAINERS_FULL: &str = "the host's container table (CONTAINER_POLICIES, DENIALS) has no room for this container: it holds 16383 of at most 16383 containers; remove containers";

const EGRESS_FULL: &str = "the host's egress rule table (EGRESS_RULES) has no room for this container: 16384 of its 16384 prefixes are in use by 64 containers, and it needs 1 more; remove containers or use fewer, wider prefixes";
const INGRESS_FULL: &str = "the host's ingress rule table (INGRESS_RULES) has no room for this container: 16384 of its 16384 prefixes are in use by 64 containers, and it needs 1 more; remove containers or use fewer, wider prefixes";

#[test]
fn full_rule_tables_refuse_run_and_update_and_change_nothing() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    fill_rule_tables(&host, &probe);
    assert_eq!(rows(&host, "EGRESS_RULES"), 16384);
    assert_eq!(rows(&host, "INGRESS_RULES"), 16384);
    let before = State::of(&host, RULE_PORT..=RULE_PORT);
    let late = |rules: &[&'static str]| run_args("late", "", rules, &probe);
    let egress_rule = ["--egress-deny", "198.18.0.0/24:9"];
    assert_refused(&host, &late(&egress_rule), EGRESS_FULL);
    assert_refused(
        &host,
        &late(&["--ingress-allow", "198.19.0.0/24"]),
        INGRESS_FULL,
    );
    let body = format!(
        r#"{{"name": "late", "rootfs": "/", "command": ["{probe}", "sleep", "60"], "egress_deny": ["198.18.0.0/24:9"]}}"#
    );
    assert_api_refused(&host, "/v1/containers", &body, EGRESS_FULL);
    // An update writes the new rules beside those in force: one more prefix has no room, and
    // a ports-only update rewrites all 256 of the container's egress prefixes.
    let update_full = |needed: u32| {
        format!(
            "the host's egress rule table (EGRESS_RULES) has no room for this update: 16384 of its 16384 prefixes are in use by 64 containers, and it needs {needed} more, as an update writes the container's new entries beside those in force until the switch; remove containers or use fewer, wider prefixes"
        )
    };
    let one_rule = ["update", "--egress-deny", "198.18.0.0/24:9", "rules-0"];
    assert_refused(&host, &one_rule, &update_full(1));
    let port = RULE_PORT.to_string();
    let ports_only = ["update", "--ports", &port, "rules-0"];
    assert_refused(&host, &ports_only, &update_full(256));
    let body = format!(r#"{{"ports": ["{port}"]}}"#);
    assert_api_refused(
        &host,
        "/v1/containers/rules-0/update",
        &body,
        &update_full(256),
    );
    let after = State::of(&host, RULE_PORT..=RULE_PORT);
    assert_eq!(after, before, "a refused command changed something");
    // A container that needs no room in the rule tables still runs.
    assert_runs(&host, &run_args("free", "", &[], &probe));
    assert_runs(&host, &["rm", "-f", "free"]);
    // Room freed: the same commands succeed.
    assert_runs(&host, &["rm", "-f", "rules-63"]);
    assert_runs(&host, &late(&egress_rule));
    assert_runs(&host, &one_rule);
    assert_eq!(rows(&host, "EGRESS_RULES"), 16384 - 256 + 1 - 255);
    assert_eq!(rows(&host, "INGRESS_RULES"), 16384 - 256);
    let policy = &host.inspect("rules-0")["policy"];
    assert_eq!(
        policy["egress_deny"],
        serde_json::json!(["198.18.0.0/24:9"])
    );
}

#[test]
fn a_full_bind_address_table_refuses_run_and_update_and_changes_nothing() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    // 2000 ports and 800 ports, four addresses each: 11200 of the 16384 entries.
    let a = listed("28500-29499", 1..=4);
    let b = listed("29500-29899", 1..=4);
    assert_runs(&host, &run_args("addr-a", &a, &[], &probe));
    assert_runs(&host, &run_args("addr-b", &b, &[], &probe));
    assert_eq!(rows(&host, "BIND_ADDRS"), 11200);
    // An update writes its 8000 new entries beside the 8000 in force: 19200.
    let before = State::of(&host, ADDRESS_PORTS);
    let update_a = ["update", "--ports", &listed("28500-29499", 5..=8), "addr-a"];
    assert_refused(
        &host,
        &update_a,
        "the host's bind address table (BIND_ADDRS) has no room for this update: 11200 of its 16384 entries (one per port and listed address) are in use by 2 containers, and it needs 8000 more, as an update writes the container's new entries beside those in force until the switch; remove containers or restrict fewer ports to listed addresses",
    );
    let after = State::of(&host, ADDRESS_PORTS);
    assert_eq!(after, before, "a refused update changed something");
    // 3200 beside 11200 fit.
    let update_b = ["update", "--ports", &listed("29500-29899", 5..=8), "addr-b"];
    assert_runs(&host, &update_b);
    assert_eq!(rows(&host, "BIND_ADDRS"), 11200);
    assert_runs(&host, &["rm", "-f", "addr-b"]);
    // What an interrupted update of addr-a would leave: entries under its next generation.
    fill_bind_addresses(&host, "addr-a", 16384 - 8000 - 3);
    let before = State::of(&host, ADDRESS_PORTS);
    assert_refused(
        &host,
        &run_args("late", &listed_as(&["tcp"], "29500", 1..=4), &[], &probe),
        "the host's bind address table (BIND_ADDRS) has no room for this container: 16381 of its 16384 entries (one per port and listed address) are in use by 1 container, and it needs 4 more; remove containers or restrict fewer ports to listed addresses",
    );
    let after = State::of(&host, ADDRESS_PORTS);
    assert_eq!(after, before, "a refused run changed something");
    let three = listed_as(&["tcp"], "29500", 1..=3);
    assert_runs(&host, &run_args("late", &three, &[], &probe));
    assert_eq!(rows(&host, "BIND_ADDRS"), 16384, "full to the last entry");
    // An update clears what an earlier attempt left under its next generation first.
    assert_runs(&host, &update_a);
    assert_eq!(rows(&host, "BIND_ADDRS"), 8000 + 3);
}

#[test]
fn a_full_traffic_table_refuses_new_containers_and_counts_what_it_cannot() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    // No port rows: an owned port's packets are counted in the hash, the table this fills.
    host.set_env("HOSTNETD_TRAFFIC_ROWS", "0");
    let probe = netprobe();
    let (talker, late) = (TALKER_PORT.to_string(), format!("{LATE_PORT}/udp"));
    let echo = [probe.as_str(), "udpecho", "127.0.0.1", &talker, "120"];
    assert_runs(
        &host,
        &run_command("talker", &format!("{talker}/udp"), &echo),
    );
    wait_for_log(&host, "talker", "listening");
    assert_runs(&host, &run_args("filler-a", "", &[], &probe));
    assert_runs(&host, &run_args("filler-b", "", &[], &probe));
    fill_traffic(&host, &["filler-a", "filler-b"]);
    // Every datagram and its echo find no row for the talker's port.
    echo_datagrams(TALKER_PORT, 10);
    let (status, info) = host.api("GET", "/v1/info", "");
    assert_eq!(
        (status, &info["traffic_table_full"]),
        (200, &Value::from(20))
    );
    let stats = host.exec(&["stats", "--no-stream", "talker"]);
    assert!(stats.status.success(), "stats: {}", describe(&stats));
    let warning = "warning: 20 packets were not counted because a traffic table was full; see `hostnetd_traffic_table_full_total` in docs/metrics.md";
    assert!(stdout(&stats).contains(warning), "{}", describe(&stats));
    // 262144 rows present, and the talker's four it could not create are kept for it.
    let ports = LATE_PORT..=LATE_PORT;
    let before = State::of(&host, ports.clone());
    assert_refused(
        &host,
        &run_args("late", &late, &[], &probe),
        "the host's traffic table (TRAFFIC) has no room for this container: 262148 of its 262144 rows are in use or kept for owned ports by 3 containers, and it needs 4 more; remove containers (a port an update took away keeps its counters until its container is removed)",
    );
    assert_eq!(
        State::of(&host, ports),
        before,
        "a refused run changed something"
    );
    assert_runs(&host, &["rm", "-f", "filler-a"]);
    assert_runs(&host, &run_args("late", &late, &[], &probe));
}

/// Starts the containers that fill both rule tries, PARALLEL at a time.
#[test]
fn a_full_container_table_refuses_new_containers_and_changes_nothing() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    let (first, second) = (
        CONTAINER_PORTS.start().to_string(),
        CONTAINER_PORTS.end().to_string(),
    );
    assert_runs(&host, &run_args("first", &first, &[], &probe));
    // 16383 containers would take hours to start: the other entries are what a daemon that
    // died half-way through admissions leaves until the next one sweeps them.
    let fakes = fill_container_policies(&host, MOST_CONTAINERS - 1);
    assert_eq!(rows(&host, "CONTAINER_POLICIES"), MOST_CONTAINERS);
    let before = State::of(&host, CONTAINER_PORTS);
    let run_second = run_args("second", &second, &[], &probe);
    assert_refused(&host, &run_second, CONTAINERS_FULL);
    let after = State::of(&host, CONTAINER_PORTS);
    assert_eq!(after, before, "a refused run changed something");
    let freed = format!(
        "map delete pinned {} key hex {}",
        map_path(&host, "CONTAINER_POLICIES").display(),
        hex(&fakes[0].to_le_bytes())
    );
    apply(&host, &[freed]);
    assert_runs(&host, &run_second);
    assert_eq!(rows(&host, "CONTAINER_POLICIES"), MOST_CONTAINERS);
}

/// Adds `count` policy entries for cgroup ids no cgroup has (ids are inode numbers, far below
/// these); returns their ids.
fn fill_container_policies(host: &TestHost, count: usize) -> Vec<u64> {
    let map = map_path(host, "CONTAINER_POLICIES");
    let ids: Vec<u64> = (0..count as u64)
        .map(|i| 0xffff_0000_0000_0000 | i)
        .collect();
    // Flags and generation 0: a policy that nothing ever reads.
    let lines: Vec<String> = (ids.iter())
        .map(|id| update_line(&map, &id.to_le_bytes(), &[0; 8]))
        .collect();
    apply(host, &lines);
    ids
}

fn fill_rule_tables(host: &TestHost, probe: &str) {
    let prefixes = |first: &str, suffix: &str| -> String {
        let all: Vec<String> = (0..256)
            .map(|i| format!("{first}.{i}.0/24{suffix}"))
            .collect();
        all.join(",")
    };
    // Rules that match nothing the test sends.
    let egress = prefixes("198.18", ":9");
    let ingress = prefixes("198.19", "");
    thread::scope(|scope| {
        for worker in 0..PARALLEL {
            let (egress, ingress) = (&egress, &ingress);
            scope.spawn(move || {
                for index in (worker..RULE_CONTAINERS).step_by(PARALLEL) {
                    let rules = ["--egress-deny", egress, "--ingress-allow", ingress];
                    assert_runs(
                        host,
                        &run_args(&format!("rules-{index}"), "", &rules, probe),
                    );
                }
            });
        }
    });
}

/// `--ports` items restricting `ports` (TCP, then UDP) to 127.0.0.N for each N of `hosts`.
fn listed(ports: &str, hosts: RangeInclusive<u8>) -> String {
    listed_as(&["tcp", "udp"], ports, hosts)
}

fn listed_as(protos: &[&str], ports: &str, hosts: RangeInclusive<u8>) -> String {
    let items: Vec<String> = (protos.iter())
        .flat_map(|proto| {
            hosts
                .clone()
                .map(move |n| format!("127.0.0.{n}:{ports}/{proto}"))
        })
        .collect();
    items.join(",")
}

/// Adds `count` address entries for `name`'s cgroup under its generation not in force (1: it
/// was never updated), for port 9, which it does not own, so no hook ever reads them.
fn fill_bind_addresses(host: &TestHost, name: &str, count: u32) {
    let cgroup = cgroup_id(host, name);
    let map = map_path(host, "BIND_ADDRS");
    let lines: Vec<String> = (0..count)
        .map(|i| {
            let mut key = cgroup.to_le_bytes().to_vec();
            // ::ffff:198.18.x.y
            key.extend([0; 10]);
            key.extend([0xff, 0xff, 198, 18, (i >> 8) as u8, i as u8]);
            key.extend(9u16.to_le_bytes());
            // TCP (hostnetd's protocol number 0), generation 1, padding.
            key.extend([0, 1, 0, 0, 0, 0]);
            update_line(&map, &key, &[1])
        })
        .collect();
    apply(host, &lines);
}

/// Fills TRAFFIC to its last row with rows of the named containers: their class rows, then
/// rows of ports they do not own (as updates that took ports away leave them), until the
/// kernel refuses one more.
fn fill_traffic(host: &TestHost, names: &[&str]) {
    let map = map_path(host, "TRAFFIC");
    let zero = [0u8; 32];
    let mut lines = Vec::new();
    for name in names {
        let cgroup = cgroup_id(host, name);
        let row = |port: u16, class: u8| {
            let mut key = cgroup.to_le_bytes().to_vec();
            key.extend(port.to_le_bytes());
            key.extend([class, 0, 0, 0, 0, 0]);
            update_line(&map, &key, &zero)
        };
        lines.extend((0..3).map(|class| row(0, class)));
        lines.extend((1..=u16::MAX).flat_map(|port| [row(port, 0), row(port, 1)]));
    }
    let output = batch(host, &lines);
    assert!(
        !output.status.success() && stderr(&output).contains("Argument list too long"),
        "the table should have refused the rows beyond its capacity (E2BIG): {}",
        describe(&output)
    );
}

fn update_line(map: &Path, key: &[u8], value: &[u8]) -> String {
    format!(
        "map update pinned {} key hex {} value hex {}",
        map.display(),
        hex(key),
        hex(value)
    )
}

/// Bytes as bpftool takes them: `0a 1b ...`.
fn hex(bytes: &[u8]) -> String {
    let all: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    all.join(" ")
}

/// `bpftool batch` of `lines`, which must all succeed.
fn apply(host: &TestHost, lines: &[String]) {
    let output = batch(host, lines);
    assert!(
        output.status.success(),
        "bpftool batch: {}",
        describe(&output)
    );
}

/// `bpftool batch` of `lines`: one process for thousands of map updates.
fn batch(host: &TestHost, lines: &[String]) -> std::process::Output {
    let file = host.scratch().join("bpftool-batch");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write the batch file");
    Command::new("bpftool")
        .arg("batch")
        .arg("file")
        .arg(&file)
        .output()
        .expect("run bpftool (installed by `cargo xtask setup`)")
}

fn cgroup_id(host: &TestHost, name: &str) -> u64 {
    host.inspect(name)["cgroup_id"].as_u64().expect("cgroup_id")
}

fn map_path(host: &TestHost, map: &str) -> PathBuf {
    host.pin_root().join("maps").join(map)
}

/// `bpftool map dump` of a pinned map, as text.
fn dump(host: &TestHost, map: &str) -> String {
    let output = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(map_path(host, map))
        .output()
        .expect("run bpftool (installed by `cargo xtask setup`)");
    assert!(output.status.success(), "bpftool: {}", describe(&output));
    stdout(&output)
}

/// Entries of a pinned map, from the dump's last line (`Found N elements`).
fn rows(host: &TestHost, map: &str) -> usize {
    let text = dump(host, map);
    let last = text.lines().last().unwrap_or_default();
    let count = last
        .strip_prefix("Found ")
        .and_then(|rest| rest.split(' ').next());
    count
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{map}: {last}"))
}

/// What a refused command must leave as it was: records, cgroups, link pins, the kernel's
/// owner, address, policy and rule tables, and the reserved ports among the test's `ports`.
#[derive(Debug, PartialEq)]
struct State {
    records: Vec<(String, String)>,
    cgroups: Vec<String>,
    pins: Vec<String>,
    owners: Vec<Value>,
    maps: Vec<String>,
    reserved: Vec<u16>,
}

impl State {
    fn of(host: &TestHost, ports: RangeInclusive<u16>) -> Self {
        let records = (list(&host.scratch().join("state/containers")).into_iter())
            .map(|name| {
                let path = host.scratch().join("state/containers").join(&name);
                (name, std::fs::read_to_string(path).unwrap_or_default())
            })
            .collect();
        let maps = [
            "BIND_ADDRS",
            "CONTAINER_POLICIES",
            "EGRESS_RULES",
            "INGRESS_RULES",
        ];
        Self {
            records,
            cgroups: list(&host.cgroup_parent_path()),
            pins: list(&host.pin_root().join("containers")),
            owners: host.kernel_owners(),
            maps: maps.iter().map(|map| dump(host, map)).collect(),
            reserved: (reserved_ports().into_iter())
                .filter(|port| ports.contains(port))
                .collect(),
        }
    }
}

fn list(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// `hostnetd run -d --name NAME --rootfs / [--ports PORTS] [extra] -- netprobe sleep 120`.
fn run_args<'a>(name: &'a str, ports: &'a str, extra: &[&'a str], probe: &'a str) -> Vec<&'a str> {
    let mut args = run_command(name, ports, &[probe, "sleep", "120"]);
    let at = args.iter().position(|arg| *arg == "--").expect("--");
    args.splice(at..at, extra.iter().copied());
    args
}

fn run_command<'a>(name: &'a str, ports: &'a str, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "-d", "--name", name, "--rootfs", "/"];
    if !ports.is_empty() {
        args.extend(["--ports", ports]);
    }
    args.push("--");
    args.extend(command);
    args
}

fn assert_runs(host: &TestHost, args: &[&str]) {
    let output = host.exec(args);
    assert!(
        output.status.success(),
        "{:?}: {}",
        &args[..2],
        describe(&output)
    );
}

/// A command refused with exactly `message` and hostnetd's own exit code.
fn assert_refused(host: &TestHost, args: &[&str], message: &str) {
    let output = host.exec(args);
    assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
    assert_eq!(stderr(&output), format!("hostnetd: {message}\n"));
}

fn assert_api_refused(host: &TestHost, path: &str, body: &str, message: &str) {
    let (status, error) = host.api("POST", path, body);
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["code"], "table_full", "{error}");
    assert_eq!(error["message"], message);
}

fn wait_for_log(host: &TestHost, name: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&host.exec(&["logs", name])).contains(text) {
        assert!(Instant::now() < deadline, "{name} never logged {text:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `count` datagrams to a container's echo server on loopback and waits for each echo.
fn echo_datagrams(port: u16, count: usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(("127.0.0.1", port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buffer = [0u8; 64];
    for _ in 0..count {
        socket.send(b"count me").expect("send");
        let echoed = socket.recv(&mut buffer).expect("the echo");
        assert_eq!(&buffer[..echoed], b"count me");
    }
}
