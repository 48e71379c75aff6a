//! Traffic accounting, exact: counters are compared with values computed from the datagram
//! sizes and headers, or with the counters of a device that carried nothing else. Denials are
//! counted by kind, and counters outlive the daemon. The tests that read what the TC programs
//! count or drop run with each way of attaching them: the default (TCX links where the kernel
//! has TCX), and filters on a clsact qdisc (netlink), which older kernels get.
use std::{
    net::UdpSocket,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use hostnetd_tests::{
    bpftool_json, denied, describe, kernel_has_tcx, netprobe,
    peer::{Peer, ETH_HEADER, PEER_V4, PEER_V6},
    skip_unless_root, KillOnDrop, TestHost,
};
use serde_json::Value;

const UDP_HEADER: u64 = 8;

/// `hostnetd stats -a --no-stream --format json NAME`, the one container's figures.
fn stats(host: &TestHost, name: &str) -> Value {
    let output = host.exec(&["stats", "-a", "--no-stream", "--format", "json", name]);
    assert!(output.status.success(), "stats: {}", describe(&output));
    let mut all: Vec<Value> = serde_json::from_slice(&output.stdout).expect("stats json");
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn port<'a>(stats: &'a Value, port: &str) -> &'a Value {
    (stats["ports"].as_array().expect("ports").iter())
        .find(|row| row["port"] == port)
        .unwrap_or_else(|| panic!("no row for {port} in {stats}"))
}

fn counters(value: &Value) -> [u64; 4] {
    ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"].map(|field| {
        value[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {value}"))
    })
}

/// Runs a named container to completion (its record, and so its last counters, stay).
fn run_named(host: &TestHost, name: &str, ports: &str, command: &[&str]) {
    let mut args = vec!["run", "--name", name, "--rootfs", "/"];
    if !ports.is_empty() {
        args.extend(["--ports", ports]);
    }
    args.push("--");
    args.extend(command);
    let output = host.exec(&args);
    assert!(output.status.success(), "{name}: {}", describe(&output));
}

/// Echoes `count` datagrams back to their sender.
fn udp_echo(socket: UdpSocket, count: usize) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buffer = vec![0u8; 65536];
        for _ in 0..count {
            let (n, from) = socket.recv_from(&mut buffer).expect("datagram");
            socket.send_to(&buffer[..n], from).expect("echo");
        }
    })
}

/// How hostnetd attaches tc_ingress and tc_egress to the host's interfaces (`--tc-attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcAttach {
    /// The default: TCX links where the kernel has TCX, else netlink.
    Auto,
    /// Filters on a clsact qdisc, added over netlink, whatever the kernel.
    Netlink,
}

impl TcAttach {
    /// A test host whose hostnetd commands attach this way: the setting is given before its
    /// first command, which loads the datapath.
    fn host(self) -> TestHost {
        let mut host = TestHost::new();
        if self == Self::Netlink {
            host.set_env("HOSTNETD_TC_ATTACH", "netlink");
        }
        host
    }

    /// Whether this mode puts the programs on a clsact qdisc on this kernel.
    fn uses_clsact(self) -> bool {
        self == Self::Netlink || !kernel_has_tcx()
    }
}

/// Loads the host's datapath (any command does) and checks, as bpftool sees lo (independently
/// of hostnetd's pins), that its tc_ingress and tc_egress were attached as `mode` says: filters
/// on lo's clsact qdisc, or (TCX) no such filter of theirs.
fn assert_tc_attached(host: &TestHost, mode: TcAttach) {
    let ps = host.exec(&["ps"]);
    assert!(ps.status.success(), "{}", describe(&ps));
    let shown = bpftool_json(&["net", "show", "dev", "lo"]);
    for (program, side) in [("tc_ingress", "ingress"), ("tc_egress", "egress")] {
        let id = program_id(host, program);
        let kinds: Vec<&str> = (shown[0]["tc"].as_array().expect("tc").iter())
            .filter(|entry| entry["id"] == id)
            .map(|entry| entry["kind"].as_str().expect("kind"))
            .collect();
        let on_clsact = kinds.contains(&format!("clsact/{side}").as_str());
        assert_eq!(
            on_clsact,
            mode.uses_clsact(),
            "{mode:?}: {program} (id {id}) on lo as {kinds:?}"
        );
        assert!(
            kinds.len() <= 1,
            "{program} attached to lo twice: {kinds:?}"
        );
    }
}

