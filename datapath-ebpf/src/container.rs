//! Which container the calling task (or a packet's socket) belongs to: its ancestor cgroup at
//! one of the depths containers sit at, if that cgroup has a policy.
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_skb_ancestor_cgroup_id},
};
use hostnetd_common::{ContainerPolicy, DatapathSettings, MAX_CONTAINER_DEPTHS};

use crate::maps::{CONTAINER_POLICIES, SETTINGS};

/// The policy of the container the calling task belongs to, with its cgroup id.
#[inline(always)]
pub fn current_container() -> Option<(u64, &'static ContainerPolicy)> {
    let settings = SETTINGS.get(0)?;
    find(settings, |level| {
        // SAFETY: a helper call with a scalar argument.
        unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
    })
}

/// The cgroup id of the container whose socket sent or receives `skb`. With containers at
/// one depth only (the usual case) that depth's ancestor, without a lookup: a socket of no
/// container then counts under a cgroup no record owns, and is swept with it.
#[inline(always)]
pub fn socket_container(skb: *mut __sk_buff, settings: &DatapathSettings) -> u64 {
    let ancestor = |level: u8| {
        // SAFETY: a helper call on the program's own context.
        unsafe { bpf_skb_ancestor_cgroup_id(skb as *mut _, level as i32) }
    };
    let [first, second, ..] = settings.container_levels;
    if second == 0 {
        return ancestor(first);
    }
    find(settings, ancestor).map_or(0, |(cgroup_id, _)| cgroup_id)
}

/// The shallowest of the container depths whose ancestor cgroup has a policy: a container
/// nested in another is held to the outer one's ports.
#[inline(always)]
fn find(
    settings: &DatapathSettings,
    ancestor: impl Fn(u8) -> u64,
) -> Option<(u64, &'static ContainerPolicy)> {
    let mut index = 0;
    while index < MAX_CONTAINER_DEPTHS {
        let level = settings.container_levels[index];
        if level == 0 {
            return None;
        }
        let cgroup_id = ancestor(level);
        // SAFETY: the value is only read, and the map's values are plain data.
        if let Some(policy) = unsafe { CONTAINER_POLICIES.get(&cgroup_id) } {
            return Some((cgroup_id, policy));
        }
        index += 1;
    }
    None
}
