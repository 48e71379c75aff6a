//! `hostnetd events`: what the datapath refused and what happened to containers, as one
//! stream.
//!
//! Sources:
//! - denials come from the `EVENTS` ring buffer the hooks fill ([`Event::denial`]); the daemon
//!   is its only reader;
//! - lifecycle events (create, start, stop, die, remove) are derived from the container
//!   records: the daemon re-reads the store every [`LIFECYCLE_POLL`] and compares each record
//!   with the last one it saw ([`lifecycle_changes`]). Exits happen in the monitors, which
//!   write only the record, so the record is the one place every change shows. A container
//!   that dies and restarts twice within one second with the same exit code shows one die.
//!
//! The daemon keeps the last [`HISTORY`] events in memory (lost when it restarts) and hands
//! new ones to every follower through a broadcast channel.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use hostnetd_common::traffic::{
    DenialEvent, DENIAL_BIND, DENIAL_CONNECT, DENIAL_INGRESS, DENIAL_RAW_SOCKET, DENIAL_SEND,
    HOST_CGROUP,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{
    store::{ContainerRecord, ContainerState},
    sys::time::{rfc3339, rfc3339_nanos, wall_clock_ns, SECOND},
};

/// Events kept for `--since`.
pub const HISTORY: usize = 10_000;
/// How often the daemon compares container records for lifecycle events.
pub const LIFECYCLE_POLL: Duration = Duration::from_millis(100);

/// One line of `GET /v1/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, with nanoseconds.
    pub time: String,
    /// Nanoseconds since the epoch.
    pub time_nano: u64,
    /// `denial` or `container`.
    #[serde(rename = "type")]
    pub kind: String,
    /// denial: bind, connect, send, raw_socket, ingress; container: create, start, stop, die,
    /// remove.
    pub action: String,
    /// None for a host process's denial.
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub cgroup_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// tcp, udp, icmp, icmpv6 or the protocol number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// 4 or 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<u8>,
    /// The address the call named; the source of a dropped packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The port the call named; the local port of a dropped packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// What the call got (0 for a dropped packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<u32>,
    /// `EACCES`, `EPERM`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `die`: the main process's exit code (128+N for signal N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A container as events name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub id: String,
    pub name: String,
}

impl Event {
    fn new(
        time_nano: u64,
        kind: &str,
        action: &str,
        cgroup_id: u64,
        subject: Option<&Subject>,
    ) -> Self {
        Self {
            time: rfc3339_nanos(time_nano),
            time_nano,
            kind: kind.to_string(),
            action: action.to_string(),
            container_id: subject.map(|s| s.id.clone()),
            container_name: subject.map(|s| s.name.clone()),
            cgroup_id,
            pid: None,
            comm: None,
            protocol: None,
            family: None,
            address: None,
            port: None,
            errno: None,
            error: None,
            exit_code: None,
        }
    }

    /// A denial from the ring; `wall_ns` is its time on the real-time clock.
    pub fn denial(raw: &DenialEvent, wall_ns: u64, subject: Option<&Subject>) -> Self {
        let mut event = Self::new(
            wall_ns,
            "denial",
            denial_action(raw.kind),
            raw.cgroup_id,
            subject,
        );
        if raw.pid != 0 {
            event.pid = Some(raw.pid);
            event.comm = Some(comm(&raw.comm));
        }
        event.protocol = Some(protocol_name(raw.ipproto));
        event.family = Some(raw.family);
        if raw.kind != DENIAL_RAW_SOCKET {
            event.address = Some(address(raw.family, &raw.addr));
            event.port = Some(raw.port);
        }
        event.errno = Some(raw.errno);
        event.error = Some(errno_name(raw.errno));
        event
    }

    /// `2026-11-24T05:00:00Z denial bind web1 (3f2a9c1d0b7e) pid 123 (nc) tcp 0.0.0.0:20082 EACCES`
    pub fn human_line(&self) -> String {
        let mut line = format!(
            "{} {} {} {}",
            rfc3339(self.time_nano / 1_000_000_000),
            self.kind,
            self.action,
            self.who()
        );
        if let (Some(pid), Some(comm)) = (self.pid, &self.comm) {
            line += &format!(" pid {pid} ({comm})");
        }
        if let Some(protocol) = &self.protocol {
            line += &format!(" {protocol}");
        }
        if let (Some(address), Some(port)) = (&self.address, self.port) {
            line += &match self.action.as_str() {
                "ingress" => format!(" from {address} to port {port} dropped"),
                _ => format!(" {}", socket_address(address, port)),
            };
        }
        if let Some(error) = self.error.as_ref().filter(|_| self.errno != Some(0)) {
            line += &format!(" {error}");
        }
        if let Some(code) = self.exit_code {
            line += &format!(" exit code {code}");
        }
        line
    }

    fn who(&self) -> String {
        match (&self.container_name, &self.container_id) {
            (Some(name), Some(id)) => format!("{name} ({})", &id[..12.min(id.len())]),
            _ if self.cgroup_id == HOST_CGROUP => "host".to_string(),
            _ => format!("cgroup {}", self.cgroup_id),
        }
    }
}

