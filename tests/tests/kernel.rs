//! What the kernel can do, as hostnetd probes it, checked against oracles of its own (bpftool's
//! probes, and the kernel's BTF for TCX); and the fallbacks: TC
//! programs on a clsact qdisc where there is no TCX (or when asked), and packet sockets refused
//! by BPF LSM where it is active.
use std::process::Command;

use hostnetd_tests::{
    bpftool_probe, describe, kernel_has_tcx, netprobe, probe_results, run_ok, skip_unless_root,
    stdout, TestHost, EPERM,
};
use serde_json::Value;

/// `hostnetd info --json`'s feature table, by name.
fn features(host: &TestHost) -> Value {
    let output = host.exec(&["info", "--json"]);
    assert!(output.status.success(), "info: {}", describe(&output));
    let info: Value = serde_json::from_slice(&output.stdout).expect("info JSON");
    let mut by_name = serde_json::Map::new();
    for feature in info["features"].as_array().expect("features") {
        let name = feature["name"].as_str().expect("name").to_string();
        by_name.insert(name, feature.clone());
    }
    Value::Object(by_name)
}

fn available(features: &Value, name: &str) -> bool {
    features[name]["available"]
        .as_bool()
        .unwrap_or_else(|| panic!("feature {name} missing: {features}"))
}

#[test]
fn info_reports_the_kernels_features_as_bpftool_finds_them() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let features = features(&host);
    let bpftool = bpftool_probe();
    let helpers = &bpftool["helpers"]["cgroup_sock_addr_available_helpers"];
    let set_retval = (helpers.as_array().expect("helpers")).contains(&"bpf_set_retval".into());
    assert_eq!(available(&features, "set_retval"), set_retval, "{features}");
    let ringbuf = bpftool["map_types"]["have_ringbuf_map_type"] == true;
    assert_eq!(available(&features, "ring_buffer"), ringbuf, "{features}");
    assert!(available(&features, "btf"), "{features}");
    assert!(available(&features, "cgroup_links"), "{features}");
    let lsm_type = bpftool["program_types"]["have_lsm_prog_type"] == true;
    let listed = std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|list| list.trim().split(',').any(|lsm| lsm == "bpf"));
    assert_eq!(
        available(&features, "bpf_lsm"),
        lsm_type && listed,
        "{features}"
    );
    let without_retval = features["set_retval"]["effect"].as_str().unwrap();
    assert_eq!(without_retval.contains("EPERM"), !set_retval, "{features}");
    assert_eq!(available(&features, "tcx"), kernel_has_tcx(), "{features}");
}

/// The filters of one side of `dev`'s clsact qdisc, as `tc` lists them.
fn tc_filters(dev: &str, side: &str) -> String {
    let output = Command::new("tc")
        .args(["filter", "show", "dev", dev, side])
        .output()
        .expect("tc");
    stdout(&output)
}

fn has_clsact(dev: &str) -> bool {
    let output = Command::new("tc")
        .args(["qdisc", "show", "dev", dev])
        .output()
        .expect("tc");
    stdout(&output).contains("qdisc clsact")
}

/// Two veth pairs whose far ends sit in a namespace of the test's own: `admin` carries a
/// clsact qdisc with a filter of its administrator's, `bare` has no qdisc at all.
struct Devices {
    netns: String,
    admin: String,
    bare: String,
}

