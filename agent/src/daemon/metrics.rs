//! Prometheus metrics (`--metrics-addr`): `GET /metrics` in the text exposition format 0.0.4,
//! with cAdvisor's names for what cAdvisor also reports, so existing container dashboards
//! work, and `hostnetd_*` for the rest. docs/metrics.md lists every series.
use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    host::stats::{ContainerStats, DirectionLimit, MetricsSnapshot as Snapshot},
    store::traffic::{Counters, DenialCounts},
};

type Labels<'a> = Vec<(&'a str, String)>;

/// Text exposition: one `# HELP` and `# TYPE` per family, then its samples.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
    ) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.text, "{name}{} {value}", label_set(&labels));
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn label_set(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = (labels.iter())
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn who(container: &ContainerStats) -> Labels<'static> {
    vec![
        ("id", container.id.clone()),
        ("name", container.name.clone()),
    ]
}

/// The whole `/metrics` page.
pub fn render(snapshot: &Snapshot) -> String {
    let mut page = Exposition::default();
    traffic_families(&mut page, &snapshot.stats);
    protocol_families(&mut page, &snapshot.stats);
    port_families(&mut page, &snapshot.stats);
    denial_family(&mut page, snapshot);
    limit_families(&mut page, &snapshot.stats);
    inventory_families(&mut page, snapshot);
    page.finish()
}

/// A counter family's name part, its help, and which counter it reads.
type Direction = (&'static str, &'static str, fn(&Counters) -> u64);

const DIRECTIONS: [Direction; 4] = [
    ("receive_bytes", "Bytes received", |c| c.rx_bytes),
    ("transmit_bytes", "Bytes transmitted", |c| c.tx_bytes),
    ("receive_packets", "Packets received", |c| c.rx_packets),
    ("transmit_packets", "Packets transmitted", |c| c.tx_packets),
];

fn traffic_families(page: &mut Exposition, stats: &[ContainerStats]) {
    for (what, help, value) in DIRECTIONS {
        page.family(
            &format!("container_network_{what}_total"),
            "counter",
            &format!("{help} by the container's sockets (from the IP header on)."),
            stats.iter().map(|c| (who(c), value(&c.traffic.total))),
        );
    }
}

fn protocol_families(page: &mut Exposition, stats: &[ContainerStats]) {
    for (what, help, value) in DIRECTIONS {
        let samples = stats.iter().flat_map(|c| {
            (c.traffic.protocols.iter()).map(move |(protocol, counters)| {
                let mut labels = who(c);
                labels.push(("protocol", protocol.clone()));
                (labels, value(counters))
            })
        });
        page.family(
            &format!("hostnetd_network_{what}_total"),
            "counter",
            &format!("{help} by the container's sockets, by protocol (tcp, udp, other)."),
            samples,
        );
    }
}

fn port_families(page: &mut Exposition, stats: &[ContainerStats]) {
    for (what, help, value) in DIRECTIONS {
        let samples = stats.iter().flat_map(|c| {
            c.traffic.ports.iter().flat_map(move |port| {
                let labelled = move |view: &str, counters: &Counters| {
                    let mut labels = who(c);
                    labels.push(("port", port.port.clone()));
                    labels.push(("view", view.to_string()));
                    (labels, value(counters))
                };
                [
                    labelled("socket", &port.socket),
                    labelled("device", &port.device.counters),
                ]
            })
        });
        page.family(
            &format!("hostnetd_port_{what}_total"),
            "counter",
            &format!(
                "{help} on an owned port: as the container's sockets saw it (view=socket) or the host's interfaces (view=device)."
            ),
            samples,
        );
    }
    let dropped = stats.iter().flat_map(|c| {
        c.traffic.ports.iter().map(move |port| {
            let mut labels = who(c);
            labels.push(("port", port.port.clone()));
            (labels, port.device.dropped_packets)
        })
    });
    page.family(
        "hostnetd_port_dropped_packets_total",
        "counter",
        "Packets to an owned port that ingress policy dropped at the host's interfaces.",
        dropped,
    );
}

fn denial_kinds(counts: &DenialCounts) -> [(&'static str, u64); 5] {
    [
        ("bind", counts.binds),
        ("connect", counts.connects),
        ("send", counts.sends),
        ("raw_socket", counts.raw_sockets),
        ("ingress", counts.ingress_drops),
    ]
}

fn denial_family(page: &mut Exposition, snapshot: &Snapshot) {
    let containers = snapshot.stats.iter().flat_map(|c| {
        denial_kinds(&c.traffic.denials).map(|(kind, count)| {
            let mut labels = who(c);
            labels.push(("kind", kind.to_string()));
            (labels, count)
        })
    });
    let host = denial_kinds(&snapshot.host_denials).map(|(kind, count)| {
        let labels = vec![
            ("id", String::new()),
            ("name", "host".to_string()),
            ("kind", kind.to_string()),
        ];
        (labels, count)
    });
    page.family(
        "hostnetd_denials_total",
        "counter",
        "Calls and packets refused by policy, by kind (name=\"host\": host processes).",
        containers.chain(host),
    );
}

/// A limit family's name, type, help, and which figure of a direction's limit it reads.
type LimitFigure = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DirectionLimit) -> u64,
);

