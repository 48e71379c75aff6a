//! Faults: the daemon killed with SIGKILL in the middle of run, stop and update; runc failing
//! half-way through a start; the state directory's disk full; many commands at once. After
//! each, the host must be consistent (records, cgroups, the kernel's tables and what it
//! enforces agree) and the next command must work. (A container exiting while the daemon is
//! down is in daemon.rs.)
use std::{
    ffi::CString,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use hostnetd_tests::{
    denied, describe, netprobe, probe_on_host, probe_results, reserved_ports, skip_unless_root,
    stderr, stdout, taken, KillOnDrop, TestHost,
};

/// ECONNREFUSED: the policy let the connect out and nothing listened there.
const REFUSED: i32 = 111;
const LOST: &str = "lost the connection to the hostnetd daemon";

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The container records on disk, as the daemon left them.
fn records(host: &TestHost) -> Vec<serde_json::Value> {
    let dir = host.scratch().join("state/containers");
    (std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
        .filter_map(|entry| serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok())
        .collect()
}

fn kill_daemon(host: &TestHost) -> i32 {
    let pid = host.daemon_pid().expect("a daemon runs");
    // SAFETY: SIGKILL to the daemon this test host started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // That daemon, not whichever the pid file names: a command racing the kill starts another.
    wait_for("the daemon to die", || !alive(pid));
    pid
}

/// Whether `pid` runs (a zombie awaiting its reaper does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        (stat.rsplit(')').next()).is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// An executable script in the test's scratch directory standing in for runc: `body`, then
/// the real runc with the same arguments.
fn fake_runc(host: &TestHost, name: &str, body: &str) -> PathBuf {
    let path = host.scratch().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\nexec runc \"$@\"\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn spawn(host: &TestHost, args: &[&str]) -> Child {
    host.hostnetd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hostnetd")
}

/// A command the daemon died under: it fails (`code`), saying so after `prefix`.
fn assert_lost(output: &Output, code: i32, prefix: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", describe(output));
    let lost = format!("hostnetd: {prefix}{LOST}");
    assert!(stderr(output).starts_with(&lost), "{}", describe(output));
}

#[test]
fn a_daemon_killed_during_run_leaves_the_container_to_its_monitor() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    // runc run takes two seconds: the daemon dies while the monitor is starting it.
    let runc = fake_runc(
        &host,
        "slow-runc",
        "for a; do [ \"$a\" = run ] && sleep 2; done",
    );
    host.set_env("HOSTNETD_RUNC", &runc.display().to_string());
    assert!(host.exec(&["ps"]).status.success());
    let daemon = host.daemon_pid().unwrap();
    let probe = netprobe();
    let run = spawn(
        &host,
        &[
            "run", "-d", "--name", "victim", "--ports", "22200", "--rootfs", "/", "--", &probe,
            "sleep", "60",
        ],
    );
    // Once the monitor has made the record its own, it is past the daemon's hands.
    wait_for("the monitor to adopt the container", || {
        records(&host).iter().any(|r| {
            r["supervisor"]["pid"]
                .as_i64()
                .is_some_and(|p| p != i64::from(daemon))
        })
    });
    kill_daemon(&host);
    assert_lost(&run.wait_with_output().unwrap(), 125, "");
    wait_for("the container to run", || {
        host.inspect("victim")["state"] == "running"
    });
    assert_ne!(host.daemon_pid(), Some(daemon), "a new daemon answered");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "22200"]), vec![taken()]);
    let owners = host.kernel_owners();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0]["cgroup_id"], host.inspect("victim")["cgroup_id"]);
    assert!(host.exec(&["rm", "-f", "victim"]).status.success());
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "22200"]), vec![0]);
    host.assert_no_container_left();
}

#[test]
fn a_daemon_killed_during_stop_leaves_the_container_running_and_stoppable() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    // As the container's pid 1, sleep has no SIGTERM handler: only the SIGKILL ends it.
    host.run_detached("victim", "22210", &[], &["/bin/sleep", "120"]);
    let stop = spawn(&host, &["stop", "-t", "60", "victim"]);
    wait_for("the stop request", || {
        records(&host).iter().any(|r| r["stop_requested"] == true)
    });
    kill_daemon(&host);
    // stop reports per container, and exits 1 when any failed.
    assert_lost(&stop.wait_with_output().unwrap(), 1, "victim: ");
    let view = host.inspect("victim");
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "22210"]), vec![taken()]);
    let stopped = host.exec(&["stop", "-t", "1", "victim"]);
    assert!(stopped.status.success(), "{}", describe(&stopped));
    assert_eq!(host.inspect("victim")["state"], "exited");
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "22210"]), vec![0]);
    assert!(!reserved_ports().contains(&22210));
    assert!(host.exec(&["rm", "victim"]).status.success());
    host.assert_no_container_left();
}

