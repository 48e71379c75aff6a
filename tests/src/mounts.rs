//! The mount table, for the harness: where cgroup2 is, and removing a scratch directory without
//! ever walking through a mount into the host.
use std::path::{Path, PathBuf};

/// Mount points, in the table's order (paths unescaped as the kernel escapes them).
fn mount_points(table: &str) -> impl Iterator<Item = (PathBuf, &str)> {
    table.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        let target = target
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\");
        Some((PathBuf::from(target), fstype))
    })
}

/// Whether something is mounted at `path`.
pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    let table = std::fs::read_to_string("/proc/self/mounts")?;
    let mounted = mount_points(&table).any(|(target, _)| target == path);
    Ok(mounted)
}

/// The cgroup2 mount, from the mount table.
pub fn cgroup2_mount() -> PathBuf {
    let table = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let mount =
        mount_points(&table).find_map(|(target, fstype)| (fstype == "cgroup2").then_some(target));
    mount.expect("cgroup2 mounted")
}

/// Mount points at or below `dir`; `dir` itself when the mount table cannot be read, so that
/// the caller assumes the worst.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return vec![dir.to_path_buf()];
    };
    mount_points(&table)
        .map(|(target, _)| target)
        .filter(|target| target.starts_with(dir))
        .collect()
}

/// Removes a scratch directory, but never through a mount point. A container's bundle
/// (`run/containers/<id>/rootfs`) is a bind mount of its root filesystem, for `--rootfs /` the
/// host's own: a recursive delete that walks into it deletes the host (it did: a failed test
/// left one mounted, and /etc went). Every mount below `dir` is detached first, deepest
/// first; if any is still there, or the mount table cannot be read, nothing is deleted.
pub fn remove_scratch(dir: &Path) {
    let mut mounts = mounts_below(dir);
    mounts.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    for mount in &mounts {
        if let Ok(path) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path; detaching a mount below our own scratch directory.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let left = mounts_below(dir);
    if left.is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!(
            "not removing {}: mounts are still below it: {left:?}",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_mount_points_are_read_back() {
        let table =
            "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n/dev/x /tmp/a\\040b ext4 rw 0 0\n";
        let points: Vec<_> = mount_points(table).collect();
        assert_eq!(
            points[0],
            (PathBuf::from("/sys/fs/cgroup/unified"), "cgroup2")
        );
        assert_eq!(points[1].0, Path::new("/tmp/a b"));
    }
}
