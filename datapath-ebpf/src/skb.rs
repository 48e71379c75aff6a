//! cgroup_skb/ingress and cgroup_skb/egress, on each container's cgroup: its traffic as its
//! sockets see it, per protocol and owned port, and the ingress policy of its owned ports.
//! The container's identity and its rows for the rest of each protocol class come with the
//! attachment (its cgroup storage), an owned port's row from its owner slot: a packet costs
//! no hash lookup unless its port has no row of its own.
use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use aya_log_ebpf::debug;
use core::ptr::addr_of_mut;

use hostnetd_common::{
    traffic::{ContainerRows, TrafficKey, CLASS_OTHER},
    NO_ROW,
};

use crate::{
    container::socket_container,
    ingress::{admits, port_row, row},
    limit::{self, any_limits, Fate},
    maps::{CONTAINER_ROWS, SETTINGS, TRAFFIC},
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
    let rows = CONTAINER_ROWS.get_ptr_mut();
    // SAFETY: this CPU's copy of the attachment's storage, valid for the run.
    let cgroup_id = match unsafe { (*rows).cgroup_id } {
        // Not written yet: the agent writes it when it attaches, before the container runs.
        0 => socket_container(skb, settings),
        cgroup_id => cgroup_id,
    };
    let Some(packet) = Packet::parse(skb, 0, direction) else {
        // SAFETY: the kernel hands every skb program a valid context.
        let len = unsafe { (*skb).len } as u64;
        count_rest(rows, CLASS_OTHER, direction, (1, len));
        return PASS;
    };
    // Plain values, defined on every path: an `Option<PortOwner>` kept to the end let LLVM
    // spill a field that is undefined when the port is nobody's, which the verifier refuses.
    let (own_port, own_row) = match packet.owner() {
        Some(owner) if owner.cgroup_id == cgroup_id => (packet.local_port, owner.row),
        _ => (0, NO_ROW),
    };
    if direction == Direction::Ingress && own_port != 0 && !admits(&packet, cgroup_id) {
        debug!(
            ctx,
            "packet to owned port {} dropped at the socket", own_port
        );
        return DROP;
    }
    let size = packet.wire_size();
    let mut verdict = PASS;
    if direction == Direction::Egress && any_limits(settings) {
        match limit::egress(&packet, cgroup_id, size.1, settings) {
            Fate::Go => {}
            Fate::GoSlower => verdict = PASS_SLOWER,
            Fate::Drop => return DROP_SLOWER,
        }
    }
    if own_port == 0 {
        count_rest(rows, packet.class(), direction, size);
    } else if let Some(row) = port_row(own_row) {
        // SAFETY: this CPU's copy of the row, valid for the run.
        count_at_socket(unsafe { addr_of_mut!((*row).socket) }, direction, size);
    } else {
        let key = TrafficKey::new(cgroup_id, own_port, packet.class());
        count_in_hash(&key, direction, size);
    }
    verdict
}

/// Counts a packet of an owned port that has no row of its own, in the hash. Out of line: a
/// rare path, and inlined it let LLVM merge blocks into a shape the verifier refuses.
#[inline(never)]
fn count_in_hash(key: &TrafficKey, direction: Direction, size: (u64, u64)) {
    if let Some(counters) = row(&TRAFFIC, key) {
        count_at_socket(counters, direction, size);
    }
}

/// Counts a packet on no owned port in the container's row for the rest of its class.
#[inline(always)]
fn count_rest(rows: *mut ContainerRows, class: u8, direction: Direction, size: (u64, u64)) {
    // SAFETY: this CPU's copy of the attachment's storage, valid for the run.
    if let Some(counters) = unsafe { (*rows).classes.get_mut(class as usize) } {
        count_at_socket(counters, direction, size);
    }
}
