//! Traffic accounting and denial reporting: the counters the skb and TC programs keep, the
//! events the hooks send, and the arithmetic both sides must agree on.

/// Protocol classes counted apart.
pub const CLASS_TCP: u8 = 0;
pub const CLASS_UDP: u8 = 1;
pub const CLASS_OTHER: u8 = 2;

/// The counting class of an `IPPROTO_*` number.
#[inline(always)]
pub fn class_of(ipproto: u8) -> u8 {
    match ipproto as u32 {
        crate::IPPROTO_TCP => CLASS_TCP,
        crate::IPPROTO_UDP => CLASS_UDP,
        _ => CLASS_OTHER,
    }
}

/// One row of a container's traffic: its traffic on one owned port, or (`port` 0) all the rest
/// of one protocol class. A container's totals are the sum of its rows, so each packet updates
/// exactly one row.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrafficKey {
    pub cgroup_id: u64,
    /// The container's local port when the container owns it, else 0.
    pub port: u16,
    /// `CLASS_*`.
    pub class: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<TrafficKey>() == 16);

impl TrafficKey {
    #[inline(always)]
    pub fn new(cgroup_id: u64, port: u16, class: u8) -> Self {
        Self {
            cgroup_id,
            port,
            class,
            _pad: [0; 5],
        }
    }
}

/// Packets and bytes each way, counted from the IP header on, a GSO or GRO super-packet as the
/// segments it stands for on the wire ([`wire_bytes`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<TrafficCounters>() == 32);

impl TrafficCounters {
    pub fn add(&mut self, other: &Self) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
    }
}

/// What the TC programs see at the host's interfaces for one owned port (keyed like
/// [`TrafficKey`], by the owner): what passed each way, and what ingress policy dropped there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    pub traffic: TrafficCounters,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<DeviceCounters>() == 48);

impl DeviceCounters {
    pub fn add(&mut self, other: &Self) {
        self.traffic.add(&other.traffic);
        self.dropped_packets += other.dropped_packets;
        self.dropped_bytes += other.dropped_bytes;
    }
}

/// An owned port's counters in the per-CPU array `PORT_ROWS`, at the index its owner slot
/// names: one array lookup per packet instead of a hash lookup. The socket hooks add to
/// `socket`, the device hooks to `device`; `holder` is written by the agent when it gives the
/// row to a port (on every CPU's copy), so that a row read alone says whose it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRow {
    pub socket: TrafficCounters,
    pub device: DeviceCounters,
    pub holder: TrafficKey,
}
const _: () = assert!(core::mem::size_of::<PortRow>() == 96);

/// Protocol classes, and so rows of a container's rest of each.
pub const CLASSES: usize = 3;

/// A container's rows for the rest of each protocol class (its traffic on no port it owns),
/// per CPU, in the cgroup storage of its `skb_ingress` and `skb_egress` attachments: the
/// kernel hands a program its attachment's storage without a lookup. `cgroup_id` is the
/// container's, written by the agent when it attaches, so that the programs know whose
/// packets they count without asking for the socket's cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerRows {
    pub cgroup_id: u64,
    pub classes: [TrafficCounters; CLASSES],
}
const _: () = assert!(core::mem::size_of::<ContainerRows>() == 8 + 32 * CLASSES);

/// Calls and packets a container's policy refused, by kind (`DENIAL_*` indexes `counts`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denials {
    pub counts: [u64; DENIAL_KINDS],
}
const _: () = assert!(core::mem::size_of::<Denials>() == 8 * DENIAL_KINDS);

impl Denials {
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
    }
}

/// A bind refused (EACCES or EADDRINUSE).
pub const DENIAL_BIND: u8 = 0;
/// A connect refused by egress policy.
pub const DENIAL_CONNECT: u8 = 1;
/// An unconnected send (sendmsg) refused by egress policy.
pub const DENIAL_SEND: u8 = 2;
/// A raw socket refused.
pub const DENIAL_RAW_SOCKET: u8 = 3;
/// A packet to an owned port dropped by ingress policy.
pub const DENIAL_INGRESS: u8 = 4;
pub const DENIAL_KINDS: usize = 5;

/// The id under which denials of host processes (outside every container) are counted: no
/// cgroup has id 0.
pub const HOST_CGROUP: u64 = 0;

/// Slots of the per-CPU `DATAPATH_STATS` array: the datapath's own health.
pub const STAT_EVENTS_LOST: u32 = 0;
pub const STAT_TRAFFIC_TABLE_FULL: u32 = 1;
pub const DATAPATH_STATS: u32 = 2;

/// One denial, sent through the `EVENTS` ring buffer. A full ring drops the event and counts
/// it in `STAT_EVENTS_LOST`: the datapath never waits for the reader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenialEvent {
    /// CLOCK_BOOTTIME, in nanoseconds.
    pub boot_ns: u64,
    /// The container's cgroup id, or [`HOST_CGROUP`].
    pub cgroup_id: u64,
    /// The calling thread group; 0 for packets (no process is behind a dropped packet).
    pub pid: u32,
    /// The errno the call got; 0 for a dropped packet.
    pub errno: u32,
    /// The port of the address the call named (the local port of a dropped packet).
    pub port: u16,
    /// `DENIAL_*`.
    pub kind: u8,
    pub ipproto: u8,
    /// 4 or 6 (a v4-mapped address is reported as 4).
    pub family: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; 16],
    /// The address the call named (the source of a dropped packet), IPv6 or v4-mapped.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DenialEvent>() == 64);

/// Bytes of a packet of `len` bytes (from the IP header on) that stands for `segments` segments
/// on the wire, each carrying its own copy of the `header_len` bytes of IP and transport
/// headers: GSO splits a super-packet that way before the wire, and GRO merged one from such
/// segments after it.
#[inline(always)]
pub fn wire_bytes(len: u32, segments: u32, header_len: u32) -> u64 {
    let extra_segments = segments.saturating_sub(1);
    len as u64 + extra_segments as u64 * header_len as u64
}

/// Length of an IPv4 header from its first byte (version and IHL).
#[inline(always)]
pub fn ipv4_header_len(first_byte: u8) -> u32 {
    ((first_byte & 0x0f) as u32) * 4
}

/// Length of a TCP header from its 13th byte (data offset).
#[inline(always)]
pub fn tcp_header_len(offset_byte: u8) -> u32 {
    ((offset_byte >> 4) as u32) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_packet_is_its_length() {
        assert_eq!(wire_bytes(1500, 1, 52), 1500);
        assert_eq!(wire_bytes(60, 0, 40), 60);
    }

    #[test]
    fn a_super_packet_counts_every_segments_headers() {
        // 10 segments of 1448 payload bytes with 20 + 32 bytes of IPv4 and TCP headers: the
        // super-packet carries the headers once, the wire ten times.
        let payload = 10 * 1448;
        assert_eq!(wire_bytes(payload + 52, 10, 52), 10 * (1448 + 52) as u64);
    }

    #[test]
    fn header_lengths_come_from_their_fields() {
        assert_eq!(ipv4_header_len(0x45), 20);
        assert_eq!(ipv4_header_len(0x46), 24);
        assert_eq!(tcp_header_len(0x80), 32);
        assert_eq!(tcp_header_len(0x50), 20);
    }

    #[test]
    fn protocols_fall_into_classes() {
        assert_eq!(class_of(6), CLASS_TCP);
        assert_eq!(class_of(17), CLASS_UDP);
        assert_eq!(class_of(1), CLASS_OTHER);
        assert_eq!(class_of(58), CLASS_OTHER);
    }
}
