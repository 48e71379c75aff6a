//! Harness for hostnetd's privileged end-to-end tests, its bad-input tests and its benchmark.
//!
//! Each end-to-end test gets a [`TestHost`]: a [`scratch::ScratchHost`] (its own state, run
//! and bpffs directories and its own cgroup parent, so tests never touch a real hostnetd's
//! state) with the tests' helpers and checks. Dropping it (also when the test panics) kills
//! what it started, removes every container, tears the datapath down and checks that nothing
//! is left. Tests use ports 20000-29999 only.
pub mod cri;
pub mod engines;
pub mod mounts;
pub mod peer;
pub mod registry;
pub mod scratch;
pub mod tls;
pub mod token_server;

pub use mounts::{cgroup2_mount, remove_scratch};
use scratch::ScratchHost;
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

pub const EACCES: i32 = 13;
pub const EADDRINUSE: i32 = 98;
pub const EPERM: i32 = 1;

/// The errno a call gets when hostnetd's programs refuse it with `errno`: that one on kernels
/// whose programs may choose it (`bpf_set_retval`, Linux 5.18), the kernel's EPERM before.
/// Errnos the kernel gives of itself (a real conflict of two sockets, a missing capability)
/// are never translated.
pub fn refused(errno: i32) -> i32 {
    if kernel_lets_programs_choose_errno() {
        errno
    } else {
        EPERM
    }
}

/// A bind, connect or send that hostnetd denies (EACCES where the kernel lets it say so).
pub fn denied() -> i32 {
    refused(EACCES)
}

/// A bind to a port another container or the host owns (EADDRINUSE where the kernel lets
/// hostnetd say so).
pub fn taken() -> i32 {
    refused(EADDRINUSE)
}

/// Runs a command (`ip`, `tc`, ...) to completion, which must succeed.
pub fn run_ok(command: &[&str]) {
    let output = Command::new(command[0])
        .args(&command[1..])
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        describe(&output)
    );
}

/// `bpftool ARGS`, which must succeed: its standard output.
pub fn bpftool(args: &[&str]) -> Output {
    let output = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(
        output.status.success(),
        "bpftool {args:?}: {}",
        describe(&output)
    );
    output
}

/// `bpftool ARGS --json`, parsed.
pub fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let output = bpftool(&[args, &["--json"]].concat());
    serde_json::from_slice(&output.stdout).expect("bpftool's JSON")
}

/// bpftool's own probe of the kernel: an oracle independent of hostnetd's, whose answers the
/// tests check hostnetd's against.
pub fn bpftool_probe() -> &'static serde_json::Value {
    static PROBE: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| bpftool_json(&["feature", "probe", "kernel"]))
}

/// Whether the kernel offers `bpf_set_retval` to cgroup sock_addr programs, as bpftool finds.
pub fn kernel_lets_programs_choose_errno() -> bool {
    let helpers = &bpftool_probe()["helpers"]["cgroup_sock_addr_available_helpers"];
    (helpers.as_array().expect("cgroup_sock_addr helpers"))
        .iter()
        .any(|helper| helper == "bpf_set_retval")
}

/// Whether the kernel has TCX links (Linux 6.6, or a backport), as its own type information
/// says: its BTF has `struct tcx_link` where TCX is built in (bpftool has no probe for it).
pub fn kernel_has_tcx() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        let dump = bpftool(&[
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "raw",
        ]);
        (stdout(&dump).lines()).any(|line| line.contains("] STRUCT 'tcx_link' "))
    })
}

/// The hostnetd binary under test: HOSTNETD_BIN, or the one in this test's target dir.
pub fn hostnetd_bin() -> PathBuf {
    std::env::var_os("HOSTNETD_BIN").map_or_else(|| beside_tests("hostnetd"), PathBuf::from)
}

/// The socket probe binary, run on the host and (through `--rootfs /`) inside containers.
pub fn netprobe() -> String {
    beside_tests("netprobe").to_string_lossy().into_owned()
}

