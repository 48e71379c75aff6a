//! Every map the programs share, pinned by name under the agent's versioned bpffs directory.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie},
};
use hostnetd_common::{
    BindAddrKey, ContainerPolicy, EgressKey, EgressRules, PortOwner, Settings, MAX_BIND_ADDRS,
    MAX_EGRESS_PREFIXES, PORTS_PER_PROTO, TRACKED_PROTOS,
};

/// Capacity of the per-container policy table.
const MAX_CONTAINERS: u32 = 16384;

/// Owner of every (protocol, port): an array, so a lookup is one index, whatever the count.
#[map]
pub static PORT_OWNERS: Array<PortOwner> = Array::pinned(PORTS_PER_PROTO * TRACKED_PROTOS, 0);

/// Addresses an owner restricted its ports to; consulted only for owners that declared some.
#[map]
pub static BIND_ADDRS: HashMap<BindAddrKey, u8> = HashMap::pinned(MAX_BIND_ADDRS, 0);

/// Host-wide settings in slot 0.
#[map]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// Each container's policy switches, by cgroup id.
#[map]
pub static CONTAINER_POLICIES: HashMap<u64, ContainerPolicy> = HashMap::pinned(MAX_CONTAINERS, 0);

/// Egress rules by (container, generation, destination prefix): one lookup per connect.
#[map]
pub static EGRESS_RULES: LpmTrie<EgressKey, EgressRules> = LpmTrie::pinned(MAX_EGRESS_PREFIXES, 0);