/// What the kernel lets the container's processes connect to: 22220 and 22221 on loopback
/// (ECONNREFUSED: let out; `denied()`, EACCES or the EPERM of kernels without
/// `bpf_set_retval`: kept in), from a process moved into its cgroup.
fn enforced(host: &TestHost, name: &str) -> Vec<i32> {
    let cgroup = host.inspect(name)["cgroup"].as_str().unwrap().to_string();
    let script = format!(
        "echo $$ > {cgroup}/ctr/cgroup.procs && exec {} connect tcp 127.0.0.1 22220 tcp 127.0.0.1 22221",
        netprobe()
    );
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    probe_results(&output)
}

/// What the record says the container may connect to, in `enforced`'s terms.
fn recorded(host: &TestHost, name: &str) -> Vec<i32> {
    let allowed = host.inspect(name)["policy"]["egress_allow"].to_string();
    [22220, 22221]
        .iter()
        .map(|port| {
            if allowed.contains(&format!(":{port}")) {
                REFUSED
            } else {
                denied()
            }
        })
        .collect()
}

#[test]
fn a_daemon_killed_during_update_leaves_the_record_and_the_kernel_in_agreement() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    let allow = |port: u16| format!("127.0.0.1:{port}/tcp");
    host.run_detached(
        "victim",
        "22222",
        &["--egress-allow", &allow(22220)],
        &[&probe, "sleep", "120"],
    );
    assert_eq!(enforced(&host, "victim"), vec![REFUSED, denied()]);
    // Killed at a different moment each time: before, while and after the kernel changes.
    for (round, delay_ms) in [0u64, 5, 10, 20, 40, 80].into_iter().enumerate() {
        let port = if round % 2 == 0 { 22221 } else { 22220 };
        let update = spawn(&host, &["update", "--egress-allow", &allow(port), "victim"]);
        thread::sleep(Duration::from_millis(delay_ms));
        if host.daemon_running() {
            kill_daemon(&host);
        }
        let _ = update.wait_with_output();
        assert_eq!(
            enforced(&host, "victim"),
            recorded(&host, "victim"),
            "round {round}"
        );
    }
    // The worst moment, made certain: the kernel changed and the record did not. A daemon
    // starting after the crash puts back what the record says.
    let id = host.inspect("victim")["id"].as_str().unwrap().to_string();
    let set = host.exec(&["update", "--egress-allow", &allow(22221), "victim"]);
    assert!(set.status.success(), "{}", describe(&set));
    kill_daemon(&host);
    let path = host.scratch().join(format!("state/containers/{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(":22221/tcp", ":22220/tcp")).unwrap();
    assert_eq!(
        enforced(&host, "victim"),
        vec![REFUSED, denied()],
        "the record won"
    );
    assert!(host.exec(&["rm", "-f", "victim"]).status.success());
    host.assert_no_container_left();
}

#[test]
fn runc_failing_to_start_leaves_nothing_behind() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    // runc run fails, saying why in its log as runc does.
    let body = "log=; previous=; for a; do [ \"$previous\" = --log ] && log=$a; previous=$a; done
for a; do [ \"$a\" = run ] && { echo '{\"level\":\"error\",\"msg\":\"fake runc: run refused\"}' >> \"$log\"; exit 1; }; done";
    let runc = fake_runc(&host, "failing-runc", body);
    host.set_env("HOSTNETD_RUNC", &runc.display().to_string());
    let probe = netprobe();
    for detach in [true, false] {
        let mut args = vec![
            "run",
            "--name",
            "doomed",
            "--ports",
            "22230,22231/udp",
            "--rootfs",
            "/",
        ];
        if detach {
            args.push("-d");
        }
        args.extend(["--", &probe, "sleep", "60"]);
        let output = host.exec(&args);
        assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
        let message = stderr(&output);
        assert!(
            message.starts_with("hostnetd: the container failed to start: runc run ")
                && message
                    .trim_end()
                    .ends_with(" failed: fake runc: run refused"),
            "{message}"
        );
        assert!(
            records(&host).is_empty(),
            "a record was kept: {:?}",
            records(&host)
        );
        assert_eq!(
            probe_on_host(&["tcp", "0.0.0.0", "22230", "udp", "0.0.0.0", "22231"]),
            vec![0, 0]
        );
        let reserved = reserved_ports();
        assert!(
            !reserved.contains(&22230) && !reserved.contains(&22231),
            "{reserved:?}"
        );
        let runc_state = host.scratch().join("run/runc");
        let left: Vec<_> = std::fs::read_dir(&runc_state)
            .into_iter()
            .flatten()
            .collect();
        assert!(left.is_empty(), "runc still knows a container: {left:?}");
        host.assert_no_container_left();
    }
}

/// A daemon started from a copy of the binary that is then deleted: it cannot start monitors
/// any more (`/proc/self/exe` is gone), as after an upgrade that replaced the binary under a
/// running daemon.
fn orphaned_daemon(host: &TestHost) -> KillOnDrop {
    let copy = host.scratch().join("hostnetd-deleted");
    std::fs::copy(hostnetd_tests::hostnetd_bin(), &copy).unwrap();
    let template = host.hostnetd();
    let mut command = Command::new(&copy);
    for (key, value) in template.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    let log = std::fs::File::create(host.scratch().join("orphaned-daemon.log")).unwrap();
    command
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // A process another test forks meanwhile holds the copy's write descriptor until it
    // executes, and executing a file open for writing fails with ETXTBSY: try again.
    let mut attempts = 0;
    let child = loop {
        match command.spawn() {
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            result => break result.unwrap(),
        }
    };
    let daemon = KillOnDrop::new(child);
    wait_for("the daemon's socket", || host.socket().exists());
    std::fs::remove_file(&copy).unwrap();
    daemon
}

#[test]
fn a_monitor_that_cannot_start_leaves_nothing_behind() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let daemon = orphaned_daemon(&host);
    let probe = netprobe();
    let output = host.exec(&[
        "run", "-d", "--name", "stranded", "--ports", "22280", "--rootfs", "/", "--", &probe,
        "sleep", "60",
    ]);
    assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
    assert!(
        stderr(&output).contains("hostnetd monitor"),
        "{}",
        describe(&output)
    );
    assert!(records(&host).is_empty(), "{:?}", records(&host));
    assert!(
        host.kernel_owners().is_empty(),
        "{:?}",
        host.kernel_owners()
    );
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "22280"]), vec![0]);
    drop(daemon);
    host.assert_no_container_left();
}

