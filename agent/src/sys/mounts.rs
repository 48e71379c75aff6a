//! The kernel's mount table (/proc/self/mounts), read in one place, and a mount namespace of
//! a process's own.
use std::{
    io,
    path::{Path, PathBuf},
};

pub const HOST_MOUNT_TABLE: &str = "/proc/self/mounts";

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
}

/// The mounts listed in `table` (the text of /proc/self/mounts), in its order.
pub fn parse(table: &str) -> Vec<Mount> {
    (table.lines())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(Mount {
                source: fields.next()?.to_string(),
                target: PathBuf::from(unescape(fields.next()?)),
                fstype: fields.next()?.to_string(),
            })
        })
        .collect()
}

/// The mounts of the table at `path`.
pub fn read(path: &Path) -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

/// This process's mounts.
pub fn host() -> io::Result<Vec<Mount>> {
    read(Path::new(HOST_MOUNT_TABLE))
}

/// Moves this process into a mount namespace of its own, a copy of the current one that keeps
/// receiving the host's mounts and unmounts (a slave) but shows none of its own to the host.
/// Mounts made here go when the last process in the namespace exits. The process must still
/// be single-threaded: the kernel refuses a new mount namespace to a thread sharing its
/// filesystem context.
pub fn enter_private_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let root = c"/";
    // SAFETY: a NUL-terminated path; no source, type or data for a propagation change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel writes spaces, tabs and backslashes in mount paths as octal escapes.
pub fn unescape(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_mounts_with_their_paths_unescaped() {
        let table = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0\n\
                     /dev/vda /srv/my\\040data ext4 rw 0 0\n";
        let mounts = parse(table);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].fstype, "cgroup2");
        assert_eq!(mounts[0].target, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mounts[1].target, Path::new("/srv/my data"));
    }
}
