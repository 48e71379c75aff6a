//! The bind decision: may the socket's process bind this port? Written once, used by the
//! `bind4`/`bind6` hooks (containers) and `host_bind4`/`host_bind6` (root cgroup), and tested
//! on the host against a fake [`BindEnv`].

use crate::{
    BindAddrKey, PortOwner, Proto, EACCES, EADDRINUSE, OWNER_ANY_ADDRESS, OWNER_LISTED_ADDRESSES,
};

/// Where the hook is attached, which decides what an unowned port means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A container's cgroup: only declared ports (and port 0) may be bound.
    Container,
    /// The root cgroup: only ports some container owns are protected.
    Host,
}

/// The outcome of a bind check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Deny with this errno, set through `bpf_set_retval`.
    Deny(i32),
}

/// What the decision needs from the kernel, so that it can be tested on the host.
pub trait BindEnv {
    fn owner(&self, slot: u32) -> Option<PortOwner>;
    /// Id of the calling task's cgroup ancestor at `level` (its own cgroup when at that level).
    fn current_ancestor_cgroup(&self, level: u32) -> u64;
    fn address_listed(&self, key: &BindAddrKey) -> bool;
}

/// Decides a bind of `addr` (IPv6 or v4-mapped form) and `port` (host byte order).
#[inline(always)]
pub fn decide<E: BindEnv>(
    env: &E,
    scope: Scope,
    ipproto: u32,
    addr: &[u8; 16],
    port: u16,
) -> Verdict {
    let Some(proto) = Proto::from_ipproto(ipproto) else {
        return Verdict::Allow;
    };
    if port == 0 {
        return Verdict::Allow;
    }
    let owner = env.owner(proto.owner_slot(port)).unwrap_or_default();
    if !owner.is_owned() {
        return match scope {
            Scope::Container => Verdict::Deny(EACCES),
            Scope::Host => Verdict::Allow,
        };
    }
    if env.current_ancestor_cgroup(owner.cgroup_level) != owner.cgroup_id {
        return Verdict::Deny(EADDRINUSE);
    }
    if scope == Scope::Host || owner.flags & OWNER_ANY_ADDRESS != 0 {
        return Verdict::Allow;
    }
    let listed = owner.flags & OWNER_LISTED_ADDRESSES != 0
        && env.address_listed(&BindAddrKey::new(owner.cgroup_id, *addr, port, proto));
    if listed {
        Verdict::Allow
    } else {
        Verdict::Deny(EACCES)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::BTreeMap, vec::Vec};

    use super::*;
    use crate::{v4_mapped, IPPROTO_TCP, IPPROTO_UDP};

    const WEB: u64 = 101;
    const DB: u64 = 202;

    #[derive(Default)]
    struct FakeKernel {
        owners: BTreeMap<u32, PortOwner>,
        addrs: Vec<BindAddrKey>,
        /// The caller's cgroup path from the root, as ids: index = level.
        caller: Vec<u64>,
    }

    impl FakeKernel {
        fn own(mut self, cgroup_id: u64, proto: Proto, port: u16, flags: u32) -> Self {
            let owner = PortOwner {
                cgroup_id,
                cgroup_level: 2,
                flags,
            };
            self.owners.insert(proto.owner_slot(port), owner);
            self
        }
        fn listing(mut self, cgroup_id: u64, addr: [u8; 16], port: u16, proto: Proto) -> Self {
            self.addrs
                .push(BindAddrKey::new(cgroup_id, addr, port, proto));
            self
        }
        fn called_from(mut self, path: &[u64]) -> Self {
            self.caller = path.to_vec();
            self
        }
    }

    impl BindEnv for FakeKernel {
        fn owner(&self, slot: u32) -> Option<PortOwner> {
            self.owners.get(&slot).copied()
        }
        fn current_ancestor_cgroup(&self, level: u32) -> u64 {
            self.caller.get(level as usize).copied().unwrap_or(0)
        }
        fn address_listed(&self, key: &BindAddrKey) -> bool {
            self.addrs.contains(key)
        }
    }

    const ANY: [u8; 16] = [0; 16];
    const ROOT: u64 = 1;
    const PARENT: u64 = 50;

    fn in_web() -> FakeKernel {
        FakeKernel::default().called_from(&[ROOT, PARENT, WEB])
    }

    #[test]
    fn container_binds_declared_port_on_any_address() {
        let k = in_web().own(WEB, Proto::Tcp, 20080, OWNER_ANY_ADDRESS);
        assert_eq!(
            decide(&k, Scope::Container, IPPROTO_TCP, &ANY, 20080),
            Verdict::Allow
        );
    }

    #[test]
    fn declared_tcp_port_does_not_open_udp() {
        let k = in_web().own(WEB, Proto::Tcp, 20080, OWNER_ANY_ADDRESS);
        let verdict = decide(&k, Scope::Container, IPPROTO_UDP, &ANY, 20080);
        assert_eq!(verdict, Verdict::Deny(EACCES));
    }

    #[test]
    fn container_is_refused_another_containers_port() {
        let k = in_web().own(DB, Proto::Tcp, 25432, OWNER_ANY_ADDRESS);
        let verdict = decide(&k, Scope::Container, IPPROTO_TCP, &ANY, 25432);
        assert_eq!(verdict, Verdict::Deny(EADDRINUSE));
    }

    #[test]
    fn container_is_refused_undeclared_port_but_not_port_zero() {
        let k = in_web();
        let undeclared = decide(&k, Scope::Container, IPPROTO_TCP, &ANY, 20081);
        assert_eq!(undeclared, Verdict::Deny(EACCES));
        assert_eq!(
            decide(&k, Scope::Container, IPPROTO_TCP, &ANY, 0),
            Verdict::Allow
        );
    }

    #[test]
    fn nested_cgroup_inside_owner_is_the_owner() {
        let k = FakeKernel::default()
            .called_from(&[ROOT, PARENT, WEB, 999])
            .own(WEB, Proto::Udp, 25000, OWNER_ANY_ADDRESS);
        assert_eq!(
            decide(&k, Scope::Container, IPPROTO_UDP, &ANY, 25000),
            Verdict::Allow
        );
    }

    #[test]
    fn host_is_refused_only_owned_ports() {
        let host = FakeKernel::default()
            .called_from(&[ROOT])
            .own(WEB, Proto::Tcp, 20080, 1);
        assert_eq!(
            decide(&host, Scope::Host, IPPROTO_TCP, &ANY, 20080),
            Verdict::Deny(EADDRINUSE)
        );
        assert_eq!(
            decide(&host, Scope::Host, IPPROTO_TCP, &ANY, 20081),
            Verdict::Allow
        );
        assert_eq!(
            decide(&host, Scope::Host, IPPROTO_UDP, &ANY, 20080),
            Verdict::Allow
        );
    }

    #[test]
    fn address_restriction_allows_only_listed_address() {
        let loopback = v4_mapped([127, 0, 0, 1]);
        let k = in_web()
            .own(WEB, Proto::Tcp, 20080, OWNER_LISTED_ADDRESSES)
            .listing(WEB, loopback, 20080, Proto::Tcp);
        assert_eq!(
            decide(&k, Scope::Container, IPPROTO_TCP, &loopback, 20080),
            Verdict::Allow
        );
        let other = v4_mapped([127, 0, 0, 2]);
        let denied = decide(&k, Scope::Container, IPPROTO_TCP, &other, 20080);
        assert_eq!(denied, Verdict::Deny(EACCES));
        assert_eq!(
            decide(&k, Scope::Container, IPPROTO_TCP, &ANY, 20080),
            Verdict::Deny(EACCES)
        );
    }

    #[test]
    fn owner_with_no_flags_allows_nothing() {
        let k = in_web()
            .own(WEB, Proto::Tcp, 20080, 0)
            .listing(WEB, ANY, 20080, Proto::Tcp);
        assert_eq!(
            decide(&k, Scope::Container, IPPROTO_TCP, &ANY, 20080),
            Verdict::Deny(EACCES)
        );
    }

    #[test]
    fn untracked_protocols_pass() {
        let k = in_web();
        assert_eq!(
            decide(&k, Scope::Container, 132, &ANY, 20080),
            Verdict::Allow
        );
    }
}
