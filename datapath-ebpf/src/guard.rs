//! Shared by `skb_ingress` and `tc_ingress`: whether a packet to an owned port may reach it,
//! and finding (or creating) a packet's counter row.
use aya_ebpf::maps::{lpm_trie::Key, PerCpuHashMap};
use hostnetd_common::{
    egress::ingress_allowed,
    traffic::{TrafficKey, DENIAL_INGRESS},
    PrefixKey,
};

use crate::{
    maps::{CONTAINER_POLICIES, INGRESS_RULES},
    packet::Packet,
    report::{report, table_full, Denial, BPF_NOEXIST},
};

/// Whether the ingress rules of the container `cgroup_id` let this packet in; a packet they
/// keep out is reported as a denial.
#[inline(always)]
pub fn admits(packet: &Packet, cgroup_id: u64) -> bool {
    // SAFETY: the value is only read, and the map's values are plain data.
    let Some(policy) = (unsafe { CONTAINER_POLICIES.get(&cgroup_id) }) else {
        return true;
    };
    if policy.flags & hostnetd_common::POLICY_INGRESS_RULES == 0 {
        return true;
    }
    let source = packet.source().unwrap_or_default();
    let (data, prefix_len) = PrefixKey::for_address(cgroup_id, policy.generation, source);
    let rules = INGRESS_RULES.get(&Key::new(prefix_len, data));
    if ingress_allowed(policy, rules, packet.ipproto, packet.local_port) {
        return true;
    }
    report(&Denial {
        cgroup_id,
        kind: DENIAL_INGRESS,
        errno: 0,
        ipproto: packet.ipproto,
        port: packet.local_port,
        addr: source,
        by_task: false,
    });
    false
}

/// This CPU's counters of `key`, created zeroed on first use; None when the table is full.
#[inline(always)]
pub fn row<V: Default>(map: &PerCpuHashMap<TrafficKey, V>, key: &TrafficKey) -> Option<*mut V> {
    if let Some(row) = map.get_ptr_mut(key) {
        return Some(row);
    }
    // Another CPU may create the row first; the lookup below finds it either way.
    let _ = map.insert(key, V::default(), BPF_NOEXIST);
    let row = map.get_ptr_mut(key);
    if row.is_none() {
        table_full();
    }
    row
}