/// A binary of the workspace: test executables live in target/<profile>/deps.
fn beside_tests(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    profile_dir.join(name)
}

/// Skips (by returning true) when not root: the e2e tests need real cgroups and BPF.
pub fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: end-to-end tests need root");
    }
    !root
}

pub struct TestHost {
    pub name: String,
    pub(crate) host: ScratchHost,
    children: Vec<Child>,
    /// The container name of each child `hostnetd run`.
    child_names: Vec<String>,
}

impl TestHost {
    pub fn new() -> Self {
        let host = ScratchHost::new("hostnetd-test", &hostnetd_bin());
        Self {
            name: host.name.clone(),
            host,
            children: Vec::new(),
            child_names: Vec::new(),
        }
    }

    pub fn scratch(&self) -> &Path {
        self.host.scratch()
    }

    /// A `hostnetd` command pointed at this test host's directories.
    pub fn hostnetd(&self) -> Command {
        self.host.hostnetd()
    }

    /// Sets an environment variable for every later hostnetd command of this host.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.host.set_env(key, value);
    }

    /// The environment that points hostnetd and hostnetd-runc at this test host.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.host.environment()
    }

    /// Runs `hostnetd ARGS` to completion.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.host.exec(args)
    }

    /// `hostnetd run --rm --rootfs / --ports PORTS [extra] -- COMMAND`, to completion.
    pub fn run_to_end(&self, ports: &str, extra: &[&str], command: &[&str]) -> Output {
        self.hostnetd()
            .args(run_args(ports, extra, command))
            .output()
            .expect("run hostnetd")
    }

    /// Starts a long-running container in the background and waits until it is running.
    pub fn start(&mut self, name: &str, ports: &str, command: &[&str]) -> usize {
        let extra = ["--name", name];
        let child = self
            .hostnetd()
            .args(run_args(ports, &extra, command))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hostnetd run");
        self.children.push(child);
        self.child_names.push(name.to_string());
        let index = self.children.len() - 1;
        self.wait_running(name, index);
        index
    }

    fn wait_running(&mut self, name: &str, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ps = stdout(&self.exec(&["ps"]));
            if ps
                .lines()
                .any(|line| line.contains(name) && line.contains("running"))
            {
                return;
            }
            if let Ok(Some(status)) = self.children[index].try_wait() {
                self.child_names.remove(index);
                let output = self
                    .children
                    .remove(index)
                    .wait_with_output()
                    .expect("output");
                panic!(
                    "container {name} exited early ({status}): {}",
                    describe(&output)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("container {name} did not start within 20s");
    }

    /// `hostnetd stop -t 2` on a background `hostnetd run`'s container; that run's output.
    pub fn stop(&mut self, index: usize) -> Output {
        let stopped = self.exec(&["stop", "-t", "2", &self.child_names[index]]);
        assert!(stopped.status.success(), "stop: {}", describe(&stopped));
        let child = &mut self.children[index];
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "hostnetd run did not exit after its container stopped"
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.child_names.remove(index);
        let child = self.children.remove(index);
        child.wait_with_output().expect("output")
    }

    /// `hostnetd run -d --name NAME --ports PORTS --rootfs / [extra] -- COMMAND` of a
    /// long-running container; its full id.
    pub fn run_detached(
        &self,
        name: &str,
        ports: &str,
        extra: &[&str],
        command: &[&str],
    ) -> String {
        let mut args = vec![
            "run", "-d", "--name", name, "--ports", ports, "--rootfs", "/",
        ];
        args.extend(extra);
        args.push("--");
        args.extend(command);
        let output = self.exec(&args);
        assert!(
            output.status.success(),
            "run -d {name}: {}",
            describe(&output)
        );
        let id = stdout(&output).trim().to_string();
        assert_eq!(id.len(), 64, "run -d prints the 64-character id: {id:?}");
        id
    }

    /// SIGKILLs a container's monitor (`inspect`'s monitor_pid), as a crash would.
    pub fn kill_monitor(&self, name: &str) {
        let pid = self.inspect(name)["monitor_pid"]
            .as_i64()
            .expect("monitor_pid");
        // SAFETY: signalling the monitor this test host's daemon started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }

    /// `hostnetd inspect NAME`, parsed.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let output = self.exec(&["inspect", name]);
        assert!(
            output.status.success(),
            "inspect {name}: {}",
            describe(&output)
        );
        let mut list: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).expect("json");
        list.remove(0)
    }

    /// `hostnetd info --json`'s owned ports' counter rows: (capacity, given).
    pub fn port_rows(&self) -> (u64, u64) {
        let output = self.exec(&["info", "--json"]);
        assert!(output.status.success(), "info: {}", describe(&output));
        let info: serde_json::Value = serde_json::from_slice(&output.stdout).expect("info json");
        let rows = &info["port_rows"];
        (
            rows["capacity"].as_u64().expect("port_rows.capacity"),
            rows["given"].as_u64().expect("port_rows.given"),
        )
    }

    /// The pid of this test host's daemon, when one runs.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.host.daemon_pid()
    }

    /// Whether the daemon of the pid file is alive. A zombie awaiting its reaper is not, but
    /// only once all its threads are gone too: a killed daemon's leader turns zombie while
    /// its other threads still hold the listening socket, which then accepts a connection
    /// only to drop it. A pidfd turns readable exactly when the whole thread group is gone.
    pub fn daemon_running(&self) -> bool {
        self.daemon_pid().is_some_and(thread_group_alive)
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.host.scratch().join("run/hostnetd.sock")
    }

    /// One raw HTTP request on the API socket (a daemon must run): (status, JSON body).
    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        use std::io::{Read as _, Write as _};
        let mut stream =
            std::os::unix::net::UnixStream::connect(self.socket()).expect("connect to the API");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: hostnetd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        let status = response[9..12].parse().expect("status");
        let json = response.split("\r\n\r\n").nth(1).unwrap_or("");
        let json = serde_json::from_str(json.trim()).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// The kernel owner table, as `[{"port": "20080/tcp", "cgroup_id": N}]`.
    pub fn kernel_owners(&self) -> Vec<serde_json::Value> {
        let output = self.exec(&["ports", "--kernel"]);
        assert!(
            output.status.success(),
            "ports --kernel: {}",
            describe(&output)
        );
        serde_json::from_slice(&output.stdout).expect("json")
    }

    pub fn cgroup_parent_path(&self) -> PathBuf {
        self.host.cgroup_parent_path()
    }

    pub fn bpf_dir(&self) -> &Path {
        self.host.bpf_dir()
    }

    /// The datapath's pins, `<bpf_dir>/v<ABI version>`, whichever version the agent uses.
    pub fn pin_root(&self) -> PathBuf {
        let versions: Vec<PathBuf> = std::fs::read_dir(self.host.bpf_dir())
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        match versions.as_slice() {
            [one] => one.clone(),
            other => panic!(
                "expected one ABI directory in {}: {other:?}",
                self.host.bpf_dir().display()
            ),
        }
    }

    /// Asserts that no container of this host holds anything: records, cgroups, links, bundles.
    pub fn assert_no_container_left(&self) {
        let records = self.host.scratch().join("state/containers");
        let left: Vec<_> = std::fs::read_dir(&records)
            .map(|d| d.count())
            .into_iter()
            .collect();
        assert!(
            left.iter().all(|&n| n == 0),
            "container records left in {}",
            records.display()
        );
        // First, as it loads the datapath if no command has yet: the pins below exist then.
        assert_eq!(
            self.kernel_owners(),
            Vec::<serde_json::Value>::new(),
            "owner table not empty"
        );
        self.assert_monitors_gone();
        assert_empty_dir(&self.cgroup_parent_path(), "cgroups");
        assert_empty_dir(&self.pin_root().join("containers"), "link pins");
        assert_empty_dir(&self.host.scratch().join("run/containers"), "bundles");
    }

    /// Every monitor gone from the monitors' cgroup, within a few seconds: a monitor ends
    /// just after its container is released.
    fn assert_monitors_gone(&self) {
        let procs = self
            .cgroup_parent_path()
            .join(MONITORS_CGROUP)
            .join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = std::fs::read_to_string(&procs).unwrap_or_default();
            if left.trim().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "monitors left running: {left}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SAFETY: signalling a child we spawned.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        let teardown = self.host.clean_up();
        if !thread::panicking() {
            assert!(
                teardown.status.success(),
                "teardown: {}",
                describe(&teardown)
            );
            assert!(
                !self.host.bpf_dir().exists(),
                "pins left in {}",
                self.host.bpf_dir().display()
            );
            assert!(!self.cgroup_parent_path().exists(), "cgroup parent left");
        }
    }
}

