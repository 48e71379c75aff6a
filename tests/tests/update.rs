//! `hostnetd update --ports`: a running container's ports replaced atomically. Binds are probed
//! inside the container (a probe moved into its cgroup) and on the host, with the errno the
//! kernel returned (for hostnetd's refusals, its own where the kernel lets its programs choose
//! it, else EPERM: see `hostnetd_tests::refused`). Ports 26000-26099.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

use hostnetd_tests::{
    denied, describe, fetch, netprobe, probe_on_host, probe_results, reserved_ports,
    skip_unless_root, stderr, stdout, taken, KillOnDrop, TestHost, EADDRINUSE,
};

const OK: i32 = 0;
/// ECONNREFUSED: the egress policy let the connect out and nothing listened there.
const REFUSED: i32 = 111;

/// Runs netprobe with `args` inside container `name`: the probe moves itself into the
/// container's process cgroup before it starts.
fn inside(host: &TestHost, name: &str, args: &[&str]) -> Command {
    let cgroup = host.inspect(name)["cgroup"].as_str().unwrap().to_string();
    let script = format!(
        "echo $$ > {cgroup}/ctr/cgroup.procs && exec {} \"$@\"",
        netprobe()
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script, "netprobe"]).args(args);
    command
}

/// `netprobe bind PROBES...` inside container `name`: one errno per bind.
fn binds_inside(host: &TestHost, name: &str, probes: &[&str]) -> Vec<i32> {
    let mut args = vec!["bind"];
    args.extend(probes);
    let output = inside(host, name, &args).output().expect("sh");
    assert!(output.status.success(), "{}", describe(&output));
    let results = probe_results(&output);
    assert_eq!(results.len() * 3, probes.len(), "{}", describe(&output));
    results
}

fn update(host: &TestHost, args: &[&str]) -> Output {
    let mut all = vec!["update"];
    all.extend(args);
    host.exec(&all)
}

fn updated(host: &TestHost, args: &[&str]) {
    let output = update(host, args);
    assert!(
        output.status.success(),
        "update {args:?}: {}",
        describe(&output)
    );
}

