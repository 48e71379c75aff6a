//! Bandwidth limits, measured: a limited container's TCP stream through a veth into a network
//! namespace of the test's own holds the set rate (iperf3), paced where fq is the device's
//! qdisc and policed where it is not; an unlimited neighbour keeps its throughput; an update
//! changes the rate mid-stream; policed UDP counts its drops exactly, out and in.
//!
//! The limit counts bytes from the IP header on, as hostnetd's accounting does; iperf3
//! reports TCP payload, which is 1448 of every 1500 bytes of a full segment (IPv4, TCP
//! timestamps).
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use hostnetd_tests::{
    describe, netprobe,
    peer::{Peer, HOST_V4, PEER_V4},
    skip_unless_root, stdout, KillOnDrop, TestHost,
};
use serde_json::Value;

/// TCP payload per byte of IP packet, for full segments.
const PAYLOAD_SHARE: f64 = 1448.0 / 1500.0;
const UDP_IP_HEADERS: u64 = 28;

/// How the device the stream leaves by treats a limited container's packets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Edt,
    Police,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Edt => "edt",
            Mode::Police => "police",
        }
    }
}

/// A peer namespace whose veth has the qdisc `mode` needs; None (with the reason printed)
/// when this kernel has no fq.
fn peer_in(mode: Mode) -> Option<Peer> {
    let peer = Peer::new();
    if mode == Mode::Edt {
        let added = Command::new("tc")
            .args(["qdisc", "replace", "dev", &peer.host_if, "root", "fq"])
            .output()
            .expect("tc");
        if !added.status.success() {
            eprintln!(
                "skipped: this kernel has no fq qdisc to pace by departure time ({})",
                describe(&added).trim()
            );
            return None;
        }
    }
    Some(peer)
}

/// An iperf3 server in the peer's namespace, for one test, ready when this returns.
fn iperf_server(peer: &Peer, port: u16) -> KillOnDrop {
    let mut server = KillOnDrop::new(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &peer.netns,
                "iperf3",
                "-s",
                "-1",
                "--forceflush",
                "-B",
                PEER_V4,
            ])
            .args(["-p", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iperf3 server"),
    );
    let out = server.child().stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let ready = lines.any(|line| line.is_ok_and(|line| line.contains("listening")));
    assert!(ready, "the iperf3 server did not start");
    // Keep draining its output, so that it never blocks on a full pipe.
    thread::spawn(move || lines.for_each(drop));
    server
}

/// `hostnetd run` of a container named `name` with `limits` (flags) running `command`, to
/// its end.
fn run_limited(host: &TestHost, name: &str, limits: &[&str], command: &[&str]) -> Output {
    let mut args = vec!["run", "--rm", "--name", name, "--rootfs", "/"];
    args.extend(limits);
    args.push("--");
    args.extend(command);
    host.exec(&args)
}

