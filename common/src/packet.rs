//! What the packet hooks (`skb_*`, `tc_*`) decide from bytes alone, tested on the host: the IP
//! header's family, protocol and transport offset, the local port, the v4-mapped source, and
//! the per-CPU cache of ingress verdicts.
use crate::traffic::ipv4_header_len;

/// What the first ten bytes of an IP header say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    pub family: u8,
    pub ipproto: u8,
    /// Where the transport header starts, from the network header.
    pub l4_offset: u32,
    /// A fragment after the first: no transport header to read.
    pub later_fragment: bool,
    /// The ECN field: 0 for a packet of a flow that did not negotiate ECN.
    pub ecn: u8,
}

impl IpHeader {
    /// Version, IHL, the IPv4 fragment offset and protocol, or the IPv6 next header: one load
    /// of ten bytes covers both. None for anything but IPv4 and IPv6.
    #[inline(always)]
    pub fn parse(head: &[u8; 10]) -> Option<Self> {
        match head[0] >> 4 {
            4 => Some(Self {
                family: 4,
                ipproto: head[9],
                l4_offset: ipv4_header_len(head[0]),
                later_fragment: u16::from_be_bytes([head[6], head[7]]) & 0x1fff != 0,
                ecn: head[1] & 0b11,
            }),
            6 => Some(Self {
                family: 6,
                ipproto: head[6],
                l4_offset: 40,
                later_fragment: false,
                ecn: (head[1] >> 4) & 0b11,
            }),
            _ => None,
        }
    }
}

/// The host's end of a flow from the transport header's first four bytes: the destination
/// port of an incoming packet, the source port of an outgoing one.
#[inline(always)]
pub fn local_port(ports: &[u8; 4], incoming: bool) -> u16 {
    let at = if incoming { 2 } else { 0 };
    u16::from_be_bytes([ports[at], ports[at + 1]])
}

/// An IPv4 source as the two words of its v4-mapped IPv6 form, in memory order.
#[inline(always)]
pub fn v4_mapped_words(v4: [u8; 4]) -> [u64; 2] {
    let mapped = [0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]];
    [0, u64::from_ne_bytes(mapped)]
}

/// Slots of the per-CPU verdict cache: 2^10.
pub const VERDICT_SLOT_BITS: u32 = 10;

/// One cached answer: whether `source` may send `ipproto` packets to `port` of the container
/// `cgroup_id`. A zeroed slot matches no packet (no container has cgroup id 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedVerdict {
    pub cgroup_id: u64,
    pub source: [u64; 2],
    pub epoch: u32,
    pub port: u16,
    pub ipproto: u8,
    pub allowed: u8,
}

const _: () = assert!(core::mem::size_of::<CachedVerdict>() == 32);

impl CachedVerdict {
    /// Whether this cached answer is the answer to `question` (the same packet's question
    /// under the same policy epoch).
    #[inline(always)]
    pub fn answers(&self, question: &CachedVerdict) -> bool {
        self.cgroup_id == question.cgroup_id
            && self.source[0] == question.source[0]
            && self.source[1] == question.source[1]
            && self.epoch == question.epoch
            && self.port == question.port
            && self.ipproto == question.ipproto
    }

    /// The question's slot: multiplicative (Fibonacci) hashing of every field but the epoch (a
    /// new epoch replaces the slot's answer in place). The port stays in the low bits, which
    /// the multiplication carries into the top bits the slot is taken from: rotated into the
    /// top bits, a thousand consecutive ports of one source shared 460 of the 1024 slots.
    #[inline(always)]
    pub fn slot(&self) -> u32 {
        let folded = self.cgroup_id
            ^ self.source[0]
            ^ self.source[1].rotate_left(17)
            ^ ((self.port as u64) << 8 | self.ipproto as u64);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - VERDICT_SLOT_BITS)) as u32
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ip_headers_give_family_protocol_offset_and_fragments() {
        let mut v4 = [0u8; 10];
        v4[0] = 0x46; // version 4, IHL 6: options
        v4[9] = 6;
        let header = IpHeader::parse(&v4).unwrap();
        assert_eq!(
            (header.family, header.ipproto, header.l4_offset),
            (4, 6, 24)
        );
        assert!(!header.later_fragment);
        v4[6] = 0x20; // more fragments, offset 0: the first fragment has the ports
        assert!(!IpHeader::parse(&v4).unwrap().later_fragment);
        v4[7] = 0x10; // offset 16 * 8 bytes: a later fragment
        assert!(IpHeader::parse(&v4).unwrap().later_fragment);
        let mut v6 = [0u8; 10];
        v6[0] = 0x60;
        v6[6] = 17;
        let header = IpHeader::parse(&v6).unwrap();
        assert_eq!(
            (header.family, header.ipproto, header.l4_offset),
            (6, 17, 40)
        );
        assert_eq!(IpHeader::parse(&[0x50; 10]), None);
    }

    #[test]
    fn the_ecn_field_is_read_from_either_family() {
        let mut v4 = [0u8; 10];
        v4[0] = 0x45;
        v4[1] = 0xb8 | 0b10; // DSCP EF, ECT(0)
        assert_eq!(IpHeader::parse(&v4).unwrap().ecn, 0b10);
        let mut v6 = [0u8; 10];
        v6[0] = 0x6b; // traffic class 0xb8 | 0b01 spans the first two bytes
        v6[1] = 0x90;
        assert_eq!(IpHeader::parse(&v6).unwrap().ecn, 0b01);
        v6[1] = 0x80;
        assert_eq!(IpHeader::parse(&v6).unwrap().ecn, 0);
    }

    #[test]
    fn the_local_port_is_the_destination_coming_in_and_the_source_going_out() {
        let ports = [0x1f, 0x90, 0xc3, 0x50]; // 8080 -> 50000
        assert_eq!(local_port(&ports, true), 50000);
        assert_eq!(local_port(&ports, false), 8080);
    }

    #[test]
    fn a_v4_source_is_its_v4_mapped_address() {
        let words = v4_mapped_words([10, 1, 2, 3]);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&words[0].to_ne_bytes());
        bytes[8..].copy_from_slice(&words[1].to_ne_bytes());
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
        );
    }

    fn question(port: u16) -> CachedVerdict {
        CachedVerdict {
            cgroup_id: 4242,
            source: v4_mapped_words([192, 0, 2, 7]),
            epoch: 3,
            port,
            ipproto: 6,
            allowed: 0,
        }
    }

    #[test]
    fn a_cached_verdict_answers_only_its_own_question_in_its_epoch() {
        let cached = CachedVerdict {
            allowed: 1,
            ..question(8080)
        };
        assert!(cached.answers(&question(8080)));
        assert!(!cached.answers(&question(8081)));
        let next_epoch = CachedVerdict {
            epoch: 4,
            ..question(8080)
        };
        assert!(!cached.answers(&next_epoch));
        assert!(!CachedVerdict::default().answers(&question(8080)));
    }

    #[test]
    fn slots_stay_in_the_table_and_spread() {
        let slots: HashSet<u32> = (20000..21000).map(|port| question(port).slot()).collect();
        assert!(slots.iter().all(|&slot| slot < 1 << VERDICT_SLOT_BITS));
        // A thousand consecutive ports of one source fall into most of the 1024 slots (random
        // placement would fill about 640).
        assert!(slots.len() > 700, "{} distinct slots", slots.len());
        let next_epoch = CachedVerdict {
            epoch: 9,
            ..question(20000)
        };
        assert_eq!(next_epoch.slot(), question(20000).slot());
    }
}