/// A tmpfs of `size` mounted at `path` for the test, unmounted on drop.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let c = |text: &str| CString::new(text).unwrap();
        let (target, options) = (c(&path.display().to_string()), c(&format!("size={size}")));
        // SAFETY: mount with valid C strings.
        let rc = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs at {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Self(path.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Unmounted only: the scratch directory around it is the test host's to remove, which
        // it does without ever walking through a mount (see `remove_scratch`).
        let target = CString::new(self.0.display().to_string()).unwrap();
        // SAFETY: unmounting the tmpfs this guard mounted (already gone is fine).
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The host's teardown needs the state directory: the host goes first, the mount after.
struct FullDiskHost {
    host: TestHost,
    _state: TmpfsMount,
}

impl Drop for FullDiskHost {
    /// Room first, even when the test failed with the disk full: the host's cleanup writes.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.host.scratch().join("state").join(FILLER));
    }
}

const FILLER: &str = "filler";

/// Fills the file system under `dir` to the last byte; the file that does it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join(FILLER);
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    let error = loop {
        if let Err(error) = file.write_all(&chunk) {
            break error;
        }
    };
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    path
}

#[test]
fn a_full_state_disk_is_a_clear_error_corrupts_nothing_and_passes() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let state = host.scratch().join("state");
    let full = FullDiskHost {
        _state: TmpfsMount::new(&state, "1m"),
        host,
    };
    let host = &full.host;
    let probe = netprobe();
    host.run_detached("before", "22240", &[], &[&probe, "sleep", "120"]);
    let record = std::fs::read(state.join("containers").join(format!(
        "{}.json",
        host.inspect("before")["id"].as_str().unwrap()
    )))
    .unwrap();
    let filler = fill(&state);
    let refused = host.exec(&[
        "run", "-d", "--name", "after", "--ports", "22241", "--rootfs", "/", "--", &probe, "sleep",
        "120",
    ]);
    assert_eq!(refused.status.code(), Some(125), "{}", describe(&refused));
    let message = stderr(&refused);
    let prefix = format!("hostnetd: cannot write {}/containers/", state.display());
    let suffix = ".json.tmp: No space left on device (os error 28); the file system of hostnetd's state directory is full: free space on it and retry\n";
    assert!(
        message.starts_with(&prefix) && message.ends_with(suffix),
        "{message}"
    );
    // Nothing half-made: no record or temporary file, no cgroup, no claim.
    let files: Vec<_> = std::fs::read_dir(state.join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // Containers' cgroups; the monitors have one of their own beside them.
    let cgroups = std::fs::read_dir(host.cgroup_parent_path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && e.file_name() != "monitors")
        .count();
    assert_eq!(cgroups, 1, "only the first container's cgroup");
    assert_eq!(
        probe_on_host(&["tcp", "0.0.0.0", "22241", "tcp", "0.0.0.0", "22240"]),
        vec![0, taken()]
    );
    // Stopping needs to write too: refused alike, and the container runs on, untouched.
    let stop = host.exec(&["stop", "-t", "1", "before"]);
    assert_eq!(stop.status.code(), Some(1), "{}", describe(&stop));
    assert!(
        stderr(&stop).contains("No space left on device"),
        "{}",
        describe(&stop)
    );
    assert_eq!(host.inspect("before")["state"], "running");
    let now = std::fs::read(state.join("containers").join(format!(
        "{}.json",
        host.inspect("before")["id"].as_str().unwrap()
    )))
    .unwrap();
    assert_eq!(now, record, "the record changed while the disk was full");
    // Once there is room again, everything works.
    std::fs::remove_file(filler).unwrap();
    host.run_detached("after", "22241", &[], &[&probe, "sleep", "120"]);
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "22241"]), vec![taken()]);
    let rm = host.exec(&["rm", "-f", "before", "after"]);
    assert!(rm.status.success(), "{}", describe(&rm));
    host.assert_no_container_left();
}

