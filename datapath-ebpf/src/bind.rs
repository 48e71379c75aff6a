//! cgroup/bind4 and cgroup/bind6: port ownership. `bind4`/`bind6` attach to each container's
//! cgroup, `host_bind4`/`host_bind6` to the root cgroup; both hand off to `decide`, and differ
//! only in how they read the address.
use aya_ebpf::{
    helpers::generated::bpf_get_current_ancestor_cgroup_id, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use hostnetd_common::{
    bind::{decide, BindEnv, Scope, Verdict},
    BindAddrKey, PortOwner,
};

use crate::{
    maps::{BIND_ADDRS, CONTAINER_POLICIES, PORT_OWNERS},
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
        Verdict::Deny(errno) => deny(errno),
    }
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
