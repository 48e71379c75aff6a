//! The benchmark's own hostnetd: state, run and bpffs directories and a cgroup parent of its
//! own under a scratch directory (as the e2e harness does), so it never touches a real
//! hostnetd's state; everything it started is removed on drop, on failure and Ctrl-C too.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context as _};

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
    hostnetd: PathBuf,
    scratch: PathBuf,
    bpf_dir: PathBuf,
    cgroup_parent: String,
}

impl BenchHost {
    /// A host whose directories are named after this process; nothing is created until the
    /// first hostnetd command starts its daemon.
    pub fn new(hostnetd: &Path, scratch: &Path) -> Self {
        let name = format!("hnbench-{}", std::process::id());
        Self {
            hostnetd: hostnetd.to_path_buf(),
            scratch: scratch.join("hostnetd"),
            bpf_dir: PathBuf::from("/sys/fs/bpf").join(&name),
            cgroup_parent: name,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.scratch.join("run")
    }

    pub fn bpf_dir(&self) -> &Path {
        &self.bpf_dir
    }

    /// A `hostnetd` command pointed at this host's directories.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.hostnetd);
        command
            .env("HOSTNETD_STATE_DIR", self.scratch.join("state"))
            .env("HOSTNETD_RUN_DIR", self.scratch.join("run"))
            .env("HOSTNETD_BPF_DIR", &self.bpf_dir)
            .env("HOSTNETD_CGROUP_PARENT", &self.cgroup_parent)
            .stdin(Stdio::null());
        command
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
        self.command()
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", self.hostnetd.display()))
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
        let ids = self.exec(&["ps", "-a", "-q"])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        // In batches: one command per container would make removing hundreds slow.
        for batch in ids.chunks(50) {
            let mut args = vec!["rm", "-f"];
            args.extend(batch);
            self.exec(&args)?;
        }
        Ok(())
    }

    fn daemon_pid(&self) -> Option<i32> {
        let pid_file = self.scratch.join("run/hostnetd.pid");
        std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
    }

    /// Whether `pid` still runs this host's daemon: a stale pid file may name a pid that
    /// another process has since been given.
    fn is_our_daemon(&self, pid: i32) -> bool {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marker = format!("HOSTNETD_CGROUP_PARENT={}", self.cgroup_parent);
        exe.is_ok_and(|exe| exe == self.hostnetd)
            && environ
                .split(|&byte| byte == 0)
                .any(|entry| entry == marker.as_bytes())
    }

    pub fn cgroup_parent_path(&self) -> PathBuf {
        super::cgroup2_mount().join(&self.cgroup_parent)
    }
}

impl Drop for BenchHost {
    fn drop(&mut self) {
        if !self.scratch.exists() {
            return;
        }
        let daemon = self.daemon_pid();
        if let Err(error) = self.down() {
            eprintln!("xtask: bench: cleaning up hostnetd: {error:#}");
        }
        if let Some(pid) = daemon.filter(|&pid| self.is_our_daemon(pid)) {
            // Teardown stops the daemon; after a failure half-way it may need a firmer hand.
            // SAFETY: signalling the daemon this benchmark's hostnetd started (checked above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir(self.cgroup_parent_path());
        if self.bpf_dir.exists() {
            eprintln!(
                "xtask: bench: pins left in {}: remove them with `HOSTNETD_BPF_DIR={} hostnetd teardown`",
                self.bpf_dir.display(),
                self.bpf_dir.display()
            );
        }
    }
}
