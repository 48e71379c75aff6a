//! Control-plane figures:
//! - start-up: from `hostnetd run -d` to the container's first listening socket, against
//!   `runc run -d` alone with the very OCI config hostnetd generated (same rootfs, same
//!   process): the difference is what hostnetd adds (client, API, admission, cgroup and
//!   programs, monitor);
//! - scale: with 1, 100 and 500 containers (10 owned ports each: 5 numbers, TCP and UDP)
//!   running, the cost of admission (a run refused because a host socket holds its port: every
//!   check, no container), of creating and removing one more container, and of bind() in a
//!   container, with the bind program's own cost from the BPF statistics.
use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::{
    bpfstats,
    env::Env,
    host::{tcp_and_udp, H1_POLICY_FLAGS},
    plan::{check_interrupted, Plan},
    servers::CLIENT_CPU,
};

#[derive(Default)]
pub struct ControlPlane {
    /// Milliseconds from the command to an accepted connection, per sample.
    pub startup_hostnetd_ms: Vec<f64>,
    pub startup_runc_ms: Vec<f64>,
    /// `hostnetd ps` with no container: what any command costs (client start, API round trip).
    pub ps_ms: Vec<f64>,
    pub scale: Vec<ScalePoint>,
    /// Milliseconds each scale container's `run -d` took, in creation order.
    pub create_ms_by_count: Vec<f64>,
}

pub struct ScalePoint {
    pub containers: usize,
    pub admission_ms: f64,
    /// Every refused admission's milliseconds, for the growth target's interval.
    pub admission_samples_ms: Vec<f64>,
    pub create_ms: f64,
    /// Every probe's `run -d` milliseconds, for its growth target's interval.
    pub create_samples_ms: Vec<f64>,
    pub remove_ms: f64,
    pub bind_ns: f64,
    pub bind_program_ns: Option<f64>,
}

pub fn measure(env: &Env, plan: &Plan) -> anyhow::Result<ControlPlane> {
    let ps_ms = (0..plan.startup_samples)
        .map(|_| timed_ms(|| env.host.exec(&["ps"]).map(drop)))
        .collect::<anyhow::Result<_>>()?;
    let (startup_hostnetd_ms, startup_runc_ms) = startups(env, plan.startup_samples)?;
    let (scale, create_ms_by_count) = scale(env, plan)?;
    env.host.down()?;
    Ok(ControlPlane {
        startup_hostnetd_ms,
        startup_runc_ms,
        ps_ms,
        scale,
        create_ms_by_count,
    })
}

/// Start-up times of `hostnetd run -d` and of `runc run -d` with the config hostnetd wrote,
/// alternately (the first of each pair alternating), after one hostnetd start that warms the
/// caches and yields the config.
fn startups(env: &Env, samples: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    env.host.exec(&["ps"])?; // the daemon is up before the clock starts
    let (_, config) = hostnetd_startup(env, "warm-up")?;
    let bundle = RuncBundle::create(&env.scratch.join("runc-alone"))?;
    let (mut hostnetd, mut runc) = (Vec::new(), Vec::new());
    for sample in 0..samples {
        check_interrupted()?;
        let runc_first = sample % 2 == 1;
        if runc_first {
            runc.push(runc_startup(env, &bundle, sample, &config)?);
        }
        hostnetd.push(hostnetd_startup(env, &sample.to_string())?.0);
        if !runc_first {
            runc.push(runc_startup(env, &bundle, sample, &config)?);
        }
    }
    Ok((hostnetd, runc))
}

