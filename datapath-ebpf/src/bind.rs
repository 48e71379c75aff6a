//! cgroup/bind4 and cgroup/bind6: port ownership. `bind4`/`bind6` attach to each container's
//! cgroup, `host_bind4`/`host_bind6` to the root cgroup; both hand off to `decide`, and differ
//! only in how they read the address.
use aya_ebpf::{
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_netns_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext as _,
};
use aya_log_ebpf::debug;
use hostnetd_common::{
    bind::{decide, BindEnv, Scope, Verdict},
    traffic::{DENIAL_BIND, HOST_CGROUP},
    BindAddrKey, PortOwner,
};

use crate::{
    container::current_container,
    maps::{BIND_ADDRS, CONTAINER_POLICIES, PORT_OWNERS},
    report::{report, Denial},
    sockaddr::{deny, ipv4_addr, ipv6_addr, protocol_and_port, ALLOW},
};

struct Kernel;

impl BindEnv for Kernel {
    #[inline(always)]
    fn owner(&self, slot: u32) -> Option<PortOwner> {
        PORT_OWNERS.get(slot).copied()
    }

    #[inline(always)]
    fn current_ancestor_cgroup(&self, level: u32) -> u64 {
        // SAFETY: a helper call with a scalar argument.
        unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
    }

    #[inline(always)]
    fn generation(&self, cgroup_id: u64) -> Option<u32> {
        // SAFETY: the value is only read, and the map's values are plain data.
        unsafe { CONTAINER_POLICIES.get(&cgroup_id) }.map(|policy| policy.generation)
    }

    #[inline(always)]
    fn address_listed(&self, key: &BindAddrKey) -> bool {
        BIND_ADDRS.get_ptr(key).is_some()
    }
}

#[inline(always)]
fn check(ctx: &SockAddrContext, scope: Scope, addr: [u8; 16]) -> i32 {
    let (protocol, port) = protocol_and_port(ctx);
    match decide(&Kernel, scope, protocol, &addr, port) {
        Verdict::Allow => ALLOW,
        // Ports are owned in the host's network namespace only: a host process in another one
        // (a bridged or `--network none` container) binds in a port space of its own.
        Verdict::Deny(_) if scope == Scope::Host && !in_initial_netns(ctx) => ALLOW,
        Verdict::Deny(errno) => {
            let (verdict, errno) = deny(errno);
            debug!(ctx, "bind to port {} refused: errno {}", port, errno);
            report_bind(scope, errno, protocol, port, addr);
            verdict
        }
    }
}

/// Whether the socket is in the initial network namespace (the helper gives that namespace's
/// cookie for a null context). Asked only of a bind about to be refused: it costs two calls.
#[inline(always)]
fn in_initial_netns(ctx: &SockAddrContext) -> bool {
    // SAFETY: helper calls on the program's own context, and with null for the initial one.
    unsafe { bpf_get_netns_cookie(ctx.as_ptr()) == bpf_get_netns_cookie(core::ptr::null_mut()) }
}

/// A container's refused bind is reported by its own hook; the root's hook reports only host
/// processes, so no bind is counted twice.
#[inline(always)]
fn report_bind(scope: Scope, errno: i32, protocol: u32, port: u16, addr: [u8; 16]) {
    let container = current_container().map(|(cgroup_id, _)| cgroup_id);
    let cgroup_id = match (scope, container) {
        (Scope::Container, Some(cgroup_id)) => cgroup_id,
        (Scope::Host, None) => HOST_CGROUP,
        _ => return,
    };
    report(&Denial {
        cgroup_id,
        kind: DENIAL_BIND,
        errno: errno as u32,
        ipproto: protocol as u8,
        port,
        addr,
        by_task: true,
    });
}

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    check(&ctx, Scope::Container, ipv4_addr(&ctx))
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    check(&ctx, Scope::Container, ipv6_addr(&ctx))
}

#[cgroup_sock_addr(bind4)]
pub fn host_bind4(ctx: SockAddrContext) -> i32 {
    check(&ctx, Scope::Host, ipv4_addr(&ctx))
}

#[cgroup_sock_addr(bind6)]
pub fn host_bind6(ctx: SockAddrContext) -> i32 {
    check(&ctx, Scope::Host, ipv6_addr(&ctx))
}
