//! Per-container bandwidth limits: the schedule the egress and ingress programs keep for a
//! limited container, and the one decision both of its modes share.
//!
//! The schedule is a virtual clock (`next_departure`): each packet that goes advances it by the
//! time the packet takes at the set rate. A container idle for a while may fall behind `now`
//! by at most its burst, which it may then send at once.
//! - **EDT** (earliest departure time): where fq paces the device, a packet is given the
//!   clock's time as `skb->tstamp` and fq holds it until then. Nothing is lost; a packet the
//!   clock would hold longer than [`EDT_HORIZON_NS`] is dropped, as fq itself would.
//! - **Policing**: where nothing paces (no fq, or loopback, which has no qdisc), a packet goes
//!   when the clock is not ahead of `now`. Up to a burst ahead, it still goes, but with a
//!   congestion signal: ECN's Congestion Experienced mark when the flow negotiated ECN, and
//!   for a local TCP sender the queue's congestion notification, on which it halves its window
//!   as if a packet had been lost, without losing one. Beyond that it is dropped. Each packet
//!   that goes advances the clock, so the long-run rate is the set one whatever the packet
//!   sizes, GSO super-packets included.

/// How far ahead of now EDT may schedule a packet before it is dropped: a queue longer than
/// this is a flood, not a burst (Cilium's bandwidth manager drops at the same horizon).
pub const EDT_HORIZON_NS: u64 = 2_000_000_000;
const NS_PER_SECOND: u64 = 1_000_000_000;

/// One direction of a container's limit: the configuration the agent writes, the schedule the
/// programs keep, and what the limit did. A zero `bytes_per_second` means no limit that way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pace {
    pub bytes_per_second: u64,
    /// Nanoseconds per byte at the rate, in 32.32 fixed point ([`ns_per_byte`]): a packet's
    /// time is a multiplication, not a division.
    pub ns_per_byte: u64,
    /// The burst, as the time it takes at the rate.
    pub burst_ns: u64,
    /// CLOCK_MONOTONIC time at which the schedule's next byte may leave.
    pub next_departure: u64,
    /// Packets (and their bytes) held back by EDT.
    pub delayed_packets: u64,
    pub delayed_bytes: u64,
    /// Packets (and their bytes) dropped above the rate.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Packets let through above the rate with a congestion signal (marked Congestion
    /// Experienced when ECN-capable).
    pub marked_packets: u64,
}
const _: () = assert!(core::mem::size_of::<Pace>() == 72);

/// A container's limits by direction, keyed by its cgroup id in `LIMITS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerLimits {
    pub egress: Pace,
    pub ingress: Pace,
}
const _: () = assert!(core::mem::size_of::<ContainerLimits>() == 144);

/// A local TCP socket of a limited container, by socket cookie in `PACED_SOCKETS`: which
/// container it belongs to, and the pacing cap last set on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacedSocket {
    pub cgroup_id: u64,
    pub pacing_rate: u64,
}
const _: () = assert!(core::mem::size_of::<PacedSocket>() == 16);

/// `SO_MAX_PACING_RATE` without a cap.
pub const UNCAPPED: u32 = u32::MAX;

/// The pacing cap (bytes per second) that keeps a local TCP sender within `bytes_per_second`
/// of IP packets; [`UNCAPPED`] for no limit. TCP paces its payload with one TCP header per GSO
/// super-packet, while the limit counts every segment's IP and TCP headers: a full segment of
/// `mss` payload bytes is `mss + headers` on the wire (1448 in 1500 over IPv4 with
/// timestamps; 65483 in 65535 on loopback), so the cap is 99% of the limit's payload share.
/// Before the handshake has set the MSS (0), the share of a 1500-byte path is assumed.
///
/// Policing alone cannot hold a local TCP stream to a rate: with a round trip of microseconds
/// no window is small enough, and a locally dropped segment stalls the sender until a timer
/// fires. Paced, it stays under.
#[inline(always)]
pub fn pacing_cap(bytes_per_second: u64, mss: u32, ipv6: bool) -> u32 {
    if bytes_per_second == 0 {
        return UNCAPPED;
    }
    // IP, TCP and its timestamp option.
    let headers: u64 = if ipv6 { 40 + 32 } else { 20 + 32 };
    let mss = if mss == 0 { 1500 - headers } else { mss as u64 };
    // Far above any rate a limit takes, and small enough that the product fits.
    let rate = if bytes_per_second > 1 << 44 {
        1 << 44
    } else {
        bytes_per_second
    };
    // 1% under, so that the pacer's own rounding never runs into the policer.
    let cap = rate * mss / (mss + headers) / 100 * 99;
    if cap >= UNCAPPED as u64 {
        UNCAPPED - 1
    } else if cap == 0 {
        1
    } else {
        cap as u32
    }
}

