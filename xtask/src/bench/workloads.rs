//! The workloads: each runs one client (pinned to the client CPU) against one configuration's
//! server and parses what the client reports.
use std::{
    process::{Command, Output},
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::{
    env::Env,
    host::H1_POLICY_FLAGS,
    plan::{check_interrupted, Config},
    servers::CLIENT_CPU,
};

/// What the benchmark reports, one figure per workload and configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    RrP50,
    RrP99,
    ConnRate,
    Stream,
    UdpRate,
    HttpRate,
    BindNs,
    ConnectNs,
    SendtoNs,
    Bind6Ns,
    Connect6Ns,
    Sendto6Ns,
}

impl Metric {
    pub const ALL: [Self; 12] = [
        Self::RrP50,
        Self::RrP99,
        Self::ConnRate,
        Self::Stream,
        Self::UdpRate,
        Self::HttpRate,
        Self::BindNs,
        Self::ConnectNs,
        Self::SendtoNs,
        Self::Bind6Ns,
        Self::Connect6Ns,
        Self::Sendto6Ns,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::RrP50 => "TCP request-response RTT p50",
            Self::RrP99 => "TCP request-response RTT p99",
            Self::ConnRate => "TCP connection rate",
            Self::Stream => "TCP stream throughput",
            Self::UdpRate => "UDP packet rate (64 B, received)",
            Self::HttpRate => "HTTP requests (wrk, nginx)",
            Self::BindNs => "bind() (socket+bind+close)",
            Self::ConnectNs => "connect() of a UDP socket",
            Self::SendtoNs => "sendto() unconnected UDP",
            Self::Bind6Ns => "bind() IPv6 (socket+bind+close)",
            Self::Connect6Ns => "connect() of a UDP socket, IPv6",
            Self::Sendto6Ns => "sendto() unconnected UDP, IPv6",
        }
    }

    /// For the plot's axis.
    pub fn short(self) -> &'static str {
        match self {
            Self::RrP50 => "RR p50",
            Self::RrP99 => "RR p99",
            Self::ConnRate => "conn/s",
            Self::Stream => "stream",
            Self::UdpRate => "UDP pps",
            Self::HttpRate => "HTTP",
            Self::BindNs => "bind()",
            Self::ConnectNs => "connect()",
            Self::SendtoNs => "sendto()",
            Self::Bind6Ns => "bind6()",
            Self::Connect6Ns => "connect6()",
            Self::Sendto6Ns => "sendto6()",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::RrP50 => "tcp_rr_p50_us",
            Self::RrP99 => "tcp_rr_p99_us",
            Self::ConnRate => "tcp_conn_per_s",
            Self::Stream => "tcp_stream_gbit_s",
            Self::UdpRate => "udp_kpps",
            Self::HttpRate => "http_req_per_s",
            Self::BindNs => "bind_ns",
            Self::ConnectNs => "udp_connect_ns",
            Self::SendtoNs => "udp_sendto_ns",
            Self::Bind6Ns => "bind6_ns",
            Self::Connect6Ns => "udp_connect6_ns",
            Self::Sendto6Ns => "udp_sendto6_ns",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::RrP50 | Self::RrP99 => "µs",
            Self::ConnRate => "conn/s",
            Self::Stream => "Gbit/s",
            Self::UdpRate => "kpps",
            Self::HttpRate => "req/s",
            _ => "ns/call",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Self::ConnRate | Self::Stream | Self::UdpRate | Self::HttpRate
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    TcpRr,
    ConnRate,
    Stream,
    UdpRate,
    Http,
    Bind,
    UdpConnect,
    UdpSendto,
    Bind6,
    UdpConnect6,
    UdpSendto6,
}

impl Workload {
    /// What every round measures in every configuration.
    pub const DATAPATH: [Self; 8] = [
        Self::TcpRr,
        Self::ConnRate,
        Self::Stream,
        Self::UdpRate,
        Self::Http,
        Self::Bind,
        Self::UdpConnect,
        Self::UdpSendto,
    ];
    /// What the profiling pass runs in H1: the above, and IPv6 socket calls, so that the v6
    /// programs run often enough for a steady figure.
    pub const PROFILED: [Self; 11] = [
        Self::TcpRr,
        Self::ConnRate,
        Self::Stream,
        Self::UdpRate,
        Self::Http,
        Self::Bind,
        Self::UdpConnect,
        Self::UdpSendto,
        Self::Bind6,
        Self::UdpConnect6,
        Self::UdpSendto6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::TcpRr => "tcp-rr",
            Self::ConnRate => "tcp-conn",
            Self::Stream => "tcp-stream",
            Self::UdpRate => "udp-rate",
            Self::Http => "http",
            Self::Bind => "bind",
            Self::UdpConnect => "udp-connect",
            Self::UdpSendto => "udp-sendto",
            Self::Bind6 => "bind6",
            Self::UdpConnect6 => "udp-connect6",
            Self::UdpSendto6 => "udp-sendto6",
        }
    }

    /// The socket-call loops run where the server would (in the container for H1); the
    /// others are a host client against a server.
    fn syscall(self) -> Option<(&'static str, Metric)> {
        match self {
            Self::Bind => Some(("bind", Metric::BindNs)),
            Self::UdpConnect => Some(("connect", Metric::ConnectNs)),
            Self::UdpSendto => Some(("sendto", Metric::SendtoNs)),
            Self::Bind6 => Some(("bind6", Metric::Bind6Ns)),
            Self::UdpConnect6 => Some(("connect6", Metric::Connect6Ns)),
            Self::UdpSendto6 => Some(("sendto6", Metric::Sendto6Ns)),
            _ => None,
        }
    }

    pub fn is_syscall(self) -> bool {
        self.syscall().is_some()
    }
}

