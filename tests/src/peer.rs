//! A network namespace of the test's own, joined to the host by a veth pair: traffic to and
//! from a real device that carries nothing else.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{describe, netprobe, run_ok, stdout};

const UDP_HEADER: u64 = 8;
pub const ETH_HEADER: u64 = 14;

/// A network namespace joined to the host by a veth pair that carries nothing but the test's
/// traffic: no multicast, no link-local address, static neighbours, so its device counters are
/// an independent count of the same packets. TSO is off on both ends, so TCP's GSO
/// super-packets are split into wire-sized segments at the device, and GRO on the host's end
/// merges incoming segments again before they reach the socket.
pub struct Peer {
    pub netns: String,
    pub host_if: String,
}

pub const HOST_V4: &str = "198.18.0.1";
pub const PEER_V4: &str = "198.18.0.2";
pub const HOST_V6: &str = "2001:db8:4ac::1";
pub const PEER_V6: &str = "2001:db8:4ac::2";

impl Peer {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let peer = Self {
            netns: format!("hnacct-{tag}"),
            host_if: format!("hna{tag}h"),
        };
        let peer_if = format!("hna{tag}p");
        let ns = peer.netns.as_str();
        let host_if = peer.host_if.as_str();
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", &peer_if, "netns", ns,
        ]);
        for (prefix, dev) in [
            (vec![], host_if),
            (vec!["netns", "exec", ns, "ip"], &peer_if),
        ] {
            let sysctl = format!("net.ipv6.conf.{dev}.addr_gen_mode=1");
            ip(&[prefix.as_slice(), &["link", "set", dev, "multicast", "off"]].concat());
            let mut command = vec!["sysctl", "-qw", &sysctl];
            if !prefix.is_empty() {
                command.splice(0..0, ["ip", "netns", "exec", ns]);
            }
            run_ok(&command);
        }
        peer.configure(host_if, None, HOST_V4, HOST_V6, PEER_V4, PEER_V6, &peer_if);
        peer.configure(
            &peer_if,
            Some(ns),
            PEER_V4,
            PEER_V6,
            HOST_V4,
            HOST_V6,
            host_if,
        );
        run_ok(&["ethtool", "-K", host_if, "tso", "off", "gro", "on"]);
        run_ok(&[
            "ip", "netns", "exec", ns, "ethtool", "-K", &peer_if, "tso", "off",
        ]);
        peer
    }

    #[allow(clippy::too_many_arguments)]
    fn configure(
        &self,
        dev: &str,
        ns: Option<&str>,
        v4: &str,
        v6: &str,
        other_v4: &str,
        other_v6: &str,
        other_dev: &str,
    ) {
        let exec = |args: &[&str]| match ns {
            Some(ns) => ip(&[&["netns", "exec", ns, "ip"], args].concat()),
            None => ip(args),
        };
        let other_mac = mac(
            other_dev,
            if ns.is_some() {
                None
            } else {
                Some(&self.netns)
            },
        );
        exec(&["addr", "add", &format!("{v4}/30"), "dev", dev]);
        exec(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
        exec(&["link", "set", dev, "up"]);
        for other in [other_v4, other_v6] {
            exec(&[
                "neigh",
                "replace",
                other,
                "lladdr",
                &other_mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        if ns.is_some() {
            exec(&["link", "set", "lo", "up"]);
        }
    }

    /// rx_packets, rx_bytes, tx_packets, tx_bytes of the host's end.
    pub fn device_counters(&self) -> [u64; 4] {
        ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"].map(|name| {
            let path = format!("/sys/class/net/{}/statistics/{name}", self.host_if);
            std::fs::read_to_string(&path)
                .expect("device statistics")
                .trim()
                .parse()
                .expect("number")
        })
    }

    /// Waits until the veth carries nothing of the kernel's own: adding the IPv6 addresses
    /// sends MLD reports (with multicast off too) for up to a second after, and the veth
    /// counts them beside the container's packets.
    pub fn wait_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.device_counters();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(1500) {
            assert!(Instant::now() < deadline, "the veth never went quiet");
            std::thread::sleep(Duration::from_millis(100));
            let now = self.device_counters();
            if now != last {
                (last, quiet_since) = (now, Instant::now());
            }
        }
    }

    /// Whether the host's end counts the Ethernet header in rx_bytes: Linux 5.10's veth does,
    /// later ones count from the IP header on. Measured with one datagram of known size from
    /// the peer (to a closed port: the host's ICMP answer is transmitted, not received).
    pub fn rx_counts_ethernet_header(&self) -> bool {
        const DATAGRAM: u64 = 20 + UDP_HEADER + b"ping".len() as u64;
        let before = self.device_counters();
        let probe = netprobe();
        let sent = (self.spawn(&[&probe, "udpfrom", PEER_V4, HOST_V4, "9"]))
            .wait_with_output()
            .expect("netprobe udpfrom");
        assert!(sent.status.success(), "udpfrom: {}", describe(&sent));
        let after = self.device_counters();
        let (packets, bytes) = (after[0] - before[0], after[1] - before[1]);
        assert_eq!(packets, 1, "the veth received more than the one datagram");
        match bytes {
            DATAGRAM => false,
            framed if framed == DATAGRAM + ETH_HEADER => true,
            other => panic!("one {DATAGRAM}-byte datagram counted as {other} bytes"),
        }
    }

    pub fn spawn(&self, command: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in netns")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

fn mac(dev: &str, ns: Option<&str>) -> String {
    let path = format!("/sys/class/net/{dev}/address");
    let output = match ns {
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns, "cat", &path])
            .output()
            .expect("cat"),
        None => Command::new("cat").arg(&path).output().expect("cat"),
    };
    stdout(&output).trim().to_string()
}

fn ip(args: &[&str]) {
    run_ok(&[&["ip"], args].concat());
}
