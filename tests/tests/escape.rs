//! Escape attempts: from inside a container (default capabilities, running as root), every way
//! around its policy that we know of. Each must fail, and each test asserts how: the errno, or
//! the exact outcome. docs/SECURITY.md maps each guarantee to the test here that checks it.
//! A refusal by hostnetd's programs has hostnetd's errno where the kernel lets its programs
//! choose it, else EPERM (`denied`, `taken`); the kernel's own errnos (capabilities, seccomp,
//! read-only mounts, file modes) are the same on every kernel.
use std::process::Command;

use hostnetd_tests::{
    cgroup2_mount, denied, describe, netprobe, probe_on_host, probe_results, skip_unless_root,
    stderr, taken, TestHost, EACCES, EPERM,
};

const OK: i32 = 0;
const ENOENT: i32 = 2;
const EROFS: i32 = 30;
/// ECONNREFUSED: the policy let the connect out and nothing listened there.
const REFUSED: i32 = 111;

/// Runs `netprobe PROBE...` in a fresh container with `flags`; the results, one per attempt.
fn attempt(host: &TestHost, flags: &[&str], probe: &[&str]) -> Vec<i32> {
    let netprobe = netprobe();
    let mut command = vec![netprobe.as_str()];
    command.extend(probe);
    let output = host.run_to_end("", flags, &command);
    assert!(output.status.success(), "{probe:?}: {}", describe(&output));
    probe_results(&output)
}

