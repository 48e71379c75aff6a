//! The daemon, its API and container lifecycle: containers and enforcement survive the daemon.
use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::{
    denied, describe, fetch, netprobe, probe_on_host, probe_results, skip_unless_root, stdout,
    taken, TestHost, EADDRINUSE,
};

fn kill_daemon(host: &TestHost) {
    let pid = host.daemon_pid().expect("a daemon runs");
    // SAFETY: SIGKILL to the daemon this test host started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the daemon to die", || !host.daemon_running());
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// One raw HTTP request on the API socket: (status, JSON body).
fn api(host: &TestHost, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = UnixStream::connect(host.socket()).expect("connect to the API socket");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: hostnetd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().expect("status");
    let json = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(json.trim()).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn containers_and_enforcement_survive_a_killed_daemon() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    let id = host.run_detached(
        "server",
        "20500/tcp",
        &[],
        &[&probe, "listen", "0.0.0.0", "20500", "120"],
    );
    wait_for("the server to answer", || {
        fetch(20500).is_ok_and(|body| body.contains("hello"))
    });
    kill_daemon(&host);
    // No daemon: the container keeps serving and the kernel keeps enforcing.
    assert!(
        fetch(20500).unwrap().contains("hello"),
        "the container stopped serving"
    );
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "20500"]), vec![taken()]);
    // A new process in the container's cgroup is still held to its declared ports: refused an
    // undeclared one, and let through to its own port, where the kernel finds the listener
    // (its EADDRINUSE, on every kernel).
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(host.scratch().join(format!("state/containers/{id}.json"))).unwrap(),
    )
    .unwrap();
    let procs = format!(
        "{}/ctr/cgroup.procs",
        record["cgroup"]["path"].as_str().unwrap()
    );
    let script = format!(
        "echo $$ > {procs} && exec {probe} bind tcp 0.0.0.0 20501 tcp 0.0.0.0 20500 reuseport"
    );
    let inside = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    assert_eq!(
        probe_results(&inside),
        vec![denied(), EADDRINUSE],
        "{}",
        describe(&inside)
    );
    // The next command starts a daemon, which finds the container running with its ports.
    let view = host.inspect("server");
    assert_eq!(view["state"], "running");
    assert_eq!(view["ports"][0]["port"], "20500/tcp");
    assert!(host.daemon_pid().is_some());
    assert!(stdout(&host.exec(&["ps"])).contains("server"));
    assert!(fetch(20500).unwrap().contains("hello"));
    let rm = host.exec(&["rm", "-f", "server"]);
    assert!(rm.status.success(), "{}", describe(&rm));
    assert!(host.kernel_owners().is_empty());
    host.assert_no_container_left();
}

#[test]
fn an_exit_while_the_daemon_is_down_is_recorded_and_frees_the_ports() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    host.run_detached(
        "short",
        "20510/tcp",
        &[],
        &["/bin/sh", "-c", "sleep 1; exit 7"],
    );
    kill_daemon(&host);
    // With no daemon, the monitor alone records the exit and frees the port.
    wait_for("the port to be freed by the exit", || {
        probe_on_host(&["tcp", "0.0.0.0", "20510"]) == vec![0]
    });
    assert!(!host.daemon_running(), "no daemon ran meanwhile");
    let view = host.inspect("short");
    assert_eq!(
        (view["state"].as_str(), view["exit_code"].as_i64()),
        (Some("exited"), Some(7))
    );
    assert!(stdout(&host.exec(&["ps", "-a"])).contains("exited(7)"));
    assert!(!stdout(&host.exec(&["ports"])).contains("20510"));
    assert!(host.exec(&["rm", "short"]).status.success());
    host.assert_no_container_left();
}