/// The kernel's id of one of the host's pinned programs.
fn program_id(host: &TestHost, program: &str) -> u64 {
    let pin = host.pin_root().join("progs").join(program);
    let shown = bpftool_json(&["prog", "show", "pinned", &pin.to_string_lossy()]);
    shown["id"].as_u64().expect("a program id")
}

#[test]
fn udp_counters_are_exact_per_port_for_ipv4_and_ipv6_with_tc_attach_auto() {
    udp_counters_are_exact_per_port_for_ipv4_and_ipv6(TcAttach::Auto);
}

#[test]
fn udp_counters_are_exact_per_port_for_ipv4_and_ipv6_with_tc_attach_netlink() {
    udp_counters_are_exact_per_port_for_ipv4_and_ipv6(TcAttach::Netlink);
}

fn udp_counters_are_exact_per_port_for_ipv4_and_ipv6(tc_attach: TcAttach) {
    if skip_unless_root() {
        return;
    }
    let host = tc_attach.host();
    assert_tc_attached(&host, tc_attach);
    const COUNT: u64 = 40;
    const SIZE: u64 = 1000;
    for (name, addr, ip_header, own, peer) in [
        ("udp4", "127.0.0.1", 20, 21010, 21011),
        ("udp6", "::1", 40, 21012, 21013),
    ] {
        let echo = udp_echo(
            UdpSocket::bind((addr, peer)).expect("peer socket"),
            COUNT as usize,
        );
        let probe = netprobe();
        let (own_text, peer_text) = (own.to_string(), peer.to_string());
        let command = [
            probe.as_str(),
            "udpburst",
            addr,
            &own_text,
            addr,
            &peer_text,
            "40",
            "1000",
        ];
        run_named(&host, name, &format!("{own}/udp"), &command);
        echo.join().expect("echo thread");
        let stats = stats(&host, name);
        let wire = COUNT * (SIZE + UDP_HEADER + ip_header);
        let expected = [COUNT, wire, COUNT, wire];
        let row = port(&stats, &format!("{own}/udp"));
        assert_eq!(counters(row), expected, "{name} socket view: {row}");
        assert_eq!(
            counters(&row["device"]),
            expected,
            "{name} device view (tc on lo): {row}"
        );
        assert_eq!(counters(&stats), expected, "{name} totals: {stats}");
        assert_eq!(counters(&stats["protocols"]["udp"]), expected);
        assert_eq!(counters(&stats["protocols"]["tcp"]), [0; 4]);
        assert_eq!(stats["denials"]["binds"], 0);
        let inspected = host.inspect(name);
        assert_eq!(inspected["state"], "exited");
        assert_eq!(
            counters(&inspected["traffic"]),
            expected,
            "an exited container's last counters stay in inspect until rm"
        );
        assert!(host.exec(&["rm", name]).status.success());
    }
    host.assert_no_container_left();
}

fn wait_listening(child: &mut Child) {
    use std::io::{BufRead as _, BufReader};
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("line");
    assert_eq!(line.trim(), "listening", "server did not start");
}

#[test]
fn tcp_counters_count_gso_segments_as_the_wire_does() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let peer = Peer::new();
    // The datapath attaches TC to interfaces present when it opens: the veth is new.
    assert!(host.exec(&["ps"]).status.success());
    peer.wait_quiet();
    let rx_framed = peer.rx_counts_ethernet_header();
    peer.wait_quiet();
    const SEND: usize = 4_000_000;
    const RECV: usize = 3_000_000;
    for (name, addr) in [("tcp4", PEER_V4), ("tcp6", PEER_V6)] {
        let probe = netprobe();
        let (send, recv) = (SEND.to_string(), RECV.to_string());
        let mut server =
            KillOnDrop::new(peer.spawn(&[&probe, "tcpserver", addr, "21020", &send, &recv]));
        wait_listening(server.child());
        let before = peer.device_counters();
        run_named(
            &host,
            name,
            "",
            &[&probe, "tcpclient", addr, "21020", &send, &recv],
        );
        let server = server.finish();
        assert!(server.status.success(), "server: {}", describe(&server));
        let after = peer.device_counters();
        let [rx_packets, rx_bytes, tx_packets, tx_bytes] =
            [0, 1, 2, 3].map(|i| after[i] - before[i]);
        let stats = stats(&host, name);
        // hostnetd counts from the IP header on; the veth counts whole frames on transmit,
        // and on receive with or without the Ethernet header, as measured above.
        let rx_header = if rx_framed { ETH_HEADER } else { 0 };
        let expected = [
            rx_packets,
            rx_bytes - rx_header * rx_packets,
            tx_packets,
            tx_bytes - ETH_HEADER * tx_packets,
        ];
        assert_eq!(counters(&stats), expected, "{name}: {stats}");
        assert_eq!(counters(&stats["protocols"]["tcp"]), expected);
        // Wire-sized segments, not super-packets: at most one MSS of payload each.
        assert!(
            tx_packets as usize >= SEND / 1448,
            "{name}: {tx_packets} packets"
        );
        assert!(
            rx_packets as usize >= RECV / 1448,
            "{name}: {rx_packets} packets"
        );
        assert!(host.exec(&["rm", name]).status.success());
    }
    host.assert_no_container_left();
}

