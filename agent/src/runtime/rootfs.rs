//! Mounting a container's root filesystem into its bundle.
use std::{ffi::CString, io, os::unix::ffi::OsStrExt as _, path::Path};

use super::{RootfsSource, RuntimeError};

/// Mounts `source` at `target`. Only the directory's own filesystem is bound, not the mounts
/// below it, so a `--rootfs /` container never sees the host's /run, /proc or /sys; runc
/// mounts its own and makes the root read-only.
pub fn mount_rootfs(source: &RootfsSource, target: &Path) -> Result<(), RuntimeError> {
    let RootfsSource::HostDirectory(dir) = source;
    std::fs::create_dir_all(target).map_err(io_error("create", target))?;
    mount(Some(dir), target, libc::MS_BIND).map_err(io_error("bind-mount rootfs at", target))?;
    // Keep the container's mounts from propagating back into the host and vice versa.
    mount(None, target, libc::MS_PRIVATE).map_err(io_error("make private", target))
}

/// Unmounts the rootfs; one that is not mounted (already cleaned up) is fine.
pub fn unmount_rootfs(target: &Path) -> Result<(), RuntimeError> {
    let Ok(path) = CString::new(target.as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        let error = io::Error::last_os_error();
        let benign = matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOENT));
        if !benign {
            return Err(io_error("unmount", target)(error));
        }
    }
    Ok(())
}

fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let c_path = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
    };
    let source = source.map(c_path).transpose()?;
    let target = c_path(target)?;
    let source_ptr = source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: valid NUL-terminated strings or null, as mount(2) accepts for bind and propagation.
    let rc = unsafe {
        libc::mount(
            source_ptr,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io {
        action,
        path,
        source,
    }
}