#[test]
fn stop_and_rm_release_ports_and_logs_keep_the_output() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    host.run_detached(
        "talker",
        "20520/udp",
        &[],
        &["/bin/sh", "-c", "echo first line; exec sleep 60"],
    );
    wait_for("the log line", || {
        stdout(&host.exec(&["logs", "talker"])).contains("first line")
    });
    assert_eq!(probe_on_host(&["udp", "0.0.0.0", "20520"]), vec![taken()]);
    let stop = host.exec(&["stop", "-t", "5", "talker"]);
    assert!(stop.status.success(), "{}", describe(&stop));
    assert_eq!(
        probe_on_host(&["udp", "0.0.0.0", "20520"]),
        vec![0],
        "stop released the port"
    );
    let view = host.inspect("talker");
    assert_eq!(view["state"], "exited");
    assert_eq!(
        stdout(&host.exec(&["logs", "--tail", "1", "talker"])).trim(),
        "first line"
    );
    let running_rm = host.exec(&["rm", "talker"]);
    assert!(
        running_rm.status.success(),
        "an exited container is removed: {}",
        describe(&running_rm)
    );
    let gone = host.exec(&["inspect", "talker"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no such container: talker"));
    host.assert_no_container_left();
}

#[test]
fn a_restart_policy_keeps_the_ports_owned_across_restarts() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let command = ["/bin/sh", "-c", "sleep 0.2; exit 3"];
    host.run_detached(
        "flaky",
        "20530/tcp",
        &["--restart", "on-failure:4"],
        &command,
    );
    let mut samples = 0;
    wait_for("four restarts", || {
        // Between and during restarts, nobody else may take the port.
        assert_eq!(
            probe_on_host(&["tcp", "0.0.0.0", "20530"]),
            vec![taken()],
            "port free mid-restart"
        );
        samples += 1;
        host.inspect("flaky")["restart_count"].as_u64() == Some(4)
    });
    assert!(samples > 1);
    wait_for("the last exit", || {
        host.inspect("flaky")["state"] == "exited"
    });
    assert_eq!(host.inspect("flaky")["exit_code"], 3);
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "20530"]), vec![0]);
    assert!(host.exec(&["rm", "flaky"]).status.success());
    host.assert_no_container_left();
}

#[test]
fn api_errors_are_json_with_a_code_and_the_socket_is_root_only() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    host.run_detached("holder", "20540/tcp", &[], &[&probe, "sleep", "60"]);
    let mode = std::fs::metadata(host.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let cases: [(&str, &str, &str, u16, &str); 9] = [
        ("GET", "/v1/containers/nope", "", 404, "not_found"),
        ("GET", "/v1/nothing-here", "", 404, "not_found"),
        (
            "GET",
            "/v1/containers?all=maybe",
            "",
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers/holder/kill?signal=NOPE",
            "",
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers",
            "{not json",
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers",
            r#"{"rootfs":"/","command":["true"],"ports":["70000"]}"#,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/containers",
            r#"{"rootfs":"/","command":["true"],"ports":["20540"]}"#,
            409,
            "port_conflict",
        ),
        (
            "POST",
            "/v1/containers",
            r#"{"name":"holder","rootfs":"/","command":["true"]}"#,
            409,
            "name_in_use",
        ),
        (
            "DELETE",
            "/v1/containers/holder",
            "",
            409,
            "container_running",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got_status, json) = api(&host, method, path, body);
        assert_eq!(
            (got_status, json["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {body}: {json}"
        );
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
    let (_, conflict) = api(
        &host,
        "POST",
        "/v1/containers",
        r#"{"rootfs":"/","command":["true"],"ports":["20540"]}"#,
    );
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("owned by container holder"),
        "{conflict}"
    );
    let (status, list) = api(&host, "GET", "/v1/containers", "");
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));
    assert!(host.exec(&["rm", "-f", "holder"]).status.success());
    host.assert_no_container_left();
}