const LIMIT_FIGURES: [LimitFigure; 6] = [
    (
        "hostnetd_bandwidth_limit_bytes_per_second",
        "gauge",
        "The configured limit.",
        |l| l.limit_bytes_per_second,
    ),
    (
        "hostnetd_bandwidth_delayed_bytes_total",
        "counter",
        "Bytes held back by EDT pacing.",
        |l| l.delayed_bytes,
    ),
    (
        "hostnetd_bandwidth_delayed_packets_total",
        "counter",
        "Packets held back by EDT pacing.",
        |l| l.delayed_packets,
    ),
    (
        "hostnetd_bandwidth_dropped_bytes_total",
        "counter",
        "Bytes dropped above the limit.",
        |l| l.dropped_bytes,
    ),
    (
        "hostnetd_bandwidth_dropped_packets_total",
        "counter",
        "Packets dropped above the limit.",
        |l| l.dropped_packets,
    ),
    (
        "hostnetd_bandwidth_marked_packets_total",
        "counter",
        "Packets ECN-marked above the limit instead of dropped.",
        |l| l.marked_packets,
    ),
];

/// Each limited container's limits, by direction (`egress`, `ingress`).
fn limit_families(page: &mut Exposition, stats: &[ContainerStats]) {
    for (name, kind, help, value) in LIMIT_FIGURES {
        let samples = stats.iter().flat_map(|c| {
            let limits = c.limits.clone().unwrap_or_default();
            [("egress", limits.egress), ("ingress", limits.ingress)]
                .into_iter()
                .filter_map(move |(direction, limit)| {
                    let mut labels = who(c);
                    labels.push(("direction", direction.to_string()));
                    Some((labels, value(&limit?)))
                })
        });
        page.family(name, kind, help, samples);
    }
}

fn inventory_families(page: &mut Exposition, snapshot: &Snapshot) {
    let live = snapshot.records.iter().filter(|r| r.state.is_live());
    page.family(
        "hostnetd_owned_ports",
        "gauge",
        "Ports the container owns now.",
        live.map(|r| {
            let labels = vec![("id", r.id.clone()), ("name", r.name.clone())];
            (labels, r.ports.len() as u64)
        }),
    );
    let mut states: BTreeMap<&str, u64> = ["created", "running", "restarting", "exited"]
        .into_iter()
        .map(|state| (state, 0))
        .collect();
    for record in &snapshot.records {
        *states.entry(record.state.as_str()).or_default() += 1;
    }
    page.family(
        "hostnetd_containers",
        "gauge",
        "Containers by state.",
        states
            .into_iter()
            .map(|(state, n)| (vec![("state", state.to_string())], n)),
    );
    let health = &snapshot.health;
    page.family(
        "hostnetd_events_lost_total",
        "counter",
        "Denial events dropped because the event ring was full (the denial is still counted).",
        [(Vec::new(), health.events_lost)],
    );
    page.family(
        "hostnetd_traffic_table_full_total",
        "counter",
        "Packets not counted because the traffic table was full.",
        [(Vec::new(), health.traffic_table_full)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{datapath::DatapathHealth, host::stats::LimitStats};

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        let mut page = Exposition::default();
        page.family(
            "x_total",
            "counter",
            "Help with a \\ and\na newline.",
            [(
                vec![("name", "we\"b".to_string()), ("kind", "bind".to_string())],
                3,
            )],
        );
        assert_eq!(
            page.finish(),
            "# HELP x_total Help with a \\\\ and\\na newline.\n# TYPE x_total counter\nx_total{name=\"we\\\"b\",kind=\"bind\"} 3\n"
        );
    }

    #[test]
    fn a_family_without_labels_has_no_braces() {
        let mut page = Exposition::default();
        page.family("lost_total", "counter", "Lost.", [(Vec::new(), 0)]);
        assert!(page.finish().ends_with("\nlost_total 0\n"));
    }

    #[test]
    fn containers_appear_under_cadvisor_names() {
        let mut stats = ContainerStats {
            id: "abc".into(),
            name: "web1".into(),
            state: "running".into(),
            pids: 1,
            traffic: Default::default(),
            limits: Some(LimitStats {
                egress: Some(DirectionLimit {
                    limit: "200mbit".into(),
                    limit_bytes_per_second: 25_000_000,
                    dropped_packets: 4,
                    ..Default::default()
                }),
                ingress: None,
            }),
        };
        stats.traffic.total.tx_packets = 7;
        stats.traffic.denials.binds = 2;
        let snapshot = Snapshot {
            stats: vec![stats],
            records: Vec::new(),
            health: DatapathHealth::default(),
            host_denials: DenialCounts::default(),
        };
        let page = render(&snapshot);
        assert!(
            page.contains("container_network_transmit_packets_total{id=\"abc\",name=\"web1\"} 7\n"),
            "{page}"
        );
        assert!(page.contains("hostnetd_denials_total{id=\"abc\",name=\"web1\",kind=\"bind\"} 2\n"));
        assert!(page.contains("hostnetd_containers{state=\"running\"} 0\n"));
        assert!(page.contains(
            "hostnetd_bandwidth_limit_bytes_per_second{id=\"abc\",name=\"web1\",direction=\"egress\"} 25000000\n"
        ));
        assert!(page.contains(
            "hostnetd_bandwidth_dropped_packets_total{id=\"abc\",name=\"web1\",direction=\"egress\"} 4\n"
        ));
        assert!(!page.contains("direction=\"ingress\""));
    }
}
