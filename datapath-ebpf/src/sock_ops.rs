//! sock_ops, on each container's cgroup: a limited container's TCP sockets pace themselves at
//! its egress rate (`SO_MAX_PACING_RATE`), so that a policed stream never runs over and never
//! stalls on a drop; `skb_egress` still holds the container as a whole to the rate. An
//! update reaches open sockets at their next RTT sample; a container limited only by an update
//! has its open sockets policed, and its new ones paced.
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        BPF_TCP_CLOSE,
    },
    helpers::generated::{bpf_get_socket_cookie, bpf_setsockopt},
    macros::sock_ops,
    programs::SockOpsContext,
};
use hostnetd_common::{
    limit::{pacing_cap, PacedSocket, UNCAPPED},
    Proto,
};

use crate::{
    limit::any_limits,
    maps::{LIMITS, PACED_SOCKETS, PORT_OWNERS, SETTINGS},
};

const SOL_SOCKET: i32 = 1;
const AF_INET6: u32 = 10;
const SO_MAX_PACING_RATE: i32 = 47;
const FOLLOW_FLAGS: u32 = BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // The connect hook noted the socket's container (only a limited one's).
            // SAFETY: only read.
            if let Some(socket) = unsafe { PACED_SOCKETS.get(&cookie(&ctx)) } {
                start_pacing(&ctx, socket.cgroup_id);
            }
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            // Accepted in softirq, for a listener on an owned port: its owner's.
            if let Some(cgroup_id) = port_owner(ctx.local_port()) {
                start_pacing(&ctx, cgroup_id);
            }
        }
        BPF_SOCK_OPS_RTT_CB => follow_limit(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            let _ = PACED_SOCKETS.remove(&cookie(&ctx));
        }
        _ => {}
    }
    1
}

#[inline(always)]
fn port_owner(port: u32) -> Option<u64> {
    let owner = PORT_OWNERS.get(Proto::Tcp.owner_slot(port as u16))?;
    owner.is_owned().then_some(owner.cgroup_id)
}

/// Caps a new socket of a container with an egress limit, and follows it from then on.
#[inline(always)]
fn start_pacing(ctx: &SockOpsContext, cgroup_id: u64) {
    if !SETTINGS.get(0).is_some_and(any_limits) {
        return;
    }
    // SAFETY: only read.
    let Some(limits) = (unsafe { LIMITS.get(&cgroup_id) }) else {
        return;
    };
    if limits.egress.bytes_per_second == 0 {
        return;
    }
    let cap = cap_of(ctx, limits.egress.bytes_per_second);
    let socket = PacedSocket {
        cgroup_id,
        pacing_rate: cap as u64,
    };
    if set_cap(ctx, cap) && PACED_SOCKETS.insert(&cookie(ctx), &socket, 0).is_ok() {
        let _ = ctx.set_cb_flags((ctx.cb_flags() | FOLLOW_FLAGS) as i32);
    }
}

/// At each RTT sample: the cap of the container's limit now, set when it changed.
#[inline(always)]
fn follow_limit(ctx: &SockOpsContext) {
    let key = cookie(ctx);
    let Some(socket) = PACED_SOCKETS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a live map value, only this socket's callbacks (serialised by its lock) use it.
    let socket = unsafe { &mut *socket };
    // SAFETY: only read.
    let rate = unsafe { LIMITS.get(&socket.cgroup_id) }.map_or(0, |l| l.egress.bytes_per_second);
    let cap = cap_of(ctx, rate);
    if cap as u64 == socket.pacing_rate || !set_cap(ctx, cap) {
        return;
    }
    socket.pacing_rate = cap as u64;
    if cap == UNCAPPED {
        let _ = PACED_SOCKETS.remove(&key);
        let _ = ctx.set_cb_flags((ctx.cb_flags() & !FOLLOW_FLAGS) as i32);
    }
}

/// The socket's cap for `rate`, from its MSS as the handshake left it (an RTT sample after
/// the handshake corrects the guess a connect starts with).
#[inline(always)]
fn cap_of(ctx: &SockOpsContext, rate: u64) -> u32 {
    // SAFETY: the kernel hands every sock_ops program a valid context; mss_cache reads as 0
    // for a socket that is not a full one.
    let mss = unsafe { (*ctx.ops).mss_cache };
    pacing_cap(rate, mss, ctx.family() == AF_INET6)
}

#[inline(always)]
fn set_cap(ctx: &SockOpsContext, cap: u32) -> bool {
    let mut value = cap;
    // SAFETY: the helper reads the 4 bytes of `value`.
    let rc = unsafe {
        bpf_setsockopt(
            ctx.ops as *mut _,
            SOL_SOCKET,
            SO_MAX_PACING_RATE,
            &mut value as *mut u32 as *mut _,
            4,
        )
    };
    rc == 0
}

#[inline(always)]
fn cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: a helper on the program's own context.
    unsafe { bpf_get_socket_cookie(ctx.ops as *mut _) }
}
