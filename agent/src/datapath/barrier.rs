//! Waiting until no eBPF program still runs on what it read before a map update.
//!
//! A hook reads a container's generation and the slots or rules of that generation in separate
//! lookups; if it ran across a policy switch it could combine a value from before with one from
//! after. The kernel offers one documented wait: updating a map-in-map waits for every running
//! non-sleepable program to finish (`maybe_wait_bpf_programs` in kernel/bpf/syscall.c, an RCU
//! grace period; the BPF selftests use it the same way). So a switch is: write the next
//! generation, wait, flip, wait, remove the previous one. A hook run that saw the new
//! generation started after the next one was complete; one that saw the old generation ended
//! before anything of it was removed.
use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use super::{
    error::DatapathError,
    syscall::{bpf, bpf_fd, MapCreateAttr, BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM},
};

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
struct UpdateElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Returns once every eBPF program that was running when it was called has finished.
pub fn wait_for_running_programs() -> Result<(), DatapathError> {
    let error = |source| DatapathError::Io {
        action: "wait for running eBPF programs with",
        path: "a map-in-map update".into(),
        source,
    };
    let inner = create_map(BPF_MAP_TYPE_ARRAY, None).map_err(error)?;
    let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(&inner)).map_err(error)?;
    let key: u32 = 0;
    let value: u32 = inner.as_raw_fd() as u32;
    let mut attr = UpdateElemAttr {
        map_fd: outer.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    // SAFETY: the attribute points at live locals for the duration of the call.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map_err(error)?;
    Ok(())
}

/// A one-slot map with 4-byte keys and values; a map-in-map takes `inner` as its template.
fn create_map(map_type: u32, inner: Option<&OwnedFd>) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        inner_map_fd: inner.map_or(0, |fd| fd.as_raw_fd() as u32),
        ..Default::default()
    };
    // SAFETY: a plain attribute; the kernel returns a new descriptor.
    unsafe { bpf_fd(BPF_MAP_CREATE, &mut attr) }
}
