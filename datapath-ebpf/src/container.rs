//! Which container the calling task belongs to: its ancestor cgroup at the containers' level,
//! if that cgroup has a policy.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use hostnetd_common::ContainerPolicy;

use crate::maps::{CONTAINER_POLICIES, SETTINGS};

/// The policy of the container the calling task belongs to, with its cgroup id.
#[inline(always)]
pub fn current_container() -> Option<(u64, &'static ContainerPolicy)> {
    let level = SETTINGS.get(0)?.container_level;
    // SAFETY: a helper call with a scalar argument.
    let cgroup_id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    // SAFETY: the value is only read, and the map's values are plain data.
    let policy = unsafe { CONTAINER_POLICIES.get(&cgroup_id) }?;
    Some((cgroup_id, policy))
}
