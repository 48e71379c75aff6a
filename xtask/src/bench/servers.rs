//! The servers, the same programs in each configuration: sockperf (request-response), the
//! benchpeer accept loop (connection rate), iperf3 (stream and UDP) and the sample image's nginx
//! (HTTP). In H0 they are host processes, in H1 hostnetd containers, in NAT processes in the
//! namespace. Each is pinned to [`SERVER_CPU`], its client to [`CLIENT_CPU`].
use std::{
    fs,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{
    env::Env,
    host::{BenchHost, H1_POLICY_FLAGS},
    nat::NatNetwork,
    plan::{check_interrupted, Config, ServerPorts},
};

pub const CLIENT_CPU: &str = "0";
pub const SERVER_CPU: &str = "1";

/// Server processes this benchmark started (H0 and NAT); stopped on drop.
#[derive(Default)]
pub struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            stop(child);
        }
    }
}

/// SIGTERM first (nginx's master then stops its worker), SIGKILL after 3 seconds.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Processes {
    pub fn spawn(&mut self, name: &str, mut command: Command, logs: &Path) -> anyhow::Result<()> {
        let log = fs::File::create(logs.join(format!("{name}.log")))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the {name} server: {command:?}"))?;
        self.0.push((name.to_string(), child));
        Ok(())
    }

    /// Fails when a server has exited: its log says why.
    pub fn check_alive(&mut self, logs: &Path) -> anyhow::Result<()> {
        for (name, child) in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
                bail!("the {name} server exited ({status}): {}", log.trim());
            }
        }
        Ok(())
    }
}

/// Each server's command line (pinned), given its port; nginx is apart (a config file).
pub fn server_commands(env: &Env, ports: &ServerPorts) -> Vec<(&'static str, Vec<String>)> {
    let pinned = |args: &[&str]| -> Vec<String> {
        ["taskset", "-c", SERVER_CPU]
            .iter()
            .chain(args)
            .map(ToString::to_string)
            .collect()
    };
    let peer = env.benchpeer.display().to_string();
    vec![
        (
            "sockperf",
            pinned(&["sockperf", "server", "--tcp", "-p", &ports.rr.to_string()]),
        ),
        (
            "accept",
            pinned(&[&peer, "accept", &ports.conn.to_string()]),
        ),
        (
            "iperf3",
            pinned(&["iperf3", "-s", "-p", &ports.iperf.to_string()]),
        ),
    ]
}

/// H0: the servers as plain host processes (nginx chrooted into the image's root filesystem).
pub fn start_on_host(env: &Env, processes: &mut Processes) -> anyhow::Result<()> {
    let ports = env.ports.servers(Config::H0);
    for (name, args) in server_commands(env, &ports) {
        let mut command = Command::new(&args[0]);
        command.args(&args[1..]);
        processes.spawn(&format!("h0-{name}"), command, &env.logs)?;
    }
    let conf = env.nginx.config_for(Config::H0, ports.http)?;
    let mut nginx = Command::new("chroot");
    nginx.arg(&env.nginx.rootfs).args(nginx_args(&conf));
    processes.spawn("h0-nginx", nginx, &env.logs)?;
    wait_listening(&ports.tcp())
}

/// NAT: the servers in the namespace, reached through the published ports.
pub fn start_in_namespace(
    env: &Env,
    nat: &NatNetwork,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    let ports = env.ports.servers(Config::Nat);
    for (name, args) in server_commands(env, &ports) {
        let mut command = nat.command(&args[0]);
        command.args(&args[1..]);
        processes.spawn(&format!("nat-{name}"), command, &env.logs)?;
    }
    let conf = env.nginx.config_for(Config::Nat, ports.http)?;
    let mut nginx = nat.command("chroot");
    nginx.arg(&env.nginx.rootfs).args(nginx_args(&conf));
    processes.spawn("nat-nginx", nginx, &env.logs)?;
    wait_listening(&ports.tcp())
}

/// H1: each server in its own hostnetd container owning its port, with H1's policy; nginx
/// from the sample image. The daemon starts with the first one.
pub fn start_in_containers(env: &Env, host: &BenchHost) -> anyhow::Result<()> {
    let ports = env.ports.servers(Config::H1);
    for (name, args) in server_commands(env, &ports) {
        let owned = if name == "iperf3" {
            super::host::tcp_and_udp(ports.iperf, ports.iperf)
        } else {
            format!("{}/tcp", port_of(name, &ports))
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        host.run_host_binary(&format!("hnbench-{name}"), &owned, &args)?;
    }
    start_nginx_container(env, host, ports.http)?;
    wait_listening(&ports.tcp())
}

pub fn port_of(name: &str, ports: &ServerPorts) -> u16 {
    match name {
        "sockperf" => ports.rr,
        "accept" => ports.conn,
        "iperf3" => ports.iperf,
        _ => ports.http,
    }
}

fn start_nginx_container(env: &Env, host: &BenchHost, port: u16) -> anyhow::Result<()> {
    ensure_image_loaded(env, host)?;
    let conf = env.nginx.config_for(Config::H1, port)?;
    let dir = conf.parent().expect("the config is in a directory");
    let volume = format!("{}:/bench:ro", dir.display());
    let owned = format!("{port}/tcp");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "hnbench-nginx",
        "--ports",
        &owned,
        "-v",
        &volume,
    ];
    args.extend(H1_POLICY_FLAGS);
    args.push("nginx");
    let inner = Path::new("/bench").join(conf.file_name().expect("a file name"));
    let command = nginx_args(&inner);
    args.extend(command.iter().map(String::as_str));
    host.exec(&args).map(drop)
}

/// The nginx image in the benchmark's own store: loaded once, it outlives teardowns.
fn ensure_image_loaded(env: &Env, host: &BenchHost) -> anyhow::Result<()> {
    let images = host.exec(&["images", "-q"])?;
    if images.trim().is_empty() {
        let archive = env.nginx_image.display().to_string();
        host.exec(&["load", "-i", &archive])?;
    }
    Ok(())
}

/// nginx in the foreground with the benchmark's config (a path inside its root).
pub fn nginx_args(conf: &Path) -> Vec<String> {
    vec![
        "/usr/sbin/nginx".into(),
        "-c".into(),
        conf.display().to_string(),
        "-g".into(),
        "daemon off;".into(),
    ]
}

/// Waits until every port accepts connections on 127.0.0.1.
pub fn wait_listening(ports: &[u16]) -> anyhow::Result<()> {
    for &port in ports {
        wait_listening_at("127.0.0.1", port)?;
    }
    Ok(())
}

/// Waits (20 s at most) until `address`:`port` accepts connections.
pub fn wait_listening_at(address: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let target: std::net::SocketAddr = format!("{address}:{port}").parse()?;
    while TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_err() {
        check_interrupted()?;
        if Instant::now() > deadline {
            bail!("no server listens on {target} after 20s: see target/bench/logs");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