/// Starts a container that owns `ports` and holds `binds` (netprobe bind probes, kept open).
fn start_owner(host: &mut TestHost, name: &str, ports: &str, binds: &[&str]) {
    let probe = netprobe();
    let mut command = vec![probe.as_str(), "bind"];
    command.extend(binds);
    host.start(name, ports, &command);
    let expected = "ok\n".repeat(binds.iter().filter(|w| **w == "hold").count());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while hostnetd_tests::stdout(&host.exec(&["logs", name])) != expected {
        assert!(std::time::Instant::now() < deadline, "{name} never bound");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn v4_mapped_dual_stack_and_reuseport_binds_cannot_take_another_containers_port() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    // The owner holds its ports with SO_REUSEPORT: without the hooks, another socket with
    // SO_REUSEPORT (of the same user, root) would share them.
    let owned = "tcp 0.0.0.0 22100 reuseport hold udp 0.0.0.0 22100 reuseport hold";
    let owned: Vec<&str> = owned.split(' ').collect();
    start_owner(&mut host, "owner", "22100/tcp,22100/udp", &owned);
    let attacks = [
        "bind",
        "tcp",
        "::ffff:127.0.0.1",
        "22100", // v4-mapped
        "tcp",
        "::ffff:0.0.0.0",
        "22100",
        "reuseport", // v4-mapped any, SO_REUSEPORT
        "tcp",
        "::",
        "22100",
        "dualstack", // dual-stack any
        "tcp",
        "::",
        "22100", // IPv6 only: the port is owned in both families
        "tcp",
        "0.0.0.0",
        "22100",
        "reuseport",
        "tcp",
        "127.0.0.1",
        "22100",
        "reuseport",
        "udp",
        "0.0.0.0",
        "22100",
        "reuseport",
        "udp",
        "::",
        "22100",
        "dualstack",
        "reuseport",
        "udp",
        "::ffff:127.0.0.1",
        "22100",
        "tcp",
        "::",
        "22101",
        "dualstack", // its own port: allowed
    ];
    let results = attempt(&host, &["--ports", "22101"], &attacks);
    let mut expected = vec![taken(); 9];
    expected.push(OK);
    assert_eq!(results, expected);
    host.stop(0);
    host.assert_no_container_left();
}

#[test]
fn raw_and_packet_sockets_are_refused() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let probe = netprobe();
    let script = format!("{probe} raw; {probe} raw6; {probe} packet");
    let output = host.run_to_end("", &[], &["/bin/sh", "-c", &script]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(probe_results(&output), vec![EPERM, EPERM, EPERM]);
    host.assert_no_container_left();
}

/// A network namespace made with `ip netns add`, deleted on drop.
struct NetnsGuard(String);

impl NetnsGuard {
    fn add(name: &str) -> Self {
        let status = Command::new("ip").args(["netns", "add", name]).status();
        assert!(status.is_ok_and(|s| s.success()), "ip netns add {name}");
        Self(name.to_string())
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn new_network_namespaces_are_refused_and_the_hooks_follow_the_cgroup() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    assert_eq!(attempt(&host, &[], &["unshare-net"]), vec![EPERM]);
    // A user namespace would give every capability over a network namespace of its own.
    assert_eq!(
        attempt(&host, &[], &["unshare-user-net", "22110"]),
        vec![EPERM]
    );
    let netns = NetnsGuard::add(&format!("{}-escape", host.name));
    // Volumes go on mount points the host's root has: hostnetd never creates them there.
    let inside = format!("/media/{}", netns.0);
    let flags = ["-v", "/run/netns:/media:ro"];
    assert_eq!(attempt(&host, &flags, &["setns", &inside]), vec![EPERM]);
    // Granted CAP_SYS_ADMIN (never by default), a container may make a user and a network
    // namespace: the bind hooks are the cgroup's, so an undeclared port is refused there too.
    let admin = ["--cap-add", "SYS_ADMIN"];
    assert_eq!(
        attempt(&host, &admin, &["unshare-user-net", "22110"]),
        vec![OK, denied()]
    );
    drop(netns);
    host.assert_no_container_left();
}

#[test]
fn a_container_cannot_move_into_another_cgroup() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    start_owner(
        &mut host,
        "victim",
        "22120",
        &["tcp", "0.0.0.0", "22120", "hold"],
    );
    let victim = host.inspect("victim")["cgroup"]
        .as_str()
        .unwrap()
        .to_string();
    let root = cgroup2_mount();
    let probe = netprobe();
    let attempts = [
        format!("{probe} join-cgroup {victim}/ctr/cgroup.procs"),
        format!("{probe} join-cgroup {victim}/cgroup.procs"),
        format!("{probe} join-cgroup {}/cgroup.procs", root.display()),
        format!("{probe} remount-rw {}", root.display()),
        format!("{probe} mount cgroup2 /tmp"),
        // Had a move succeeded, the victim's port would now be ours.
        format!("{probe} bind tcp 0.0.0.0 22120"),
    ];
    let output = host.run_to_end("", &[], &["/bin/sh", "-c", &attempts.join("; ")]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        probe_results(&output),
        vec![EROFS, EROFS, EROFS, EPERM, EPERM, taken()]
    );
    host.stop(0);
    host.assert_no_container_left();
}

#[test]
fn the_bpf_syscall_and_the_pins_are_out_of_reach() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    start_owner(
        &mut host,
        "victim",
        "22130",
        &["tcp", "0.0.0.0", "22130", "hold"],
    );
    let id = host.inspect("victim")["id"].as_str().unwrap().to_string();
    let pins = host.pin_root();
    let owners_map = pins.join("maps/PORT_OWNERS").display().to_string();
    let victim_link = pins
        .join(format!("containers/{id}/bind4"))
        .display()
        .to_string();
    assert!(std::path::Path::new(&victim_link).exists());
    assert_eq!(attempt(&host, &[], &["bpf-prog-ids"]), vec![EPERM]);
    assert_eq!(attempt(&host, &[], &["bpf-map-create"]), vec![EPERM]);
    assert_eq!(
        attempt(&host, &[], &["bpf-obj-get", &owners_map]),
        vec![EPERM]
    );
    assert_eq!(
        attempt(&host, &[], &["bpf-link-detach", &victim_link]),
        vec![EPERM]
    );
    assert_eq!(attempt(&host, &[], &["mount", "bpf", "/tmp"]), vec![EPERM]);
    // Even granted CAP_BPF (never by default), which lets bpf(2) through, the pins are not
    // there to open: /sys is shown without the BPF filesystem mounted on it.
    let cap_bpf = ["--cap-add", "BPF"];
    assert_eq!(
        attempt(&host, &cap_bpf, &["bpf-obj-get", &owners_map]),
        vec![ENOENT]
    );
    assert_eq!(
        attempt(&host, &cap_bpf, &["bpf-link-detach", &victim_link]),
        vec![ENOENT]
    );
    let listing = host.run_to_end("", &[], &["/bin/ls", "-A", "/sys/fs/bpf"]);
    assert!(listing.status.success(), "{}", describe(&listing));
    assert_eq!(
        hostnetd_tests::stdout(&listing),
        "",
        "the BPF filesystem is visible"
    );
    // And enforcement is whole: the victim's port is still its own.
    assert_eq!(probe_on_host(&["tcp", "0.0.0.0", "22130"]), vec![taken()]);
    host.stop(0);
    host.assert_no_container_left();
}