/// Runs `workload` against `config` for `duration`; the figures it yields.
pub fn measure(
    env: &Env,
    config: Config,
    workload: Workload,
    duration: Duration,
) -> anyhow::Result<Vec<(Metric, f64)>> {
    check_interrupted()?;
    if let Some((op, metric)) = workload.syscall() {
        let output = syscall_loop(env, config, op, duration)?;
        return Ok(vec![(metric, parse_ns_per_call(&stdout(&output))?)]);
    }
    let ports = env.ports.servers(config);
    let secs = seconds(duration);
    let result = match workload {
        Workload::TcpRr => {
            let port = ports.rr.to_string();
            parse_sockperf(&client(&sockperf_ping_pong(&port, &secs))?)
        }
        Workload::ConnRate => {
            let peer = env.benchpeer.display().to_string();
            let out = client(&[&peer, "connect", &ports.conn.to_string(), &secs])?;
            Ok(vec![(Metric::ConnRate, parse_rate(&out)?)])
        }
        Workload::Stream => parse_iperf_stream(&client(&[
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            &ports.iperf.to_string(),
            "-t",
            &secs,
            "-J",
        ])?),
        Workload::UdpRate => parse_iperf_udp(&client(&[
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            &ports.iperf.to_string(),
            "-u",
            "-b",
            "0",
            "-l",
            "64",
            "-t",
            &secs,
            "-J",
        ])?),
        Workload::Http => parse_wrk(&client(&[
            "wrk",
            "-t1",
            "-c32",
            &format!("-d{secs}s"),
            &format!("http://127.0.0.1:{}/", ports.http),
        ])?),
        _ => unreachable!("socket-call loops are handled above"),
    };
    result.with_context(|| format!("{} against {}", workload.name(), config.label()))
}

/// Whole seconds, at least one, as the clients take them.
fn seconds(duration: Duration) -> String {
    duration.as_secs().max(1).to_string()
}

/// Runs a client pinned to the client CPU; its standard output.
/// sockperf's TCP ping-pong against 127.0.0.1:`port` for `secs`, full round trips timed.
pub fn sockperf_ping_pong<'a>(port: &'a str, secs: &'a str) -> [&'a str; 10] {
    [
        "sockperf",
        "ping-pong",
        "--tcp",
        "-i",
        "127.0.0.1",
        "-p",
        port,
        "-t",
        secs,
        "--full-rtt",
    ]
}

fn client(args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new("taskset");
    command.args(["-c", CLIENT_CPU]).args(args);
    let output = checked(&mut command)?;
    Ok(stdout(&output))
}

fn syscall_loop(env: &Env, config: Config, op: &str, duration: Duration) -> anyhow::Result<Output> {
    let port = env.ports.syscall(config).to_string();
    let peer = env.benchpeer.display().to_string();
    let secs = format!("{:.3}", duration.as_secs_f64());
    let pinned = [
        "taskset", "-c", CLIENT_CPU, &peer, "syscall", op, &port, &secs,
    ];
    let mut command = match config {
        Config::H0 | Config::H0d => {
            let mut command = Command::new(pinned[0]);
            command.args(&pinned[1..]);
            command
        }
        Config::Nat => {
            let mut command = env.nat.command(pinned[0]);
            command.args(&pinned[1..]);
            command
        }
        Config::DockerBridge | Config::DockerNoProxy => {
            bail!("{} runs no socket-call loop", config.label())
        }
        Config::H1 => {
            let mut command = env.host.command();
            let owned =
                super::host::tcp_and_udp(env.ports.syscall(config), env.ports.syscall(config));
            command.args(["run", "--rm", "--rootfs", "/", "--ports", &owned]);
            command.args(H1_POLICY_FLAGS).arg("--").args(pinned);
            command
        }
    };
    checked(&mut command).map_err(|error| {
        let port = env.ports.syscall(config);
        match port_holders(port) {
            Some(holders) if error.to_string().contains("in use") => error.context(format!(
                "port {port} is held by: {holders} (another program on this machine uses the \
                 benchmark's ports: choose others with --ports)"
            )),
            _ => error,
        }
    })
}