#[test]
fn many_commands_at_once_all_succeed_against_one_daemon() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    // Cold: no daemon runs yet, so every one of them may try to start it.
    let names: Vec<String> = (0..20).map(|n| format!("crowd-{n}")).collect();
    let ports: Vec<String> = (0..20).map(|n| (22250 + n).to_string()).collect();
    let mut children = Vec::new();
    for (name, port) in names.iter().zip(&ports) {
        children.push(spawn(
            &host,
            &[
                "run", "-d", "--name", name, "--ports", port, "--rootfs", "/", "--", &probe,
                "sleep", "120",
            ],
        ));
        children.push(spawn(&host, &["ps", "-a"]));
        children.push(spawn(&host, &["inspect", name]));
    }
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (n, chunk) in outputs.chunks(3).enumerate() {
        let [run, ps, inspect] = chunk else {
            unreachable!()
        };
        assert!(run.status.success(), "run {n}: {}", describe(run));
        assert!(ps.status.success(), "ps {n}: {}", describe(ps));
        // Racing its own run, an inspect finds the container or says plainly it does not.
        let missing = format!("hostnetd: crowd-{n}: no such container: crowd-{n}\n");
        assert!(
            inspect.status.success() || stderr(inspect) == missing,
            "inspect {n}: {}",
            describe(inspect)
        );
    }
    let daemons = daemon_processes(&host);
    assert_eq!(daemons.len(), 1, "one daemon: {daemons:?}");
    let ps = stdout(&host.exec(&["ps"]));
    assert_eq!(
        ps.lines().filter(|line| line.contains("running")).count(),
        20,
        "{ps}"
    );
    let mut owned: Vec<String> = (host.kernel_owners().iter())
        .map(|e| e["port"].as_str().unwrap().to_string())
        .collect();
    owned.sort();
    let expected: Vec<String> = ports.iter().map(|p| format!("{p}/tcp")).collect();
    assert_eq!(owned, expected);
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    assert!(host.exec(&rm).status.success());
    host.assert_no_container_left();
}

/// Every `hostnetd daemon` process serving this test host (found by its socket argument).
fn daemon_processes(host: &TestHost) -> Vec<u32> {
    let socket = host.socket().display().to_string();
    (std::fs::read_dir("/proc").unwrap().flatten())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&b"daemon".as_slice()) && args.contains(&socket.as_bytes())
        })
        .collect()
}
