//! Docker's own bridge networking as datapath peers: the same servers in containers on a
//! user-defined bridge network of a private dockerd, each port published with
//! `-p 127.0.0.1:P:P`, reached by the host's clients at 127.0.0.1:P.
//!
//! - docker-bridge: Docker's default, the userland proxy on. A loopback client connects to
//!   docker-proxy, which connects on to the container over the bridge (Docker's DNAT rules
//!   exempt 127.0.0.0/8, so loopback traffic takes the proxy with or without them). This
//!   dockerd writes no iptables rules.
//! - docker-bridge-noproxy: `"userland-proxy": false`, dockerd writes its DNAT and masquerade
//!   rules in iptables (chains DOCKER*, jumps from OUTPUT, PREROUTING, POSTROUTING, FORWARD),
//!   `route_localnet` on the bridge. Its chains have fixed names, so it runs only when no
//!   DOCKER chain exists; they are removed when it stops ([`TestDocker`]'s guard).
//!
//! The servers run as in H1 (`--rootfs /`): the host's binaries, here by `chroot` into the host's
//! root mounted read-only at /host; nginx from the sample image. Each container has a fixed
//! address on its network, where the benchmark checks the server listens before measuring
//! (docker-proxy accepts at 127.0.0.1 before the server is up).
use std::path::Path;

use anyhow::bail;
use hostnetd_tests::engines::{docker_iptables_chains_exist, DockerNetworking, TestDocker};

use super::{
    env::Env,
    plan::Config,
    servers::{nginx_args, port_of, server_commands, wait_listening_at},
};
use crate::shell::say;

const IMAGE: &str = "hostnetd-bench/nginx:latest";

pub struct DockerBridge {
    pub config: Config,
    docker: TestDocker,
}

/// The bridge peers that run: docker-bridge always, docker-bridge-noproxy when this host has
/// no DOCKER chains already (`absent` then says why it does not run).
pub struct DockerBridges {
    pub running: Vec<DockerBridge>,
    pub absent: Option<String>,
}

impl DockerBridges {
    pub fn start(env: &Env) -> anyhow::Result<Self> {
        let mut running = vec![DockerBridge::start(env, Config::DockerBridge)?];
        let absent = if docker_iptables_chains_exist() {
            Some(
                "not measured: iptables already has DOCKER chains, which a dockerd of the \
                 benchmark would share (another dockerd writes them; or a benchmark run was \
                 killed before it could remove its own: see `iptables -t nat -S`)"
                    .to_string(),
            )
        } else {
            running.push(DockerBridge::start(env, Config::DockerNoProxy)?);
            None
        };
        if let Some(why) = &absent {
            say(&format!("docker-bridge-noproxy: {why}"));
        }
        Ok(Self { running, absent })
    }

    pub fn configs(&self) -> Vec<Config> {
        self.running.iter().map(|bridge| bridge.config).collect()
    }
}

impl DockerBridge {
    fn start(env: &Env, config: Config) -> anyhow::Result<Self> {
        let (name, iptables, userland_proxy) = match config {
            Config::DockerBridge => ("docker-bridge", false, true),
            Config::DockerNoProxy => ("docker-noproxy", true, false),
            other => bail!("{} is not a Docker configuration", other.label()),
        };
        say(&format!(
            "{}: a private dockerd and its servers",
            config.label()
        ));
        let docker = TestDocker::start_named(
            env.host.scratch_host(),
            name,
            false,
            DockerNetworking::Bridge {
                iptables,
                userland_proxy,
            },
        );
        docker.load_sample("nginx.tar", IMAGE);
        let bridge = Self { config, docker };
        bridge.create_network()?;
        bridge.run_servers(env)?;
        Ok(bridge)
    }

    fn network(&self) -> String {
        format!("hnbench-{}", self.config.key())
    }

    /// A /25 of 198.18.K.0/24 (K picked by pid, as the NAT network's 198.19.K.0/24): the low
    /// half for docker-bridge, the high half for docker-bridge-noproxy.
    fn subnet_base(&self) -> (String, u8) {
        let third = std::process::id() % 250 + 1;
        let first = if self.config == Config::DockerNoProxy {
            128
        } else {
            0
        };
        (format!("198.18.{third}"), first)
    }

    /// The address of the container of server `index`.
    fn address(&self, index: usize) -> String {
        let (prefix, first) = self.subnet_base();
        format!("{prefix}.{}", usize::from(first) + 10 + index)
    }

    /// The bridge's name: at most 15 characters, after this process as the NAT network's.
    fn bridge_name(&self) -> String {
        let suffix = if self.config == Config::DockerNoProxy {
            'q'
        } else {
            'p'
        };
        format!("hnbench{}{suffix}", std::process::id())
    }

    fn create_network(&self) -> anyhow::Result<()> {
        let (prefix, first) = self.subnet_base();
        let subnet = format!("{prefix}.{first}/25");
        let bridge = format!("com.docker.network.bridge.name={}", self.bridge_name());
        self.checked(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            &subnet,
            "-o",
            &bridge,
            &self.network(),
        ])
    }

    /// One container per server, as H1 runs them; nginx last.
    fn run_servers(&self, env: &Env) -> anyhow::Result<()> {
        let ports = env.ports.servers(self.config);
        let mut addresses = Vec::new();
        for (index, (name, args)) in server_commands(env, &ports).into_iter().enumerate() {
            let address = self.address(index);
            let port = port_of(name, &ports);
            let mut published = vec![format!("127.0.0.1:{port}:{port}")];
            if name == "iperf3" {
                published.push(format!("127.0.0.1:{port}:{port}/udp"));
            }
            let mut run = self.run_args(name, &address, &published);
            // A private writable /tmp, as runc gives H1's `--rootfs /` (iperf3 keeps its
            // buffers in a temporary file).
            run.extend(
                [
                    "-v",
                    "/:/host:ro",
                    "--tmpfs",
                    "/host/tmp",
                    "--entrypoint",
                    "chroot",
                ]
                .map(String::from),
            );
            run.push(IMAGE.into());
            run.push("/host".into());
            run.extend(args);
            self.checked(&run.iter().map(String::as_str).collect::<Vec<_>>())?;
            addresses.push((address, port));
        }
        let address = self.address(addresses.len());
        let conf = env.nginx.config_for(self.config, ports.http)?;
        let mut run = self.run_args(
            "nginx",
            &address,
            &[format!("127.0.0.1:{0}:{0}", ports.http)],
        );
        let dir = conf.parent().expect("the config is in a directory");
        run.extend(["-v".into(), format!("{}:/bench:ro", dir.display())]);
        run.extend([
            "--entrypoint".into(),
            "/usr/sbin/nginx".into(),
            IMAGE.into(),
        ]);
        let inner = Path::new("/bench").join(conf.file_name().expect("a file name"));
        run.extend(nginx_args(&inner).into_iter().skip(1));
        self.checked(&run.iter().map(String::as_str).collect::<Vec<_>>())?;
        addresses.push((address, ports.http));
        for (address, port) in &addresses {
            wait_listening_at(address, *port)?;
        }
        Ok(())
    }

    fn run_args(&self, name: &str, address: &str, published: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &format!("hnbench-{name}"),
            "--network",
            &self.network(),
            "--ip",
            address,
        ]
        .map(String::from)
        .to_vec();
        for mapping in published {
            args.extend(["-p".into(), mapping.clone()]);
        }
        args
    }

    fn checked(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = self.docker.docker(args);
        if !output.status.success() {
            bail!(
                "docker {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}
