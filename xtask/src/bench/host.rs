//! The benchmark's own hostnetd, on the e2e tests' harness ([`ScratchHost`]): state, run and
//! bpffs directories and a cgroup parent of its own, so it never touches a real hostnetd's
//! state; everything it started is removed on drop, on failure and Ctrl-C too.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::bail;
use hostnetd_tests::scratch::ScratchHost;

/// What H1 turns on besides the ownership of the server's ports: every policy feature
/// `hostnetd run` has, so that H1 pays for all of them (accounting is always on). The egress
/// rule set lets the server reach its loopback clients (IPv4 and IPv6) and names one more
/// destination, so the rule trie has more than one prefix to search; the ingress rules admit
/// the loopback clients to the owned ports, so every packet to them is checked at TC and at
/// the socket.
pub const H1_POLICY_FLAGS: [&str; 10] = [
    "--egress-allow",
    "127.0.0.0/8",
    "--egress-allow",
    "::1/128",
    "--egress-allow",
    "198.18.0.0/15:443/tcp",
    "--ingress-allow",
    "127.0.0.0/8",
    "--ingress-allow",
    "::1/128",
];

/// `--ports` for `first`..=`last`, TCP and UDP, each protocol named: a bare port is TCP only.
pub fn tcp_and_udp(first: u16, last: u16) -> String {
    let range = if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    };
    format!("{range}/tcp,{range}/udp")
}

pub struct BenchHost {
    host: ScratchHost,
}

impl BenchHost {
    /// A host whose directories are named after this process; its daemon starts with the
    /// first hostnetd command.
    pub fn new(hostnetd: &Path) -> Self {
        Self {
            host: ScratchHost::new("hnbench", hostnetd),
        }
    }

    /// The harness underneath, for what takes one (the engines' daemons).
    pub fn scratch_host(&self) -> &ScratchHost {
        &self.host
    }

    pub fn run_dir(&self) -> PathBuf {
        self.host.run_dir()
    }

    pub fn bpf_dir(&self) -> &Path {
        self.host.bpf_dir()
    }

    /// A `hostnetd` command pointed at this host's directories.
    pub fn command(&self) -> Command {
        self.host.hostnetd()
    }

    /// `hostnetd ARGS`, which must succeed; its standard output.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.output(args)?;
        if !output.status.success() {
            bail!(
                "hostnetd {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `hostnetd ARGS`, whatever its outcome.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.host.exec(args))
    }

    /// `hostnetd run -d --name NAME --rootfs / --ports PORTS <H1 policy> -- COMMAND`.
    pub fn run_host_binary(&self, name: &str, ports: &str, command: &[&str]) -> anyhow::Result<()> {
        let mut args = vec![
            "run", "-d", "--name", name, "--rootfs", "/", "--ports", ports,
        ];
        args.extend(H1_POLICY_FLAGS);
        args.push("--");
        args.extend(command);
        self.exec(&args).map(drop)
    }

    /// Removes every container of this host and unloads hostnetd from the host (the daemon
    /// stops). The image store stays for the next start.
    pub fn down(&self) -> anyhow::Result<()> {
        self.remove_all_containers()?;
        self.exec(&["teardown"]).map(drop)
    }

    pub fn remove_all_containers(&self) -> anyhow::Result<()> {
        self.host.remove_all_containers().or_else(|output| {
            bail!(
                "removing the containers failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
    }

    pub fn cgroup_parent_path(&self) -> PathBuf {
        self.host.cgroup_parent_path()
    }
}

impl Drop for BenchHost {
    fn drop(&mut self) {
        let teardown = self.host.clean_up();
        if !teardown.status.success() {
            eprintln!(
                "xtask: bench: cleaning up hostnetd: {}",
                String::from_utf8_lossy(&teardown.stderr).trim()
            );
        }
        let pins = self.host.bpf_dir();
        if pins.exists() {
            eprintln!(
                "xtask: bench: pins left in {}: remove them with `HOSTNETD_BPF_DIR={} hostnetd teardown`",
                pins.display(),
                pins.display()
            );
        }
    }
}
