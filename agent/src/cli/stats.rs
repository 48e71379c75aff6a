//! `hostnetd stats`: traffic, packets, processes and denials per container, in docker's style.
use std::{
    collections::HashMap,
    io::IsTerminal as _,
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use hostnetd::api::{client::Client, ContainerStats, Info};

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Print one snapshot and exit, instead of refreshing every second.
    #[arg(long)]
    no_stream: bool,
    /// Include exited containers (with their last figures).
    #[arg(short, long)]
    all: bool,
    /// `table` (default) or `json` (one array per refresh, one per line).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
    /// Containers (names, IDs or unique ID prefixes); every running one when none is given.
    containers: Vec<String>,
}

pub fn stats(client: &Client, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let path = format!(
        "/v1/stats?all={}&containers={}",
        args.all,
        args.containers.join(",")
    );
    let redraw = !args.no_stream && std::io::stdout().is_terminal() && args.format == "table";
    let mut rates = Rates::default();
    loop {
        let mut stats: Vec<ContainerStats> = client.get(&path)?;
        rates.sample(&stats);
        let limited = stats.iter().any(|container| container.limits.is_some());
        if args.no_stream && limited && args.format == "table" {
            // A current rate needs two samples, as docker's CPU percentage does.
            thread::sleep(Duration::from_secs(1));
            stats = client.get(&path)?;
            rates.sample(&stats);
        }
        let warning = uncounted(client).map(|packets| {
            format!(
                "warning: {packets} packets were not counted because a traffic table was full; see `hostnetd_traffic_table_full_total` in docs/metrics.md"
            )
        });
        if args.format == "json" {
            println!("{}", serde_json::to_string(&stats)?);
            if let Some(warning) = &warning {
                eprintln!("hostnetd: {warning}");
            }
        } else {
            if redraw {
                // Clear the screen and home the cursor, as `docker stats` does.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", table(&stats, &rates));
            if let Some(warning) = &warning {
                println!("{warning}");
            }
        }
        if args.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// Packets the datapath could not count since it was loaded (the figures above are short by
/// them), when there are any.
fn uncounted(client: &Client) -> Option<u64> {
    let info: Info = client.get("/v1/info").ok()?;
    info.traffic_table_full.filter(|packets| *packets > 0)
}

/// Each container's bytes each way at the last two samples, for the current rates.
#[derive(Default)]
struct Rates {
    samples: HashMap<String, [(Instant, u64, u64); 2]>,
}

impl Rates {
    fn sample(&mut self, stats: &[ContainerStats]) {
        let now = Instant::now();
        for container in stats {
            let total = &container.traffic.total;
            let latest = (now, total.tx_bytes, total.rx_bytes);
            let entry = self
                .samples
                .entry(container.id.clone())
                .or_insert([latest; 2]);
            *entry = [entry[1], latest];
        }
    }

    /// Bits per second out and in between the last two samples; None after only one.
    fn of(&self, id: &str) -> Option<(u64, u64)> {
        let [(then, tx0, rx0), (now, tx1, rx1)] = self.samples.get(id)?;
        let seconds = now.duration_since(*then).as_secs_f64();
        (seconds > 0.0).then(|| {
            let bits = |bytes: u64| (bytes as f64 * 8.0 / seconds) as u64;
            (
                bits(tx1.saturating_sub(*tx0)),
                bits(rx1.saturating_sub(*rx0)),
            )
        })
    }
}

/// One line per limited direction: the limit, the rate now, and what the limit held back.
fn limit_lines(container: &ContainerStats, rates: &Rates) -> String {
    let Some(limits) = &container.limits else {
        return String::new();
    };
    let now = rates.of(&container.id);
    let directions = [
        ("egress", &limits.egress, now.map(|(tx, _)| tx)),
        ("ingress", &limits.ingress, now.map(|(_, rx)| rx)),
    ];
    let mut out = String::new();
    for (direction, limit, rate) in directions {
        let Some(limit) = limit else { continue };
        let rate = rate.map_or_else(|| "-".to_string(), bit_rate);
        let dropped = format!(
            "dropped {} ({})",
            limit.dropped_packets,
            size(limit.dropped_bytes)
        );
        // Ingress is only ever policed: nothing is delayed or marked there.
        let held = match direction {
            "egress" => format!(
                "delayed {}  {dropped}  marked {}",
                size(limit.delayed_bytes),
                limit.marked_packets
            ),
            _ => dropped,
        };
        out += &format!("  {direction} limit {}  now {rate}  {held}\n", limit.limit);
    }
    out
}

/// Bits per second as tc writes rates: `198.4mbit`.
fn bit_rate(bits: u64) -> String {
    const UNITS: [(u64, &str); 3] = [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ];
    for (scale, unit) in UNITS {
        if bits >= scale {
            return format!("{:.1}{unit}", bits as f64 / scale as f64);
        }
    }
    format!("{bits}bit")
}

fn table(stats: &[ContainerStats], rates: &Rates) -> String {
    let mut out = format!(
        "{:<12}  {:<20}  {:<10}  {:<21}  {:<21}  {:>5}  {:>7}\n",
        "CONTAINER ID", "NAME", "STATE", "NET I/O", "PACKETS", "PIDS", "DENIED"
    );
    for container in stats {
        let total = &container.traffic.total;
        out += &format!(
            "{:<12}  {:<20}  {:<10}  {:<21}  {:<21}  {:>5}  {:>7}\n",
            &container.id[..12.min(container.id.len())],
            container.name,
            container.state,
            format!("{} / {}", size(total.rx_bytes), size(total.tx_bytes)),
            format!("{} / {}", total.rx_packets, total.tx_packets),
            container.pids,
            container.traffic.denials.total(),
        );
        for port in &container.traffic.ports {
            out += &format!(
                "  {:<12}  socket {} / {} ({} / {} pkts)  device {} / {}  dropped {}\n",
                port.port,
                size(port.socket.rx_bytes),
                size(port.socket.tx_bytes),
                port.socket.rx_packets,
                port.socket.tx_packets,
                size(port.device.counters.rx_bytes),
                size(port.device.counters.tx_bytes),
                port.device.dropped_packets,
            );
        }
        out += &limit_lines(container, rates);
    }
    out
}

/// Bytes in docker's decimal units: `0B`, `1.5kB`, `12.3MB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.3}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
        + UNITS[unit]
}

#[cfg(test)]
mod tests {
    use hostnetd::api::ContainerStats;

    use super::{bit_rate, limit_lines, size, Rates};

    #[test]
    fn rates_read_as_tc_writes_them() {
        assert_eq!(bit_rate(999), "999bit");
        assert_eq!(bit_rate(198_400_000), "198.4mbit");
        assert_eq!(bit_rate(1_000_000_000), "1.0gbit");
    }

    #[test]
    fn a_limited_container_gets_a_line_per_direction_with_its_rate_now() {
        let container: ContainerStats = serde_json::from_value(serde_json::json!({
            "id": "abc", "name": "web", "state": "running", "pids": 1,
            "rx_bytes": 0, "rx_packets": 0, "tx_bytes": 0, "tx_packets": 0,
            "protocols": {}, "ports": [],
            "denials": {"binds": 0, "connects": 0, "sends": 0, "raw_sockets": 0, "ingress_drops": 0},
            "limits": {
                "egress": {"limit": "10mbit", "limit_bytes_per_second": 1250000,
                           "delayed_packets": 2, "delayed_bytes": 3000, "dropped_packets": 1,
                           "dropped_bytes": 1500, "marked_packets": 4},
                "ingress": {"limit": "1gbit", "limit_bytes_per_second": 125000000,
                            "delayed_packets": 0, "delayed_bytes": 0, "dropped_packets": 0,
                            "dropped_bytes": 0, "marked_packets": 0}
            }
        }))
        .unwrap();
        let rates = Rates::default();
        assert_eq!(
            limit_lines(&container, &rates),
            "  egress limit 10mbit  now -  delayed 3kB  dropped 1 (1.5kB)  marked 4\n  \
             ingress limit 1gbit  now -  dropped 0 (0B)\n"
        );
    }

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(1500), "1.5kB");
        assert_eq!(size(12_345_678), "12.346MB");
        assert_eq!(size(2_000_000_000), "2GB");
    }
}