/// One start-up time, and the OCI config hostnetd wrote for the container (for runc alone).
fn hostnetd_startup(env: &Env, sample: &str) -> anyhow::Result<(f64, Value)> {
    let port = env.ports.startup();
    let peer = env.benchpeer.display().to_string();
    let (owned, listen) = (format!("{port}/tcp"), port.to_string());
    let name = format!("hnbench-startup-{sample}");
    let mut command = env.host.command();
    command
        .args([
            "run", "-d", "--name", &name, "--rootfs", "/", "--ports", &owned,
        ])
        .args(H1_POLICY_FLAGS)
        .args(["--", &peer, "accept", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (elapsed, output) = time_to_listening(&mut command, port)?;
    let id = String::from_utf8_lossy(&output).trim().to_string();
    let config = read_json(
        &env.host
            .run_dir()
            .join("containers")
            .join(&id)
            .join("config.json"),
    )?;
    env.host.exec(&["rm", "-f", &name])?;
    wait_closed(port)?;
    Ok((elapsed, config))
}

/// Spawns `command`, polls 127.0.0.1:`port` until a connection is accepted; the time that
/// took in milliseconds, and the command's standard output (if piped) once it has finished.
fn time_to_listening(command: &mut Command, port: u16) -> anyhow::Result<(f64, Vec<u8>)> {
    let start = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let address = ([127, 0, 0, 1], port).into();
    let deadline = start + Duration::from_secs(20);
    while TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err() {
        check_interrupted()?;
        if Instant::now() > deadline {
            bail!("{command:?} never listened on port {port}");
        }
        thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed().as_secs_f64() * 1e3;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok((elapsed, output.stdout))
}

/// How long `action` took, in milliseconds.
fn timed_ms(action: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    action()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn wait_closed(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        if Instant::now() > deadline {
            bail!("port {port} still accepts connections after its container was removed");
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// `runc run -d` of hostnetd's own config, its cgroup moved to a parent of the benchmark's.
fn runc_startup(
    env: &Env,
    bundle: &RuncBundle,
    sample: usize,
    config: &Value,
) -> anyhow::Result<f64> {
    let port = env.ports.startup();
    let id = format!("hnbench-runc-{sample}");
    let mut config = config.clone();
    config["root"] = serde_json::json!({ "path": "rootfs", "readonly": true });
    config["linux"]["cgroupsPath"] = format!("/{}/{id}", bundle.cgroup_parent).into();
    std::fs::write(bundle.dir.join("config.json"), config.to_string())?;
    let mut command = bundle.runc();
    // Not pipes: runc hands its output to the container, which would hold them open.
    let log = std::fs::File::create(env.logs.join("runc-alone.log"))?;
    command
        .args(["run", "-d", "--bundle"])
        .arg(&bundle.dir)
        .arg(&id)
        .stdout(log.try_clone()?)
        .stderr(log);
    let result = time_to_listening(&mut command, port);
    let _ = bundle.runc().args(["delete", "-f", &id]).output();
    let elapsed = result?.0;
    wait_closed(port)?;
    Ok(elapsed)
}

/// A bundle whose rootfs is a private read-only view of / (as hostnetd's `--rootfs /`
/// bundles are), unmounted on drop.
struct RuncBundle {
    dir: PathBuf,
    /// The parent of the containers' cgroups (runc makes and removes theirs, not this one).
    cgroup_parent: String,
}

impl RuncBundle {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        let bundle = Self {
            dir: dir.to_path_buf(),
            cgroup_parent: format!("hnbench-{}-runc", std::process::id()),
        };
        mount(&["--bind", "/"], &rootfs)?;
        mount(&["--make-private"], &rootfs)?;
        Ok(bundle)
    }

    fn runc(&self) -> Command {
        let mut command = Command::new("runc");
        command.arg("--root").arg(self.dir.join("state"));
        command
    }
}

impl Drop for RuncBundle {
    fn drop(&mut self) {
        let rootfs = self.dir.join("rootfs");
        let _ = Command::new("umount").arg("--lazy").arg(&rootfs).status();
        // Never a recursive removal here: were the unmount to fail, it would descend into the
        // host's root. An empty directory (or a mount point, which refuses) is removed alone.
        let _ = std::fs::remove_dir(&rootfs);
        let _ = std::fs::remove_file(self.dir.join("config.json"));
        let _ = std::fs::remove_dir_all(self.dir.join("state"));
        let _ = std::fs::remove_dir(&self.dir);
        let _ =
            std::fs::remove_dir(hostnetd_tests::mounts::cgroup2_mount().join(&self.cgroup_parent));
    }
}

fn mount(args: &[&str], target: &Path) -> anyhow::Result<()> {
    let status = Command::new("mount").args(args).arg(target).status()?;
    if !status.success() {
        bail!("mount {} {} failed", args.join(" "), target.display());
    }
    Ok(())
}

/// Fills the host with containers up to each count and measures there.
fn scale(env: &Env, plan: &Plan) -> anyhow::Result<(Vec<ScalePoint>, Vec<f64>)> {
    // A host socket on a port: admission must look through everything to refuse it.
    let _held = TcpListener::bind(("127.0.0.1", env.ports.held())).with_context(|| {
        format!(
            "cannot bind port {} for the admission test",
            env.ports.held()
        )
    })?;
    let mut create_ms = Vec::new();
    let mut points = Vec::new();
    for &count in &plan.scale_counts {
        while create_ms.len() < count {
            check_interrupted()?;
            let index = create_ms.len();
            create_ms.push(create_scale_container(env, index)?);
        }
        crate::shell::say(&format!("control plane: measuring with {count} containers"));
        points.push(measure_at(env, plan, count)?);
    }
    env.host.remove_all_containers()?;
    Ok((points, create_ms))
}

/// `run -d` of one idle container owning 5 port numbers (TCP and UDP); milliseconds taken.
fn create_scale_container(env: &Env, index: usize) -> anyhow::Result<f64> {
    let first = env.ports.scale_container(index);
    let ports = tcp_and_udp(first, first + 4);
    let start = Instant::now();
    env.host.run_host_binary(
        &format!("hnbench-idle-{index}"),
        &ports,
        &["sleep", "infinity"],
    )?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn measure_at(env: &Env, plan: &Plan, count: usize) -> anyhow::Result<ScalePoint> {
    let mut admission = Vec::new();
    let mut create = Vec::new();
    let mut remove = Vec::new();
    // One sample more than asked, the first thrown away: it pays for cold caches.
    for sample in 0..=plan.scale_samples {
        check_interrupted()?;
        let refused = refused_admission(env)?;
        let (created, removed) = create_and_remove_probe(env)?;
        if sample > 0 {
            admission.push(refused);
            create.push(created);
            remove.push(removed);
        }
    }
    let (bind_ns, bind_program_ns) = bind_in_container(env, plan)?;
    Ok(ScalePoint {
        containers: count,
        admission_ms: super::stats::median(&admission),
        admission_samples_ms: admission,
        create_ms: super::stats::median(&create),
        create_samples_ms: create,
        remove_ms: super::stats::median(&remove),
        bind_ns,
        bind_program_ns,
    })
}

/// `run -d` and `rm -f` of one more container like the others; milliseconds each took.
fn create_and_remove_probe(env: &Env) -> anyhow::Result<(f64, f64)> {
    let probe = env.ports.probe();
    let ports = tcp_and_udp(probe, probe + 4);
    let created = timed_ms(|| {
        env.host
            .run_host_binary("hnbench-probe", &ports, &["sleep", "infinity"])
    })?;
    let removed = timed_ms(|| env.host.exec(&["rm", "-f", "hnbench-probe"]).map(drop))?;
    Ok((created, removed))
}

/// A run for the held port: refused by admission after every check; milliseconds taken.
fn refused_admission(env: &Env) -> anyhow::Result<f64> {
    let owned = format!("{}/tcp", env.ports.held());
    let start = Instant::now();
    let output = env.host.output(&[
        "run", "--rm", "--rootfs", "/", "--ports", &owned, "--", "true",
    ])?;
    let elapsed = start.elapsed().as_secs_f64() * 1e3;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || !stderr.contains("already bound on the host") {
        bail!("admission did not refuse a port a host socket holds: {stderr}");
    }
    Ok(elapsed)
}

/// bind() in a container (ns per socket+bind+close) and the bind4 program's ns per run.
fn bind_in_container(env: &Env, plan: &Plan) -> anyhow::Result<(f64, Option<f64>)> {
    let port = env.ports.scale_bind();
    let owned = tcp_and_udp(port, port);
    let port = port.to_string();
    let peer = env.benchpeer.display().to_string();
    let secs = format!("{:.3}", plan.syscall_duration.as_secs_f64());
    let stats = bpfstats::enable()?;
    let before = bpfstats::snapshot(env.host.bpf_dir())?;
    let output = env.host.exec(
        &[
            &["run", "--rm", "--rootfs", "/", "--ports", &owned][..],
            &H1_POLICY_FLAGS,
            &[
                "--", "taskset", "-c", CLIENT_CPU, &peer, "syscall", "bind", &port, &secs,
            ],
        ]
        .concat(),
    )?;
    let after = bpfstats::snapshot(env.host.bpf_dir())?;
    drop(stats);
    let bind_program = bpfstats::delta(&before, &after)
        .into_iter()
        .find(|program| program.name == "bind4")
        .and_then(|program| program.ns_per_run());
    Ok((super::workloads::parse_ns_per_call(&output)?, bind_program))
}
