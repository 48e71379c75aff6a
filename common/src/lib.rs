//! The kernel-userspace ABI of hostnetd: map keys and values shared by the eBPF programs in
//! `datapath-ebpf` and the loader in `agent`, and the bind decision both sides agree on.
//!
//! Every type is `#[repr(C)]`, `Copy`, padded explicitly and size-checked at compile time,
//! because the kernel sees raw bytes. Changing any layout means bumping [`ABI_VERSION`]: maps are
//! pinned under a directory named after it and the kernel never checks a reused pin's layout.
#![no_std]

pub mod bind;

/// Version of the map layouts below; pins live under `<bpffs>/hostnetd/v<ABI_VERSION>`.
pub const ABI_VERSION: u32 = 1;

/// Slots per protocol in [`PORT_OWNERS`](MapName::PortOwners): one per port number.
pub const PORTS_PER_PROTO: u32 = 65536;
/// Protocols with port ownership; the owner array holds `PORTS_PER_PROTO` slots for each.
pub const TRACKED_PROTOS: u32 = 2;
/// Capacity of the address-restriction table (declarations such as `127.0.0.1:8080`).
pub const MAX_BIND_ADDRS: u32 = 16384;

pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
pub const EACCES: i32 = 13;
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
    /// `OWNER_ANY_ADDRESS` or `OWNER_LISTED_ADDRESSES`; zero allows no address at all.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<PortOwner>() == 16);

/// The owner may bind the port on any local address.
pub const OWNER_ANY_ADDRESS: u32 = 1 << 0;
/// The owner may bind the port only on addresses listed in the bind-address table.
pub const OWNER_LISTED_ADDRESSES: u32 = 1 << 1;

impl PortOwner {
    pub fn is_owned(&self) -> bool {
        self.cgroup_id != 0
    }
}

/// One address a container may bind an owned port on. IPv4 addresses are stored in their
/// v4-mapped IPv6 form so that `bind4` and `bind6` on `::ffff:a.b.c.d` agree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindAddrKey {
    pub cgroup_id: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<BindAddrKey>() == 32);

impl BindAddrKey {
    pub fn new(cgroup_id: u64, addr: [u8; 16], port: u16, proto: Proto) -> Self {
        Self {
            cgroup_id,
            addr,
            port,
            proto: proto as u8,
            _pad: [0; 5],
        }
    }
}

/// Map names, shared so that the loader opens exactly what the programs declare.
pub enum MapName {
    PortOwners,
    BindAddrs,
}

impl MapName {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::PortOwners => "PORT_OWNERS",
            Self::BindAddrs => "BIND_ADDRS",
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
}