/// The receiver's throughput (payload bits per second) of `seconds` of TCP from a container
/// with `limits` to the peer.
fn tcp_stream(host: &TestHost, peer: &Peer, port: u16, limits: &[&str], seconds: u32) -> f64 {
    let _server = iperf_server(peer, port);
    let (port, seconds) = (port.to_string(), seconds.to_string());
    let command = ["iperf3", "-c", PEER_V4, "-p", &port, "-t", &seconds, "-J"];
    let output = run_limited(host, &format!("bw-{port}"), limits, &command);
    assert!(output.status.success(), "iperf3: {}", describe(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).expect("iperf3 JSON");
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
}

fn assert_within(measured: f64, expected: f64, share: f64, what: &str) {
    let off = (measured - expected).abs() / expected;
    assert!(
        off <= share,
        "{what}: {:.1} Mbit/s, expected {:.1} Mbit/s within {:.0}% (off by {:.1}%)",
        measured / 1e6,
        expected / 1e6,
        share * 100.0,
        off * 100.0
    );
}

/// Whether the host's end of the peer's veth is reported in `mode` by `hostnetd info`.
fn assert_info_mode(host: &TestHost, peer: &Peer, mode: Mode) {
    let output = host.exec(&["info", "--json"]);
    assert!(output.status.success(), "info: {}", describe(&output));
    let info: Value = serde_json::from_str(&stdout(&output)).expect("info JSON");
    let devices = info["devices"].as_array().expect("devices");
    let device = (devices.iter())
        .find(|device| device["device"] == peer.host_if.as_str())
        .unwrap_or_else(|| panic!("{} is not among {devices:?}", peer.host_if));
    assert_eq!(device["egress_limits"], mode.name(), "{device}");
}

fn tcp_holds_the_set_rate(mode: Mode) {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let Some(peer) = peer_in(mode) else { return };
    assert_info_mode(&host, &peer, mode);
    let capacity = tcp_stream(&host, &peer, 28500, &[], 3);
    for (index, mbit) in [10u32, 100, 1000].into_iter().enumerate() {
        let bits = f64::from(mbit) * 1e6;
        // A machine busy carrying the rate at all (an emulated one) says nothing about the
        // limit's accuracy.
        if capacity < bits * 2.0 {
            eprintln!(
                "skipped {mbit} Mbit/s: this machine carries only {:.0} Mbit/s unlimited",
                capacity / 1e6
            );
            continue;
        }
        let rate = format!("{mbit}mbit");
        let port = 28501 + index as u16;
        let achieved = tcp_stream(&host, &peer, port, &["--egress-rate", &rate], 10);
        let what = format!("{} mode, {rate}", mode.name());
        eprintln!("{what}: {:.2} Mbit/s of payload", achieved / 1e6);
        assert_within(achieved, bits * PAYLOAD_SHARE, 0.05, &what);
    }
    host.assert_no_container_left();
}

#[test]
fn a_policed_tcp_stream_holds_the_set_rate() {
    tcp_holds_the_set_rate(Mode::Police);
}

#[test]
fn a_paced_tcp_stream_holds_the_set_rate() {
    tcp_holds_the_set_rate(Mode::Edt);
}

/// Where fq paces, a UDP sender above the rate is held back, not dropped: its datagrams wait
/// in fq until their departure time, and its socket buffer fills and blocks it meanwhile.
#[test]
fn a_paced_udp_sender_is_held_back_not_dropped() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let Some(peer) = peer_in(Mode::Edt) else {
        return;
    };
    const COUNT: u64 = 2_000;
    let name = "bw-paced-udp";
    let (before, elapsed) = udp_from_limited_container(&host, &peer, name, "28514", COUNT);
    // The sender returns once its last datagrams are queued: 2 MB at 1.25 MB/s, less the
    // burst and what its socket buffer holds, is still over a second.
    let bytes = COUNT * (SIZE + UDP_IP_HEADERS);
    let floor = (bytes - 131_072 - 212_992) as f64 / 1.25e6;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut carried = 0;
    while carried < COUNT && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        carried = peer.device_counters()[2] - before[2];
    }
    let egress = limit_figures(&host, name, "egress");
    assert_eq!(egress["dropped_packets"], 0, "{egress}");
    assert_eq!(
        carried, COUNT,
        "fq or the limit dropped datagrams: {egress}"
    );
    assert!(
        egress["delayed_packets"].as_u64().is_some_and(|n| n > 0),
        "{egress}"
    );
    assert!(
        elapsed >= floor,
        "{bytes} bytes left in {elapsed:.2} s, under the rate's {floor:.2} s"
    );
    assert!(host.exec(&["rm", "-f", name]).status.success());
    host.assert_no_container_left();
}

