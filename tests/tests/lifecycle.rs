//! `start` and `restart`: an exited container runs again with its ports admitted again (and
//! refused, naming the new owner, when another took them), its writable layer and its log
//! kept. Ports 28320-28339.
use std::{
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::{
    describe, netprobe, probe_on_host, sample_image, skip_unless_root, stderr, stdout, taken,
    TestHost,
};

const OK: i32 = 0;

fn logs(host: &TestHost, name: &str) -> String {
    let output = host.exec(&["logs", name]);
    assert!(output.status.success(), "logs: {}", describe(&output));
    stdout(&output)
}

fn state(host: &TestHost, name: &str) -> String {
    host.inspect(name)["state"]
        .as_str()
        .expect("state")
        .to_string()
}

/// Waits until the container's log shows `line`.
fn wait_for_line(host: &TestHost, name: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logs(host, name).lines().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "{name} never printed {line:?}: {}",
            logs(host, name)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_exited_container_starts_again_with_its_ports_its_layer_and_its_log() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let busybox = sample_image("busybox.tar");
    let loaded = host.exec(&["load", "-i", &busybox.to_string_lossy()]);
    assert!(loaded.status.success(), "{}", describe(&loaded));
    // Each run adds a line to a file in its writable layer and prints how many there are.
    let run = host.exec(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--ports",
        "28320",
        "busybox",
        "sh",
        "-c",
        "echo run >> /runs; echo runs=$(wc -l < /runs); exec sleep 60",
    ]);
    assert!(run.status.success(), "{}", describe(&run));
    wait_for_line(&host, "keep", "runs=1");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "28320"]), [taken()]);

    let stopped = host.exec(&["stop", "-t", "1", "keep"]);
    assert!(stopped.status.success(), "{}", describe(&stopped));
    assert_eq!(state(&host, "keep"), "exited");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "28320"]), [OK]);

    let started = host.exec(&["start", "keep"]);
    assert!(started.status.success(), "{}", describe(&started));
    assert_eq!(stdout(&started), "keep\n");
    wait_for_line(&host, "keep", "runs=2");
    assert!(
        logs(&host, "keep").contains("runs=1\n"),
        "the log was not kept"
    );
    assert_eq!(state(&host, "keep"), "running");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "28320"]), [taken()]);
    // Starting a running container changes nothing.
    let again = host.exec(&["start", "keep"]);
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(state(&host, "keep"), "running");

    let restarted = host.exec(&["restart", "-t", "1", "keep"]);
    assert!(restarted.status.success(), "{}", describe(&restarted));
    wait_for_line(&host, "keep", "runs=3");
    assert_eq!(state(&host, "keep"), "running");
    assert!(host.exec(&["rm", "-f", "keep"]).status.success());
    host.assert_no_container_left();
}

#[test]
fn a_start_is_refused_naming_whoever_took_the_ports_meanwhile() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    host.run_detached("first", "28330", &[], &[&probe, "sleep", "60"]);
    assert!(host.exec(&["stop", "-t", "1", "first"]).status.success());
    host.run_detached("second", "28330", &[], &[&probe, "sleep", "60"]);

    let refused = host.exec(&["start", "first"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        stderr(&refused).contains("port 28330/tcp is owned by container second"),
        "{}",
        describe(&refused)
    );
    // Nothing changed: first stays exited, second keeps the port.
    assert_eq!(state(&host, "first"), "exited");
    assert_eq!(state(&host, "second"), "running");
    let owners = host.exec(&["ports"]);
    let listing = stdout(&owners);
    let lines: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains("28330"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", describe(&owners));
    assert!(lines[0].contains("second"), "{}", describe(&owners));

    assert!(host.exec(&["rm", "-f", "second"]).status.success());
    let started = host.exec(&["start", "first"]);
    assert!(started.status.success(), "{}", describe(&started));
    assert_eq!(state(&host, "first"), "running");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "28330"]), [taken()]);
    assert!(host.exec(&["rm", "-f", "first"]).status.success());
    host.assert_no_container_left();
}
