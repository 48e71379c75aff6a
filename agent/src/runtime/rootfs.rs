//! Mounting a container's root filesystem into its bundle.
use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use super::error::RuntimeError;

/// Where a container's root filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootfsSource {
    /// A directory on the host, shown read-only (`--rootfs /` runs host binaries).
    HostDirectory(PathBuf),
    /// An image: its unpacked layers (top first) under an overlayfs whose writable layer is
    /// the container's own (`upper/` and overlayfs's `work/` in `writable`).
    Image {
        layers: Vec<PathBuf>,
        writable: PathBuf,
    },
}

impl RootfsSource {
    /// A host directory, which must exist; kept as an absolute, canonical path.
    pub fn host_directory(dir: &std::path::Path) -> Result<Self, RuntimeError> {
        let canonical = dir.canonicalize().map_err(|error| {
            RuntimeError::User(format!(
                "invalid rootfs {}: {error}; give an existing host directory",
                dir.display()
            ))
        })?;
        if !canonical.is_dir() {
            return Err(RuntimeError::User(format!(
                "invalid rootfs {}: not a directory; give an existing host directory",
                dir.display()
            )));
        }
        Ok(Self::HostDirectory(canonical))
    }
}

/// Mounts `source` at `target`. Only the directory's own filesystem is bound, not the mounts
/// below it, so a `--rootfs /` container never sees the host's /run, /proc or /sys; runc
/// mounts its own. A host directory is bound read-only on the host's side too: nothing that
/// walks the bundle (a cleanup, runc creating a mount point) can change the host through it.
pub fn mount_rootfs(source: &RootfsSource, target: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(target).map_err(io_error("create", target))?;
    match source {
        RootfsSource::HostDirectory(dir) => {
            mount(Some(dir), target, libc::MS_BIND)
                .map_err(io_error("bind-mount rootfs at", target))?;
            let read_only = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
            if let Err(error) = mount(None, target, read_only) {
                let _ = unmount_rootfs(target);
                return Err(io_error("make read-only the rootfs at", target)(error));
            }
        }
        RootfsSource::Image { layers, writable } => mount_overlay(layers, writable, target)?,
    }
    // Keep the container's mounts from propagating back into the host and vice versa.
    mount(None, target, libc::MS_PRIVATE).map_err(io_error("make private", target))
}

/// Unmounts the rootfs; one that is not mounted (already cleaned up) is fine.
/// Every mount stacked there goes (a bind mounted twice needs two unmounts).
pub fn unmount_rootfs(target: &Path) -> Result<(), RuntimeError> {
    let Ok(path) = CString::new(target.as_os_str().as_bytes()) else {
        return Ok(());
    };
    loop {
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            let error = io::Error::last_os_error();
            let benign = matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOENT));
            return if benign {
                Ok(())
            } else {
                Err(io_error("unmount", target)(error))
            };
        }
    }
}

/// Mounts the layers (top first) under an overlayfs whose upper layer is `writable/upper`.
/// The classic mount(2) takes all options in one page; an image with many layers goes through
/// fsconfig(2)'s `lowerdir+`, one layer per call (Linux 6.8 and later).
fn mount_overlay(layers: &[PathBuf], writable: &Path, target: &Path) -> Result<(), RuntimeError> {
    let upper = writable.join("upper");
    let work = writable.join("work");
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    }
    // overlayfs needs at least one lower layer; an image without layers gets an empty one.
    let empty = writable.join("empty");
    let layers: Vec<&Path> = if layers.is_empty() {
        std::fs::create_dir_all(&empty).map_err(io_error("create", &empty))?;
        vec![&empty]
    } else {
        layers.iter().map(PathBuf::as_path).collect()
    };
    let lowerdir = (layers.iter())
        .map(|layer| layer.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let result = if options.len() < 4000 {
        mount_with_data("overlay", target, &options)
    } else {
        fsconfig_overlay(&layers, &upper, &work, target)
    };
    result.map_err(io_error("mount the image's overlayfs at", target))
}

fn mount_with_data(fstype: &str, target: &Path, data: &str) -> io::Result<()> {
    let fstype = CString::new(fstype)?;
    let target = c_path(target)?;
    let data = CString::new(data)?;
    // SAFETY: NUL-terminated strings for source, target, type and options.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn fsconfig_overlay(layers: &[&Path], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let check = |rc: libc::c_long| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as libc::c_int)
        }
    };
    let fstype = CString::new("overlay")?;
    // SAFETY: each call gets NUL-terminated strings and descriptors it returned; every
    // descriptor is wrapped in an OwnedFd right away so that it is closed on every path.
    unsafe {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        let fs = OwnedFd::from_raw_fd(check(libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            FSOPEN_CLOEXEC,
        ))?);
        let set = |key: &str, value: &Path| -> io::Result<()> {
            let key = CString::new(key)?;
            let value = c_path(value)?;
            check(libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            ))
            .map(drop)
        };
        for layer in layers {
            set("lowerdir+", layer)?;
        }
        set("upperdir", upper)?;
        set("workdir", work)?;
        check(libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        ))?;
        let mount = OwnedFd::from_raw_fd(check(libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            0,
        ))?);
        let target = c_path(target)?;
        let empty = c"";
        check(libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ))
        .map(drop)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
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