#[test]
fn denials_are_counted_by_kind() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    let binds = [
        probe.as_str(),
        "bind",
        "tcp",
        "0.0.0.0",
        "21041",
        "udp",
        "::",
        "21042",
        "tcp",
        "0.0.0.0",
        "21040",
    ];
    run_named(&host, "denied", "21040/tcp", &binds);
    let connects = [
        probe.as_str(),
        "connect",
        "tcp",
        "127.0.0.1",
        "21043",
        "udp",
        "127.0.0.1",
        "21043",
    ];
    let output = host.exec(
        &[
            &[
                "run",
                "--name",
                "egress",
                "--egress-deny",
                "127.0.0.1/32:21043",
            ][..],
            &["--rootfs", "/", "--"],
            &connects,
        ]
        .concat(),
    );
    assert!(output.status.success(), "{}", describe(&output));
    let denied = stats(&host, "denied");
    assert_eq!(denied["denials"]["binds"], 2, "{denied}");
    assert_eq!(denied["denials"]["connects"], 0);
    let egress = stats(&host, "egress");
    assert_eq!(egress["denials"]["connects"], 2, "{egress}");
    assert_eq!(egress["denials"]["binds"], 0);
    for name in ["denied", "egress"] {
        assert!(host.exec(&["rm", name]).status.success());
    }
    host.assert_no_container_left();
}

#[test]
fn counters_survive_a_killed_daemon() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let echo = udp_echo(UdpSocket::bind(("127.0.0.1", 21051)).expect("peer"), 10);
    let probe = netprobe();
    let script =
        format!("{probe} udpburst 127.0.0.1 21050 127.0.0.1 21051 10 500 && {probe} sleep 60");
    host.start("survivor", "21050/udp", &["/bin/sh", "-c", &script]);
    echo.join().expect("echo");
    let wire = 10 * (500 + UDP_HEADER + 20);
    let before = stats(&host, "survivor");
    assert_eq!(counters(&before), [10, wire, 10, wire], "{before}");
    let pid = host.daemon_pid().expect("daemon");
    // SAFETY: killing the daemon this test host started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    while host.daemon_running() {
        thread::sleep(Duration::from_millis(20));
    }
    let after = stats(&host, "survivor");
    assert_ne!(host.daemon_pid(), Some(pid), "a new daemon answered");
    assert_eq!(counters(&after), [10, wire, 10, wire], "{after}");
    let _ = host.stop(0);
}

/// Runs netprobe on the host; its results.
fn probe_host(args: &[&str]) -> Vec<i32> {
    let output = Command::new(netprobe())
        .args(args)
        .output()
        .expect("netprobe");
    hostnetd_tests::probe_results(&output)
}

#[test]
fn ingress_rules_drop_other_sources_before_the_socket_and_count_them_with_tc_attach_auto() {
    ingress_rules_drop_other_sources_before_the_socket_and_count_them(TcAttach::Auto);
}

#[test]
fn ingress_rules_drop_other_sources_before_the_socket_and_count_them_with_tc_attach_netlink() {
    ingress_rules_drop_other_sources_before_the_socket_and_count_them(TcAttach::Netlink);
}

