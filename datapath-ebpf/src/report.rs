//! Denials: counted per container and sent as events, shared by every hook that refuses
//! something. The event ring never blocks: when it is full the event is dropped and counted.
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_ktime_get_boot_ns,
};
use hostnetd_common::{
    traffic::{
        DenialEvent, Denials, DENIAL_KINDS, DENIAL_RAW_SOCKET, STAT_EVENTS_LOST,
        STAT_TRAFFIC_TABLE_FULL,
    },
    EPERM,
};

use crate::maps::{DATAPATH_STATS, DENIALS, EVENTS};

/// One refused call or dropped packet.
pub struct Denial {
    pub cgroup_id: u64,
    pub kind: u8,
    pub errno: u32,
    pub ipproto: u8,
    pub port: u16,
    /// IPv6 or v4-mapped.
    pub addr: [u8; 16],
    /// Whether a task made the call (a dropped packet has none).
    pub by_task: bool,
}

#[inline(always)]
pub fn report(denial: &Denial) {
    count_denial(denial.cgroup_id, denial.kind);
    send_event(denial);
}

#[inline(always)]
fn count_denial(cgroup_id: u64, kind: u8) {
    let index = kind as usize;
    if index >= DENIAL_KINDS {
        return;
    }
    if let Some(denials) = DENIALS.get_ptr_mut(cgroup_id) {
        // SAFETY: this CPU's value; denials of one kind never nest on a CPU (calls come from
        // tasks, drops from softirq).
        unsafe { (*denials).counts[index] += 1 };
        return;
    }
    let mut first = Denials::default();
    first.counts[index] = 1;
    // Another CPU may create the row at the same moment: then add to that one.
    if DENIALS.insert(cgroup_id, first, BPF_NOEXIST).is_err() {
        if let Some(denials) = DENIALS.get_ptr_mut(cgroup_id) {
            // SAFETY: as above.
            unsafe { (*denials).counts[index] += 1 };
        }
    }
}

fn send_event(denial: &Denial) {
    let Some(mut entry) = EVENTS.reserve::<DenialEvent>(0) else {
        bump(STAT_EVENTS_LOST);
        return;
    };
    let mapped = denial.addr[..10].iter().all(|b| *b == 0)
        && denial.addr[10] == 0xff
        && denial.addr[11] == 0xff;
    let (pid, comm) = if denial.by_task {
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (pid, bpf_get_current_comm().unwrap_or_default())
    } else {
        (0, [0; 16])
    };
    entry.write(DenialEvent {
        // SAFETY: a helper call without arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id: denial.cgroup_id,
        pid,
        errno: denial.errno,
        port: denial.port,
        kind: denial.kind,
        ipproto: denial.ipproto,
        family: if mapped { 4 } else { 6 },
        _pad: [0; 3],
        comm,
        addr: denial.addr,
    });
    entry.submit(0);
}

/// A raw or packet socket refused to a container's task, with EPERM (what a missing
/// CAP_NET_RAW gives).
#[inline(always)]
pub fn report_raw_socket(cgroup_id: u64, protocol: u32) {
    report(&Denial {
        cgroup_id,
        kind: DENIAL_RAW_SOCKET,
        errno: EPERM as u32,
        ipproto: protocol as u8,
        port: 0,
        addr: [0; 16],
        by_task: true,
    });
}

/// Counts a datapath health event (`STAT_*`).
#[inline(always)]
pub fn bump(stat: u32) {
    if let Some(value) = DATAPATH_STATS.get_ptr_mut(stat) {
        // SAFETY: this CPU's slot; a lost count under nesting is acceptable for health stats.
        unsafe { *value += 1 };
    }
}

/// Counts a traffic row that could not be created.
#[inline(always)]
pub fn table_full() {
    bump(STAT_TRAFFIC_TABLE_FULL);
}

pub const BPF_NOEXIST: u64 = 1;
