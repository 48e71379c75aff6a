//! Reading a sock_addr context, shared by the bind and egress hooks: v4 and v6 differ only
//! in how the address is read, and both yield the IPv6 (or v4-mapped) form.
use aya_ebpf::{helpers::generated::bpf_set_retval, programs::SockAddrContext};
use hostnetd_common::{v4_mapped, EPERM};

pub const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// The socket's IPPROTO_* and the port (host byte order) of the address it names.
#[inline(always)]
pub fn protocol_and_port(ctx: &SockAddrContext) -> (u32, u16) {
    // SAFETY: the kernel hands every sock_addr program a valid context.
    let (protocol, user_port) = unsafe { ((*ctx.sock_addr).protocol, (*ctx.sock_addr).user_port) };
    (protocol, u16::from_be(user_port as u16))
}

/// Whether the kernel has `bpf_set_retval` in sock_addr hooks (Linux 5.18 on), set by the
/// agent's probe at load time. Read-only data: the verifier knows its value and never looks at
/// the helper call on a kernel without it, which would otherwise reject the whole program.
#[unsafe(no_mangle)]
static HOSTNETD_SET_RETVAL: u8 = 1;

/// Refuses the call with `errno` where the kernel lets a program choose it; elsewhere the
/// kernel's own EPERM for every refusal. Returns the errno the caller sees, for the report.
#[inline(always)]
pub fn deny(errno: i32) -> (i32, i32) {
    // SAFETY: a read of a plain static; volatile keeps the compiler from folding its value.
    if unsafe { core::ptr::read_volatile(&HOSTNETD_SET_RETVAL) } == 0 {
        return (DENY, EPERM);
    }
    // SAFETY: a helper call with a constant, in a bind, connect or sendmsg hook.
    unsafe { bpf_set_retval(-errno) };
    (DENY, errno)
}

#[inline(always)]
pub fn ipv4_addr(ctx: &SockAddrContext) -> [u8; 16] {
    // SAFETY: user_ip4 is readable in the v4 hooks; it is in network byte order.
    let ip = unsafe { core::ptr::read_volatile(&(*ctx.sock_addr).user_ip4) };
    v4_mapped(ip.to_ne_bytes())
}

#[inline(always)]
pub fn ipv6_addr(ctx: &SockAddrContext) -> [u8; 16] {
    let mut addr = [0u8; 16];
    for (word, chunk) in addr.chunks_exact_mut(4).enumerate() {
        // SAFETY: user_ip6 is readable word by word in the v6 hooks (volatile keeps the
        // verifier-required 4-byte loads from being merged).
        let value = unsafe { core::ptr::read_volatile(&(*ctx.sock_addr).user_ip6[word]) };
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    addr
}