fn ingress_rules_drop_other_sources_before_the_socket_and_count_them(tc_attach: TcAttach) {
    if skip_unless_root() {
        return;
    }
    const EINPROGRESS: i32 = 115;
    const EAGAIN: i32 = 11;
    let host = tc_attach.host();
    assert_tc_attached(&host, tc_attach);
    let probe = netprobe();
    let name = "guarded";
    let servers = format!("{probe} udpecho :: 21061 30 & exec {probe} listen [::] 21060 30");
    let child = host
        .hostnetd()
        .args(["run", "--rm", "--name", name, "--rootfs", "/"])
        .args(["--ports", "21060/tcp,21061/udp"])
        .args(["--ingress-allow", "127.0.0.1/32:21060/tcp"])
        .args(["--ingress-allow", "[::1/128]:21061/udp", "--"])
        .args(["/bin/sh", "-c", &servers])
        .stdout(Stdio::null())
        .spawn()
        .expect("run");
    let mut child = KillOnDrop::new(child);
    wait_for_listener(21060);
    let tcp = |source: &str, destination: &str| {
        probe_host(&["connectfrom", source, destination, "21060"])
    };
    let udp =
        |source: &str, destination: &str| probe_host(&["udpfrom", source, destination, "21061"]);
    // Each rule lets its own source, port and protocol in, and nothing else.
    assert_eq!(
        tcp("127.0.0.1", "127.0.0.1"),
        [0],
        "v4 TCP from the listed source"
    );
    assert_eq!(
        tcp("127.0.0.2", "127.0.0.1"),
        [EINPROGRESS],
        "v4 TCP, other source"
    );
    assert_eq!(
        tcp("::1", "::1"),
        [EINPROGRESS],
        "v6 TCP: the v6 rule is UDP only"
    );
    assert_eq!(udp("::1", "::1"), [0], "v6 UDP from the listed source");
    assert_eq!(
        udp("127.0.0.1", "127.0.0.1"),
        [EAGAIN],
        "v4 UDP: the v4 rule is TCP only"
    );
    let stats = stats(&host, name);
    let dropped = |port_name: &str| {
        port(&stats, port_name)["device"]["dropped_packets"]
            .as_u64()
            .expect("dropped")
    };
    let (tcp_dropped, udp_dropped) = (dropped("21060/tcp"), dropped("21061/udp"));
    assert!(
        tcp_dropped >= 2,
        "a SYN per refused source at least: {stats}"
    );
    assert_eq!(udp_dropped, 1, "the one refused datagram: {stats}");
    assert_eq!(
        stats["denials"]["ingress_drops"],
        tcp_dropped + udp_dropped,
        "{stats}"
    );
    let inspect = host.inspect(name);
    assert_eq!(
        inspect["policy"]["ingress_allow"][0],
        "127.0.0.1/32:21060/tcp"
    );
    // Replaced live: the other source is let in, the first one kept out.
    let updated = host.exec(&["update", "--ingress-allow", "127.0.0.2/32", name]);
    assert!(updated.status.success(), "{}", describe(&updated));
    assert_eq!(tcp("127.0.0.2", "127.0.0.1"), [0], "after the update");
    assert_eq!(
        tcp("127.0.0.1", "127.0.0.1"),
        [EINPROGRESS],
        "after the update"
    );
    let cleared = host.exec(&["update", "--no-ingress-rules", name]);
    assert!(cleared.status.success(), "{}", describe(&cleared));
    assert_eq!(tcp("127.0.0.1", "127.0.0.1"), [0], "without ingress rules");
    assert_eq!(udp("127.0.0.1", "127.0.0.1"), [0], "without ingress rules");
    assert!(host.exec(&["rm", "-f", name]).status.success());
    let _ = child.child().wait();
    drop(child);
    host.assert_no_container_left();
}

fn wait_for_listener(port: u16) {
    for _ in 0..400 {
        if hostnetd_tests::fetch(port).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listened on {port}");
}

#[test]
fn a_bad_ingress_rule_is_refused_naming_it() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let output = host.run_to_end("21070", &["--ingress-allow", "10.0.0.1/8"], &["true"]);
    assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
    let error = hostnetd_tests::stderr(&output);
    assert!(
        error.contains("invalid ingress rule \"10.0.0.1/8\""),
        "{error}"
    );
    assert!(!host.daemon_running(), "bad input started a daemon");
}