/// The root qdisc line `tc` shows for `dev`.
fn root_qdisc(dev: &str) -> String {
    let output = Command::new("tc")
        .args(["qdisc", "show", "dev", dev, "root"])
        .output()
        .expect("tc");
    stdout(&output)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Whether this kernel has fq, tried on `dev` and taken off again.
fn kernel_has_fq(dev: &str) -> bool {
    let tc = |args: &[&str]| Command::new("tc").args(args).output().expect("tc");
    let added = tc(&["qdisc", "replace", "dev", dev, "root", "fq"])
        .status
        .success();
    if added {
        assert!(tc(&["qdisc", "del", "dev", dev, "root"]).status.success());
    }
    added
}

/// `--manage-qdisc IFACE` puts fq on that interface only (where the kernel has fq), the hooks
/// pace through it at once, and teardown gives it its default qdisc back.
#[test]
fn manage_qdisc_paces_the_named_interface_and_gives_it_back() {
    if skip_unless_root() {
        return;
    }
    let peer = Peer::new();
    let fq = kernel_has_fq(&peer.host_if);
    let before = root_qdisc(&peer.host_if);
    let lo = root_qdisc("lo");
    let mut host = TestHost::new();
    host.set_env("HOSTNETD_MANAGE_QDISC", &peer.host_if);
    let mode = if fq { Mode::Edt } else { Mode::Police };
    assert_info_mode(&host, &peer, mode);
    let managed = root_qdisc(&peer.host_if);
    assert_eq!(managed.starts_with("qdisc fq "), fq, "{managed}");
    assert_eq!(root_qdisc("lo"), lo, "an interface not named was changed");
    let teardown = host.exec(&["teardown"]);
    assert!(
        teardown.status.success(),
        "teardown: {}",
        describe(&teardown)
    );
    assert_eq!(
        root_qdisc(&peer.host_if),
        before,
        "teardown left hostnetd's fq"
    );
}

const SIZE: u64 = 1000;

/// Starts an idle container `name` (owning `port`) limited to 10mbit out, and sends `count`
/// datagrams of [`SIZE`] bytes from it to the peer, where nothing listens (the peer's ICMP
/// errors only arrive); the peer's veth counters before, and how long the sending took.
fn udp_from_limited_container(
    host: &TestHost,
    peer: &Peer,
    name: &str,
    port: &str,
    count: u64,
) -> ([u64; 4], f64) {
    let probe = netprobe();
    host.run_detached(
        name,
        port,
        &["--egress-rate", "10mbit"],
        &[&probe, "sleep", "60"],
    );
    peer.wait_quiet();
    let before = peer.device_counters();
    let started = std::time::Instant::now();
    let (count_text, size) = (count.to_string(), SIZE.to_string());
    let send = [
        "exec",
        name,
        &probe,
        "udpsend",
        PEER_V4,
        "28510",
        &count_text,
        &size,
    ];
    let output = host.exec(&send);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "udpsend: {}", describe(&output));
    assert_eq!(stdout(&output).trim(), format!("sent {count}"));
    (before, elapsed)
}

/// `stats --format json` of one container: its figures.
fn container_stats(host: &TestHost, name: &str) -> Value {
    let output = host.exec(&["stats", "--no-stream", "--format", "json", name]);
    assert!(output.status.success(), "stats: {}", describe(&output));
    let stats: Value = serde_json::from_str(&stdout(&output)).expect("stats JSON");
    stats[0].clone()
}

/// The container's figures of its limit in `direction`.
fn limit_figures(host: &TestHost, name: &str, direction: &str) -> Value {
    container_stats(host, name)["limits"][direction].clone()
}

#[test]
fn policed_udp_counts_every_drop() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let peer = Peer::new();
    const COUNT: u64 = 20_000;
    let name = "bw-udp";
    let (before, _) = udp_from_limited_container(&host, &peer, name, "28513", COUNT);
    let after = peer.device_counters();
    let carried = after[2] - before[2];
    let egress = limit_figures(&host, name, "egress");
    let dropped = egress["dropped_packets"].as_u64().expect("dropped_packets");
    assert!(dropped > 0, "nothing was dropped at 10mbit: {egress}");
    assert_eq!(
        carried + dropped,
        COUNT,
        "carried {carried}, dropped {dropped}"
    );
    assert_eq!(egress["dropped_bytes"], dropped * (SIZE + UDP_IP_HEADERS));
    assert_eq!(egress["limit"], "10mbit");
    assert!(host.exec(&["rm", "-f", name]).status.success());
    host.assert_no_container_left();
}

