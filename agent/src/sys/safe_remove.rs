//! Recursive removal that never leaves the mount it starts on. A container's bundle holds its
//! root filesystem, which for `--rootfs /` is a bind mount of the host's own root: were that
//! mount still there (an unmount that failed, a bind stacked twice), a plain recursive removal
//! would delete the host. Bind mounts share the device of their source, so mounts are told
//! apart by mount id (statx STATX_MNT_ID), not by device.
use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("refusing to remove {path}: another filesystem is mounted there; unmount it first (`umount -l {path}`)")]
    MountPoint { path: PathBuf },
    #[error("cannot remove {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Removes `path` and everything below it that is on the same mount; refuses (removing
/// nothing more) at the first directory that is another mount. Absent is fine.
pub fn remove_tree(path: &Path) -> Result<(), RemoveError> {
    let mount = match mount_id(path) {
        Ok(id) => id,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error(path, source)),
    };
    remove_below(path, mount)
}

fn remove_below(path: &Path, mount: u64) -> Result<(), RemoveError> {
    let metadata = fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
    let kind = metadata.file_type();
    if !kind.is_dir() {
        return fs::remove_file(path).map_err(|e| io_error(path, e));
    }
    if mount_id(path).map_err(|e| io_error(path, e))? != mount {
        return Err(RemoveError::MountPoint { path: path.into() });
    }
    for entry in fs::read_dir(path).map_err(|e| io_error(path, e))? {
        let entry = entry.map_err(|e| io_error(path, e))?;
        remove_below(&entry.path(), mount)?;
    }
    fs::remove_dir(path).map_err(|e| io_error(path, e))
}

/// The id of the mount `path` is on (not following a final symlink).
fn mount_id(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statx writes into a zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut stat,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if stat.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::other(
            "the kernel reports no mount ids (Linux 5.8+)",
        ));
    }
    Ok(stat.stx_mnt_id)
}

fn io_error(path: &Path, source: io::Error) -> RemoveError {
    RemoveError::Io {
        path: path.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hostnetd-remove-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn removes_a_plain_tree_and_tolerates_absence() {
        let dir = scratch("plain");
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("a/link")).unwrap();
        remove_tree(&dir).unwrap();
        assert!(!dir.exists());
        remove_tree(&dir).unwrap();
    }

    #[test]
    fn refuses_to_descend_into_a_bind_mount() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let precious = scratch("precious");
        fs::write(precious.join("keep"), "x").unwrap();
        let bundle = scratch("bundle");
        let rootfs = bundle.join("rootfs");
        fs::create_dir_all(&rootfs).unwrap();
        fs::write(bundle.join("config.json"), "{}").unwrap();
        let bound = Command::new("mount")
            .arg("--bind")
            .arg(&precious)
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(bound.success());
        let refused = remove_tree(&bundle);
        let _ = Command::new("umount").arg(&rootfs).status();
        assert!(
            matches!(refused, Err(RemoveError::MountPoint { ref path }) if *path == rootfs),
            "{refused:?}"
        );
        assert!(precious.join("keep").exists(), "removal crossed the mount");
        remove_tree(&bundle).unwrap();
        fs::remove_dir_all(&precious).unwrap();
    }
}
