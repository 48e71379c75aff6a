//! Real engines for the engine tests: a private `dockerd` (its own data root, exec root,
//! socket and cgroup parent, no iptables, no bridge) with hostnetd-runc registered as the
//! runtime `hostnetd`, pointed at a test host. Everything it made is removed on drop: its
//! containers, its daemons, its mounts, its cgroups.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{describe, mounts, run_ok, sample_image, scratch::ScratchHost, TestHost};

pub struct TestDocker {
    dir: PathBuf,
    socket: PathBuf,
    cgroup_parent: String,
    daemon: Option<Child>,
    live_restore: bool,
    networking: DockerNetworking,
}

/// How a private dockerd networks its containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerNetworking {
    /// Host networking only: no bridge, no iptables rules (the engine tests').
    HostOnly,
    /// User-defined bridge networks with ports published by `-p`. `iptables`: dockerd writes
    /// its DNAT rules (global chains named DOCKER*: one such dockerd on a host at a time);
    /// `userland_proxy`: docker-proxy carries the published ports' loopback connections.
    Bridge {
        iptables: bool,
        userland_proxy: bool,
    },
}

impl TestDocker {
    /// A dockerd for `host`, started and answering. `live_restore`: its containers outlive a
    /// restart of it, as `live-restore` gives production hosts.
    pub fn start(host: &TestHost, live_restore: bool) -> Self {
        Self::start_for(&host.host, live_restore)
    }

    /// A dockerd whose runtime `hostnetd` is hostnetd-runc pointed at `host` (the test's or
    /// the benchmark's), in `host`'s scratch directory.
    pub fn start_for(host: &ScratchHost, live_restore: bool) -> Self {
        Self::start_named(host, "docker", live_restore, DockerNetworking::HostOnly)
    }

