//! Every map the programs share, pinned by name under the agent's versioned bpffs directory.
// Per-CPU cgroup storage (`CONTAINER_ROWS`) has no successor; see it below.
#![allow(deprecated)]
use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuCgroupStorage, PerCpuHashMap,
        RingBuf,
    },
};
use hostnetd_common::{
    limit::{ContainerLimits, PacedSocket},
    packet::{CachedVerdict, VERDICT_SLOT_BITS},
    traffic::{
        ContainerRows, Denials, DeviceCounters, PortRow, TrafficCounters, TrafficKey,
        DATAPATH_STATS as STATS,
    },
    BindAddrKey, ContainerPolicy, DatapathSettings, PortOwner, PrefixKey, PrefixRules,
    MAX_BIND_ADDRS, MAX_EGRESS_PREFIXES, MAX_INGRESS_PREFIXES, MAX_TRAFFIC_ROWS, PORTS_PER_PROTO,
    TRACKED_PROTOS,
};

/// Capacity of the per-container tables.
const MAX_CONTAINERS: u32 = 16384;
/// Limited containers' TCP sockets followed at once; beyond, the least recent is forgotten
/// (it keeps the cap it has).
const MAX_PACED_SOCKETS: u32 = 65536;
/// Devices fq paces, at most.
const MAX_PACED_DEVICES: u32 = 4096;
/// Rows are created as traffic appears, so memory follows what is counted.
const BPF_F_NO_PREALLOC: u32 = 1;
/// Room for about 4000 pending denial events.
const EVENTS_BYTES: u32 = 256 * 1024;

/// Owner of every (protocol, port): an array, so a lookup is one index, whatever the count.
#[map]
pub static PORT_OWNERS: Array<PortOwner> = Array::pinned(PORTS_PER_PROTO * TRACKED_PROTOS, 0);

/// Addresses an owner restricted its ports to; consulted only for owners that declared some.
#[map]
pub static BIND_ADDRS: HashMap<BindAddrKey, u8> = HashMap::pinned(MAX_BIND_ADDRS, 0);

/// Host-wide settings in slot 0.
#[map]
pub static SETTINGS: Array<DatapathSettings> = Array::pinned(1, 0);

/// Each container's policy switches, by cgroup id.
#[map]
pub static CONTAINER_POLICIES: HashMap<u64, ContainerPolicy> = HashMap::pinned(MAX_CONTAINERS, 0);

/// Egress rules by (container, generation, destination prefix): one lookup per connect.
#[map]
pub static EGRESS_RULES: LpmTrie<PrefixKey, PrefixRules> = LpmTrie::pinned(MAX_EGRESS_PREFIXES, 0);

/// Ingress rules by (container, generation, source prefix): one lookup per packet to a
/// guarded port.
#[map]
pub static INGRESS_RULES: LpmTrie<PrefixKey, PrefixRules> =
    LpmTrie::pinned(MAX_INGRESS_PREFIXES, 0);

/// log2 of the slots of the per-CPU ingress verdict cache.

/// Ingress verdicts recently taken on this CPU (see `ingress`): 1024 slots of 32 bytes per CPU.
#[map]
pub static VERDICTS: PerCpuArray<CachedVerdict> = PerCpuArray::pinned(1 << VERDICT_SLOT_BITS, 0);

/// Owned ports' counters, per CPU, at the row each owner slot names. The agent sizes it when
/// it loads the programs (`--traffic-rows`); ports claimed once it is full are counted in the
/// hashes below.
#[map]
pub static PORT_ROWS: PerCpuArray<PortRow> = PerCpuArray::pinned(1, 0);

/// Each container's identity and the rest of each protocol class, per CPU, in the storage of
/// the cgroup its `skb_ingress` or `skb_egress` is attached to (one per direction: the key is
/// the cgroup and the attach type). The kernel's per-cgroup storage is deprecated in favour of
/// `BPF_MAP_TYPE_CGRP_STORAGE` (6.2), which has no per-CPU kind and needs a lookup.
#[map]
pub static CONTAINER_ROWS: PerCpuCgroupStorage<ContainerRows> = PerCpuCgroupStorage::pinned();

/// Owned ports' traffic as the sockets see it (cgroup_skb), per CPU, for ports without a
/// `PORT_ROWS` row.
#[map]
pub static TRAFFIC: PerCpuHashMap<TrafficKey, TrafficCounters> =
    PerCpuHashMap::pinned(MAX_TRAFFIC_ROWS, BPF_F_NO_PREALLOC);

/// Traffic to and from owned ports without a `PORT_ROWS` row as the host's interfaces see it
/// (TC), per CPU.
#[map]
pub static DEVICE_TRAFFIC: PerCpuHashMap<TrafficKey, DeviceCounters> =
    PerCpuHashMap::pinned(MAX_TRAFFIC_ROWS, BPF_F_NO_PREALLOC);

/// Denials by container cgroup id (host processes under id 0), per CPU.
#[map]
pub static DENIALS: PerCpuHashMap<u64, Denials> = PerCpuHashMap::pinned(MAX_CONTAINERS, 0);

/// Denial events for `hostnetd events`.
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// The datapath's own health counters (`STAT_*`), per CPU.
#[map]
pub static DATAPATH_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STATS, 0);

/// Each limited container's bandwidth limits and their schedules, by cgroup id. Shared by all
/// CPUs: a container's rate is one rate, whichever CPU sends.
#[map]
pub static LIMITS: HashMap<u64, ContainerLimits> = HashMap::pinned(MAX_CONTAINERS, 0);

/// The devices whose root qdisc is fq (by ifindex): a limited container's packets leaving
/// through one are paced by departure time; through any other, policed.
#[map]
pub static PACED_DEVICES: HashMap<u32, u32> = HashMap::pinned(MAX_PACED_DEVICES, 0);

/// Limited containers' TCP sockets, by socket cookie, and the pacing cap set on each.
#[map]
pub static PACED_SOCKETS: LruHashMap<u64, PacedSocket> = LruHashMap::pinned(MAX_PACED_SOCKETS, 0);