/// The sockets on local port `port`, as `ss` lists them with their processes.
fn port_holders(port: u16) -> Option<String> {
    let output = Command::new("ss")
        .args(["-Hanp", &format!("( sport = :{port} )")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

fn checked(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    check_interrupted()?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// sockperf's `---> percentile 50.000 =   56.974` lines (µs, full round trip).
pub fn parse_sockperf(text: &str) -> anyhow::Result<Vec<(Metric, f64)>> {
    let percentile = |which: &str| -> anyhow::Result<f64> {
        let prefix = format!("---> percentile {which} =");
        text.lines()
            .find_map(|line| line.split_once(&prefix).map(|(_, value)| value.trim()))
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("sockperf printed no {which} percentile"))
    };
    Ok(vec![
        (Metric::RrP50, percentile("50.000")?),
        (Metric::RrP99, percentile("99.000")?),
    ])
}

/// benchpeer's `count=N seconds=S`, as N/S.
pub fn parse_rate(text: &str) -> anyhow::Result<f64> {
    let (count, seconds) = parse_count(text)?;
    Ok(count / seconds)
}

/// benchpeer's `count=N seconds=S`, as nanoseconds per call.
pub fn parse_ns_per_call(text: &str) -> anyhow::Result<f64> {
    let (count, seconds) = parse_count(text)?;
    Ok(seconds * 1e9 / count)
}

fn parse_count(text: &str) -> anyhow::Result<(f64, f64)> {
    let field = |name: &str| -> Option<f64> {
        let line = text.lines().find(|line| line.starts_with("count="))?;
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
    };
    match (field("count"), field("seconds")) {
        (Some(count), Some(seconds)) if count > 0.0 && seconds > 0.0 => Ok((count, seconds)),
        _ => bail!("benchpeer printed no `count=N seconds=S` line: {text:?}"),
    }
}

/// iperf3 -J (TCP): what the receiver got, in Gbit/s.
pub fn parse_iperf_stream(text: &str) -> anyhow::Result<Vec<(Metric, f64)>> {
    let report: Value = serde_json::from_str(text).context("iperf3 printed no JSON")?;
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| {
            format!(
                "iperf3's report has no end.sum_received.bits_per_second (its error: {})",
                report["error"].as_str().unwrap_or("none given")
            )
        })?;
    Ok(vec![(Metric::Stream, bits / 1e9)])
}

/// iperf3 -J -u: datagrams the receiver got (sent less lost), in thousands per second.
pub fn parse_iperf_udp(text: &str) -> anyhow::Result<Vec<(Metric, f64)>> {
    let report: Value = serde_json::from_str(text).context("iperf3 printed no JSON")?;
    let received = &report["end"]["sum_received"];
    let field = |name: &str| {
        received[name].as_f64().with_context(|| {
            format!(
                "iperf3's report has no end.sum_received.{name} (its error: {})",
                report["error"].as_str().unwrap_or("none given")
            )
        })
    };
    let packets = field("packets")? - field("lost_packets")?;
    Ok(vec![(Metric::UdpRate, packets / field("seconds")? / 1e3)])
}

/// wrk's `Requests/sec:  12345.67`.
pub fn parse_wrk(text: &str) -> anyhow::Result<Vec<(Metric, f64)>> {
    let rate = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .context("wrk printed no Requests/sec")?;
    if text.contains("Non-2xx or 3xx responses") {
        bail!("nginx answered with errors: {text}");
    }
    Ok(vec![(Metric::HttpRate, rate)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockperf_percentiles() {
        let text = "sockperf: ---> percentile 99.000 =   78.646\n\
                    sockperf: ---> percentile 50.000 =   56.974\n";
        assert_eq!(
            parse_sockperf(text).unwrap(),
            vec![(Metric::RrP50, 56.974), (Metric::RrP99, 78.646)]
        );
        assert!(parse_sockperf("sockperf: nothing").is_err());
    }

    #[test]
    fn benchpeer_counts() {
        assert_eq!(parse_rate("count=500 seconds=2.000000\n").unwrap(), 250.0);
        assert_eq!(
            parse_ns_per_call("count=1000 seconds=0.001").unwrap(),
            1000.0
        );
        assert!(parse_rate("count=0 seconds=1").is_err());
        assert!(parse_rate("benchpeer: connect refused").is_err());
    }

    #[test]
    fn iperf_reports() {
        let tcp = r#"{"end":{"sum_received":{"bits_per_second":21484958096.0}}}"#;
        assert_eq!(
            parse_iperf_stream(tcp).unwrap(),
            vec![(Metric::Stream, 21.484958096)]
        );
        let udp = r#"{"end":{"sum_received":{"packets":3000,"lost_packets":1000,"seconds":2.0}}}"#;
        assert_eq!(parse_iperf_udp(udp).unwrap(), vec![(Metric::UdpRate, 1.0)]);
        assert!(parse_iperf_udp(r#"{"error":"busy"}"#).is_err());
    }

    #[test]
    fn wrk_rate() {
        let text = "  1 threads and 32 connections\nRequests/sec:  12345.67\nTransfer/sec: 3MB\n";
        assert_eq!(parse_wrk(text).unwrap(), vec![(Metric::HttpRate, 12345.67)]);
        assert!(parse_wrk(&format!("{text}  Non-2xx or 3xx responses: 5\n")).is_err());
    }
}
