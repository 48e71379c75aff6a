//! Building the workspace: the agent's build script compiles the eBPF object with nightly.
use std::path::PathBuf;

use crate::shell::{cargo, run, say, workspace_root};

/// Builds the agent and the test binaries; returns the workspace's target directory.
pub fn build() -> anyhow::Result<PathBuf> {
    say("building hostnetd (eBPF object, agent) and the test binaries");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    Ok(workspace_root().join("target"))
}

/// Builds `hostnetd` and `hostnetd-runc` as they ship (release); returns target/release.
pub fn build_release() -> anyhow::Result<PathBuf> {
    say("building hostnetd and hostnetd-runc (release)");
    run(cargo().args(["build", "--release", "-p", "hostnetd", "--bins"]))?;
    Ok(workspace_root().join("target/release"))
}