/// How one packet is to be treated, and where the schedule goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Within the rate: it goes now.
    Pass,
    /// EDT: it leaves at this CLOCK_MONOTONIC time.
    Delay(u64),
    /// Above the rate by at most a burst: it goes, with a congestion signal.
    Mark,
    /// Above the rate: it is dropped and the schedule does not move.
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Edt,
    Police,
}

/// The decision for a packet of `bytes` at `now`, and the schedule's next departure after it.
#[inline(always)]
pub fn decide(pace: &Pace, now: u64, bytes: u64, mode: Mode) -> (Outcome, u64) {
    let earliest_with_burst = now.saturating_sub(pace.burst_ns);
    let start = if pace.next_departure > earliest_with_burst {
        pace.next_departure
    } else {
        earliest_with_burst
    };
    let after = start + transmit_ns(bytes, pace.ns_per_byte);
    let outcome = match mode {
        _ if start <= now => Outcome::Pass,
        Mode::Edt if start - now <= EDT_HORIZON_NS => Outcome::Delay(start),
        Mode::Police if start - now <= pace.burst_ns => Outcome::Mark,
        _ => Outcome::Drop,
    };
    match outcome {
        Outcome::Drop => (outcome, pace.next_departure),
        _ => (outcome, after),
    }
}

/// Nanoseconds per byte at `bytes_per_second`, in 32.32 fixed point; 0 for no rate. The
/// remainder is under both the rate and a second's nanoseconds (2^30), so its shift fits.
pub fn ns_per_byte(bytes_per_second: u64) -> u64 {
    if bytes_per_second == 0 {
        return 0;
    }
    let whole = NS_PER_SECOND / bytes_per_second;
    let fraction = ((NS_PER_SECOND % bytes_per_second) << 32) / bytes_per_second;
    // Never 0, which means no rate, however fast the rate.
    ((whole << 32) | fraction).max(1)
}