fn denial_action(kind: u8) -> &'static str {
    match kind {
        DENIAL_BIND => "bind",
        DENIAL_CONNECT => "connect",
        DENIAL_SEND => "send",
        DENIAL_RAW_SOCKET => "raw_socket",
        DENIAL_INGRESS => "ingress",
        _ => "unknown",
    }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn protocol_name(ipproto: u8) -> String {
    match ipproto {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn address(family: u8, addr: &[u8; 16]) -> String {
    if family == 4 {
        Ipv4Addr::new(addr[12], addr[13], addr[14], addr[15]).to_string()
    } else {
        Ipv6Addr::from(*addr).to_string()
    }
}

fn socket_address(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn errno_name(errno: u32) -> String {
    match errno as i32 {
        0 => "dropped".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::EADDRINUSE => "EADDRINUSE".into(),
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        other => format!("errno {other}"),
    }
}

/// What lifecycle events compare of a container record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub subject: Subject,
    pub cgroup_id: u64,
    pub running: bool,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub exit_code: Option<i32>,
    pub restart_count: u32,
    pub stop_requested: bool,
}

impl From<&ContainerRecord> for Observed {
    fn from(record: &ContainerRecord) -> Self {
        Self {
            subject: Subject {
                id: record.id.clone(),
                name: record.name.clone(),
            },
            cgroup_id: record.cgroup.id,
            running: record.state == ContainerState::Running,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            exit_code: record.exit_code,
            restart_count: record.restart_count,
            stop_requested: record.stop_requested,
        }
    }
}

/// The lifecycle events between two looks at the store (`before` by container id), in the
/// order they happened. `now_ns` dates what records carry no time for (stop, remove).
pub fn lifecycle_changes(
    before: &BTreeMap<String, Observed>,
    now: &[Observed],
    now_ns: u64,
) -> Vec<Event> {
    let mut events = Vec::new();
    for current in now {
        let fresh;
        let previous = match before.get(&current.subject.id) {
            Some(previous) => previous,
            None => {
                events.push(lifecycle(current, "create", current.created_at * SECOND));
                fresh = Observed {
                    started_at: None,
                    finished_at: None,
                    exit_code: None,
                    restart_count: 0,
                    stop_requested: false,
                    ..current.clone()
                };
                &fresh
            }
        };
        events.extend(changes_of(previous, current, now_ns));
    }
    for gone in before.values() {
        if !now
            .iter()
            .any(|current| current.subject.id == gone.subject.id)
        {
            events.push(lifecycle(gone, "remove", now_ns));
        }
    }
    events
}

fn changes_of(previous: &Observed, current: &Observed, now_ns: u64) -> Vec<Event> {
    let mut events = Vec::new();
    if current.stop_requested && !previous.stop_requested {
        events.push(lifecycle(current, "stop", now_ns));
    }
    let started = (current.started_at.is_some())
        && (current.started_at, current.restart_count)
            != (previous.started_at, previous.restart_count);
    let died = (current.finished_at.is_some() && current.exit_code.is_some())
        && (current.finished_at, current.exit_code) != (previous.finished_at, previous.exit_code);
    let start =
        started.then(|| lifecycle(current, "start", current.started_at.unwrap_or(0) * SECOND));
    let die = died.then(|| {
        let mut die = lifecycle(current, "die", current.finished_at.unwrap_or(0) * SECOND);
        die.exit_code = current.exit_code;
        die
    });
    // Running now: an earlier run died and this one started; otherwise it started, then died.
    if current.running {
        events.extend(die.into_iter().chain(start));
    } else {
        events.extend(start.into_iter().chain(die));
    }
    events
}

fn lifecycle(observed: &Observed, action: &str, time_ns: u64) -> Event {
    Event::new(
        time_ns,
        "container",
        action,
        observed.cgroup_id,
        Some(&observed.subject),
    )
}

/// The daemon's events: a bounded history, the live feed, and who each cgroup id is.
pub struct EventHub {
    history: Mutex<VecDeque<Event>>,
    feed: broadcast::Sender<Event>,
    seen: Mutex<BTreeMap<String, Observed>>,
    /// Every container seen since the daemon started, by cgroup id: a denial may arrive after
    /// its container was removed.
    subjects: Mutex<HashMap<u64, Subject>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            history: Mutex::new(VecDeque::new()),
            feed: broadcast::channel(1024).0,
            seen: Mutex::new(BTreeMap::new()),
            subjects: Mutex::new(HashMap::new()),
        }
    }
}