impl Devices {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let devices = Self {
            netns: format!("hnt-tc-{id}"),
            admin: format!("hnta{id}"),
            bare: format!("hntb{id}"),
        };
        run_ok(&["ip", "netns", "add", &devices.netns]);
        for dev in [&devices.admin, &devices.bare] {
            let peer = format!("{dev}p");
            run_ok(&[
                "ip", "link", "add", dev, "type", "veth", "peer", "name", &peer,
            ]);
            run_ok(&["ip", "link", "set", &peer, "netns", &devices.netns]);
            run_ok(&["ip", "link", "set", dev, "up"]);
        }
        run_ok(&["tc", "qdisc", "add", "dev", &devices.admin, "clsact"]);
        // A u32 filter (a classifier every kernel of the matrix has) that matches nothing: an
        // IP header never starts with four zero bytes.
        let admin = &devices.admin;
        run_ok(
            &[
                "tc", "filter", "add", "dev", admin, "ingress", "prio", "7", "u32",
            ]
            .into_iter()
            .chain(["match", "u32", "0", "0xffffffff", "at", "0"])
            .collect::<Vec<_>>(),
        );
        devices
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        for dev in [&self.admin, &self.bare] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

#[test]
fn clsact_filters_attach_beside_the_administrators_and_leave_them_at_teardown() {
    if skip_unless_root() {
        return;
    }
    let devices = Devices::new();
    let mut host = TestHost::new();
    host.set_env("HOSTNETD_TC_ATTACH", "netlink");
    let ps = host.exec(&["ps"]);
    assert!(ps.status.success(), "{}", describe(&ps));
    for dev in [&devices.admin, &devices.bare, &"lo".to_string()] {
        assert!(has_clsact(dev), "{dev}: no clsact qdisc");
        for (side, program) in [("ingress", "tc_ingress"), ("egress", "tc_egress")] {
            let filters = tc_filters(dev, side);
            assert!(filters.contains(program), "{dev} {side}: {filters}");
        }
    }
    assert!(
        tc_filters(&devices.admin, "ingress").contains("u32"),
        "the administrator's filter is kept beside hostnetd's"
    );
    let teardown = host.exec(&["teardown"]);
    assert!(teardown.status.success(), "{}", describe(&teardown));
    let admin = tc_filters(&devices.admin, "ingress");
    assert!(
        has_clsact(&devices.admin),
        "the administrator's qdisc was removed"
    );
    assert!(admin.contains("u32"), "the administrator's filter: {admin}");
    assert!(
        !admin.contains("tc_ingress"),
        "hostnetd's filter left: {admin}"
    );
    assert!(
        !has_clsact(&devices.bare),
        "the qdisc hostnetd added is removed with its filters"
    );
    for side in ["ingress", "egress"] {
        assert!(!tc_filters("lo", side).contains("tc_"), "lo {side}");
    }
}

#[test]
fn a_changed_attach_mode_moves_the_tc_programs_over() {
    if skip_unless_root() {
        return;
    }
    if !kernel_has_tcx() {
        eprintln!("skipped: this kernel has no TCX links (Linux 6.6) to move to");
        return;
    }
    let devices = Devices::new();
    let mut host = TestHost::new();
    host.set_env("HOSTNETD_TC_ATTACH", "netlink");
    assert!(host.exec(&["ps"]).status.success());
    assert!(tc_filters(&devices.bare, "ingress").contains("tc_ingress"));
    let stop = host.exec(&["teardown"]);
    assert!(stop.status.success(), "{}", describe(&stop));
    // A daemon started again with another mode, while the first left its filters in place.
    host.set_env("HOSTNETD_TC_ATTACH", "netlink");
    let restarted = host.exec(&["ps"]);
    assert!(restarted.status.success(), "{}", describe(&restarted));
    kill_daemon(&host);
    host.set_env("HOSTNETD_TC_ATTACH", "tcx");
    let switched = host.exec(&["ps"]);
    assert!(switched.status.success(), "{}", describe(&switched));
    assert!(
        !has_clsact(&devices.bare),
        "clsact filters left after the switch"
    );
    let tcx_links = host.pin_root().join("links/tc");
    let pinned: Vec<String> = std::fs::read_dir(&tcx_links)
        .expect("TCX link pins")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        pinned
            .iter()
            .any(|pin| pin.ends_with(&format!("-{}-tc_ingress", devices.bare))),
        "{pinned:?}"
    );
}

fn kill_daemon(host: &TestHost) {
    let pid = host.daemon_pid().expect("daemon pid");
    // SAFETY: signalling the daemon this test host started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    while host.daemon_running() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn tcx_is_refused_where_the_kernel_has_none_and_nothing_changes() {
    if skip_unless_root() {
        return;
    }
    if kernel_has_tcx() {
        eprintln!("skipped: only on a kernel without TCX");
        return;
    }
    let mut host = TestHost::new();
    host.set_env("HOSTNETD_TC_ATTACH", "tcx");
    let output = host.exec(&["daemon"]);
    assert_eq!(output.status.code(), Some(125), "{}", describe(&output));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("no TCX links"), "{error}");
    assert!(error.contains("--tc-attach auto or netlink"), "{error}");
    assert!(!host.bpf_dir().exists(), "pins were made");
    assert!(!host.scratch().join("state").exists(), "state was written");
    // The host's teardown at drop must not be refused in turn.
    host.set_env("HOSTNETD_TC_ATTACH", "auto");
}

#[test]
fn packet_sockets_are_refused_by_bpf_lsm_to_a_container_process_holding_cap_net_raw() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    if !available(&features(&host), "bpf_lsm") {
        eprintln!(
            "skipped: BPF LSM is not active on this kernel (packet sockets rest on CAP_NET_RAW)"
        );
        return;
    }
    let probe = netprobe();
    host.run_detached("lsm", "24101", &[], &[&probe, "sleep", "60"]);
    host.run_detached(
        "lsm-raw",
        "24102",
        &["--cap-add", "NET_RAW"],
        &[&probe, "sleep", "60"],
    );
    // A root process (all capabilities) moved into each container's cgroup.
    let packet_socket = |name: &str| {
        let cgroup = host.inspect(name)["cgroup"].as_str().unwrap().to_string();
        let script = format!("echo $$ > {cgroup}/ctr/cgroup.procs && exec {probe} packet");
        let output = Command::new("sh").args(["-c", &script]).output().unwrap();
        probe_results(&output)
    };
    assert_eq!(packet_socket("lsm"), vec![EPERM]);
    assert_eq!(packet_socket("lsm-raw"), vec![0]);
    let stats = host.exec(&["stats", "--no-stream", "--format", "json", "lsm"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap_or_default();
    assert_eq!(stats[0]["denials"]["raw_sockets"], 1, "{stats}");
}