#[test]
fn the_api_socket_is_out_of_reach() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    // Any command starts the daemon, and with it the socket.
    assert!(host.exec(&["ps"]).status.success());
    let socket = host.socket();
    assert!(socket.exists());
    let path = socket.display().to_string();
    // The run directory is not in a container's view of the host.
    assert_eq!(attempt(&host, &[], &["unix-connect", &path]), vec![ENOENT]);
    // Mounted in on purpose, it still answers root alone (mode 0600): here, nobody.
    let run_dir = socket.parent().unwrap().display().to_string();
    let volume = format!("{run_dir}:/srv:ro");
    let flags = ["-v", &volume, "-u", "65534"];
    let inside = "/srv/hostnetd.sock";
    assert_eq!(
        attempt(&host, &flags, &["unix-connect", inside]),
        vec![EACCES]
    );
    host.assert_no_container_left();
}

#[test]
fn port_ranges_cannot_slip_past_single_port_rules() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    start_owner(
        &mut host,
        "single",
        "22150",
        &["tcp", "0.0.0.0", "22150", "hold"],
    );
    // A range over another container's single port is refused whole, before anything runs.
    let output = host.run_to_end("22140-22160", &[], &["true"]);
    assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
    let id = host.inspect("single")["id"].as_str().unwrap()[..12].to_string();
    assert_eq!(
        stderr(&output).trim(),
        format!("hostnetd: cannot own the requested ports: port 22150/tcp is owned by container single ({id})")
    );
    let owned: Vec<String> = (host.kernel_owners().iter())
        .map(|entry| entry["port"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(owned, vec!["22150/tcp"], "nothing of the range was claimed");
    // Ports just outside a declared range are undeclared; the single port stays its owner's.
    let binds = [
        "bind", "tcp", "0.0.0.0", "22140", "tcp", "0.0.0.0", "22141", "tcp", "0.0.0.0", "22149",
        "tcp", "0.0.0.0", "22150", "tcp", "0.0.0.0", "22151", "udp", "0.0.0.0", "22145",
    ];
    assert_eq!(
        attempt(&host, &["--ports", "22141-22149"], &binds),
        vec![denied(), OK, OK, taken(), denied(), denied()]
    );
    // Egress: a port range's edges, and a single denied port inside an allowed range.
    let egress = [
        "--egress-allow",
        "127.0.0.1:22161-22169/tcp",
        "--egress-deny",
        "127.0.0.1:22165",
    ];
    let connects: Vec<String> = [22160, 22161, 22164, 22165, 22166, 22169, 22170]
        .iter()
        .flat_map(|port| ["tcp".to_string(), "127.0.0.1".to_string(), port.to_string()])
        .collect();
    let mut probe = vec!["connect"];
    probe.extend(connects.iter().map(String::as_str));
    assert_eq!(
        attempt(&host, &egress, &probe),
        vec![
            denied(),
            REFUSED,
            REFUSED,
            denied(),
            REFUSED,
            REFUSED,
            denied()
        ]
    );
    host.stop(0);
    host.assert_no_container_left();
}
