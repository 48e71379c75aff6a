//! Reading the headers of a packet, shared by the cgroup_skb and TC programs. Offsets are from
//! the network header: a cgroup_skb program's data starts there, a TC program's after the
//! Ethernet header. Headers are read straight from the packet when they are in its linear
//! part (always, in practice), and copied out by a helper otherwise.
use aya_ebpf::{bindings::__sk_buff, helpers::generated::bpf_skb_load_bytes_relative};
use hostnetd_common::{
    packet::{local_port, v4_mapped_words, IpHeader},
    traffic::{class_of, tcp_header_len, wire_bytes, TrafficCounters},
    PortOwner, Proto, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::maps::PORT_OWNERS;

const BPF_HDR_START_NET: u32 = 1;
/// The transport header starts at most this far into the packet: a 60-byte IPv4 header, or
/// IPv6's 40 (as a mask: every offset is a multiple of 4).
const MAX_L4_OFFSET: u32 = 0x3c;

/// Which way a packet goes, seen from the host's (or a container's) sockets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// What the accounting and the ingress policy need of one packet.
pub struct Packet {
    pub skb: *mut __sk_buff,
    /// Where the network header starts in the packet's data.
    net_offset: u32,
    pub family: u8,
    pub ipproto: u8,
    /// The host's end of the flow: the destination port of an incoming packet, the source port
    /// of an outgoing one; 0 for protocols without ports.
    pub local_port: u16,
    l4_offset: u32,
    /// The IP header's ECN field.
    pub ecn: u8,
}

impl Packet {
    /// Parses the IP and transport headers; None for anything but IPv4 and IPv6.
    #[inline(always)]
    pub fn parse(skb: *mut __sk_buff, net_offset: u32, direction: Direction) -> Option<Self> {
        let header = with_bytes(skb, net_offset, 0, IpHeader::parse)??;
        let mut packet = Self {
            skb,
            net_offset,
            family: header.family,
            ipproto: header.ipproto,
            local_port: 0,
            l4_offset: header.l4_offset,
            ecn: header.ecn,
        };
        // Only a first fragment carries the transport header.
        if packet.has_ports() && !header.later_fragment {
            let incoming = direction == Direction::Ingress;
            packet.local_port = with_bytes(skb, net_offset, bounded(header.l4_offset), |ports| {
                local_port(ports, incoming)
            })?;
        }
        Some(packet)
    }

    /// The owner of the packet's local port, when a container owns it.
    #[inline(always)]
    pub fn owner(&self) -> Option<PortOwner> {
        let proto = Proto::from_ipproto(self.ipproto as u32)?;
        let owner = PORT_OWNERS.get(proto.owner_slot(self.local_port))?;
        (owner.is_owned() && self.local_port != 0).then_some(*owner)
    }

    #[inline(always)]
    pub fn has_ports(&self) -> bool {
        self.ipproto as u32 == IPPROTO_TCP || self.ipproto as u32 == IPPROTO_UDP
    }

    #[inline(always)]
    pub fn class(&self) -> u8 {
        class_of(self.ipproto)
    }

    /// The source address, IPv6 or v4-mapped, as two words in memory order.
    #[inline(always)]
    pub fn source_words(&self) -> Option<[u64; 2]> {
        if self.family == 4 {
            Some(v4_mapped_words(load(self.skb, self.net_offset, 12)?))
        } else {
            load(self.skb, self.net_offset, 8)
        }
    }

    /// Packets and bytes on the wire from the IP header on: a GSO/GRO super-packet counts as
    /// its segments, each with its own headers.
    #[inline(always)]
    pub fn wire_size(&self) -> (u64, u64) {
        // SAFETY: the kernel hands every skb program a valid context.
        let (len, segments) = unsafe { ((*self.skb).len, (*self.skb).gso_segs) };
        let len = len.saturating_sub(self.net_offset);
        if segments <= 1 {
            return (1, len as u64);
        }
        (
            segments as u64,
            wire_bytes(len, segments, self.header_len()),
        )
    }

    /// IP plus transport header length, read only for super-packets.
    #[inline(always)]
    fn header_len(&self) -> u32 {
        let l4_offset = bounded(self.l4_offset);
        let transport = match self.ipproto as u32 {
            // Two bytes (data offset and flags), not one: LLVM turns a one-byte bounds check
            // into `at < end`, which the verifier cannot use at a variable offset.
            IPPROTO_TCP => load::<[u8; 2]>(self.skb, self.net_offset, l4_offset + 12)
                .map_or(20, |bytes| tcp_header_len(bytes[0])),
            IPPROTO_UDP => 8,
            _ => 0,
        };
        self.l4_offset + transport
    }
}

/// A transport header offset, bounded where the verifier sees it: LLVM carries the offset
/// packed with other header fields, and verifiers before 6.x lose its bounds through the byte
/// swaps of that packing (5.10 refused the packet reads at it). `black_box` keeps LLVM from
/// proving the mask needless and dropping it.
#[inline(always)]
fn bounded(l4_offset: u32) -> u32 {
    core::hint::black_box(l4_offset) & MAX_L4_OFFSET
}

/// Adds one packet seen by a container's socket hooks. Outgoing packets may be counted from a
/// process and, on the same CPU, from a softirq that interrupted it (an ACK, a
/// retransmission), so their adds are atomic (on this CPU's own cache line); incoming ones are
/// only ever counted from softirq, one at a time per CPU.
#[inline(always)]
pub fn count_at_socket(counters: *mut TrafficCounters, direction: Direction, size: (u64, u64)) {
    // SAFETY: `counters` points into this CPU's value of a per-CPU map, valid for the run.
    unsafe {
        match direction {
            Direction::Ingress => add_plain(&mut *counters, direction, size),
            Direction::Egress => {
                atomic_add(&mut (*counters).tx_packets, size.0);
                atomic_add(&mut (*counters).tx_bytes, size.1);
            }
        }
    }
}

/// Adds one packet seen at a device: TC runs with softirqs off, so nothing nests on a CPU.
#[inline(always)]
pub fn add_plain(
    counters: &mut TrafficCounters,
    direction: Direction,
    (packets, bytes): (u64, u64),
) {
    match direction {
        Direction::Ingress => {
            counters.rx_packets += packets;
            counters.rx_bytes += bytes;
        }
        Direction::Egress => {
            counters.tx_packets += packets;
            counters.tx_bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn atomic_add(word: &mut u64, value: u64) {
    // The BPF target has no atomic read-modify-write types in core, only the instruction
    // (BPF_ATOMIC | BPF_ADD), which this intrinsic emits when its result is unused.
    // SAFETY: `word` is a valid, aligned, exclusive reference for the duration of the call.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            word, value,
        );
    }
}

/// `f` of the bytes `T` (an array) at `offset` from the network header, read in place from
/// the packet's linear data: copying them out first would cost a load and a store per byte,
/// where `f` reads only the bytes it needs.
#[inline(always)]
fn with_bytes<T: Default + Copy, R>(
    skb: *mut __sk_buff,
    net_offset: u32,
    offset: u32,
    f: impl FnOnce(&T) -> R,
) -> Option<R> {
    // SAFETY: the kernel hands every skb program a valid context.
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let at = data + net_offset as usize + offset as usize;
    if at + core::mem::size_of::<T>() <= data_end {
        // SAFETY: the bytes are inside the packet's linear data, as just checked; `T` is a
        // byte array, which has no alignment.
        return Some(f(unsafe { &*(at as *const T) }));
    }
    copy_out::<T>(skb, offset).map(|bytes| f(&bytes))
}

/// `T` at `offset` from the network header, which starts `net_offset` bytes into the data.
#[inline(always)]
fn load<T: Default + Copy>(skb: *mut __sk_buff, net_offset: u32, offset: u32) -> Option<T> {
    // SAFETY: the kernel hands every skb program a valid context.
    let (data, data_end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let at = data + net_offset as usize + offset as usize;
    if at + core::mem::size_of::<T>() <= data_end {
        // SAFETY: the bytes are inside the packet's linear data, as just checked.
        return Some(unsafe { core::ptr::read_unaligned(at as *const T) });
    }
    copy_out(skb, offset)
}

/// Headers beyond the linear data: the helper copies them out, from the network header on.
#[inline(never)]
fn copy_out<T: Default + Copy>(skb: *mut __sk_buff, offset: u32) -> Option<T> {
    let mut value = T::default();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `value`.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            skb as *const _,
            offset,
            &mut value as *mut T as *mut _,
            core::mem::size_of::<T>() as u32,
            BPF_HDR_START_NET,
        )
    };
    (rc == 0).then_some(value)
}
