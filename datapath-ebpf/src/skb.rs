//! cgroup_skb/ingress and cgroup_skb/egress, on each container's cgroup: its traffic as its
//! sockets see it, per protocol and owned port, and the ingress policy of its owned ports.
use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use aya_log_ebpf::debug;
use hostnetd_common::traffic::{TrafficKey, CLASS_OTHER};

use crate::{
    container::socket_container,
    ingress::{admits, port_row, row},
    limit::{self, any_limits, Fate},
    maps::{SETTINGS, TRAFFIC},
    packet::{count_at_socket, Direction, Packet},
};

const PASS: i32 = 1;
const DROP: i32 = 0;
/// Egress verdicts with congestion notification: the sending socket learns it went too fast
/// (TCP reduces its window, as on a local queue drop) without the packet counting as lost.
const PASS_SLOWER: i32 = 3;
const DROP_SLOWER: i32 = 2;

#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    account(&ctx, Direction::Ingress)
}

#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    account(&ctx, Direction::Egress)
}

#[inline(always)]
fn account(ctx: &SkBuffContext, direction: Direction) -> i32 {
    let skb = ctx.skb.skb;
    let Some(settings) = SETTINGS.get(0) else {
        return PASS;
    };
    let cgroup_id = socket_container(skb, settings);
    let Some(packet) = Packet::parse(skb, 0, direction) else {
        // SAFETY: the kernel hands every skb program a valid context.
        let len = unsafe { (*skb).len } as u64;
        count(
            &TrafficKey::new(cgroup_id, 0, CLASS_OTHER),
            direction,
            (1, len),
        );
        return PASS;
    };
    let owner = packet.owner().filter(|owner| owner.cgroup_id == cgroup_id);
    let own_port = owner.map_or(0, |_| packet.local_port);
    if direction == Direction::Ingress && own_port != 0 && !admits(&packet, cgroup_id) {
        debug!(
            ctx,
            "packet to owned port {} dropped at the socket", own_port
        );
        return DROP;
    }
    let key = TrafficKey::new(cgroup_id, own_port, packet.class());
    let size = packet.wire_size();
    let mut verdict = PASS;
    if direction == Direction::Egress && any_limits(settings) {
        match limit::egress(&packet, cgroup_id, size.1, settings) {
            Fate::Go => {}
            Fate::GoSlower => verdict = PASS_SLOWER,
            Fate::Drop => return DROP_SLOWER,
        }
    }
    match owner.and_then(|owner| port_row(owner.row)) {
        // SAFETY: this CPU's copy of the row, valid for the run.
        Some(row) => count_at_socket(
            unsafe { core::ptr::addr_of_mut!((*row).socket) },
            direction,
            size,
        ),
        None => count(&key, direction, size),
    }
    verdict
}

#[inline(always)]
fn count(key: &TrafficKey, direction: Direction, size: (u64, u64)) {
    if let Some(counters) = row(&TRAFFIC, key) {
        count_at_socket(counters, direction, size);
    }
}
