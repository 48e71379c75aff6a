//! `hostnetd exec`: a process in a running container holds to the container's ports and
//! policy, its traffic is the container's, its exit code comes back, and the flags (-e, -u,
//! -w, -d) act as docker's. Ports 28300-28319.
use std::{
    io::Read as _,
    net::TcpListener,
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::{
    denied, describe, fetch, netprobe, probe_results, skip_unless_root, stderr, stdout, taken,
    TestHost,
};

fn wait_for_listener(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetch(port).is_err() {
        assert!(Instant::now() < deadline, "nothing listened on {port}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The container's total figures from `stats`.
fn total_tx_bytes(host: &TestHost, name: &str) -> u64 {
    let output = host.exec(&["stats", "--no-stream", "--format", "json", name]);
    assert!(output.status.success(), "stats: {}", describe(&output));
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stats json");
    figures[0]["tx_bytes"].as_u64().expect("tx_bytes")
}

#[test]
fn an_execd_process_is_held_to_the_containers_ports_and_counted_to_it() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    host.run_detached(
        "execd",
        "28300",
        &[],
        &[&probe, "listen", "0.0.0.0", "28300", "60"],
    );
    wait_for_listener(28300);

    // Not declared: EACCES; declared but held by the main process: EADDRINUSE.
    let undeclared = host.exec(&["exec", "execd", &probe, "bind", "tcp", "0.0.0.0", "28301"]);
    assert!(undeclared.status.success(), "{}", describe(&undeclared));
    assert_eq!(
        probe_results(&undeclared),
        [denied()],
        "{}",
        describe(&undeclared)
    );
    let held = host.exec(&["exec", "execd", &probe, "bind", "tcp", "0.0.0.0", "28300"]);
    assert_eq!(probe_results(&held), [taken()], "{}", describe(&held));

    // Its bytes are the container's.
    let server = TcpListener::bind("127.0.0.1:28302").expect("bind the test's server");
    let reader = thread::spawn(move || {
        // The client waits for this side to close first.
        let (mut stream, _) = server.accept().expect("accept");
        let mut received = vec![0; 200_000];
        stream.read_exact(&mut received).map(|()| received.len())
    });
    let before = total_tx_bytes(&host, "execd");
    let client = host.exec(&[
        "exec",
        "execd",
        &probe,
        "tcpclient",
        "127.0.0.1",
        "28302",
        "200000",
        "0",
    ]);
    assert!(client.status.success(), "{}", describe(&client));
    assert_eq!(reader.join().expect("server").expect("read"), 200_000);
    let sent = total_tx_bytes(&host, "execd") - before;
    assert!(
        sent >= 200_000,
        "only {sent} bytes counted to the container"
    );

    // Exit codes come back; a command that is not there is 127, as in a shell.
    let seven = host.exec(&["exec", "execd", "sh", "-c", "exit 7"]);
    assert_eq!(seven.status.code(), Some(7), "{}", describe(&seven));
    let missing = host.exec(&["exec", "execd", "/no/such/command"]);
    assert_eq!(missing.status.code(), Some(127), "{}", describe(&missing));
    assert!(
        stderr(&missing).contains("hostnetd: cannot run \"/no/such/command\" in container execd"),
        "{}",
        describe(&missing)
    );
    host.exec(&["rm", "-f", "execd"]);
    host.assert_no_container_left();
}

#[test]
fn exec_takes_env_user_workdir_stdin_and_detach_and_refuses_a_stopped_container() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    host.run_detached(
        "flags",
        "28310",
        &["-e", "FROM_RUN=run"],
        &[&probe, "sleep", "60"],
    );

    let shown = host.exec(&[
        "exec",
        "-e",
        "ADDED=exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "flags",
        "sh",
        "-c",
        "echo $FROM_RUN $ADDED $(id -u) $(pwd)",
    ]);
    assert!(shown.status.success(), "{}", describe(&shown));
    let nobody = stdout(&host_command(&["id", "-u", "nobody"]))
        .trim()
        .to_string();
    assert_eq!(stdout(&shown).trim(), format!("run exec {nobody} /tmp"));

    // -i passes stdin on; without it the process reads nothing.
    let mut piped = host.hostnetd();
    piped.args(["exec", "-i", "flags", "sh", "-c", "tr a-z A-Z"]);
    let echoed = feed(piped, b"piped input\n");
    assert_eq!(stdout(&echoed), "PIPED INPUT\n", "{}", describe(&echoed));
    let mut closed = host.hostnetd();
    closed.args(["exec", "flags", "sh", "-c", "wc -c"]);
    let nothing = feed(closed, b"ignored\n");
    assert_eq!(stdout(&nothing).trim(), "0", "{}", describe(&nothing));

    // -d returns at once; the process runs on in the container's cgroup.
    let detached = host.exec(&["exec", "-d", "flags", &probe, "sleep", "60"]);
    assert!(detached.status.success(), "{}", describe(&detached));
    assert_eq!(stdout(&detached), "");
    let top = host.exec(&["top", "flags"]);
    let sleepers = stdout(&top)
        .lines()
        .filter(|l| l.contains("sleep 60"))
        .count();
    assert_eq!(sleepers, 2, "{}", describe(&top));
    let missing = host.exec(&["exec", "-d", "flags", "/no/such/command"]);
    assert_eq!(missing.status.code(), Some(125), "{}", describe(&missing));
    assert!(
        stderr(&missing).contains("cannot start the process in container flags"),
        "{}",
        describe(&missing)
    );

    let stopped = host.exec(&["stop", "-t", "1", "flags"]);
    assert!(stopped.status.success(), "{}", describe(&stopped));
    let refused = host.exec(&["exec", "flags", "true"]);
    assert_eq!(refused.status.code(), Some(125), "{}", describe(&refused));
    assert_eq!(
        stderr(&refused).trim(),
        "hostnetd: container flags is exited, not running"
    );
    host.exec(&["rm", "-f", "flags"]);
    host.assert_no_container_left();
}

fn host_command(args: &[&str]) -> std::process::Output {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run a host command")
}

/// Runs `command` with `input` on its stdin, to its end.
fn feed(mut command: std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hostnetd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("output")
}
