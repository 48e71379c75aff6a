//! cgroup/connect4, connect6, sendmsg4 and sendmsg6: each container's egress policy. sendmsg
//! covers unconnected UDP, which never calls connect. All four hand off to `check`.
use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock_addr, maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use aya_log_ebpf::debug;
use hostnetd_common::{
    limit::PacedSocket,
    rules::decide,
    traffic::{DENIAL_CONNECT, DENIAL_SEND},
    PrefixKey, IPPROTO_TCP, POLICY_EGRESS_RULES,
};

use crate::{
    container::current_container,
    limit::any_limits,
    maps::{EGRESS_RULES, LIMITS, PACED_SOCKETS, SETTINGS},
    report::{report, Denial},
    sockaddr::{deny, ipv4_addr, ipv6_addr, protocol_and_port, ALLOW},
};

#[inline(always)]
fn check(ctx: &SockAddrContext, kind: u8, addr: [u8; 16]) -> i32 {
    let Some((cgroup_id, policy)) = current_container() else {
        return ALLOW;
    };
    if kind == DENIAL_CONNECT {
        note_limited_connect(ctx, cgroup_id);
    }
    // Most containers have no egress rules: no trie lookup for them.
    if policy.flags & POLICY_EGRESS_RULES == 0 {
        return ALLOW;
    }
    let (protocol, port) = protocol_and_port(ctx);
    let (data, prefix_len) = PrefixKey::for_address(cgroup_id, policy.generation, addr);
    let rules = EGRESS_RULES.get(&Key::new(prefix_len, data));
    match decide(Some(policy), rules, protocol as u8, port) {
        None => ALLOW,
        Some(errno) => {
            let (verdict, errno) = deny(errno);
            debug!(ctx, "egress to port {} refused: errno {}", port, errno);
            report(&Denial {
                cgroup_id,
                kind,
                errno: errno as u32,
                ipproto: protocol as u8,
                port,
                addr,
                by_task: true,
            });
            verdict
        }
    }
}

/// Tells `sock_ops` whose TCP socket this is, when its container has an egress limit: its
/// connect callback runs where the calling task cannot be asked on every kernel.
#[inline(always)]
fn note_limited_connect(ctx: &SockAddrContext, cgroup_id: u64) {
    if !SETTINGS.get(0).is_some_and(any_limits) {
        return;
    }
    // SAFETY: the kernel hands every sock_addr program a valid context.
    if unsafe { (*ctx.sock_addr).protocol } != IPPROTO_TCP {
        return;
    }
    // SAFETY: only read.
    if unsafe { LIMITS.get(&cgroup_id) }.is_none_or(|limits| limits.egress.bytes_per_second == 0) {
        return;
    }
    // SAFETY: a helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let socket = PacedSocket {
        cgroup_id,
        pacing_rate: 0,
    };
    let _ = PACED_SOCKETS.insert(&cookie, &socket, 0);
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    check(&ctx, DENIAL_CONNECT, ipv4_addr(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    check(&ctx, DENIAL_CONNECT, ipv6_addr(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    check(&ctx, DENIAL_SEND, ipv4_addr(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    check(&ctx, DENIAL_SEND, ipv6_addr(&ctx))
}
