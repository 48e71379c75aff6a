//! A hostnetd of its own: state, run and bpffs directories under a scratch directory and a
//! cgroup parent nobody else uses, so that the end-to-end tests, the bad-input tests and the
//! benchmark never touch a real hostnetd's state, nor each other's. The one harness all three
//! build on.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::mounts;

static NEXT_HOST: AtomicU32 = AtomicU32::new(0);

pub struct ScratchHost {
    /// `<prefix>-<pid>-<n>`: the scratch directory's, the pins' and the cgroup parent's name.
    pub name: String,
    hostnetd: PathBuf,
    scratch: PathBuf,
    bpf_dir: PathBuf,
    cgroup_parent: String,
    /// Extra environment for every hostnetd command (settings such as host protection).
    env: Vec<(String, String)>,
}

impl ScratchHost {
    /// A host named after `prefix` and this process, running the `hostnetd` binary given; its
    /// scratch directory is made now, nothing else until a command needs it.
    pub fn new(prefix: &str, hostnetd: &Path) -> Self {
        let n = NEXT_HOST.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let scratch = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        Self {
            hostnetd: hostnetd.to_path_buf(),
            bpf_dir: PathBuf::from("/sys/fs/bpf").join(&name),
            cgroup_parent: name.clone(),
            name,
            scratch,
            env: Vec::new(),
        }
    }

    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// The `hostnetd` binary this host runs; `hostnetd-runc` is built beside it.
    pub fn binary(&self) -> &Path {
        &self.hostnetd
    }

    pub fn run_dir(&self) -> PathBuf {
        self.scratch.join("run")
    }

    pub fn bpf_dir(&self) -> &Path {
        &self.bpf_dir
    }

    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Where the cgroup parent is (or would be) in the cgroup2 hierarchy.
    pub fn cgroup_parent_path(&self) -> PathBuf {
        mounts::cgroup2_mount().join(&self.cgroup_parent)
    }

    /// Sets an environment variable for every later hostnetd command of this host.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// A `hostnetd` command pointed at this host's directories.
    pub fn hostnetd(&self) -> Command {
        let mut command = Command::new(&self.hostnetd);
        command.envs(self.environment()).stdin(Stdio::null());
        command
    }

    /// The environment that points hostnetd (and hostnetd-runc) at this host's directories.
    pub fn environment(&self) -> Vec<(String, String)> {
        let path = |path: &Path| path.to_string_lossy().into_owned();
        let mut environment = vec![
            (
                "HOSTNETD_STATE_DIR".into(),
                path(&self.scratch.join("state")),
            ),
            ("HOSTNETD_RUN_DIR".into(), path(&self.run_dir())),
            ("HOSTNETD_BPF_DIR".into(), path(&self.bpf_dir)),
            ("HOSTNETD_CGROUP_PARENT".into(), self.cgroup_parent.clone()),
        ];
        environment.extend(self.env.iter().cloned());
        environment
    }

    /// `hostnetd ARGS`, to completion, whatever its outcome.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.hostnetd().args(args).output().expect("run hostnetd")
    }

    /// The pid in this host's daemon pid file, when there is one.
    pub fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.run_dir().join("hostnetd.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// Whether `pid` still runs this host's daemon: a stale pid file may name a pid that
    /// another process has since been given.
    pub fn is_our_daemon(&self, pid: i32) -> bool {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marker = format!("HOSTNETD_CGROUP_PARENT={}", self.cgroup_parent);
        let ours = self
            .hostnetd
            .canonicalize()
            .unwrap_or_else(|_| self.hostnetd.clone());
        exe.is_ok_and(|exe| exe == ours)
            && environ
                .split(|&byte| byte == 0)
                .any(|entry| entry == marker.as_bytes())
    }

    /// Removes every container of this host in batches (one command per container would make
    /// removing hundreds slow); the output of the first `rm` that failed, if one did.
    pub fn remove_all_containers(&self) -> Result<(), Output> {
        let listing = self.exec(&["ps", "-a", "-q"]);
        if !listing.status.success() {
            return Err(listing);
        }
        let ids = String::from_utf8_lossy(&listing.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        for batch in ids.chunks(50) {
            let mut args = vec!["rm", "-f"];
            args.extend(batch);
            let removed = self.exec(&args);
            if !removed.status.success() {
                return Err(removed);
            }
        }
        Ok(())
    }

    /// Everything this host made, gone: its containers, the datapath (`teardown`), a daemon
    /// that outlived it, the cgroup parent. Returns teardown's output for the caller to judge.
    pub fn clean_up(&self) -> Output {
        let _ = self.remove_all_containers();
        let daemon = self.daemon_pid();
        let teardown = self.exec(&["teardown"]);
        if let Some(pid) = daemon.filter(|&pid| self.is_our_daemon(pid)) {
            // Teardown stops the daemon; after a failure half-way it may need a firmer hand.
            // SAFETY: signalling the daemon this host started (checked above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Teardown removes both; after a failure half-way they may still be there, empty.
        let _ = std::fs::remove_dir(self.cgroup_parent_path().join("monitors"));
        let _ = std::fs::remove_dir(self.cgroup_parent_path());
        teardown
    }
}

impl Drop for ScratchHost {
    fn drop(&mut self) {
        mounts::remove_scratch(&self.scratch);
    }
}
