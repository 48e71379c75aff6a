//! Admission before start: conflicts refused with the owner named, races, reserved ports,
//! and nothing left behind whether the container exits or fails.
use std::process::{Command, Stdio};

use hostnetd_tests::*;

#[test]
fn a_second_web_server_is_refused_before_start_naming_the_owner() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let web1 = host.start(
        "web1",
        "20200/tcp",
        &[&probe, "listen", "0.0.0.0", "20200", "60"],
    );
    let marker = host.scratch().join("web2-ran");
    let touch = format!("touch {}", marker.display());
    let web2 = host.run_to_end("20200/tcp", &["--name", "web2"], &["/bin/sh", "-c", &touch]);
    assert!(!web2.status.success(), "web2 started: {}", describe(&web2));
    let message = stderr(&web2);
    assert!(
        message.contains("port 20200/tcp is owned by container web1"),
        "{message}"
    );
    assert!(
        !marker.exists(),
        "web2's command ran although admission refused it"
    );
    let ps = stdout(&host.exec(&["ps", "-a"]));
    assert!(!ps.contains("web2"), "web2 left a record: {ps}");
    assert!(fetch(20200).is_ok(), "web1 stopped serving");
    host.stop(web1);
    host.assert_no_container_left();
}

/// A host process (netprobe) holding UDP `port` on every address, once it says it does.
fn hold_udp_port(port: &str) -> KillOnDrop {
    let mut holder = KillOnDrop::new(
        Command::new(netprobe())
            .args(["bind", "udp", "0.0.0.0", port, "hold"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn holder"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.child().stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("holder output");
    assert_eq!(line.trim(), "ok");
    holder
}

#[test]
fn a_port_bound_by_a_host_process_is_refused_naming_the_process() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let holder = hold_udp_port("20210");
    let output = host.run_to_end("20210/udp", &[], &["true"]);
    let pid = holder.pid();
    drop(holder);
    assert!(!output.status.success(), "{}", describe(&output));
    let message = stderr(&output);
    let expected = format!("port 20210/udp is already bound on the host by pid {pid}");
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("netprobe"), "{message}");
    host.assert_no_container_left();
}

/// A cgroup this test made, removed (once empty) on drop.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A socket's holder is looked for first in the cgroup that made it; one that moved away from
/// it since is found by the search through every process, and named all the same.
#[test]
fn a_port_held_from_another_cgroup_than_the_sockets_is_refused_naming_the_holder() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let mut path = host.cgroup_parent_path().into_os_string();
    path.push("-moved");
    let moved = TestCgroup(path.into());
    std::fs::create_dir(&moved.0).expect("create the holder's new cgroup");
    // Declared after the cgroup, so dropped (killed) before the cgroup is removed.
    let holder = hold_udp_port("20212");
    std::fs::write(moved.0.join("cgroup.procs"), holder.pid().to_string())
        .expect("move the holder");
    let output = host.run_to_end("20212/udp", &[], &["true"]);
    assert!(!output.status.success(), "{}", describe(&output));
    let message = stderr(&output);
    let expected = format!(
        "port 20212/udp is already bound on the host by pid {}",
        holder.pid()
    );
    assert!(message.contains(&expected), "{message}");
    drop(holder);
    drop(moved);
    host.assert_no_container_left();
}

/// The monitors run in a cgroup of their own beside the containers', out of the daemon's.
#[test]
fn monitors_run_in_their_own_cgroup() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    host.run_detached("watched", "20214/tcp", &[], &["sleep", "60"]);
    let pid = host.inspect("watched")["monitor_pid"]
        .as_i64()
        .expect("monitor_pid");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let unified = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    assert_eq!(
        cgroup2_mount().join(unified.trim_start_matches('/')),
        host.cgroup_parent_path().join("monitors")
    );
    let output = host.exec(&["rm", "-f", "watched"]);
    assert!(output.status.success(), "{}", describe(&output));
    host.assert_no_container_left();
}