/// Nanoseconds `bytes` take at `ns_per_byte` (32.32 fixed point), at least 1 for any packet at
/// any rate, so that even a very high rate advances the schedule; 0 without a rate.
#[inline(always)]
pub fn transmit_ns(bytes: u64, ns_per_byte: u64) -> u64 {
    if ns_per_byte == 0 {
        return 0;
    }
    // A packet is under 4 GiB and the whole part under 2^30: both products fit.
    let bytes = if bytes > u32::MAX as u64 {
        u32::MAX as u64
    } else {
        bytes
    };
    let ns = bytes * (ns_per_byte >> 32) + ((bytes * (ns_per_byte & 0xffff_ffff)) >> 32);
    if ns == 0 {
        1
    } else {
        ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT_100: u64 = 12_500_000;

    fn pace(burst_bytes: u64) -> Pace {
        Pace {
            bytes_per_second: MBIT_100,
            ns_per_byte: ns_per_byte(MBIT_100),
            burst_ns: transmit_ns(burst_bytes, ns_per_byte(MBIT_100)),
            ..Pace::default()
        }
    }

    /// Sends `count` packets of `bytes` as fast as offered, `gap_ns` apart; returns the bytes
    /// that went (passed, delayed or marked) and the time the last one left.
    fn offer(pace: &mut Pace, mode: Mode, start: u64, count: u64, bytes: u64, gap_ns: u64) -> u64 {
        let mut sent = 0;
        for index in 0..count {
            let (outcome, next) = decide(pace, start + index * gap_ns, bytes, mode);
            pace.next_departure = next;
            if outcome != Outcome::Drop {
                sent += bytes;
            }
        }
        sent
    }

    #[test]
    fn an_idle_container_sends_its_burst_at_once_then_the_rate_holds() {
        let mut limit = pace(150_000);
        let now = 10 * NS_PER_SECOND;
        // 300 packets of 1500 bytes at the same instant: the burst passes, the packet that
        // starts as it ends, and then a burst more with a congestion signal.
        let sent = offer(&mut limit, Mode::Police, now, 300, 1500, 0);
        assert_eq!(sent, 2 * 150_000 + 1500);
        let (outcome, _) = decide(&limit, now, 1500, Mode::Police);
        assert_eq!(outcome, Outcome::Drop);
    }

    #[test]
    fn policing_keeps_the_long_run_rate_whatever_is_offered() {
        let mut limit = pace(64 * 1024);
        // Offered at 10x the rate for 10 seconds: 1500-byte packets every 12 us.
        let start = NS_PER_SECOND;
        let count = 10 * NS_PER_SECOND / 12_000;
        let sent = offer(&mut limit, Mode::Police, start, count, 1500, 12_000);
        let expected = 10 * MBIT_100;
        assert!(sent.abs_diff(expected) < expected / 100, "sent {sent}");
    }

    #[test]
    fn super_packets_larger_than_the_burst_still_average_to_the_rate() {
        let mut limit = pace(16 * 1024);
        let start = NS_PER_SECOND;
        let count = 10 * NS_PER_SECOND / 100_000;
        let sent = offer(&mut limit, Mode::Police, start, count, 65_000, 100_000);
        let expected = 10 * MBIT_100;
        assert!(sent.abs_diff(expected) < expected / 50, "sent {sent}");
    }

    #[test]
    fn edt_delays_instead_of_dropping_within_the_horizon() {
        let limit = Pace {
            next_departure: 5 * NS_PER_SECOND + 1_000_000,
            ..pace(1500)
        };
        let now = 5 * NS_PER_SECOND;
        let (outcome, next) = decide(&limit, now, 1250, Mode::Edt);
        assert_eq!(outcome, Outcome::Delay(now + 1_000_000));
        assert_eq!(next, now + 1_000_000 + 100_000);
        let far = Pace {
            next_departure: now + EDT_HORIZON_NS + 1,
            ..limit
        };
        assert_eq!(
            decide(&far, now, 1250, Mode::Edt),
            (Outcome::Drop, far.next_departure)
        );
    }

    #[test]
    fn above_the_rate_a_packet_is_signalled_within_a_burst_and_dropped_beyond() {
        let now = 5 * NS_PER_SECOND;
        let limit = Pace {
            next_departure: now + 1000,
            ..pace(1500)
        };
        assert_eq!(decide(&limit, now, 100, Mode::Police).0, Outcome::Mark);
        let beyond = Pace {
            next_departure: now + limit.burst_ns + 1,
            ..limit
        };
        assert_eq!(decide(&beyond, now, 100, Mode::Police).0, Outcome::Drop);
    }

    #[test]
    fn the_pacing_cap_is_the_payload_share_of_the_limit() {
        // 100 Mbit/s over a 1500-byte IPv4 path: 1448 of every 1500 bytes.
        assert_eq!(
            pacing_cap(MBIT_100, 1448, false),
            (12_500_000u64 * 1448 / 1500 / 100 * 99) as u32
        );
        assert_eq!(
            pacing_cap(MBIT_100, 0, false),
            pacing_cap(MBIT_100, 1448, false)
        );
        assert_eq!(
            pacing_cap(MBIT_100, 0, true),
            (12_500_000u64 * 1428 / 1500 / 100 * 99) as u32
        );
        // Loopback's 64 KiB segments leave almost all of it.
        assert!(pacing_cap(MBIT_100, 65483, false) > 12_350_000);
        assert_eq!(pacing_cap(0, 1448, false), UNCAPPED);
        assert_eq!(pacing_cap(u64::MAX, 65483, false), UNCAPPED - 1);
        assert_eq!(pacing_cap(1000, 1448, false), 891);
        assert_eq!(pacing_cap(1, 1448, false), 1);
    }

    #[test]
    fn transmission_time_follows_the_rate() {
        assert_eq!(transmit_ns(1250, ns_per_byte(MBIT_100)), 100_000);
        assert_eq!(transmit_ns(1, ns_per_byte(u64::MAX / 2)), 1);
        assert_eq!(transmit_ns(1500, ns_per_byte(0)), 0);
        // The fixed point agrees with a division within a nanosecond, from a byte a second
        // to terabits, for packets up to 64 KiB.
        for rate in [
            1,
            3,
            7,
            1_000,
            125_000,
            12_345_678,
            125_000_000,
            1_250_000_000_000,
        ] {
            for bytes in [1u64, 64, 1500, 9000, 65_536] {
                let exact = (bytes as u128 * 1_000_000_000 / rate as u128) as u64;
                let fixed = transmit_ns(bytes, ns_per_byte(rate));
                assert!(
                    fixed.abs_diff(exact.max(1)) <= 1,
                    "{bytes} B at {rate} B/s: {fixed}"
                );
            }
        }
    }
}
