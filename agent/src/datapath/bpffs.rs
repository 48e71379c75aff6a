//! Making sure a BPF filesystem is mounted where hostnetd pins its objects.
use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use super::error::DatapathError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at `mount_point` (normally /sys/fs/bpf) unless one is mounted there already.
pub fn ensure_bpffs(mount_point: &Path) -> Result<(), DatapathError> {
    if is_bpffs(mount_point) {
        return Ok(());
    }
    std::fs::create_dir_all(mount_point).map_err(|source| DatapathError::Io {
        action: "create",
        path: mount_point.into(),
        source,
    })?;
    let target = CString::new(mount_point.as_os_str().as_bytes())
        .map_err(|_| DatapathError::Bpffs(format!("invalid path {}", mount_point.display())))?;
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(DatapathError::Bpffs(format!(
            "cannot mount bpffs at {}: {error}; mount it with `mount -t bpf bpf {}`",
            mount_point.display(),
            mount_point.display()
        )));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}
