//! Shared by `skb_ingress` and `tc_ingress`: whether a packet to an owned port may reach it,
//! and finding a packet's counter row (an owned port's own, or one created in a hash).
//!
//! The ingress rules are a policy hash lookup plus an LPM-trie walk per packet; every packet
//! of a flow asks the same question, so the answer is cached per CPU in a small direct-mapped
//! table, trusted only under the policy epoch it was taken in (the agent starts a new epoch
//! whenever a policy changes).
use aya_ebpf::maps::{lpm_trie::Key, PerCpuHashMap};
use hostnetd_common::{
    packet::CachedVerdict,
    rules::ingress_allowed,
    traffic::{PortRow, TrafficKey, DENIAL_INGRESS},
    PrefixKey, NO_ROW,
};

use crate::{
    maps::{CONTAINER_POLICIES, INGRESS_RULES, PORT_ROWS, SETTINGS, VERDICTS},
    packet::Packet,
    report::{report, table_full, Denial, BPF_NOEXIST},
};

/// Whether the ingress rules of the container `cgroup_id` let this packet in; a packet they
/// keep out is reported as a denial.
#[inline(always)]
pub fn admits(packet: &Packet, cgroup_id: u64) -> bool {
    let question = CachedVerdict {
        cgroup_id,
        source: packet.source_words().unwrap_or_default(),
        epoch: SETTINGS.get(0).map_or(0, |settings| settings.policy_epoch),
        port: packet.local_port,
        ipproto: packet.ipproto,
        allowed: 0,
    };
    let slot = VERDICTS.get_ptr_mut(question.slot());
    let allowed = match slot {
        // SAFETY: this CPU's slot; the ingress hooks run in softirq and never nest on a CPU.
        Some(cached) if unsafe { &*cached }.answers(&question) => unsafe { (*cached).allowed != 0 },
        _ => {
            let allowed = ask_rules(&question);
            if let Some(cached) = slot {
                // SAFETY: as above.
                unsafe {
                    *cached = question;
                    (*cached).allowed = allowed as u8;
                }
            }
            allowed
        }
    };
    if !allowed {
        refuse(&question);
    }
    allowed
}

/// The container's policy and the ingress rule covering the source, decided. Out of line: the
/// trie key would otherwise sit on every caller's stack.
#[inline(never)]
fn ask_rules(question: &CachedVerdict) -> bool {
    // SAFETY: the value is only read, and the map's values are plain data.
    let Some(policy) = (unsafe { CONTAINER_POLICIES.get(&question.cgroup_id) }) else {
        return true;
    };
    if policy.flags & hostnetd_common::POLICY_INGRESS_RULES == 0 {
        return true;
    }
    let (data, prefix_len) =
        PrefixKey::for_address(question.cgroup_id, policy.generation, address(question));
    let rules = INGRESS_RULES.get(&Key::new(prefix_len, data));
    ingress_allowed(policy, rules, question.ipproto, question.port)
}

#[inline(never)]
fn refuse(question: &CachedVerdict) {
    report(&Denial {
        cgroup_id: question.cgroup_id,
        kind: DENIAL_INGRESS,
        errno: 0,
        ipproto: question.ipproto,
        port: question.port,
        addr: address(question),
        by_task: false,
    });
}

/// The source address in IPv6 or v4-mapped form.
#[inline(always)]
fn address(question: &CachedVerdict) -> [u8; 16] {
    let (high, low) = (
        question.source[0].to_ne_bytes(),
        question.source[1].to_ne_bytes(),
    );
    [
        high[0], high[1], high[2], high[3], high[4], high[5], high[6], high[7], low[0], low[1],
        low[2], low[3], low[4], low[5], low[6], low[7],
    ]
}

/// This CPU's copy of an owned port's counter row; None when the port has none.
#[inline(always)]
pub fn port_row(row: u32) -> Option<*mut PortRow> {
    if row == NO_ROW {
        return None;
    }
    PORT_ROWS.get_ptr_mut(row)
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
