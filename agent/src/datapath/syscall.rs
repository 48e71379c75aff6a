//! The bpf(2) system call, for the few things aya has no call for: probing the kernel's
//! features with a few instructions, and waiting for running programs.
use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

pub const BPF_MAP_CREATE: libc::c_long = 0;
pub const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_PROG_QUERY: libc::c_long = 16;
pub const BPF_LINK_CREATE: libc::c_long = 28;

/// The leading fields of `union bpf_attr` for BPF_MAP_CREATE; the kernel zero-fills the rest.
#[repr(C)]
#[derive(Default)]
pub struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
}

/// bpf(2) with an attribute of `size_of::<T>()` bytes; the kernel may write results into it.
///
/// # Safety
/// `attr` must be a valid `union bpf_attr` prefix for `cmd`; pointers in it must be live.
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i32> {
    let size = std::mem::size_of::<T>() as libc::c_uint;
    // SAFETY: as the caller promises.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

/// bpf(2) for a command that returns a new descriptor (a map, a program, a link).
///
/// # Safety
/// As [`bpf`]; `cmd` must be one that returns a descriptor.
pub unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: as the caller promises.
    let fd = unsafe { bpf(cmd, attr) }?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