impl EventHub {
    /// Records the event and hands it to every follower.
    pub fn publish(&self, event: Event) {
        let mut history = lock(&self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Sent under the history lock, so a follower sees each event once: in its history
        // or on its feed.
        let _ = self.feed.send(event);
    }

    /// The kept events at or after `since_ns`, and a feed of every later one.
    pub fn follow_since(&self, since_ns: u64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = lock(&self.history);
        let past = (history.iter())
            .filter(|event| event.time_nano >= since_ns)
            .cloned()
            .collect();
        (past, self.feed.subscribe())
    }

    /// Compares the store's records with the last look, publishing what changed. The first
    /// look only learns what exists: what happened before the daemon started is not news.
    pub fn observe(&self, records: &[Arc<ContainerRecord>], first_look: bool) {
        let now: Vec<Observed> = records
            .iter()
            .map(|record| Observed::from(&**record))
            .collect();
        {
            let mut subjects = lock(&self.subjects);
            for observed in &now {
                subjects.insert(observed.cgroup_id, observed.subject.clone());
            }
        }
        let mut seen = lock(&self.seen);
        if !first_look {
            for event in lifecycle_changes(&seen, &now, wall_clock_ns()) {
                self.publish(event);
            }
        }
        *seen = now.into_iter().map(|o| (o.subject.id.clone(), o)).collect();
    }

    pub fn subject(&self, cgroup_id: u64) -> Option<Subject> {
        lock(&self.subjects).get(&cgroup_id).cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_bind() -> DenialEvent {
        let mut event = DenialEvent {
            boot_ns: 5,
            cgroup_id: 42,
            pid: 123,
            errno: libc::EACCES as u32,
            port: 20082,
            kind: DENIAL_BIND,
            ipproto: 6,
            family: 4,
            addr: hostnetd_common::v4_mapped([0, 0, 0, 0]),
            ..Default::default()
        };
        event.comm[..2].copy_from_slice(b"nc");
        event
    }

    fn web1() -> Subject {
        Subject {
            id: "3f2a9c1d0b7e4455".into(),
            name: "web1".into(),
        }
    }

    #[test]
    fn a_denial_reads_like_a_log_line() {
        let event = Event::denial(&refused_bind(), 1_795_359_063_500_000_000, Some(&web1()));
        assert_eq!(
            event.human_line(),
            "2026-11-22T14:51:03Z denial bind web1 (3f2a9c1d0b7e) pid 123 (nc) tcp 0.0.0.0:20082 EACCES"
        );
        assert_eq!(event.time, "2026-11-22T14:51:03.500000000Z");
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "denial");
        assert_eq!(json["comm"], "nc");
        assert_eq!(json["errno"], 13);
        assert!(json.get("exit_code").is_none());
    }

    #[test]
    fn host_denials_and_v6_addresses_are_named() {
        let mut raw = refused_bind();
        raw.cgroup_id = HOST_CGROUP;
        raw.family = 6;
        raw.addr = Ipv6Addr::LOCALHOST.octets();
        let line = Event::denial(&raw, 0, None).human_line();
        assert!(
            line.ends_with("denial bind host pid 123 (nc) tcp [::1]:20082 EACCES"),
            "{line}"
        );
    }

    fn observed(started: Option<u64>, finished: Option<u64>, code: Option<i32>) -> Observed {
        Observed {
            subject: web1(),
            cgroup_id: 42,
            running: finished.is_none(),
            created_at: 100,
            started_at: started,
            finished_at: finished,
            exit_code: code,
            restart_count: 0,
            stop_requested: false,
        }
    }

    fn actions(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.action.as_str()).collect()
    }

    #[test]
    fn a_container_seen_late_still_gets_its_whole_life_in_order() {
        let exited = observed(Some(101), Some(102), Some(3));
        let events = lifecycle_changes(&BTreeMap::new(), std::slice::from_ref(&exited), 0);
        assert_eq!(actions(&events), ["create", "start", "die"]);
        assert_eq!(events[2].exit_code, Some(3));
        assert_eq!(events[2].time_nano, 102 * SECOND);
        let before = BTreeMap::from([(exited.subject.id.clone(), exited)]);
        assert!(
            lifecycle_changes(&before, &[observed(Some(101), Some(102), Some(3))], 0).is_empty()
        );
        assert_eq!(actions(&lifecycle_changes(&before, &[], 7)), ["remove"]);
    }

    #[test]
    fn a_restart_is_a_die_then_a_start() {
        let first = observed(Some(101), None, None);
        let before = BTreeMap::from([(first.subject.id.clone(), first)]);
        let mut again = observed(Some(105), Some(104), Some(1));
        again.running = true;
        again.restart_count = 1;
        assert_eq!(
            actions(&lifecycle_changes(&before, &[again], 0)),
            ["die", "start"]
        );
    }

    #[test]
    fn history_is_bounded_and_followers_miss_nothing() {
        let hub = EventHub::default();
        let event = |t| Event::new(t, "container", "start", 1, None);
        for t in 0..(HISTORY as u64 + 5) {
            hub.publish(event(t));
        }
        let (past, mut feed) = hub.follow_since(HISTORY as u64);
        assert_eq!(past.len(), 5);
        hub.publish(event(99_999));
        assert_eq!(feed.try_recv().unwrap().time_nano, 99_999);
    }
}
