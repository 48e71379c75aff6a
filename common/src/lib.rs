//! The kernel-userspace ABI of hostnetd: map keys and values shared by the eBPF programs in
//! `datapath-ebpf` and the loader in `agent`, and the bind decision both sides agree on.
//!
//! Every type is `#[repr(C)]`, `Copy`, padded explicitly and size-checked at compile time,
//! because the kernel sees raw bytes. Changing any layout means bumping [`ABI_VERSION`]: maps are
//! pinned under a directory named after it and the kernel never checks a reused pin's layout.
#![no_std]

pub mod bind;
pub mod limit;
pub mod packet;
pub mod rules;
pub mod traffic;

/// Version of the map layouts below; pins live under `<bpffs>/hostnetd/v<ABI_VERSION>`.
pub const ABI_VERSION: u32 = 7;

/// Slots per protocol in [`PORT_OWNERS`](MapName::PortOwners): one per port number.
pub const PORTS_PER_PROTO: u32 = 65536;
/// Protocols with port ownership; the owner array holds `PORTS_PER_PROTO` slots for each.
pub const TRACKED_PROTOS: u32 = 2;
/// Capacity of the address-restriction table (declarations such as `127.0.0.1:8080`).
pub const MAX_BIND_ADDRS: u32 = 16384;

pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
pub const EACCES: i32 = 13;
pub const EPERM: i32 = 1;
pub const EADDRINUSE: i32 = 98;

/// A port protocol that hostnetd tracks ownership for.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp = 0,
    Udp = 1,
}

impl Proto {
    /// Maps a socket's `IPPROTO_*` number; other protocols (SCTP, ICMP, raw) have no ports to own.
    #[inline(always)]
    pub fn from_ipproto(protocol: u32) -> Option<Self> {
        match protocol {
            IPPROTO_TCP => Some(Self::Tcp),
            IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    /// Index of this protocol's `port` in the owner array.
    #[inline(always)]
    pub fn owner_slot(self, port: u16) -> u32 {
        (self as u32) * PORTS_PER_PROTO + port as u32
    }
}

/// Who owns one (protocol, port) pair. A zeroed slot (`cgroup_id == 0`) is unowned: cgroup ids
/// start at 1, so an empty slot can never be mistaken for an owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortOwner {
    /// Id (cgroupfs inode number) of the owning container's cgroup v2 directory.
    pub cgroup_id: u64,
    /// Depth of that cgroup below the root, for `bpf_get_current_ancestor_cgroup_id`, so that
    /// processes in nested child cgroups of the container are still recognised as the owner.
    pub cgroup_level: u32,
    /// What the owner itself may bind, once per policy generation (see [`PortOwner::grant`]):
    /// generation 0's grant in bits 8-9, generation 1's in bits 16-17. Zero grants nothing.
    pub flags: u32,
    /// The port's counter row in [`PORT_ROWS`](MapName::PortRows), or [`NO_ROW`]: its traffic
    /// is then counted in the per-CPU hashes, keyed by (owner, port, class).
    pub row: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PortOwner>() == 24);

/// A [`PortOwner::row`] that names no row: the array was full when the port was claimed.
pub const NO_ROW: u32 = 0;

/// A grant: the owner may bind the port on any local address.
pub const OWNER_ANY_ADDRESS: u32 = 1 << 0;
/// A grant: the owner may bind the port only on the addresses listed in the bind-address table
/// under the same generation.
pub const OWNER_LISTED_ADDRESSES: u32 = 1 << 1;
/// Generation 0's grant, in place in [`PortOwner::flags`].
pub const OWNER_GENERATION_0: u32 = (OWNER_ANY_ADDRESS | OWNER_LISTED_ADDRESSES) << 8;
/// Generation 1's grant, in place in [`PortOwner::flags`].
pub const OWNER_GENERATION_1: u32 = (OWNER_ANY_ADDRESS | OWNER_LISTED_ADDRESSES) << 16;

#[inline(always)]
const fn grant_shift(generation: u32) -> u32 {
    8 + 8 * (generation & 1)
}

impl PortOwner {
    pub fn is_owned(&self) -> bool {
        self.cgroup_id != 0
    }

    /// What the owner may bind while `generation` is in force: [`OWNER_ANY_ADDRESS`],
    /// [`OWNER_LISTED_ADDRESSES`], or 0 (nothing). A container's ports carry one grant per
    /// generation so that an update can write the next set beside the one in force and switch
    /// both with the container's generation, in one map update.
    #[inline(always)]
    pub fn grant(&self, generation: u32) -> u32 {
        (self.flags >> grant_shift(generation)) & (OWNER_ANY_ADDRESS | OWNER_LISTED_ADDRESSES)
    }

