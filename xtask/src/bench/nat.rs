//! The NAT configuration: a network namespace behind a veth pair and a bridge, its ports
//! published on the host with iptables DNAT and MASQUERADE, as `docker run -p` sets it up with
//! the userland proxy off (`"userland-proxy": false`): a host client connecting to
//! 127.0.0.1:PORT is DNATed in OUTPUT to the namespace's address, and its loopback source is
//! masqueraded on the bridge (which needs `route_localnet` there, as docker0 gets).
//!
//! Everything is named after this process (namespace `hnbench-PID`, links `hnbenchPIDb` and
//! `hnbenchPIDv`, chain `HNBENCH-PID`) and removed on drop, rule by rule. The other
//! configurations' loopback traffic is exempted from connection tracking (see `untrack`).
use std::process::Command;

use anyhow::{bail, Context as _};

pub struct NatNetwork {
    pub netns: String,
    bridge: String,
    chain: String,
    /// `(table, chain, rule)` of every rule added to a chain that is not ours, to delete.
    hooks: Vec<(&'static str, &'static str, Vec<String>)>,
    chain_created: bool,
}

/// The namespace's subnet: inside 198.18.0.0/15, picked by pid so that two benchmarks (or a
/// test's namespaces) are unlikely to share it.
fn subnet_prefix() -> String {
    format!("198.19.{}", std::process::id() % 250 + 1)
}

impl NatNetwork {
    /// Creates the namespace, its link to the host, and publishes `tcp_ports` and `udp_ports`;
    /// host loopback traffic of `untracked` ports is kept out of connection tracking.
    pub fn create(tcp_ports: &[u16], udp_ports: &[u16], untracked: &[u16]) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let mut nat = Self {
            netns: format!("hnbench-{pid}"),
            bridge: format!("hnbench{pid}b"),
            chain: format!("HNBENCH-{pid}"),
            hooks: Vec::new(),
            chain_created: false,
        };
        nat.link()?;
        nat.publish(tcp_ports, udp_ports)?;
        nat.untrack(untracked)?;
        Ok(nat)
    }

    /// The namespace's own address, where the published ports lead.
    pub fn inner_address() -> String {
        format!("{}.2", subnet_prefix())
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    fn link(&mut self) -> anyhow::Result<()> {
        let pid = std::process::id();
        let veth = format!("hnbench{pid}v");
        let prefix = subnet_prefix();
        let (ns, bridge) = (self.netns.clone(), self.bridge.clone());
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &bridge, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{prefix}.2/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("{prefix}.1"),
        ])?;
        // Loopback-sourced packets may leave through the bridge only with this (docker sets it
        // on docker0 when the userland proxy is off).
        let knob = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
        std::fs::write(&knob, "1").with_context(|| format!("cannot set {knob}"))
    }

    fn publish(&mut self, tcp_ports: &[u16], udp_ports: &[u16]) -> anyhow::Result<()> {
        let chain = self.chain.clone();
        iptables(&["-t", "nat", "-N", &chain])?;
        self.chain_created = true;
        let inner = Self::inner_address();
        let published =
            (tcp_ports.iter().map(|p| ("tcp", p))).chain(udp_ports.iter().map(|p| ("udp", p)));
        for (proto, port) in published {
            let (port, to) = (port.to_string(), format!("{inner}:{port}"));
            iptables(&[
                "-t",
                "nat",
                "-A",
                &chain,
                "-p",
                proto,
                "--dport",
                &port,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ])?;
        }
        self.hook(
            "nat",
            "OUTPUT",
            &["-m", "addrtype", "--dst-type", "LOCAL", "-j", &chain],
        )?;
        let (bridge, subnet) = (self.bridge.clone(), format!("{}.0/24", subnet_prefix()));
        self.hook(
            "nat",
            "POSTROUTING",
            &[
                "-m",
                "addrtype",
                "--src-type",
                "LOCAL",
                "-o",
                &bridge,
                "-j",
                "MASQUERADE",
            ],
        )?;
        self.hook(
            "nat",
            "POSTROUTING",
            &["-s", &subnet, "!", "-o", &bridge, "-j", "MASQUERADE"],
        )
    }

    /// Keeps connection tracking off loopback traffic to and from `ports` (at most 15). Once a
    /// nat table exists, the kernel tracks every connection of the host; without NAT no host
    /// would, so the configurations that need no NAT must not pay for it here either.
    fn untrack(&mut self, ports: &[u16]) -> anyhow::Result<()> {
        let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
        let list = list.join(",");
        for (chain, device) in [("OUTPUT", "-o"), ("PREROUTING", "-i")] {
            for proto in ["tcp", "udp"] {
                self.hook(
                    "raw",
                    chain,
                    &[
                        device,
                        "lo",
                        "-p",
                        proto,
                        "-m",
                        "multiport",
                        "--ports",
                        &list,
                        "-j",
                        "NOTRACK",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Inserts a rule into a built-in chain, remembering it for removal.
    fn hook(
        &mut self,
        table: &'static str,
        chain: &'static str,
        rule: &[&str],
    ) -> anyhow::Result<()> {
        let mut args = vec!["-t", table, "-I", chain];
        args.extend(rule);
        iptables(&args)?;
        let rule = rule.iter().map(ToString::to_string).collect();
        self.hooks.push((table, chain, rule));
        Ok(())
    }

    fn remove(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut note = |result: anyhow::Result<()>| {
            if let Err(error) = result {
                failures.push(format!("{error:#}"));
            }
        };
        for (table, chain, rule) in self.hooks.drain(..).rev() {
            let mut args = vec!["-t", table, "-D", chain];
            args.extend(rule.iter().map(String::as_str));
            note(iptables(&args));
        }
        if self.chain_created {
            note(iptables(&["-t", "nat", "-F", &self.chain]));
            note(iptables(&["-t", "nat", "-X", &self.chain]));
        }
        if link_exists(&self.bridge) {
            note(ip(&["link", "del", &self.bridge]));
        }
        // Deleting the namespace takes the veth pair with it.
        if netns_exists(&self.netns) {
            note(ip(&["netns", "del", &self.netns]));
        }
        failures
    }
}

impl Drop for NatNetwork {
    fn drop(&mut self) {
        for failure in self.remove() {
            eprintln!("xtask: bench: removing the NAT network: {failure}");
        }
    }
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    quiet("ip", args)
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    quiet("iptables", args)
}

/// Runs a set-up command, reporting its error output only when it fails.
fn quiet(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