#[test]
fn the_programs_debug_log_reaches_the_daemons_log_when_asked_for() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    host.set_env("HOSTNETD_BPF_LOG_LEVEL", "debug");
    host.set_env("HOSTNETD_LOG_LEVEL", "debug");
    let probe = netprobe();
    let refused = host.run_to_end("21080", &[], &[&probe, "bind", "tcp", "0.0.0.0", "21081"]);
    assert_eq!(
        hostnetd_tests::probe_results(&refused),
        [denied()],
        "{}",
        describe(&refused)
    );
    let log = host.scratch().join("run/hostnetd.log");
    // The errno the program logs is the one the caller got.
    let wanted = format!("bind to port 21081 refused: errno {}", denied());
    for _ in 0..100 {
        if std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&wanted)) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{wanted:?} not in the daemon's log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Sends `COUNT` datagrams of `SIZE` bytes from the container `name`'s port `own` to an echo on
/// `peer` and back (`hostnetd exec`, so from the container's cgroup), over IPv4 loopback.
fn burst_from(host: &TestHost, name: &str, own: u16, peer: u16, count: u64, size: u64) {
    let echo = udp_echo(
        UdpSocket::bind(("127.0.0.1", peer)).expect("peer socket"),
        count as usize,
    );
    let probe = netprobe();
    let (own, peer, count, size) = (
        own.to_string(),
        peer.to_string(),
        count.to_string(),
        size.to_string(),
    );
    let output = host.exec(&[
        "exec",
        name,
        &probe,
        "udpburst",
        "127.0.0.1",
        &own,
        "127.0.0.1",
        &peer,
        &count,
        &size,
    ]);
    assert!(output.status.success(), "udpburst: {}", describe(&output));
    echo.join().expect("echo thread");
}

#[test]
fn ports_beyond_the_counter_rows_are_counted_exactly_in_the_hashes() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    // One row: the first port claimed gets it, the second is counted in the hashes.
    host.set_env("HOSTNETD_TRAFFIC_ROWS", "1");
    host.run_detached(
        "rows",
        "21070/udp,21071/udp",
        &[],
        &["/bin/sh", "-c", "exec sleep 600"],
    );
    assert_eq!(host.port_rows(), (1, 1), "one row, given to one port");
    const COUNT: u64 = 30;
    const SIZE: u64 = 700;
    burst_from(&host, "rows", 21070, 21072, COUNT, SIZE);
    burst_from(&host, "rows", 21071, 21073, 2 * COUNT, SIZE);
    let stats = stats(&host, "rows");
    let wire = SIZE + UDP_HEADER + 20;
    for (own, count) in [("21070/udp", COUNT), ("21071/udp", 2 * COUNT)] {
        let expected = [count, count * wire, count, count * wire];
        let row = port(&stats, own);
        assert_eq!(counters(row), expected, "{own} socket view: {row}");
        assert_eq!(
            counters(&row["device"]),
            expected,
            "{own} device view: {row}"
        );
    }
    assert!(host.exec(&["rm", "-f", "rows"]).status.success());
    assert_eq!(host.port_rows(), (1, 0), "rm gives the row back");
    host.assert_no_container_left();
}

#[test]
fn a_port_an_update_takes_away_keeps_its_counts() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    host.run_detached(
        "shrinks",
        "21074/udp,21075/udp",
        &[],
        &["/bin/sh", "-c", "exec sleep 600"],
    );
    let given = host.port_rows().1;
    const COUNT: u64 = 25;
    const SIZE: u64 = 300;
    burst_from(&host, "shrinks", 21074, 21076, COUNT, SIZE);
    let update = host.exec(&["update", "--ports", "21075/udp", "shrinks"]);
    assert!(update.status.success(), "update: {}", describe(&update));
    assert_eq!(
        host.port_rows().1,
        given - 1,
        "the port that left gave its row back"
    );
    burst_from(&host, "shrinks", 21075, 21077, COUNT, SIZE);
    let stats = stats(&host, "shrinks");
    let wire = SIZE + UDP_HEADER + 20;
    let expected = [COUNT, COUNT * wire, COUNT, COUNT * wire];
    for own in ["21074/udp", "21075/udp"] {
        let row = port(&stats, own);
        assert_eq!(counters(row), expected, "{own} socket view: {row}");
        assert_eq!(
            counters(&row["device"]),
            expected,
            "{own} device view: {row}"
        );
    }
    let both = expected.map(|count| 2 * count);
    assert_eq!(counters(&stats["protocols"]["udp"]), both, "{stats}");
    assert!(host.exec(&["rm", "-f", "shrinks"]).status.success());
    host.assert_no_container_left();
}