/// A child process killed (and reaped) however the test ends, unless it is waited for.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is still held")
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("the child is still held").id()
    }

    /// Waits for the child to exit by itself; its output.
    pub fn finish(mut self) -> Output {
        let child = self.0.take().expect("the child is still held");
        child.wait_with_output().expect("wait")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_args<'a>(ports: &'a str, extra: &[&'a str], command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--rm", "--rootfs", "/"];
    if !ports.is_empty() {
        args.extend(["--ports", ports]);
    }
    args.extend(extra);
    args.push("--");
    args.extend(command);
    args
}

/// The cgroup the monitors run in, below the cgroup parent: not a container's.
const MONITORS_CGROUP: &str = "monitors";

/// Asserts that `path` has no directory but the monitors' cgroup.
fn assert_empty_dir(path: &Path, what: &str) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let names: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.file_name() != MONITORS_CGROUP)
        .map(|e| e.file_name())
        .collect();
    assert!(
        names.is_empty(),
        "{what} left in {}: {names:?}",
        path.display()
    );
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    )
}

/// Parses netprobe's lines: `ok` is 0, `errno N` is N.
pub fn probe_results(output: &Output) -> Vec<i32> {
    stdout(output)
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["ok"] => Some(0),
                ["errno", n] => n.parse().ok(),
                _ => None,
            },
        )
        .collect()
}