/// The kernel owner table's entries for one cgroup: (port, generations granted).
fn kernel_ports(host: &TestHost, cgroup_id: u64) -> Vec<(String, usize)> {
    let mut ports: Vec<(String, usize)> = (host.kernel_owners().iter())
        .filter(|entry| entry["cgroup_id"].as_u64() == Some(cgroup_id))
        .map(|entry| {
            let port = entry["port"].as_str().unwrap().to_string();
            (port, entry["generations"].as_array().unwrap().len())
        })
        .collect();
    ports.sort();
    ports
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    let list = value.as_array().expect("array");
    list.iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `netprobe bind ... hold` on the host, once it printed its results; killed when the test
/// ends (also on failure), so that nothing is left on a port.
fn holding(probe: &[&str]) -> KillOnDrop {
    let child = Command::new(netprobe())
        .arg("bind")
        .args(probe)
        .arg("hold")
        .stdout(Stdio::piped())
        .spawn()
        .expect("netprobe");
    let mut process = KillOnDrop::new(child);
    let stdout = process.child().stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ok", "the host process could not bind");
    process
}

#[test]
fn update_adds_and_removes_ports_and_the_reservation_follows() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    // The container serves on 26000 the whole time, even after the port is taken away.
    let web = host.start(
        "web",
        "26000,26001/udp,127.0.0.1:26002,26005/udp",
        &[&probe, "listen", "0.0.0.0", "26000", "60"],
    );
    let cgroup_id = host.inspect("web")["cgroup_id"].as_u64().unwrap();
    assert_eq!(
        binds_inside(&host, "web", &["tcp", "0.0.0.0", "26003"]),
        vec![denied()]
    );
    let reserved = reserved_ports();
    assert!(
        [26000, 26001, 26002, 26005]
            .iter()
            .all(|p| reserved.contains(p)),
        "{reserved:?}"
    );

    // 26000 and 26005 leave, 26001 stays, 26002 moves from 127.0.0.1 to ::1, 26003 and
    // 26004/udp arrive.
    updated(
        &host,
        &[
            "--ports",
            "26001/udp,[::1]:26002",
            "--ports",
            "26003,26004/udp",
            "web",
        ],
    );
    let results = binds_inside(
        &host,
        "web",
        &[
            "tcp",
            "0.0.0.0",
            "26000", // left: refused by the policy, not by the listener
            "udp",
            "0.0.0.0",
            "26001", // kept
            "tcp",
            "127.0.0.1",
            "26002", // its address moved
            "tcp",
            "::1",
            "26002", // to here
            "tcp",
            "0.0.0.0",
            "26003", // arrived
            "udp",
            "::",
            "26004", // arrived, UDP only
            "tcp",
            "0.0.0.0",
            "26004",
            "udp",
            "0.0.0.0",
            "26005", // left
        ],
    );
    assert_eq!(
        results,
        vec![denied(), OK, denied(), OK, OK, OK, denied(), denied()]
    );
    // The kernel does not revoke binds: the socket bound before keeps serving.
    let page = fetch(26000).expect("the listener on the removed port still serves");
    assert!(page.contains("hello from the container"), "{page}");
    assert_eq!(
        probe_on_host(&[
            "tcp", "0.0.0.0", "26003", "udp", "0.0.0.0", "26004", "udp", "0.0.0.0", "26005"
        ]),
        vec![taken(), taken(), OK],
        "added ports are owned, a removed one is free"
    );

    let view = host.inspect("web");
    assert_eq!(
        strings(&view["policy"]["ports"]),
        vec!["26001/udp", "[::1]:26002/tcp", "26003/tcp", "26004/udp"]
    );
    let ports: Vec<String> = (view["ports"].as_array().unwrap().iter())
        .map(|p| p["port"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ports,
        vec!["26002/tcp", "26003/tcp", "26001/udp", "26004/udp"]
    );
    let listing = stdout(&host.exec(&["ports"]));
    assert!(
        listing.contains("26003/tcp") && !listing.contains("26000/tcp"),
        "{listing}"
    );
    // Exactly the new set is in the kernel, each slot granted under one generation only.
    let expected: Vec<(String, usize)> = ["26001/udp", "26002/tcp", "26003/tcp", "26004/udp"]
        .iter()
        .map(|p| (p.to_string(), 1))
        .collect();
    assert_eq!(kernel_ports(&host, cgroup_id), expected);
    let reserved = reserved_ports();
    for port in [26001, 26002, 26003, 26004] {
        assert!(reserved.contains(&port), "{port} not reserved");
    }
    for port in [26000, 26005] {
        assert!(!reserved.contains(&port), "{port} still reserved");
    }

    // Its own listener does not keep the container from getting 26000 back.
    updated(&host, &["--ports", "26000,26001/udp", "web"]);
    assert_eq!(
        binds_inside(
            &host,
            "web",
            &["tcp", "0.0.0.0", "26003", "tcp", "127.0.0.1", "26000"]
        ),
        // 26000: the container's hook lets the bind through; the kernel's EADDRINUSE is the
        // listener's, whatever the kernel's version.
        vec![denied(), EADDRINUSE],
        "26000 is granted again (only the listener holds it now)"
    );
    assert!(reserved_ports().contains(&26000));
    host.stop(web);
    host.assert_no_container_left();
}

#[test]
fn an_update_is_refused_for_ports_others_hold_and_for_bad_specs_and_changes_nothing() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    host.start("first", "26010", &[&probe, "sleep", "60"]);
    let second = host.start("second", "26011", &[&probe, "sleep", "60"]);
    // UDP: a TCP socket bound but not listening does not show in /proc/net/tcp.
    let holder = holding(&["udp", "0.0.0.0", "26012"]);

    let refusals = [
        (
            vec!["--ports", "26011,26010", "second"],
            "port 26010/tcp is owned by container first".to_string(),
        ),
        (
            vec!["--ports", "26011,26012/udp", "second"],
            format!(
                "port 26012/udp is already bound on the host by pid {}",
                holder.pid()
            ),
        ),
        (
            vec!["--ports", "0", "second"],
            "port 0 cannot be owned".into(),
        ),
        (
            vec!["--ports", "70000", "second"],
            "port 70000 is out of range (1-65535)".into(),
        ),
        (
            vec!["--ports", "26011,,26013", "second"],
            "empty item".into(),
        ),
        (
            vec!["--ports", "26013/sctp", "second"],
            "unknown protocol \"sctp\"".into(),
        ),
        (vec!["second"], "nothing to update".into()),
        (vec!["--ports", "26013", "nosuch"], "nosuch".into()),
    ];
    for (args, expected) in &refusals {
        let output = update(&host, args);
        assert!(!output.status.success(), "{args:?} accepted");
        assert!(
            stderr(&output).contains(expected.as_str()),
            "{args:?}: {}",
            describe(&output)
        );
    }
    assert!(
        stderr(&update(&host, &["--ports", "26011,26012/udp", "second"])).contains("netprobe"),
        "the holder's command is named"
    );

    // Nothing changed: the old port still works, nothing else was claimed or reserved.
    let view = host.inspect("second");
    assert_eq!(strings(&view["policy"]["ports"]), vec!["26011/tcp"]);
    assert_eq!(
        binds_inside(
            &host,
            "second",
            &[
                "tcp", "0.0.0.0", "26011", "tcp", "0.0.0.0", "26010", "udp", "0.0.0.0", "26012",
                "tcp", "0.0.0.0", "26013"
            ]
        ),
        vec![OK, taken(), denied(), denied()]
    );
    let cgroup_id = view["cgroup_id"].as_u64().unwrap();
    assert_eq!(
        kernel_ports(&host, cgroup_id),
        vec![("26011/tcp".into(), 1)]
    );
    let owned: Vec<String> = (host.kernel_owners().iter())
        .map(|e| e["port"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(owned, vec!["26010/tcp", "26011/tcp"]);
    let reserved = reserved_ports();
    assert!(reserved.contains(&26011) && !reserved.contains(&26012) && !reserved.contains(&26013));

    // Once the host process lets go, the same update goes through.
    drop(holder);
    updated(&host, &["--ports", "26011,26012/udp", "second"]);
    assert_eq!(
        binds_inside(&host, "second", &["udp", "0.0.0.0", "26012"]),
        vec![OK]
    );

    // An update of the egress rules alone keeps the ports, and one of the ports alone keeps
    // the egress rules.
    updated(&host, &["--egress-deny", "127.0.0.1:26019", "second"]);
    updated(&host, &["--ports", "26011", "second"]);
    let view = host.inspect("second");
    assert_eq!(strings(&view["policy"]["ports"]), vec!["26011/tcp"]);
    assert_eq!(
        strings(&view["policy"]["egress_deny"]),
        vec!["127.0.0.1:26019"]
    );
    let connects = inside(&host, "second", &["connect", "tcp", "127.0.0.1", "26019"])
        .output()
        .expect("sh");
    assert_eq!(
        probe_results(&connects),
        vec![denied()],
        "{}",
        describe(&connects)
    );
    assert_eq!(
        binds_inside(
            &host,
            "second",
            &["tcp", "0.0.0.0", "26011", "udp", "0.0.0.0", "26012"]
        ),
        vec![OK, denied()]
    );
    updated(&host, &["--no-egress-rules", "second"]);
    let connects = inside(&host, "second", &["connect", "tcp", "127.0.0.1", "26019"])
        .output()
        .expect("sh");
    assert_eq!(
        probe_results(&connects),
        vec![REFUSED],
        "{}",
        describe(&connects)
    );
    assert_eq!(
        strings(&host.inspect("second")["policy"]["ports"]),
        vec!["26011/tcp"]
    );
    host.stop(second);
    host.stop(0);
    host.assert_no_container_left();
}

/// The load test's probes: binds of ports in set A only, B only, both, neither; the address
/// restriction that only B has; connects only A's and only B's egress rules allow.
/// Policy updates while the trace runs: enough for several changes of set to show.
const FLIPS: usize = 8;

const PROBES: [&str; 8] = [
    "bind/tcp/0.0.0.0/26020",
    "bind/tcp/0.0.0.0/26021",
    "bind/tcp/0.0.0.0/26022",
    "bind/tcp/0.0.0.0/26023",
    "bind/tcp/127.0.0.1/26024",
    "bind/tcp/127.0.0.2/26024",
    "connect/tcp/127.0.0.1/26030",
    "connect/tcp/127.0.0.1/26031",
];

/// Which set a probe's outcome says is in force; None for the probes that do not tell.
fn reveals(probe: &str, errno: i32) -> Option<char> {
    let (when_ok, when_denied) = match probe {
        "bind/tcp/0.0.0.0/26020" | "bind/tcp/127.0.0.2/26024" | "connect/tcp/127.0.0.1/26030" => {
            ('A', 'B')
        }
        "bind/tcp/0.0.0.0/26021" | "connect/tcp/127.0.0.1/26031" => ('B', 'A'),
        _ => return None,
    };
    match errno {
        OK | REFUSED => Some(when_ok),
        errno if errno == denied() => Some(when_denied),
        _ => panic!("{probe}: unexpected errno {errno}"),
    }
}

/// Replays a `netprobe trace` (each change of a probe's outcome, in order, with its run
/// index). Ports of both sets must always be allowed and the port of neither always denied.
/// The five probes that tell the sets apart must agree, except for less than one pass (`pass`
/// runs) after a switch, until each has run again: agreeing on neither set for a whole pass
/// means both sets or neither held at once. Returns the sets agreed on, in order.
fn replay(text: &str, pass: u64) -> Vec<char> {
    let mut shown: BTreeMap<&str, char> = BTreeMap::new();
    let mut sets: Vec<char> = Vec::new();
    let mut disagreeing_since: Option<u64> = None;
    for line in text.lines().filter(|line| !line.starts_with("runs=")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [index, probe, outcome] = fields[..] else {
            panic!("bad trace line {line:?}");
        };
        let index: u64 = index.parse().unwrap();
        let errno: i32 = outcome.trim_start_matches("errno=").parse().unwrap();
        match probe {
            "bind/tcp/0.0.0.0/26022" | "bind/tcp/127.0.0.1/26024" => {
                assert_eq!(errno, OK, "a port of both sets was denied:\n{text}")
            }
            "bind/tcp/0.0.0.0/26023" => {
                assert_eq!(errno, denied(), "a port of neither set:\n{text}")
            }
            _ => {
                shown.insert(probe, reveals(probe, errno).unwrap());
            }
        }
        if shown.len() < 5 {
            continue; // not every probe has run yet
        }
        let agreed: BTreeSet<char> = shown.values().copied().collect();
        match (agreed.len(), disagreeing_since) {
            (1, since) => {
                if let Some(since) = since {
                    assert!(
                        index - since < pass,
                        "the probes disagreed from run {since} to {index}: a mix or a gap:\n{text}"
                    );
                }
                disagreeing_since = None;
                let set = *agreed.first().unwrap();
                if sets.last() != Some(&set) {
                    sets.push(set);
                }
            }
            (_, None) => disagreeing_since = Some(index),
            (_, Some(_)) => {}
        }
    }
    assert_eq!(
        disagreeing_since, None,
        "the probes ended disagreeing:\n{text}"
    );
    sets
}

#[test]
fn ports_and_egress_flip_together_and_atomically_under_load() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    // Set A owns 26020, B owns 26021, both own 26022 and 127.0.0.1:26024 (A on any address,
    // B on 127.0.0.1 only); 26023 is in neither. Egress: A may reach 26030, B 26031. While a
    // probe inside loops over binds and connects, the policy flips between A and B: a port of
    // both must never be denied, one of neither never allowed, and the probes that tell A from
    // B must agree on one of them but for less than a pass after each switch (see `replay`),
    // so the set seen changes at most once per update.
    let set_a = [
        "--ports",
        "26020,26022,26024",
        "--egress-allow",
        "127.0.0.1:26030",
    ];
    let set_b = [
        "--ports",
        "26021,26022,127.0.0.1:26024",
        "--egress-allow",
        "127.0.0.1:26031",
    ];
    let probe = netprobe();
    let flipper = host.start("flipper", "26020,26022,26024", &[&probe, "sleep", "60"]);
    updated(&host, &[&set_a[..], &["flipper"]].concat());
    // The trace runs until told to stop (SIGUSR1) once the flips are done: under emulation an
    // update can take a second, so a fixed duration would see too few of them.
    let trace = inside(&host, "flipper", &[&["trace", "600"][..], &PROBES].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trace");
    let trace = KillOnDrop::new(trace);
    std::thread::sleep(Duration::from_millis(300));
    let mut flips = 0;
    let mut last = 'A';
    while flips < FLIPS {
        let (set, name) = if last == 'A' {
            (set_b, 'B')
        } else {
            (set_a, 'A')
        };
        updated(&host, &[&set[..], &["flipper"]].concat());
        last = name;
        flips += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: a signal to the child this test started and still holds.
    let signalled = unsafe { libc::kill(trace.pid() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(signalled, 0, "cannot signal the trace");
    let output = trace.finish();
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    let sets = replay(&text, PROBES.len() as u64);
    let changes = sets.len() - 1;
    eprintln!("{flips} updates; the probe saw {changes} changes of set");
    assert_eq!(sets.first(), Some(&'A'), "{text}");
    assert_eq!(sets.last(), Some(&last), "the last update holds:\n{text}");
    assert!(changes >= 2, "the probe never saw the sets change:\n{text}");
    assert!(
        changes <= flips,
        "{changes} changes seen for {flips} updates: a mix or a gap showed:\n{text}"
    );
    let cgroup_id = host.inspect("flipper")["cgroup_id"].as_u64().unwrap();
    let final_ports: Vec<String> = kernel_ports(&host, cgroup_id)
        .into_iter()
        .map(|(port, generations)| {
            assert_eq!(
                generations, 1,
                "{port}: the previous generation left behind"
            );
            port
        })
        .collect();
    let expected = if last == 'A' {
        ["26020/tcp", "26022/tcp", "26024/tcp"]
    } else {
        ["26021/tcp", "26022/tcp", "26024/tcp"]
    };
    assert_eq!(final_ports, expected);
    host.stop(flipper);
    host.assert_no_container_left();
}

/// Rewrites the container's record as a crash in the middle of an update could leave it:
/// listing only `ports`, and marked as being updated.
fn interrupt_record(host: &TestHost, id: &str, ports: &[&str]) {
    let path = host.scratch().join(format!("state/containers/{id}.json"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("record")).expect("json");
    record["ports"] = (ports.iter())
        .map(|port| serde_json::json!({ "port": port, "addresses": null }))
        .collect();
    record["update_in_progress"] = true.into();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).expect("write record");
}

#[test]
fn an_interrupted_update_is_finished_by_the_next_update_or_release() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let index = host.start("cut", "26040", &[&probe, "sleep", "60"]);
    let view = host.inspect("cut");
    let (id, cgroup_id) = (
        view["id"].as_str().unwrap().to_string(),
        view["cgroup_id"].as_u64().unwrap(),
    );
    // The kernel holds 26041 too, but the record no longer says so.
    updated(&host, &["--ports", "26040,26041", "cut"]);
    interrupt_record(&host, &id, &["26040/tcp"]);
    updated(&host, &["--ports", "26040,26042", "cut"]);
    let owned: Vec<String> = (kernel_ports(&host, cgroup_id).into_iter())
        .map(|(port, _)| port)
        .collect();
    assert_eq!(
        owned,
        vec!["26040/tcp", "26042/tcp"],
        "the stray slot was found"
    );
    assert_eq!(
        probe_on_host(&["tcp", "0.0.0.0", "26041"]),
        vec![OK],
        "and freed"
    );
    let record =
        std::fs::read_to_string(host.scratch().join(format!("state/containers/{id}.json")))
            .unwrap();
    assert!(!record.contains("update_in_progress"), "{record}");
    // A release searches the table too: nothing of the container is left.
    interrupt_record(&host, &id, &[]);
    host.stop(index);
    host.assert_no_container_left();
}