#[test]
fn port_shows_where_each_owned_port_listens() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let porty = host.start(
        "porty",
        "21090/tcp,127.0.0.1:21091/udp",
        &[&probe, "sleep", "60"],
    );
    let lines = |args: &[&str]| {
        let output = host.exec(args);
        assert!(output.status.success(), "{}", describe(&output));
        let mut lines: Vec<String> = stdout(&output).lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        lines(&["port", "porty"]),
        [
            "21090/tcp -> 0.0.0.0:21090",
            "21090/tcp -> [::]:21090",
            "21091/udp -> 127.0.0.1:21091"
        ]
    );
    assert_eq!(
        lines(&["port", "porty", "21090"]),
        ["0.0.0.0:21090", "[::]:21090"]
    );
    assert_eq!(lines(&["port", "porty", "21091/udp"]), ["127.0.0.1:21091"]);
    let unowned = host.exec(&["port", "porty", "21092/udp"]);
    assert_eq!(unowned.status.code(), Some(125), "{}", describe(&unowned));
    assert_eq!(
        String::from_utf8_lossy(&unowned.stderr).trim(),
        "hostnetd: container porty owns no port 21092/udp"
    );
    host.stop(porty);
    host.assert_no_container_left();
}

#[test]
fn top_lists_a_running_containers_processes_and_refuses_an_exited_one() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let script = format!("{probe} sleep 60; true");
    let topped = host.start("topped", "", &["/bin/sh", "-c", &script]);
    let top = host.exec(&["top", "topped"]);
    assert!(top.status.success(), "{}", describe(&top));
    let text = stdout(&top);
    assert!(text.starts_with("UID"), "{text}");
    let row = |command: &str| -> Vec<String> {
        (text.lines())
            .find(|row| row.ends_with(command))
            .unwrap_or_else(|| panic!("no {command:?} in {text}"))
            .split_whitespace()
            .take(3)
            .map(str::to_string)
            .collect()
    };
    // UID PID PPID CMD: the sleeper is the shell's child, both root's.
    let shell = row(&format!("/bin/sh -c {script}"));
    let sleeper = row(&format!("{probe} sleep 60"));
    assert_eq!(
        (shell[0].as_str(), sleeper[0].as_str()),
        ("root", "root"),
        "{text}"
    );
    assert_eq!(
        sleeper[2], shell[1],
        "the sleeper's parent is the shell: {text}"
    );
    host.stop(topped);

    let ran = host.exec(&["run", "-d", "--name", "done", "--rootfs", "/", "--", "true"]);
    assert!(ran.status.success(), "{}", describe(&ran));
    wait_for("done to exit", || host.inspect("done")["state"] == "exited");
    let exited = host.exec(&["top", "done"]);
    assert_eq!(exited.status.code(), Some(125), "{}", describe(&exited));
    assert_eq!(
        String::from_utf8_lossy(&exited.stderr).trim(),
        "hostnetd: container done is exited, not running"
    );
    let removed = host.exec(&["rm", "done"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    host.assert_no_container_left();
}

#[test]
fn rename_changes_the_name_and_nothing_else() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    host.start("first", "21095", &[&probe, "sleep", "60"]);
    host.start("second", "", &[&probe, "sleep", "60"]);
    let before = host.inspect("first");

    let in_use = host.exec(&["rename", "first", "second"]);
    assert_eq!(in_use.status.code(), Some(125), "{}", describe(&in_use));
    assert!(
        String::from_utf8_lossy(&in_use.stderr).contains("the name \"second\" is already used"),
        "{}",
        describe(&in_use)
    );
    let renamed = host.exec(&["rename", "first", "renamed"]);
    assert!(renamed.status.success(), "{}", describe(&renamed));
    let after = host.inspect("renamed");
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["ports"], before["ports"]);
    assert_eq!(after["pid"], before["pid"]);
    let gone = host.exec(&["inspect", "first"]);
    assert!(!gone.status.success(), "{}", describe(&gone));
    // Still the owner of its port under its new name.
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "21095"]), vec![taken()]);

    let stopped = host.exec(&["stop", "-t", "2", "renamed", "second"]);
    assert!(stopped.status.success(), "{}", describe(&stopped));
}
