//! tc_ingress and tc_egress (TCX), on the host's interfaces: traffic to and from owned ports
//! as the devices see it, including what never reaches a socket, and the ingress policy
//! applied before the socket lookup. Packets of ports nobody owns pass at once.
use aya_ebpf::{macros::classifier, programs::TcContext};
use aya_log_ebpf::debug;
use hostnetd_common::traffic::TrafficKey;

use crate::{
    ingress::{admits, port_row, row},
    limit::{self, any_limits, Fate},
    maps::{DEVICE_TRAFFIC, SETTINGS},
    packet::{add_plain, Direction, Packet},
};

/// TCX_NEXT: leave the verdict to the next program (or the stack).
const NEXT: i32 = -1;
const DROP: i32 = 2;
/// hostnetd attaches only to Ethernet-framed devices (loopback included).
const ETH_HLEN: u32 = 14;

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    at_device(&ctx, Direction::Ingress)
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    at_device(&ctx, Direction::Egress)
}

#[inline(always)]
fn at_device(ctx: &TcContext, direction: Direction) -> i32 {
    let Some(packet) = Packet::parse(ctx.skb.skb, ETH_HLEN, direction) else {
        return NEXT;
    };
    let Some(owner) = packet.owner() else {
        return NEXT;
    };
    let counters = match port_row(owner.row) {
        // SAFETY: this CPU's copy of the row, valid for the run.
        Some(row) => unsafe { core::ptr::addr_of_mut!((*row).device) },
        None => {
            let key = TrafficKey::new(owner.cgroup_id, packet.local_port, packet.class());
            let Some(counters) = row(&DEVICE_TRAFFIC, &key) else {
                return NEXT;
            };
            counters
        }
    };
    let size = packet.wire_size();
    // SAFETY: this CPU's value, valid for the run; TC never nests on a CPU.
    let counters = unsafe { &mut *counters };
    if direction == Direction::Ingress && !admits(&packet, owner.cgroup_id) {
        counters.dropped_packets += size.0;
        counters.dropped_bytes += size.1;
        debug!(
            ctx,
            "packet to owned port {} dropped at the device", packet.local_port
        );
        return DROP;
    }
    if direction == Direction::Ingress && over_ingress_limit(&packet, owner.cgroup_id, size.1) {
        return DROP;
    }
    add_plain(&mut counters.traffic, direction, size);
    NEXT
}

#[inline(always)]
fn over_ingress_limit(packet: &Packet, cgroup_id: u64, bytes: u64) -> bool {
    let limited = SETTINGS.get(0).is_some_and(any_limits);
    limited && limit::ingress(packet, cgroup_id, bytes) == Fate::Drop
}
