//! The container runtime: host networking, exit codes, docker-style flags, capabilities.
use hostnetd_tests::*;

fn run_shell(host: &TestHost, extra: &[&str], script: &str) -> std::process::Output {
    host.run_to_end("", extra, &["/bin/sh", "-c", script])
}

#[test]
fn the_exit_code_is_the_containers() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let output = run_shell(&host, &[], "exit 7");
    assert_eq!(output.status.code(), Some(7), "{}", describe(&output));
    host.assert_no_container_left();
}

#[test]
fn the_container_shares_the_host_network_but_not_its_pids() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let output = run_shell(&host, &[], "readlink /proc/self/ns/net; echo $$");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(host_net.to_str().unwrap()),
        "{}",
        describe(&output)
    );
    assert_eq!(
        lines.get(1).copied(),
        Some("1"),
        "not in its own pid namespace"
    );
}

#[test]
fn env_workdir_user_and_volumes_behave_as_in_docker() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let shared = host.scratch().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("in.txt"), "from the host").unwrap();
    // `--rootfs /` is never changed, so volumes go on mount points the host has (FHS's
    // /srv and /media).
    let volume = format!("{}:/srv", shared.display());
    let readonly = format!("{}:/media:ro", shared.display());
    let output = run_shell(
        &host,
        &["-e", "GREETING=hi", "-w", "/srv", "-u", "1234:1234", "-v", &volume, "-v", &readonly],
        "echo $GREETING; pwd; id -u; id -g; cat in.txt; echo; touch /media/x 2>/dev/null || echo ro-refused",
    );
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        stdout(&output),
        "hi\n/srv\n1234\n1234\nfrom the host\nro-refused\n"
    );
}

#[test]
fn a_volume_on_a_path_missing_from_a_host_rootfs_is_refused_and_nothing_is_created() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let missing = "/hostnetd-test-no-such-mount-point";
    let volume = format!("{}:{missing}", host.scratch().display());
    let output = run_shell(&host, &["-v", &volume], "true");
    assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
    assert!(
        hostnetd_tests::stderr(&output).contains(&format!(
            "{missing} does not exist in the --rootfs directory /, and hostnetd never changes a host directory"
        )),
        "{}",
        describe(&output)
    );
    assert!(
        !std::path::Path::new(missing).exists(),
        "the host's root was changed"
    );
    host.assert_no_container_left();
}

#[test]
fn the_root_filesystem_is_read_only_and_tmp_is_private() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let private = std::path::Path::new("/tmp/hostnetd-private-tmp-probe");
    let _ = std::fs::remove_file(private);
    let script = "touch /etc/hostnetd-test 2>/dev/null || echo ro; touch /tmp/hostnetd-private-tmp-probe && echo tmp-ok";
    let output = run_shell(&host, &[], script);
    assert_eq!(stdout(&output), "ro\ntmp-ok\n", "{}", describe(&output));
    assert!(!private.exists(), "the container's /tmp is the host's");
    assert!(!std::path::Path::new("/etc/hostnetd-test").exists());
}

#[test]
fn raw_sockets_need_net_raw_which_is_not_granted_by_default() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    let denied = host.run_to_end("", &[], &[&probe, "raw"]);
    assert_eq!(probe_results(&denied), vec![EPERM], "{}", describe(&denied));
    let allowed = host.run_to_end("", &["--cap-add", "NET_RAW"], &[&probe, "raw"]);
    assert_eq!(probe_results(&allowed), vec![0], "{}", describe(&allowed));
}

#[test]
fn bad_flags_are_refused_with_a_clear_error() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let cases: [(&[&str], &str); 5] = [
        (&["--name", "bad name"], "invalid container name"),
        (&["-v", "relative:/data"], "invalid volume"),
        (&["-w", "relative"], "invalid working directory"),
        (&["--cap-add", "NET_WIZARD"], "unknown capability"),
        (&["-u", "no-such-user"], "unknown user"),
    ];
    for (flags, expected) in cases {
        let output = host.run_to_end("", flags, &["true"]);
        assert!(!output.status.success(), "{flags:?} accepted");
        assert!(
            stderr(&output).contains(expected),
            "{flags:?}: {}",
            stderr(&output)
        );
    }
    // Without --rootfs the first argument names an image; one that is not stored (and may
    // not be pulled) is refused naming it and saying how to get it.
    let unknown = host.exec(&["run", "--pull", "never", "no-such-image", "true"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no such image: no-such-image; pull it"),
        "{}",
        describe(&unknown)
    );
    let both = host.exec(&["run", "--rootfs", "/", "--entrypoint", "sh", "--", "true"]);
    assert!(
        stderr(&both).contains("--entrypoint applies to images"),
        "{}",
        describe(&both)
    );
    host.assert_no_container_left();
}

#[test]
fn a_killed_monitor_is_reconciled_by_the_next_command() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let index = host.start("orphan", "20400/tcp", &[&probe, "sleep", "60"]);
    let _ = index;
    host.kill_monitor("orphan");
    // The next command that takes the host lock notices the dead monitor and releases all.
    let output = host.run_to_end(
        "20400/tcp",
        &[],
        &[&probe, "bind", "tcp", "0.0.0.0", "20400"],
    );
    assert_eq!(probe_results(&output), vec![0], "{}", describe(&output));
    host.assert_no_container_left();
}

#[test]
fn the_root_filesystem_is_mounted_where_the_host_never_sees_it() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    host.start("hidden-root", "20410/tcp", &[&probe, "sleep", "60"]);
    let details = host.inspect("hidden-root");
    let id = details["id"].as_str().expect("id");
    let monitor = details["monitor_pid"].as_u64().expect("monitor_pid");
    let rootfs = host
        .scratch()
        .join("run/containers")
        .join(id)
        .join("rootfs");
    let mounted_at_rootfs = |table: &str| {
        let target = format!(" {} ", rootfs.display());
        std::fs::read_to_string(table)
            .unwrap_or_else(|e| panic!("{table}: {e}"))
            .lines()
            .filter(|line| line.contains(&target))
            .count()
    };
    // runc reads and copies the host's table for every container it starts: it must not
    // grow with each container.
    assert_eq!(mounted_at_rootfs("/proc/self/mountinfo"), 0);
    assert_eq!(
        mounted_at_rootfs(&format!("/proc/{monitor}/mountinfo")),
        1,
        "the monitor's namespace holds the container's root"
    );
    // exec resolves a user against the container's own root.
    let user = host.exec(&["exec", "--user", "nobody", "hidden-root", "id", "-u"]);
    assert!(user.status.success(), "{}", describe(&user));
    assert_eq!(stdout(&user).trim(), "65534");
    let removed = host.exec(&["rm", "-f", "hidden-root"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    host.assert_no_container_left();
    assert_eq!(mounted_at_rootfs("/proc/self/mountinfo"), 0);
}

#[test]
fn a_listing_whose_reader_went_away_ends_by_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt as _;
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    host.start("piped", "20420/tcp", &[&probe, "sleep", "60"]);
    // `hostnetd ps | head -0`: the reader is gone before anything is written.
    let mut child = host
        .hostnetd()
        .arg("ps")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hostnetd ps");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for hostnetd ps");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{}",
        describe(&output)
    );
    assert!(output.stderr.is_empty(), "{}", describe(&output));
    let removed = host.exec(&["rm", "-f", "piped"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    host.assert_no_container_left();
}
