//! cgroup/bind4 and cgroup/bind6: port ownership. `bind4`/`bind6` attach to each container's
//! cgroup, `host_bind4`/`host_bind6` to the root cgroup; both hand off to `decide`, and differ
//! only in how they read the address.
use aya_ebpf::{
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use hostnetd_common::{
    bind::{decide, BindEnv, Scope, Verdict},
    v4_mapped, BindAddrKey, PortOwner,
};

use crate::maps::{BIND_ADDRS, PORT_OWNERS};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

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
    fn address_listed(&self, key: &BindAddrKey) -> bool {
        BIND_ADDRS.get_ptr(key).is_some()
    }
}

#[inline(always)]
fn check(ctx: &SockAddrContext, scope: Scope, addr: [u8; 16]) -> i32 {
    // SAFETY: the kernel hands every sock_addr program a valid context.
    let (protocol, user_port) = unsafe { ((*ctx.sock_addr).protocol, (*ctx.sock_addr).user_port) };
    let port = u16::from_be(user_port as u16);
    match decide(&Kernel, scope, protocol, &addr, port) {
        Verdict::Allow => ALLOW,
        Verdict::Deny(errno) => {
            // SAFETY: a helper call with a constant; allowed in bind hooks since Linux 5.18.
            unsafe { bpf_set_retval(-errno) };
            DENY
        }
    }
}

#[inline(always)]
fn ipv4_addr(ctx: &SockAddrContext) -> [u8; 16] {
    // SAFETY: user_ip4 is readable in bind4 programs; it is in network byte order.
    let ip = unsafe { core::ptr::read_volatile(&(*ctx.sock_addr).user_ip4) };
    v4_mapped(ip.to_ne_bytes())
}

#[inline(always)]
fn ipv6_addr(ctx: &SockAddrContext) -> [u8; 16] {
    let mut addr = [0u8; 16];
    for (word, chunk) in addr.chunks_exact_mut(4).enumerate() {
        // SAFETY: user_ip6 is readable word by word in bind6 programs (volatile keeps the
        // verifier-required 4-byte loads from being merged).
        let value = unsafe { core::ptr::read_volatile(&(*ctx.sock_addr).user_ip6[word]) };
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    addr
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
