//! Bandwidth limits, shared by `skb_egress` (a container's output, paced or policed) and
//! `tc_ingress` (its owned ports' input, policed): the schedule is advanced here, the decision
//! is `hostnetd_common::limit::decide`.
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_ecn_set_ce},
};
use hostnetd_common::{
    limit::{decide, Mode, Outcome, Pace},
    DatapathSettings, SETTINGS_LIMITS, SETTINGS_PACED_DEVICES,
};

use crate::{
    maps::{LIMITS, PACED_DEVICES},
    packet::{atomic_add, Packet},
};

/// What becomes of a packet under its container's limit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Go,
    /// It goes, and the sender should slow down (marked Congestion Experienced).
    GoSlower,
    Drop,
}

/// Whether any container has a limit: hosts without one never look.
#[inline(always)]
pub fn any_limits(settings: &DatapathSettings) -> bool {
    settings.flags & SETTINGS_LIMITS != 0
}

/// The container's egress limit applied to `packet` of `bytes` on the wire, leaving through
/// the packet's device: paced where fq honours departure times, policed elsewhere.
#[inline(always)]
pub fn egress(packet: &Packet, cgroup_id: u64, bytes: u64, settings: &DatapathSettings) -> Fate {
    let Some(limits) = LIMITS.get_ptr_mut(&cgroup_id) else {
        return Fate::Go;
    };
    // SAFETY: a live map value; the schedule's plain fields may race between CPUs, which at
    // worst lets a packet through early, and the counters are added atomically.
    let pace = unsafe { &mut (*limits).egress };
    let skb = packet.skb;
    // SAFETY: the kernel hands every skb program a valid context.
    let ifindex = unsafe { (*skb).ifindex };
    let paced = settings.flags & SETTINGS_PACED_DEVICES != 0
        // SAFETY: only read.
        && unsafe { PACED_DEVICES.get(&ifindex) }.is_some();
    let mode = if paced { Mode::Edt } else { Mode::Police };
    apply(pace, skb, bytes, mode, packet.ecn != 0)
}

/// The container's ingress limit on its owned ports, policed (no queue holds a host's
/// incoming packets per container).
#[inline(always)]
pub fn ingress(packet: &Packet, cgroup_id: u64, bytes: u64) -> Fate {
    let Some(limits) = LIMITS.get_ptr_mut(&cgroup_id) else {
        return Fate::Go;
    };
    // SAFETY: as in `egress`.
    let pace = unsafe { &mut (*limits).ingress };
    // No socket to notify here, and the sender is remote: a packet over the rate within a
    // burst simply goes.
    match apply(pace, packet.skb, bytes, Mode::Police, false) {
        Fate::GoSlower => Fate::Go,
        fate => fate,
    }
}

#[inline(always)]
fn apply(pace: &mut Pace, skb: *mut __sk_buff, bytes: u64, mode: Mode, ecn_capable: bool) -> Fate {
    if pace.bytes_per_second == 0 {
        return Fate::Go;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let (outcome, next_departure) = decide(pace, now, bytes, mode);
    pace.next_departure = next_departure;
    match outcome {
        Outcome::Pass => Fate::Go,
        Outcome::Delay(departure) => {
            // SAFETY: as above; TCP may have set its own, later, departure time.
            unsafe {
                if (*skb).tstamp < departure {
                    (*skb).tstamp = departure;
                }
            }
            atomic_add(&mut pace.delayed_packets, 1);
            atomic_add(&mut pace.delayed_bytes, bytes);
            Fate::Go
        }
        Outcome::Mark => {
            if ecn_capable {
                // SAFETY: a helper on the program's own context.
                unsafe { bpf_skb_ecn_set_ce(skb as *mut _) };
            }
            atomic_add(&mut pace.marked_packets, 1);
            Fate::GoSlower
        }
        Outcome::Drop => {
            atomic_add(&mut pace.dropped_packets, 1);
            atomic_add(&mut pace.dropped_bytes, bytes);
            Fate::Drop
        }
    }
}