#[test]
fn policed_ingress_counts_every_drop_at_the_device() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let peer = Peer::new();
    const COUNT: u64 = 20_000;
    let probe = netprobe();
    let name = "bw-in";
    // Started after the peer: the datapath attaches TC to the interfaces present then.
    host.run_detached(
        name,
        "28511/udp",
        &["--ingress-rate", "10mbit"],
        &[&probe, "udpecho", HOST_V4, "28511", "60"],
    );
    peer.wait_quiet();
    let before = peer.device_counters();
    let sent = peer
        .spawn(&[
            &probe,
            "udpsend",
            HOST_V4,
            "28511",
            &COUNT.to_string(),
            &SIZE.to_string(),
        ])
        .wait_with_output()
        .expect("udpsend");
    assert_eq!(
        stdout(&sent).trim(),
        format!("sent {COUNT}"),
        "{}",
        describe(&sent)
    );
    // The veth carried every datagram (and, on some kernels, a packet or two of the peer
    // kernel's own): the exact count below is hostnetd's, of the owned port's packets alone.
    let arrived = peer.device_counters()[0] - before[0];
    assert!(
        arrived >= COUNT,
        "the veth lost datagrams before hostnetd saw them: {arrived} of {COUNT}"
    );
    let stats = container_stats(&host, name);
    let ingress = &stats["limits"]["ingress"];
    let dropped = ingress["dropped_packets"]
        .as_u64()
        .expect("dropped_packets");
    assert!(dropped > 0, "nothing was dropped at 10mbit: {ingress}");
    assert_eq!(ingress["dropped_bytes"], dropped * (SIZE + UDP_IP_HEADERS));
    let port = &stats["ports"][0];
    let passed = port["device"]["rx_packets"]
        .as_u64()
        .expect("device rx_packets");
    assert_eq!(
        passed + dropped,
        COUNT,
        "passed {passed}, dropped {dropped}: {port}"
    );
    assert!(host.exec(&["rm", "-f", name]).status.success());
    host.assert_no_container_left();
}

#[test]
fn an_update_changes_the_rate_mid_stream() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let peer = Peer::new();
    let _server = iperf_server(&peer, 28512);
    let client = KillOnDrop::new(
        host.hostnetd()
            .args(["run", "--rm", "--name", "bw-update", "--rootfs", "/"])
            .args(["--egress-rate", "50mbit", "--"])
            .args(["iperf3", "-c", PEER_V4, "-p", "28512", "-t", "12", "-J"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run iperf3"),
    );
    // The stream's clock starts with its first bytes, which a slow machine sends well after
    // the run began.
    wait_for_sent(&host, "bw-update", 1_000_000);
    thread::sleep(Duration::from_secs(4));
    let update = host.exec(&["update", "--egress-rate", "20mbit", "bw-update"]);
    assert!(update.status.success(), "update: {}", describe(&update));
    let output = client.finish();
    assert!(output.status.success(), "iperf3: {}", describe(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).expect("iperf3 JSON");
    let seconds: Vec<f64> = (report["intervals"].as_array().expect("intervals").iter())
        .map(|interval| interval["sum"]["bits_per_second"].as_f64().expect("rate"))
        .collect();
    let mean = |range: std::ops::Range<usize>| {
        let slice = &seconds[range];
        slice.iter().sum::<f64>() / slice.len() as f64
    };
    // Second 0 is slow start; the update lands 4 to 5 s in, the new rate holds 1 s after.
    assert_within(mean(1..4), 50e6 * PAYLOAD_SHARE, 0.05, "before the update");
    assert_within(mean(6..12), 20e6 * PAYLOAD_SHARE, 0.05, "after the update");
}

/// Waits until the container has sent `bytes`.
fn wait_for_sent(host: &TestHost, name: &str, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Until the run has made the container, stats names none.
        let output = host.exec(&["stats", "--no-stream", "--format", "json", name]);
        let stats: Value = serde_json::from_str(&stdout(&output)).unwrap_or_default();
        if stats[0]["tx_bytes"]
            .as_u64()
            .is_some_and(|sent| sent >= bytes)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never sent {bytes} bytes"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_rates_are_refused_with_the_reason_and_nothing_runs() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    for (flag, value, reason) in [
        ("--egress-rate", "0", "would stop all traffic"),
        ("--egress-rate", "12 parsecs", "is not a rate"),
        ("--ingress-rate", "200mbit:1kb", "smaller than one MTU"),
    ] {
        let output = run_limited(&host, "bw-bad", &[flag, value], &["true"]);
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let text = describe(&output);
        assert!(
            text.contains(flag) && text.contains(reason),
            "{flag} {value}: {text}"
        );
    }
    host.assert_no_container_left();
}