#[test]
fn racing_runs_for_one_port_have_exactly_one_winner() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    for round in 0..10 {
        let contenders: Vec<_> = (0..3)
            .map(|n| {
                let name = format!("racer-{round}-{n}");
                host.hostnetd()
                    .args([
                        "run", "--rm", "--rootfs", "/", "--ports", "20220", "--name", &name,
                    ])
                    .args(["--", &probe, "bind", "tcp", "0.0.0.0", "20220"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let outputs: Vec<_> = contenders
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let winners: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
        let refused = outputs
            .iter()
            .filter(|o| stderr(o).contains("is owned by container racer-"));
        let refused = refused.count();
        // A loser may also start after the winner already exited: then it wins too, fairly.
        assert!(!winners.is_empty(), "round {round}: nobody won");
        assert_eq!(
            winners.len() + refused,
            3,
            "round {round}: {:?}",
            outputs.iter().map(describe).collect::<Vec<_>>()
        );
        for winner in winners {
            assert_eq!(
                probe_results(winner),
                vec![0],
                "round {round}: {}",
                describe(winner)
            );
        }
    }
    host.assert_no_container_left();
}

#[test]
fn concurrent_long_running_contenders_never_both_own_the_port() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    for round in 0..5 {
        let spawn = |n: usize| {
            host.hostnetd()
                .args(["run", "--rm", "--rootfs", "/", "--ports", "20225", "--name"])
                .arg(format!("holder-{round}-{n}"))
                .args(["--", &probe, "sleep", "3"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        };
        let (a, b) = (spawn(0), spawn(1));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        assert!(
            a.status.success() != b.status.success(),
            "round {round}: exactly one must win\n{}\n{}",
            describe(&a),
            describe(&b)
        );
    }
    host.assert_no_container_left();
}

#[test]
fn owned_ports_are_reserved_and_the_administrators_entries_survive() {
    if skip_unless_root() {
        return;
    }
    let sysctl = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let before = hostnetd_tests::read_sysctl(sysctl);
    let admin = if before.trim().is_empty() {
        "20239".to_string()
    } else {
        format!("{},20239", before.trim())
    };
    std::fs::write(sysctl, &admin).unwrap();
    let restore = Restore(sysctl, before);
    let mut host = TestHost::new();
    let probe = netprobe();
    let web = host.start("res", "20230-20232,20239/udp", &[&probe, "sleep", "60"]);
    let reserved = reserved_ports();
    for port in [20230, 20231, 20232, 20239] {
        assert!(
            reserved.contains(&port),
            "{port} not reserved: {reserved:?}"
        );
    }
    host.stop(web);
    let reserved = reserved_ports();
    assert!(
        reserved.contains(&20239),
        "the administrator's entry was removed"
    );
    for port in [20230, 20231, 20232] {
        assert!(
            !reserved.contains(&port),
            "{port} still reserved after release"
        );
    }
    drop(host);
    drop(restore);
}

struct Restore(&'static str, String);
impl Drop for Restore {
    fn drop(&mut self) {
        // A newline, not an empty write: the kernel ignores an empty one.
        let _ = std::fs::write(self.0, format!("{}\n", self.1.trim()));
    }
}

#[test]
fn invalid_port_specs_are_refused_and_change_nothing() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let cases = [
        ("0", "port 0"),
        ("70000/tcp", "70000"),
        ("20300-20290", "20300-20290"),
        ("20300/sctp", "sctp"),
        ("web", "web"),
    ];
    for (spec, mentioned) in cases {
        let output = host.run_to_end(spec, &[], &["true"]);
        assert!(!output.status.success(), "{spec} accepted");
        let message = stderr(&output);
        assert!(message.contains(mentioned), "{spec}: {message}");
    }
    assert!(
        !host.bpf_dir().exists(),
        "a refused spec loaded the datapath"
    );
    assert!(
        !host.cgroup_parent_path().exists(),
        "a refused spec created cgroups"
    );
}

#[test]
fn a_failing_start_releases_everything() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let output = host.run_to_end("20310/tcp,20311/udp", &[], &["/nonexistent/binary"]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        stderr(&output).contains("runc run "),
        "{}",
        describe(&output)
    );
    host.assert_no_container_left();
    assert_eq!(
        probe_on_host(&["tcp", "0.0.0.0", "20310", "udp", "0.0.0.0", "20311"]),
        vec![0, 0]
    );
    assert!(!reserved_ports().contains(&20310));
}