    /// This owner with `generation`'s grant replaced by `grant` (0 withdraws it).
    pub fn with_grant(self, generation: u32, grant: u32) -> Self {
        let shift = grant_shift(generation);
        let mask = (OWNER_ANY_ADDRESS | OWNER_LISTED_ADDRESSES) << shift;
        Self {
            flags: (self.flags & !mask) | ((grant << shift) & mask),
            ..self
        }
    }

    /// Whether either generation grants the owner anything.
    pub fn grants_anything(&self) -> bool {
        self.flags & (OWNER_GENERATION_0 | OWNER_GENERATION_1) != 0
    }
}

/// One address a container may bind an owned port on, under one policy generation. IPv4
/// addresses are stored in their v4-mapped IPv6 form so that `bind4` and `bind6` on
/// `::ffff:a.b.c.d` agree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindAddrKey {
    pub cgroup_id: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    /// The generation whose [`OWNER_LISTED_ADDRESSES`] grant this entry belongs to (0 or 1).
    pub generation: u8,
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<BindAddrKey>() == 32);

impl BindAddrKey {
    pub fn new(cgroup_id: u64, generation: u32, addr: [u8; 16], port: u16, proto: Proto) -> Self {
        Self {
            cgroup_id,
            addr,
            port,
            proto: proto as u8,
            generation: (generation & 1) as u8,
            _pad: [0; 4],
        }
    }
}

/// Host-wide settings the programs read from slot 0 of the `SETTINGS` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathSettings {
    /// The depths below the cgroup2 root at which containers' cgroups sit, shallowest first,
    /// 0 where unused: hostnetd's own (`<parent>/<id>`) and those of the engines' containers
    /// (Docker's `/docker/<id>`, a Kubernetes pod's container four or five deep). A hook
    /// finds the container a socket belongs to by trying each depth's ancestor cgroup.
    pub container_levels: [u8; MAX_CONTAINER_DEPTHS],
    /// Changes whenever any container's policy does: the ingress hooks cache their verdicts
    /// per CPU and trust only those taken under the epoch in force.
    pub policy_epoch: u32,
    /// `SETTINGS_*` flags.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<DatapathSettings>() == 16);

/// Some container has a bandwidth limit: only then do the packet hooks look for one, so that
/// hosts without limits pay nothing for them.
pub const SETTINGS_LIMITS: u32 = 1 << 0;
/// Some device's root qdisc is fq: only then does a limited packet look its device up.
pub const SETTINGS_PACED_DEVICES: u32 = 1 << 1;

/// How many different cgroup depths containers may sit at, at once: each costs the hooks one
/// more lookup for a socket of no container.
pub const MAX_CONTAINER_DEPTHS: usize = 4;

impl DatapathSettings {
    /// The settings with `level` among the container depths (kept shallowest first); None
    /// when all [`MAX_CONTAINER_DEPTHS`] are taken by others, or `level` is 0 (the root) or
    /// beyond a byte.
    pub fn with_container_level(mut self, level: u32) -> Option<Self> {
        let level = u8::try_from(level).ok().filter(|&level| level > 0)?;
        if self.container_levels.contains(&level) {
            return Some(self);
        }
        let free = self.container_levels.iter().position(|&l| l == 0)?;
        self.container_levels[free] = level;
        let used = &mut self.container_levels[..=free];
        used.sort_unstable();
        Some(self)
    }
}

/// One container's policy switches, keyed by its cgroup id in `CONTAINER_POLICIES`. A
/// container without an entry is unrestricted beyond port ownership.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// `POLICY_*` flags.
    pub flags: u32,
    /// Which of the two generations is in force, 0 or 1: of the rules in `EGRESS_RULES` and of
    /// the grants on the container's `PORT_OWNERS` slots. An update writes the other
    /// generation completely, then flips this in one map update.
    pub generation: u32,
}
const _: () = assert!(core::mem::size_of::<ContainerPolicy>() == 8);

/// Egress not matched by an allow rule is denied (the container has allow rules).
pub const POLICY_EGRESS_DEFAULT_DENY: u32 = 1 << 0;
/// The container has egress rules at all (otherwise the trie is not consulted).
pub const POLICY_EGRESS_RULES: u32 = 1 << 1;
/// Raw and packet sockets are allowed (`--cap-add NET_RAW`).
pub const POLICY_ALLOW_RAW_SOCKETS: u32 = 1 << 2;
/// Packets to the container's owned ports are dropped unless an ingress rule allows their
/// source (`--ingress-allow`).
pub const POLICY_INGRESS_RULES: u32 = 1 << 3;

/// Rules per distinct prefix of one container; more is refused by the agent, never truncated.
pub const MAX_RULES_PER_PREFIX: usize = 16;
/// Capacity of the egress trie, over all containers and both generations.
pub const MAX_EGRESS_PREFIXES: u32 = 16384;
/// Capacity of the ingress trie (sources allowed to reach owned ports), likewise.
pub const MAX_INGRESS_PREFIXES: u32 = 16384;
/// Capacity of the per-container traffic table: one row per owned port and per protocol
/// class of everything else.
pub const MAX_TRAFFIC_ROWS: u32 = 262144;
/// Bits of a [`PrefixKey`] before the address: cgroup id, generation and family.
pub const PREFIX_KEY_HEADER_BITS: u32 = 128;

