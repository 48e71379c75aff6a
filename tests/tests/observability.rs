//! Observability: refused calls and container lifecycles as `hostnetd events`, and the
//! Prometheus page of `--metrics-addr`, parsed and compared with `hostnetd stats`.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hostnetd_tests::{
    denied, describe, netprobe, skip_unless_root, stdout, KillOnDrop, TestHost, EACCES, EPERM,
};
use serde_json::Value;

/// The errno a denied bind or connect got on this kernel, as a denial event reports it: its
/// number and its name (EACCES, or EPERM where the kernel does not let programs choose).
fn denied_errno() -> (i32, &'static str) {
    match denied() {
        EACCES => (EACCES, "EACCES"),
        EPERM => (EPERM, "EPERM"),
        other => panic!("denied() is EACCES or EPERM, not {other}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Runs a named container to completion; its record stays until `rm`.
fn run_named(host: &TestHost, name: &str, extra: &[&str], script: &str) {
    let mut args = vec!["run", "--name", name, "--rootfs", "/"];
    args.extend(extra);
    args.extend(["--", "/bin/sh", "-c", script]);
    let output = host.exec(&args);
    assert!(
        output.status.code().is_some(),
        "{name}: {}",
        describe(&output)
    );
}

/// `hostnetd events --since SINCE --no-stream --format json`, parsed.
fn history(host: &TestHost, since: &str) -> Vec<Value> {
    let output = host.exec(&[
        "events",
        "--since",
        since,
        "--no-stream",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "events: {}", describe(&output));
    (stdout(&output).lines())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// History since `since`, re-read until `done` holds for it (lifecycle events are noticed
/// within a poll interval).
fn history_until(host: &TestHost, since: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = history(host, since);
        if done(&events) || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn of<'a>(events: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    (events.iter())
        .filter(|e| e["type"] == kind && e["container_name"] == name)
        .collect()
}

fn actions(events: &[&Value]) -> Vec<String> {
    (events.iter())
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn refused_calls_and_lifecycles_are_events() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let since = unix_now().to_string();
    let probe = netprobe();
    run_named(
        &host,
        "ev-bind",
        &["--ports", "27010/tcp"],
        &format!("{probe} bind tcp 0.0.0.0 27011; exit 3"),
    );
    run_named(
        &host,
        "ev-egress",
        &["--egress-deny", "127.0.0.1:27012/tcp"],
        &format!("{probe} connect tcp 127.0.0.1 27012"),
    );
    let rm = host.exec(&["rm", "ev-bind"]);
    assert!(rm.status.success(), "rm: {}", describe(&rm));

    let events = history_until(&host, &since, |events| {
        actions(&of(events, "container", "ev-bind")).contains(&"remove".to_string())
    });
    let lifecycle = of(&events, "container", "ev-bind");
    assert_eq!(
        actions(&lifecycle),
        ["create", "start", "die", "remove"],
        "{events:#?}"
    );
    assert_eq!(lifecycle[2]["exit_code"], 3, "{:?}", lifecycle[2]);

    let binds = of(&events, "denial", "ev-bind");
    assert_eq!(binds.len(), 1, "{binds:#?}");
    let bind = binds[0];
    assert_eq!(bind["action"], "bind");
    assert_eq!(bind["comm"], "netprobe");
    assert!(bind["pid"].as_u64().is_some_and(|pid| pid > 1), "{bind}");
    assert_eq!(bind["protocol"], "tcp");
    assert_eq!(bind["address"], "0.0.0.0");
    assert_eq!(bind["port"], 27011);
    let (errno, error) = denied_errno();
    assert_eq!(bind["errno"], errno);
    assert_eq!(bind["error"], error);
    assert_eq!(bind["container_id"].as_str().map(str::len), Some(64));

    let connects = of(&events, "denial", "ev-egress");
    assert_eq!(actions(&connects), ["connect"], "{connects:#?}");
    assert_eq!(connects[0]["comm"], "netprobe");
    assert_eq!(connects[0]["address"], "127.0.0.1");
    assert_eq!(connects[0]["port"], 27012);
    assert_eq!(connects[0]["errno"], errno);
    assert_eq!(connects[0]["error"], error);

    // The same history in text: one line per event.
    let text = host.exec(&["events", "--since", &since, "--no-stream"]);
    let text = stdout(&text);
    let line = (text.lines())
        .find(|line| line.contains(" denial bind ev-bind ("))
        .unwrap_or_else(|| panic!("no bind line in:\n{text}"));
    assert!(
        line.ends_with(&format!("(netprobe) tcp 0.0.0.0:27011 {error}")),
        "{line}"
    );
    assert!(
        text.contains(" container die ev-bind (") && text.contains("exit code 3"),
        "{text}"
    );

    // Nothing before `since` is shown.
    let later = history(&host, &(unix_now() + 3600).to_string());
    assert!(later.is_empty(), "{later:?}");
}

#[test]
fn a_bad_since_is_refused_by_name() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let output = host.exec(&["events", "--since", "last-tuesday", "--no-stream"]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        describe(&output).contains("last-tuesday"),
        "{}",
        describe(&output)
    );
}

#[test]
fn followers_see_new_denials_as_they_happen() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let info = host.exec(&["ps"]); // starts the daemon before the follower connects
    assert!(info.status.success(), "{}", describe(&info));
    let mut follower = KillOnDrop::new(
        (host.hostnetd())
            .args(["events", "--format", "json"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("hostnetd events"),
    );
    let lines = BufReader::new(follower.child().stdout.take().expect("stdout"));
    // The follower is connected once the daemon has it: give the request a moment.
    std::thread::sleep(Duration::from_millis(500));
    run_named(
        &host,
        "ev-follow",
        &[],
        &format!("{} bind udp 127.0.0.1 27013", netprobe()),
    );
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Ok(line) = receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let event: Value = serde_json::from_str(&line).expect("json line");
        seen.push(event["action"].as_str().unwrap_or_default().to_string());
        if event["type"] == "denial" {
            assert_eq!(event["container_name"], "ev-follow", "{event}");
            assert_eq!(event["protocol"], "udp");
            assert_eq!(event["port"], 27013);
            let (errno, error) = denied_errno();
            assert_eq!(event["errno"], errno);
            assert_eq!(event["error"], error);
            return;
        }
    }
    panic!("no denial followed; saw {seen:?}");
}

/// One sample of the exposition text: the metric name and its labels.
type Sample = (String, BTreeMap<String, String>);

/// Parses `name{label="value",...} value` lines; comments must be HELP or TYPE.
fn parse_exposition(text: &str) -> Vec<(Sample, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect(line))),
            None => (series, BTreeMap::new()),
        };
        samples.push(((name.to_string(), labels), value));
    }
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {name} in {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {text}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn value_of(samples: &[(Sample, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = (samples.iter())
        .filter(|((n, l), _)| {
            n == name && (labels.iter()).all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, value)| *value)
        .collect();
    assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:?}");
    matching[0]
}

fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

#[test]
fn metrics_agree_with_stats_and_count_denials_exactly() {
    if skip_unless_root() {
        return;
    }
    const METRICS: &str = "127.0.0.1:27020";
    const DATAGRAMS: usize = 25;
    let mut host = TestHost::new();
    host.set_env("HOSTNETD_METRICS_ADDR", METRICS);
    let listener = UdpSocket::bind("127.0.0.1:27021").expect("host listener");
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let probe = netprobe();
    let targets = vec!["127.0.0.1 27021"; DATAGRAMS].join(" ");
    run_named(
        &host,
        "metrics1",
        &["--ports", "27022/udp"],
        &format!("{probe} bind tcp 0.0.0.0 27023; {probe} sendto {targets}"),
    );
    let mut buffer = [0u8; 2048];
    for n in 0..DATAGRAMS {
        listener
            .recv_from(&mut buffer)
            .unwrap_or_else(|e| panic!("datagram {n}: {e}"));
    }

    let stats = host.exec(&["stats", "-a", "--no-stream", "--format", "json", "metrics1"]);
    assert!(stats.status.success(), "stats: {}", describe(&stats));
    let stats: Vec<Value> = serde_json::from_slice(&stats.stdout).expect("stats json");
    let tx_packets = stats[0]["tx_packets"].as_u64().expect("tx_packets");

    let samples = parse_exposition(&scrape(METRICS));
    let me = [("name", "metrics1")];
    let transmitted = value_of(&samples, "container_network_transmit_packets_total", &me);
    assert_eq!(transmitted, tx_packets as f64);
    assert!(transmitted >= DATAGRAMS as f64, "{transmitted}");
    let udp = value_of(
        &samples,
        "hostnetd_network_transmit_packets_total",
        &[("name", "metrics1"), ("protocol", "udp")],
    );
    assert!(udp >= DATAGRAMS as f64, "{udp}");
    let bind_denials = value_of(
        &samples,
        "hostnetd_denials_total",
        &[("name", "metrics1"), ("kind", "bind")],
    );
    assert_eq!(bind_denials, 1.0);
    assert_eq!(
        value_of(&samples, "hostnetd_containers", &[("state", "exited")]),
        1.0
    );
    let lost = value_of(&samples, "hostnetd_events_lost_total", &[]);
    assert_eq!(lost, 0.0);
    assert_eq!(info(&host)["events_lost"], 0, "GET /v1/info");
}

/// `GET /v1/info` over the API socket.
fn info(host: &TestHost) -> Value {
    let mut stream = std::os::unix::net::UnixStream::connect(host.socket()).expect("socket");
    write!(
        stream,
        "GET /v1/info HTTP/1.1\r\nHost: hostnetd\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (_, body) = response.split_once("\r\n\r\n").expect("http response");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn exposition_parser_reads_escapes() {
    let samples =
        parse_exposition("# HELP a_total A.\n# TYPE a_total counter\na_total{name=\"x\\\"y\\\\z\",kind=\"bind\"} 4\nb 0\n");
    assert_eq!(value_of(&samples, "a_total", &[("name", "x\"y\\z")]), 4.0);
    assert_eq!(value_of(&samples, "b", &[]), 0.0);
}
