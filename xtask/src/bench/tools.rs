//! What the benchmark needs beyond `cargo xtask setup`: the load generators and bpftool from
//! Debian, and release builds of hostnetd and the benchmark's peer.
use std::path::PathBuf;

use crate::{
    setup::install_apt_packages,
    shell::{cargo, run, say, workspace_root},
};

/// sockperf (request-response), iperf3 (stream, UDP), wrk (HTTP), bpftool (program costs).
const BENCH_PACKAGES: [&str; 4] = ["sockperf", "iperf3", "wrk", "bpftool"];

pub struct Binaries {
    pub hostnetd: PathBuf,
    pub benchpeer: PathBuf,
}

/// Installs the packages (skipped when installed) and builds the release binaries: the eBPF
/// object is always built optimised; the daemon and CLI are measured as they ship.
pub fn prepare() -> anyhow::Result<Binaries> {
    install_apt_packages("benchmark tools", &BENCH_PACKAGES)?;
    say("building hostnetd and benchpeer in release mode");
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "hostnetd",
        "--bin",
        "hostnetd",
        "--bin",
        "hostnetd-runc",
        "--package",
        "xtask",
        "--bin",
        "benchpeer",
    ]))?;
    let release = workspace_root().join("target/release");
    Ok(Binaries {
        hostnetd: release.join("hostnetd"),
        benchpeer: release.join("benchpeer"),
    })
}