/// The data of an egress (destination) or ingress (source) LPM-trie key; the prefix length
/// always covers the header, so a lookup only ever matches the container's own rules of the
/// generation and family in force.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixKey {
    pub cgroup_id: u64,
    pub generation: u32,
    /// 4 or 6. A v4-mapped IPv6 destination is looked up as IPv4, so v4 rules cover it and
    /// a v6 rule such as `::/0` never covers IPv4.
    pub family: u32,
    /// IPv4 in the first 4 bytes (the rest zero), or IPv6.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<PrefixKey>() == 32);

impl PrefixKey {
    /// The key for an address (a destination, or a packet's source) in IPv6 or v4-mapped form.
    #[inline(always)]
    pub fn for_address(cgroup_id: u64, generation: u32, addr: [u8; 16]) -> (Self, u32) {
        let mapped = addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff;
        let mut key = Self {
            cgroup_id,
            generation,
            family: 6,
            addr,
        };
        if mapped {
            key.family = 4;
            key.addr = [
                addr[12], addr[13], addr[14], addr[15], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            (key, PREFIX_KEY_HEADER_BITS + 32)
        } else {
            (key, PREFIX_KEY_HEADER_BITS + 128)
        }
    }
}

pub const ACTION_ALLOW: u8 = 1;
pub const ACTION_DENY: u8 = 2;
/// A rule for any protocol.
pub const PROTO_ANY: u8 = 0;

/// One egress rule under a prefix: ports `port_lo..=port_hi` (0..=65535 for any), protocol
/// (`PROTO_ANY`, 6 or 17), and an action. A zeroed rule has no action and matches nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRule {
    pub port_lo: u16,
    pub port_hi: u16,
    pub proto: u8,
    pub action: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<PortRule>() == 8);

/// Every rule that applies to the addresses under one prefix: the prefix's own and those of
/// every shorter prefix of the same container that contains it (the agent folds them in, so
/// the longest match alone decides).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixRules {
    pub count: u32,
    pub _pad: u32,
    pub rules: [PortRule; MAX_RULES_PER_PREFIX],
}
const _: () = assert!(core::mem::size_of::<PrefixRules>() == 8 + 8 * MAX_RULES_PER_PREFIX);

/// Map names, shared so that the loader opens exactly what the programs declare.
pub enum MapName {
    PortOwners,
    BindAddrs,
    Settings,
    ContainerPolicies,
    EgressRules,
    IngressRules,
    Traffic,
    DeviceTraffic,
    Denials,
    Events,
    DatapathStats,
    Limits,
    PacedDevices,
    PortRows,
    ContainerRows,
}

impl MapName {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::PortOwners => "PORT_OWNERS",
            Self::BindAddrs => "BIND_ADDRS",
            Self::Settings => "SETTINGS",
            Self::ContainerPolicies => "CONTAINER_POLICIES",
            Self::EgressRules => "EGRESS_RULES",
            Self::IngressRules => "INGRESS_RULES",
            Self::Traffic => "TRAFFIC",
            Self::DeviceTraffic => "DEVICE_TRAFFIC",
            Self::Denials => "DENIALS",
            Self::Events => "EVENTS",
            Self::DatapathStats => "DATAPATH_STATS",
            Self::Limits => "LIMITS",
            Self::PacedDevices => "PACED_DEVICES",
            Self::PortRows => "PORT_ROWS",
            Self::ContainerRows => "CONTAINER_ROWS",
        }
    }
}

/// The v4-mapped IPv6 form (`::ffff:a.b.c.d`) of an IPv4 address given in network byte order.
#[inline(always)]
pub fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::PortOwner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BindAddrKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DatapathSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ContainerPolicy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixRules {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::traffic::TrafficKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::traffic::TrafficCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::traffic::DeviceCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::traffic::Denials {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::traffic::PortRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::traffic::ContainerRows {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::limit::ContainerLimits {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_levels_are_kept_once_and_shallowest_first() {
        let settings = DatapathSettings::default();
        let settings = settings.with_container_level(4).unwrap();
        let settings = settings.with_container_level(2).unwrap();
        let settings = settings.with_container_level(4).unwrap();
        assert_eq!(settings.container_levels, [2, 4, 0, 0]);
        let full = settings
            .with_container_level(5)
            .and_then(|s| s.with_container_level(1))
            .unwrap();
        assert_eq!(full.container_levels, [1, 2, 4, 5]);
        assert_eq!(full.with_container_level(3), None);
        assert_eq!(full.with_container_level(2), Some(full));
        assert_eq!(settings.with_container_level(0), None);
        assert_eq!(settings.with_container_level(256), None);
    }
}