/// Runs netprobe on the host (outside any container) and returns its results.
pub fn probe_on_host(args: &[&str]) -> Vec<i32> {
    let output = Command::new(netprobe())
        .arg("bind")
        .args(args)
        .output()
        .expect("netprobe");
    probe_results(&output)
}

/// A sysctl's text, read in one read(2): the kernel prints some (the port bitmaps) afresh on
/// each read and answers a read at a non-zero offset with end-of-file, so `read_to_string`'s
/// small first read would cut them short.
pub fn read_sysctl(path: &str) -> String {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).expect("open the sysctl");
    let mut buffer = vec![0u8; 1 << 19];
    let length = file.read(&mut buffer).expect("read the sysctl");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

/// The reserved-ports sysctl, as a set.
pub fn reserved_ports() -> Vec<u16> {
    let text = read_sysctl("/proc/sys/net/ipv4/ip_local_reserved_ports");
    let mut ports = Vec::new();
    for item in text.trim().split(',').filter(|s| !s.is_empty()) {
        match item.split_once('-') {
            Some((a, b)) => ports.extend(a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()),
            None => ports.push(item.parse().unwrap()),
        }
    }
    ports
}

/// Fetches a line from a TCP server on the host's loopback.
pub fn fetch(port: u16) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// A sample image archive built by `cargo xtask images` (busybox.tar, nginx.tar, web.tar,
/// pause.tar).
pub fn sample_image(file: &str) -> PathBuf {
    let dir = std::env::var_os("HOSTNETD_TEST_IMAGES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images"),
        PathBuf::from,
    );
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "{} is missing: build the sample images with `cargo xtask images`",
        path.display()
    );
    path
}

/// Whether any thread of the process `pid` still runs (false once it is reaped or is a
/// zombie whose every thread has exited).
fn thread_group_alive(pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the descriptor was just opened and is owned here alone.
    let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let mut poll = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready == 0
}