    /// A dockerd in `host`'s scratch directory `name` (several may run side by side, each
    /// named apart), networking its containers as `networking` says.
    pub fn start_named(
        host: &ScratchHost,
        name: &str,
        live_restore: bool,
        networking: DockerNetworking,
    ) -> Self {
        let dir = host.scratch().join(name);
        std::fs::create_dir_all(&dir).expect("docker dir");
        let runtime = write_runtime_wrapper(host, &dir);
        let config = dir.join("daemon.json");
        let mut registration = serde_json::json!({
            "runtimes": {"hostnetd": {"path": runtime}},
            "live-restore": live_restore,
        });
        if let DockerNetworking::Bridge { userland_proxy, .. } = networking {
            registration["userland-proxy"] = userland_proxy.into();
        }
        std::fs::write(&config, registration.to_string()).expect("daemon.json");
        let mut docker = Self {
            socket: dir.join("docker.sock"),
            cgroup_parent: format!("{}-{name}", host.name),
            dir,
            daemon: None,
            live_restore,
            networking,
        };
        docker.launch();
        docker
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd.log");
        let daemon = Command::new("dockerd")
            .arg("--config-file")
            .arg(self.dir.join("daemon.json"))
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(self.network_flags())
            .args(["--cgroup-parent", &self.cgroup_parent])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start dockerd ({e}): install docker.io (cargo xtask setup does)")
            });
        self.daemon = Some(daemon);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let version = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            if version.status.success() {
                return;
            }
            let exited = self
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!("dockerd did not come up ({exited:?}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The default bridge is always off (docker0 would be shared with any other dockerd):
    /// bridge-networked containers join user-defined networks with bridges named apart.
    fn network_flags(&self) -> Vec<&'static str> {
        match self.networking {
            DockerNetworking::Bridge { iptables: true, .. } => {
                vec!["--iptables=true", "--ip-masq=true", "--bridge=none"]
            }
            _ => vec!["--iptables=false", "--ip-masq=false", "--bridge=none"],
        }
    }

    /// Stops dockerd (its containers stay up when it runs with live-restore) and starts it again.
    pub fn restart(&mut self) {
        assert!(
            self.live_restore,
            "a restart without live-restore stops the containers"
        );
        self.stop_daemon();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker ARGS` against this dockerd, to completion.
    pub fn docker(&self, args: &[&str]) -> Output {
        // Debian's own client, matching the engine, when a newer one shadows it on PATH.
        let client = ["/usr/bin/docker", "docker"]
            .into_iter()
            .find(|path| Path::new(path).is_file())
            .unwrap_or("docker");
        Command::new(client)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// `docker ARGS`, which must succeed; its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded("docker", args, self.docker(args))
    }

    /// Loads the sample image `file` (an OCI archive) as `name`, converted by skopeo.
    pub fn load_sample(&self, file: &str, name: &str) {
        let archive = docker_archive(&self.dir, file, name);
        self.ok(&["load", "-i", &archive.to_string_lossy()]);
    }

    fn stop_daemon(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        // SAFETY: signalling the dockerd this harness started.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}

impl Drop for TestDocker {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let listing = self.docker(&["ps", "-a", "-q"]);
            let ids = String::from_utf8_lossy(&listing.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let removed = self.docker(&args);
                if !removed.status.success() {
                    eprintln!("docker rm -f: {}", describe(&removed));
                }
            }
            if self.networking != DockerNetworking::HostOnly {
                // Each network's bridge and rules go with it.
                let _ = self.docker(&["network", "prune", "--force"]);
            }
        }
        self.stop_daemon();
        if let DockerNetworking::Bridge { iptables: true, .. } = self.networking {
            remove_docker_iptables();
        }
        // The managed containerd and the shims name this directory on their command lines.
        kill_processes_naming(&self.dir);
        mounts::remove_scratch(&self.dir);
        remove_cgroup_everywhere(&self.cgroup_parent);
    }
}

/// Chains dockerd makes when it writes iptables rules; their names are fixed.
const DOCKER_CHAIN_PREFIX: &str = "DOCKER";

/// Whether a dockerd has written its iptables chains on this host (one of ours that was not
/// cleaned up, or another engine's): a second one would share them.
pub fn docker_iptables_chains_exist() -> bool {
    ["nat", "filter"].into_iter().any(|table| {
        iptables_rules(table)
            .iter()
            .any(|rule| rule.starts_with(&format!("-N {DOCKER_CHAIN_PREFIX}")))
    })
}

/// `iptables -t TABLE -S`, one rule per line.
fn iptables_rules(table: &str) -> Vec<String> {
    Command::new("iptables")
        .args(["-t", table, "-S"])
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Undoes what an iptables-writing dockerd leaves once stopped (it keeps its chains and the
/// jumps to them for its next start): the jumps from the built-in chains, then the DOCKER*
/// chains themselves. Only started when no such chain existed before, so they are ours.
fn remove_docker_iptables() {
    for table in ["nat", "filter"] {
        let rules = iptables_rules(table);
        for rule in &rules {
            let Some(spec) = rule.strip_prefix("-A ") else {
                continue;
            };
            let jumps_to_docker = [" -j ", " -g "]
                .iter()
                .any(|jump| spec.contains(&format!("{jump}{DOCKER_CHAIN_PREFIX}")));
            if spec.starts_with(DOCKER_CHAIN_PREFIX) || !jumps_to_docker {
                continue;
            }
            let mut args = vec!["-t", table, "-D"];
            args.extend(spec.split_whitespace());
            iptables_quiet(&args);
        }
        let chains: Vec<&str> = (rules.iter())
            .filter_map(|rule| rule.strip_prefix("-N "))
            .filter(|chain| chain.starts_with(DOCKER_CHAIN_PREFIX))
            .collect();
        for chain in &chains {
            iptables_quiet(&["-t", table, "-F", chain]);
        }
        for chain in &chains {
            iptables_quiet(&["-t", table, "-X", chain]);
        }
    }
}

fn iptables_quiet(args: &[&str]) {
    match Command::new("iptables").args(args).output() {
        Ok(output) if !output.status.success() => {
            eprintln!("iptables {}: {}", args.join(" "), describe(&output));
        }
        Err(error) => eprintln!("iptables {}: {error}", args.join(" ")),
        Ok(_) => {}
    }
}

/// The sample image `file` (an OCI archive) as a docker-archive in `dir`, tagged `name`
/// (skopeo converts it), for the engines that load only that format.
fn docker_archive(dir: &Path, file: &str, name: &str) -> PathBuf {
    let archive = dir.join(format!("{file}.docker"));
    let source = format!("oci-archive:{}", sample_image(file).display());
    let target = format!("docker-archive:{}:{name}", archive.display());
    run_ok(&["skopeo", "copy", &source, &target]);
    archive
}

/// The trimmed stdout of `tool ARGS`, which must have succeeded.
fn succeeded(tool: &str, args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A script that runs hostnetd-runc against `host` (engines call a runtime by path only).
fn write_runtime_wrapper(host: &ScratchHost, dir: &Path) -> PathBuf {
    let mut script = String::from("#!/bin/sh\n");
    for (key, value) in host.environment() {
        script.push_str(&format!("export {key}='{value}'\n"));
    }
    let runtime = host.binary().with_file_name("hostnetd-runc");
    script.push_str(&format!("exec '{}' \"$@\"\n", runtime.display()));
    let path = dir.join("hostnetd-runc");
    std::fs::write(&path, script).expect("runtime wrapper");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The processes (but this one) whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    (entries.flatten())
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid != std::process::id() as i32 && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}

/// SIGKILLs every process whose command line names `dir` (this test's own scratch
/// directory, so they are this test's).
fn kill_processes_naming(dir: &Path) {
    for pid in processes_naming(dir) {
        // SAFETY: signalling a process of this test (it names the test's scratch dir).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Removes the cgroup `name`, and the cgroups an engine made below it (podman's conmon gets
/// one of its own), below the root of every cgroup hierarchy (v1 controllers on a hybrid
/// host, and the unified one). Only `rmdir`: a cgroup still in use stays.
/// Processes just killed leave their cgroups only once reaped: tried for a few seconds.
fn remove_cgroup_everywhere(name: &str) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let dirs: Vec<PathBuf> = (table.lines())
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, target, "cgroup" | "cgroup2", ..] => Some(Path::new(target).join(name)),
                _ => None,
            },
        )
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        dirs.iter().for_each(|dir| remove_cgroup_tree(dir));
        let left: Vec<&PathBuf> = dirs.iter().filter(|dir| dir.exists()).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("cgroups still in use, left: {left:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A private containerd (its own root, state and socket) and `ctr` against it, in a namespace
/// of its own; hostnetd-runc is given per container (`ctr run --runc-binary`).
pub struct TestContainerd {
    dir: PathBuf,
    socket: PathBuf,
    pub namespace: String,
    /// hostnetd-runc with the test host's environment.
    pub runtime: PathBuf,
    daemon: Option<Child>,
}

/// The namespace containerd's CRI keeps the kubelet's pods and images in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The CRI's streaming server (exec, attach): a port of the tests' range, on loopback.
const CRI_STREAM_PORT: u16 = 26299;

impl TestContainerd {
    pub fn start(host: &TestHost) -> Self {
        Self::launch(host, false)
    }

    /// A containerd serving the CRI as a Kubernetes node's does, with the runtime handler
    /// `hostnetd` configured as deploy/kubernetes/containerd-hostnetd.toml configures it,
    /// and the pause sample image as the pods' sandbox image.
    pub fn start_with_cri(host: &TestHost) -> Self {
        Self::launch(host, true)
    }

    /// The cgroup the CRI test's pods go below, as the kubelet's `kubepods` (removed on drop).
    pub fn pod_cgroup_parent(&self) -> String {
        format!("/{}-pods", self.namespace)
    }

    fn launch(host: &TestHost, cri: bool) -> Self {
        let dir = host.scratch().join("containerd");
        std::fs::create_dir_all(&dir).expect("containerd dir");
        let socket = dir.join("containerd.sock");
        let runtime = write_runtime_wrapper(&host.host, &dir);
        let mut config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n",
            dir.join("root").display(),
            dir.join("state").display(),
            socket.display()
        );
        if cri {
            let cri = r#"[plugins."io.containerd.grpc.v1.cri"]"#;
            let runtimes = r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hostnetd]"#;
            let options =
                r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hostnetd.options]"#;
            let cni = r#"[plugins."io.containerd.grpc.v1.cri".cni]"#;
            // Naming one runtime replaces the default table: runc is named again. Pods' OOM
            // scores stay at containerd's own: some hosts refuse lowering them (as the
            // kubelet's -998 for a sandbox), even to root.
            let runc = r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]"#;
            config.push_str(&format!(
                "{cri}\n  sandbox_image = \"docker.io/hostnetd-test/pause:latest\"\n  \
                 disable_apparmor = true\n  restrict_oom_score_adj = true\n  \
                 stream_server_address = \"127.0.0.1\"\n  \
                 stream_server_port = \"{CRI_STREAM_PORT}\"\n\
                 {runc}\n  runtime_type = \"io.containerd.runc.v2\"\n\
                 {runtimes}\n  runtime_type = \"io.containerd.runc.v2\"\n  \
                 pod_annotations = [\"io.hostnetd.*\"]\n\
                 {options}\n  BinaryName = \"{}\"\n\
                 {cni}\n  bin_dir = \"{}\"\n  conf_dir = \"{}\"\n",
                runtime.display(),
                dir.join("cni/bin").display(),
                dir.join("cni/conf").display(),
            ));
        }
        std::fs::write(dir.join("config.toml"), config).expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd.log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start containerd ({e}): install containerd (cargo xtask setup does)")
            });
        let containerd = Self {
            runtime,
            namespace: format!("{}-ctr", host.name),
            dir,
            socket,
            daemon: Some(daemon),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                std::fs::read_to_string(containerd.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    /// `ctr ARGS` in this containerd's namespace, to completion.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.namespace, args)
    }

    /// `ctr ARGS` in `namespace` (the CRI's is [`CRI_NAMESPACE`]).
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// A CRI client of this containerd, as the kubelet is.
    pub fn cri(&self) -> crate::cri::CriClient {
        crate::cri::CriClient::connect(&self.socket).expect("the CRI answers")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        succeeded("ctr", args, self.ctr(args))
    }

    /// Imports the sample image `file` as `name` (`docker.io/...`).
    pub fn load_sample(&self, file: &str, name: &str) {
        self.load_sample_in(&self.namespace, file, name);
    }

    /// Imports the sample image `file` as `name` into `namespace`.
    pub fn load_sample_in(&self, namespace: &str, file: &str, name: &str) {
        let archive = docker_archive(&self.dir, file, name);
        let imported = self.ctr_in(namespace, &["images", "import", &archive.to_string_lossy()]);
        assert!(
            imported.status.success(),
            "ctr import: {}",
            describe(&imported)
        );
    }

    /// Stops and deletes the task of container `id` (runc's delete), then the container.
    pub fn remove(&self, id: &str) {
        self.remove_in(&self.namespace, id);
    }

    fn remove_in(&self, namespace: &str, id: &str) {
        let _ = self.ctr_in(namespace, &["task", "kill", "--signal", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ctr_in(namespace, &["task", "rm", id]).status.success()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.ctr_in(namespace, &["container", "rm", id]);
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        for namespace in [self.namespace.as_str(), CRI_NAMESPACE] {
            let listing = self.ctr_in(namespace, &["container", "ls", "-q"]);
            for id in String::from_utf8_lossy(&listing.stdout).split_whitespace() {
                self.remove_in(namespace, id);
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        kill_processes_naming(&self.dir);
        mounts::remove_scratch(&self.dir);
        remove_cgroup_everywhere(&self.namespace);
        remove_cgroup_everywhere(self.pod_cgroup_parent().trim_start_matches('/'));
        // The runc shim keeps runc's state in /run/containerd/runc/<namespace> whatever the
        // state directory: emptied by the deletes above, removed if nothing else uses it.
        for namespace in [self.namespace.as_str(), CRI_NAMESPACE] {
            let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(namespace));
        }
    }
}

/// podman's default ulimits exceed some hosts' hard limits, which runc then cannot set.
const LOW_ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// podman with its own storage, run directory and cgroup parent; hostnetd-runc given per
/// container (`podman run --runtime`).
pub struct TestPodman {
    dir: PathBuf,
    cgroup_parent: String,
    /// hostnetd-runc with the test host's environment.
    runtime: PathBuf,
}

impl TestPodman {
    pub fn new(host: &TestHost) -> Self {
        Self::new_for(&host.host)
    }

    /// podman in `host`'s scratch directory (the test's or the benchmark's).
    pub fn new_for(host: &ScratchHost) -> Self {
        let dir = host.scratch().join("podman");
        std::fs::create_dir_all(&dir).expect("podman dir");
        Self {
            runtime: write_runtime_wrapper(host, &dir),
            cgroup_parent: format!("{}-podman", host.name),
            dir,
        }
    }

    /// `podman run -d` with podman's own runtime (runc here) on the host network, in this
    /// harness's cgroup parent, with the ulimits [`Self::run_detached`] explains.
    pub fn run_detached_plain(&self, image_and_command: &[&str]) -> Output {
        let mut args = vec!["run", "-d", "--runtime", "runc", "--network", "host"];
        args.extend(["--cgroup-parent", &self.cgroup_parent]);
        args.extend(LOW_ULIMITS);
        args.extend(image_and_command);
        self.podman(&args)
    }

    /// `podman ARGS` against this storage, to completion.
    pub fn podman(&self, args: &[&str]) -> Output {
        self.try_podman(args).unwrap_or_else(|e| {
            panic!("cannot run podman ({e}): install podman (cargo xtask setup does)")
        })
    }

    fn try_podman(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(["--storage-driver", "overlay"])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        succeeded("podman", args, self.podman(args))
    }

    /// `podman run -d` under hostnetd-runc on the host network, in this test's cgroup parent,
    /// with `extra` flags before the image. Low ulimits: podman's defaults exceed some
    /// hosts' hard limits, which runc then cannot set.
    pub fn run_detached(&self, extra: &[&str], image_and_command: &[&str]) -> Output {
        let runtime = self.runtime.to_string_lossy().into_owned();
        let mut args = vec!["run", "-d", "--runtime", &runtime, "--network", "host"];
        args.extend(["--cgroup-parent", &self.cgroup_parent]);
        args.extend(LOW_ULIMITS);
        args.extend(extra);
        args.extend(image_and_command);
        self.podman(&args)
    }
}

impl Drop for TestPodman {
    fn drop(&mut self) {
        // Never a panic here: a test that failed for want of podman is unwinding already.
        match self.try_podman(&["rm", "--all", "--force", "--time", "0"]) {
            Ok(removed) if !removed.status.success() => {
                eprintln!("podman rm: {}", describe(&removed));
            }
            _ => {}
        }
        // conmon, and the `podman container cleanup` it starts when a container ends (which
        // deletes it through the runtime), name the storage on their command lines: they
        // are given time to finish their work before they are killed.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !processes_naming(&self.dir).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        kill_processes_naming(&self.dir);
        mounts::remove_scratch(&self.dir);
        remove_cgroup_everywhere(&self.cgroup_parent);
    }
}
