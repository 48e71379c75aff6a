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
    /// The policy generation in force for the container whose cgroup is `cgroup_id`
    /// (`CONTAINER_POLICIES`); None when it has no policy.
    fn generation(&self, cgroup_id: u64) -> Option<u32>;
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
    // A slot is owned whatever its grants: while an update moves a port in or out, it is kept
    // from everyone else under either generation.
    if env.current_ancestor_cgroup(owner.cgroup_level) != owner.cgroup_id {
        return Verdict::Deny(EADDRINUSE);
    }
    if scope == Scope::Host {
        return Verdict::Allow;
    }
    owner_verdict(env, &owner, proto, addr, port)
}

/// The owner's own bind: what the grant of the generation in force allows. No policy, no
/// grant, or an unknown grant allows nothing.
#[inline(always)]
fn owner_verdict<E: BindEnv>(
    env: &E,
    owner: &PortOwner,
    proto: Proto,
    addr: &[u8; 16],
    port: u16,
) -> Verdict {
    let Some(generation) = env.generation(owner.cgroup_id) else {
        return Verdict::Deny(EACCES);
    };
    let allowed = match owner.grant(generation) {
        OWNER_ANY_ADDRESS => true,
        OWNER_LISTED_ADDRESSES => env.address_listed(&BindAddrKey::new(
            owner.cgroup_id,
            generation,
            *addr,
            port,
            proto,
        )),
        _ => false,
    };
    if allowed {
        Verdict::Allow
    } else {
        Verdict::Deny(EACCES)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::BTreeMap, vec, vec::Vec};

    use super::*;
    use crate::{v4_mapped, IPPROTO_TCP, IPPROTO_UDP, OWNER_GENERATION_0, OWNER_GENERATION_1};

    const WEB: u64 = 101;
    const DB: u64 = 202;

    #[derive(Clone, Default)]
    struct FakeKernel {
        owners: BTreeMap<u32, PortOwner>,
        addrs: Vec<BindAddrKey>,
        /// Each container's generation in force (`CONTAINER_POLICIES`).
        generations: BTreeMap<u64, u32>,
        /// The caller's cgroup path from the root, as ids: index = level.
        caller: Vec<u64>,
    }

    impl FakeKernel {
        /// `cgroup_id` owns the port, granted `grant` under generation 0, which is in force
        /// unless the container already has a generation.
        fn own(self, cgroup_id: u64, proto: Proto, port: u16, grant: u32) -> Self {
            self.in_force(cgroup_id, 0)
                .own_in(cgroup_id, 0, proto, port, grant)
        }
        /// Adds `generation`'s grant to the port's slot (taking it for `cgroup_id`).
        fn own_in(
            mut self,
            cgroup_id: u64,
            generation: u32,
            proto: Proto,
            port: u16,
            grant: u32,
        ) -> Self {
            let slot = self
                .owners
                .entry(proto.owner_slot(port))
                .or_insert(PortOwner {
                    cgroup_id,
                    cgroup_level: 2,
                    ..PortOwner::default()
                });
            *slot = slot.with_grant(generation, grant);
            self
        }
        fn in_force(mut self, cgroup_id: u64, generation: u32) -> Self {
            self.generations.entry(cgroup_id).or_insert(generation);
            self
        }
        fn flip(mut self, cgroup_id: u64, generation: u32) -> Self {
            self.generations.insert(cgroup_id, generation);
            self
        }
        fn listing(
            mut self,
            cgroup_id: u64,
            generation: u32,
            addr: [u8; 16],
            port: u16,
            proto: Proto,
        ) -> Self {
            let key = BindAddrKey::new(cgroup_id, generation, addr, port, proto);
            self.addrs.push(key);
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
        fn generation(&self, cgroup_id: u64) -> Option<u32> {
            self.generations.get(&cgroup_id).copied()
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

    fn tcp(k: &FakeKernel, port: u16) -> Verdict {
        decide(k, Scope::Container, IPPROTO_TCP, &ANY, port)
    }

    #[test]
    fn container_binds_declared_port_on_any_address() {
        let k = in_web().own(WEB, Proto::Tcp, 20080, OWNER_ANY_ADDRESS);
        assert_eq!(tcp(&k, 20080), Verdict::Allow);
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
        assert_eq!(tcp(&k, 25432), Verdict::Deny(EADDRINUSE));
    }

    #[test]
    fn container_is_refused_undeclared_port_but_not_port_zero() {
        let k = in_web();
        assert_eq!(tcp(&k, 20081), Verdict::Deny(EACCES));
        assert_eq!(tcp(&k, 0), Verdict::Allow);
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
        let host = FakeKernel::default().called_from(&[ROOT]).own(
            WEB,
            Proto::Tcp,
            20080,
            OWNER_ANY_ADDRESS,
        );
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
            .listing(WEB, 0, loopback, 20080, Proto::Tcp);
        assert_eq!(
            decide(&k, Scope::Container, IPPROTO_TCP, &loopback, 20080),
            Verdict::Allow
        );
        let other = v4_mapped([127, 0, 0, 2]);
        let denied = decide(&k, Scope::Container, IPPROTO_TCP, &other, 20080);
        assert_eq!(denied, Verdict::Deny(EACCES));
        assert_eq!(tcp(&k, 20080), Verdict::Deny(EACCES));
    }

    #[test]
    fn owned_slot_with_no_grant_is_usable_by_nobody() {
        // systemd#30556: an empty entry must never mean "everything".
        let k = in_web()
            .own(WEB, Proto::Tcp, 20080, 0)
            .listing(WEB, 0, ANY, 20080, Proto::Tcp);
        assert_eq!(tcp(&k, 20080), Verdict::Deny(EACCES));
        let db = k.clone().called_from(&[ROOT, PARENT, DB]);
        assert_eq!(tcp(&db, 20080), Verdict::Deny(EADDRINUSE));
        let host = k.called_from(&[ROOT]);
        assert_eq!(
            decide(&host, Scope::Host, IPPROTO_TCP, &ANY, 20080),
            Verdict::Deny(EADDRINUSE)
        );
    }

    #[test]
    fn unknown_grant_bits_allow_nothing() {
        let both = OWNER_ANY_ADDRESS | OWNER_LISTED_ADDRESSES;
        let k = in_web().own(WEB, Proto::Tcp, 20080, both);
        assert_eq!(tcp(&k, 20080), Verdict::Deny(EACCES));
    }

    #[test]
    fn owner_without_a_policy_is_granted_nothing() {
        let mut k = in_web().own(WEB, Proto::Tcp, 20080, OWNER_ANY_ADDRESS);
        k.generations.clear();
        assert_eq!(tcp(&k, 20080), Verdict::Deny(EACCES));
    }

    #[test]
    fn only_the_grant_of_the_generation_in_force_counts() {
        let k = in_web()
            .in_force(WEB, 0)
            .own_in(WEB, 1, Proto::Tcp, 20080, OWNER_ANY_ADDRESS);
        assert_eq!(tcp(&k, 20080), Verdict::Deny(EACCES));
        assert_eq!(tcp(&k.flip(WEB, 1), 20080), Verdict::Allow);
    }

    #[test]
    fn listed_addresses_belong_to_their_generation() {
        let loopback = v4_mapped([127, 0, 0, 1]);
        let k = in_web()
            .in_force(WEB, 0)
            .own_in(WEB, 0, Proto::Tcp, 20080, OWNER_LISTED_ADDRESSES)
            .own_in(WEB, 1, Proto::Tcp, 20080, OWNER_LISTED_ADDRESSES)
            .listing(WEB, 1, loopback, 20080, Proto::Tcp);
        let bind = |k: &FakeKernel| decide(k, Scope::Container, IPPROTO_TCP, &loopback, 20080);
        assert_eq!(bind(&k), Verdict::Deny(EACCES));
        assert_eq!(bind(&k.flip(WEB, 1)), Verdict::Allow);
    }

    #[test]
    fn grants_are_independent_per_generation() {
        let owner = PortOwner::default()
            .with_grant(0, OWNER_ANY_ADDRESS)
            .with_grant(1, OWNER_LISTED_ADDRESSES);
        assert_eq!(owner.grant(0), OWNER_ANY_ADDRESS);
        assert_eq!(owner.grant(1), OWNER_LISTED_ADDRESSES);
        assert_eq!(owner.grant(2), OWNER_ANY_ADDRESS, "generations are 0 and 1");
        let withdrawn = owner.with_grant(0, 0);
        assert_eq!(withdrawn.grant(0), 0);
        assert_eq!(withdrawn.flags, OWNER_LISTED_ADDRESSES << 16);
        assert!(withdrawn.grants_anything());
        assert!(!withdrawn.with_grant(1, 0).grants_anything());
        assert_eq!(OWNER_GENERATION_0 & OWNER_GENERATION_1, 0);
    }

    /// One port of a set: (port, None for any address, or the one address allowed).
    type Declared = (u16, Option<[u8; 16]>);

    /// The agent's update, step by step: grant the new set under the next generation (address
    /// lists first), flip, then withdraw the previous generation's grants and free the slots
    /// left with none. Returns the kernel after each step.
    fn update_steps(k: FakeKernel, from: &[Declared], to: &[Declared]) -> Vec<FakeKernel> {
        let previous = k.generations[&WEB];
        let next = 1 - previous;
        let mut states = vec![k.clone()];
        let mut k = k;
        for &(port, addr) in to {
            let grant = match addr {
                None => OWNER_ANY_ADDRESS,
                Some(addr) => {
                    k = k.listing(WEB, next, addr, port, Proto::Tcp);
                    OWNER_LISTED_ADDRESSES
                }
            };
            k = k.own_in(WEB, next, Proto::Tcp, port, grant);
            states.push(k.clone());
        }
        k = k.flip(WEB, next);
        states.push(k.clone());
        for &(port, _) in from.iter().chain(to) {
            let slot = Proto::Tcp.owner_slot(port);
            let left = k.owners[&slot].with_grant(previous, 0);
            if left.grants_anything() {
                k.owners.insert(slot, left);
            } else {
                k.owners.remove(&slot);
            }
            states.push(k.clone());
        }
        k.addrs.retain(|key| u32::from(key.generation) != previous);
        states.push(k);
        states
    }

    fn install(k: FakeKernel, set: &[Declared]) -> FakeKernel {
        let mut k = k.in_force(WEB, 0);
        for &(port, addr) in set {
            let grant = match addr {
                None => OWNER_ANY_ADDRESS,
                Some(addr) => {
                    k = k.listing(WEB, 0, addr, port, Proto::Tcp);
                    OWNER_LISTED_ADDRESSES
                }
            };
            k = k.own_in(WEB, 0, Proto::Tcp, port, grant);
        }
        k
    }

    #[test]
    fn an_update_shows_the_container_one_set_or_the_other_and_never_frees_a_port_early() {
        let loopback = v4_mapped([127, 0, 0, 1]);
        // 20080 leaves, 20081 stays, 20082 arrives, 20083 goes from one address to any.
        let old: &[Declared] = &[(20080, None), (20081, None), (20083, Some(loopback))];
        let new: &[Declared] = &[(20081, None), (20082, None), (20083, None)];
        let probes: [(u16, [u8; 16]); 6] = [
            (20080, ANY),
            (20081, ANY),
            (20082, ANY),
            (20083, ANY),
            (20083, loopback),
            (20084, ANY),
        ];
        let verdicts = |k: &FakeKernel| -> Vec<Verdict> {
            (probes.iter())
                .map(|(port, addr)| decide(k, Scope::Container, IPPROTO_TCP, addr, *port))
                .collect()
        };
        let start = install(in_web(), old);
        let finish = install(in_web(), new);
        let (before, after) = (verdicts(&start), verdicts(&finish));
        assert_ne!(before, after);
        let steps = update_steps(start, old, new);
        let mut seen_new = false;
        for (step, k) in steps.iter().enumerate() {
            let now = verdicts(k);
            assert!(now == before || now == after, "step {step}: a mix: {now:?}");
            assert!(
                !(seen_new && now == before),
                "step {step}: back to the old set"
            );
            seen_new |= now == after;
            // Everyone else is kept off the ports of both sets: the kept ones throughout, the
            // one that leaves at least until the flip, the one that arrives once claimed.
            let db = k.clone().called_from(&[ROOT, PARENT, DB]);
            let flip = new.len() + 1;
            let claimed_20082 = 2;
            let mut owned = vec![20081, 20083];
            if step <= flip {
                owned.push(20080);
            }
            if step >= claimed_20082 {
                owned.push(20082);
            }
            for port in owned {
                assert_eq!(
                    tcp(&db, port),
                    Verdict::Deny(EADDRINUSE),
                    "step {step}: {port}"
                );
            }
        }
        let db = steps
            .last()
            .unwrap()
            .clone()
            .called_from(&[ROOT, PARENT, DB]);
        assert_eq!(
            tcp(&db, 20080),
            Verdict::Deny(EACCES),
            "the port that left is free"
        );
        assert_eq!(verdicts(steps.last().unwrap()), after);
        assert!(
            steps.last().unwrap().addrs.is_empty(),
            "old address lists left"
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
