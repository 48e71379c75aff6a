//! cgroup v2: finding the unified hierarchy, and each container's cgroup under hostnetd's parent.
//!
//! The mount point is read from the mount table, never assumed: pure v2 hosts mount it at
//! /sys/fs/cgroup, hybrid hosts at /sys/fs/cgroup/unified.
use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use super::mounts;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read the mount table {path}: {source}")]
    MountTable { path: PathBuf, source: io::Error },
    #[error("no cgroup2 filesystem is mounted (looked in {0}); hostnetd needs the unified cgroup hierarchy: mount it with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoCgroup2(PathBuf),
    #[error("cannot {action} cgroup {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The cgroup2 mount hostnetd works in.
#[derive(Clone, Debug)]
pub struct Cgroup2 {
    mount: PathBuf,
}

impl Cgroup2 {
    /// Finds the cgroup2 mount in `mounts` (normally /proc/self/mounts).
    pub fn discover(mounts: &Path) -> Result<Self, CgroupError> {
        let table = fs::read_to_string(mounts).map_err(|source| CgroupError::MountTable {
            path: mounts.to_path_buf(),
            source,
        })?;
        Self::from_mount_table(&table).ok_or_else(|| CgroupError::NoCgroup2(mounts.to_path_buf()))
    }

    /// The cgroup2 mount at `mount`, as a parent process found it (one statfs, not a read of
    /// the mount table, which grows with every container's root filesystem).
    pub fn at(mount: &Path) -> Result<Self, CgroupError> {
        const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
        let path = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes())
            .map_err(|_| CgroupError::NoCgroup2(mount.to_path_buf()))?;
        // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
        if rc != 0 || stat.f_type as i64 != CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::NoCgroup2(mount.to_path_buf()));
        }
        Ok(Self {
            mount: mount.to_path_buf(),
        })
    }

    pub fn host() -> Result<Self, CgroupError> {
        Self::discover(Path::new(mounts::HOST_MOUNT_TABLE))
    }

    fn from_mount_table(table: &str) -> Option<Self> {
        (mounts::parse(table).into_iter())
            .find(|mount| mount.fstype == "cgroup2")
            .map(|mount| Self {
                mount: mount.target,
            })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Removes the empty directories runc made at `relative` in the cgroup v1 hierarchies of
    /// a hybrid host (it puts a container in each controller's hierarchy as well as in the
    /// unified one, and removes only the innermost), deepest first. Only ever `rmdir`: a
    /// directory that still holds a cgroup stays.
    pub fn remove_v1_twins(&self, relative: &str) {
        let Ok(table) = fs::read_to_string(mounts::HOST_MOUNT_TABLE) else {
            return;
        };
        let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
        for mount in mounts::parse(&table)
            .iter()
            .filter(|m| m.fstype == "cgroup")
        {
            for depth in (1..=parts.len()).rev() {
                let _ = fs::remove_dir(mount.target.join(parts[..depth].join("/")));
            }
        }
    }

    /// The cgroup at `relative` (for example `hostnetd/<id>`) below the mount.
    pub fn path_of(&self, relative: &str) -> PathBuf {
        self.mount.join(relative.trim_start_matches('/'))
    }

    /// Creates the cgroup at `relative` (and its parents) and returns its handle, and whether
    /// this call made it. The id of a cgroup made now is new: the kernel never gives an id
    /// twice while it runs, so no table can hold entries of it yet.
    pub fn create(&self, relative: &str) -> Result<(ContainerCgroup, bool), CgroupError> {
        let path = self.path_of(relative);
        let io = |source| CgroupError::Io {
            action: "create",
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let made_now = match fs::create_dir(&path) {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => false,
            Err(error) => return Err(io(error)),
        };
        Ok((self.open(relative)?, made_now))
    }

    /// Moves this process into the cgroup at `relative`, made if need be.
    pub fn enter(&self, relative: &str) -> Result<(), CgroupError> {
        let path = self.path_of(relative);
        let io = |action, source| CgroupError::Io {
            action,
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&path).map_err(|e| io("create", e))?;
        fs::write(path.join("cgroup.procs"), "0").map_err(|e| io("enter", e))
    }

    /// Opens an existing cgroup at `relative`.
    pub fn open(&self, relative: &str) -> Result<ContainerCgroup, CgroupError> {
        let path = self.path_of(relative);
        let meta = fs::metadata(&path).map_err(|source| CgroupError::Io {
            action: "stat",
            path: path.clone(),
            source,
        })?;
        let level = relative.split('/').filter(|part| !part.is_empty()).count() as u32;
        Ok(ContainerCgroup {
            path,
            id: meta.ino(),
            level,
        })
    }
}

/// One container's cgroup v2 directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    pub path: PathBuf,
    /// The kernel's cgroup id: the directory's inode number on cgroupfs, which is what
    /// `bpf_get_current_cgroup_id` and its ancestor variant return.
    pub id: u64,
    /// Depth below the cgroup2 root (assumes hostnetd runs in the root cgroup namespace).
    pub level: u32,
}

impl ContainerCgroup {
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Kills whatever is left in the cgroup and removes it; a cgroup that is already gone is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        if !self.exists() {
            return Ok(());
        }
        // cgroup.kill exists since Linux 5.14; older kernels leave the kill to the runtime.
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        let mut last_error = None;
        for _ in 0..50 {
            match remove_tree(&self.path) {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(error) => last_error = Some(error),
            }
            // Killed tasks leave the cgroup asynchronously; rmdir fails with EBUSY until then.
            thread::sleep(Duration::from_millis(20));
        }
        Err(CgroupError::Io {
            action: "remove",
            path: self.path.clone(),
            source: last_error.unwrap_or_else(|| io::Error::other("busy")),
        })
    }
}

/// The pids in the cgroup at `path` and every cgroup below it (a container's processes,
/// wherever in its subtree they are).
pub fn processes_below(path: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(path.join("cgroup.procs"))
        .map(|procs| procs.lines().filter_map(|line| line.parse().ok()).collect())
        .unwrap_or_default();
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pids.extend(processes_below(&entry.path()));
            }
        }
    }
    pids
}

/// The pids directly in the cgroup whose id is `id` (its `cgroup.procs`), found from the id
/// alone: the id is the cgroup directory's kernfs file handle on the cgroup2 mount `mount`.
/// Naming the holder of a socket through its cgroup (which sock_diag reports) then reads
/// one small file instead of every process's descriptors.
pub fn processes_of_id(mount: &Path, id: u64) -> io::Result<Vec<u32>> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    /// `FILEID_KERNFS`: the handle type name_to_handle_at gives for a cgroupfs directory.
    const FILEID_KERNFS: i32 = 0xfe;
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: [u8; 8],
    }
    let mount_dir = fs::File::open(mount)?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id: id.to_ne_bytes(),
    };
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: a live handle laid out as struct file_handle with its 8 bytes; returns a new
    // descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_dir.as_raw_fd(),
            &mut handle as *mut KernfsHandle,
            flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    let cgroup_dir = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    let procs = unsafe {
        libc::openat(
            cgroup_dir.as_raw_fd(),
            c"cgroup.procs".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if procs < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    let mut procs = unsafe { fs::File::from_raw_fd(procs) };
    let text = read_in_one_go(&mut procs)?;
    Ok((text.split(|&byte| byte == b'\n'))
        .filter_map(|line| std::str::from_utf8(line).ok()?.parse().ok())
        .collect())
}

/// A cgroup file read with as few read(2)s as it takes: each one that does not continue where
/// the last stopped walks the cgroup's every thread again from the start, and a root cgroup
/// may hold thousands. The kernel fills a read as far as the file goes, so one that comes
/// back short has reached the end; no read is spent to be told so.
fn read_in_one_go(file: &mut fs::File) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut text = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        let read = match file.read(&mut text[filled..]) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        filled += read;
        if read == 0 || filled < text.len() {
            text.truncate(filled);
            return Ok(text);
        }
        text.resize(text.len() * 2, 0);
    }
}

/// Removes a cgroup directory and any child cgroups the container created, deepest first.
fn remove_tree(path: &Path) -> io::Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
        cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
    const PURE_V2: &str = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";

    #[test]
    fn finds_unified_mount_on_hybrid_hosts() {
        let cgroup = Cgroup2::from_mount_table(HYBRID).unwrap();
        assert_eq!(cgroup.mount(), Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn finds_mount_on_pure_v2_hosts() {
        let cgroup = Cgroup2::from_mount_table(PURE_V2).unwrap();
        assert_eq!(
            cgroup.path_of("/hostnetd/abc"),
            Path::new("/sys/fs/cgroup/hostnetd/abc")
        );
    }

    #[test]
    fn v1_only_hosts_have_no_cgroup2() {
        assert!(Cgroup2::from_mount_table("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n").is_none());
    }

    #[test]
    fn mount_paths_are_unescaped() {
        let cgroup = Cgroup2::from_mount_table("none /mnt/my\\040cg cgroup2 rw 0 0\n").unwrap();
        assert_eq!(cgroup.mount(), Path::new("/mnt/my cg"));
    }

    #[test]
    fn a_cgroup_is_found_by_its_id_alone() {
        let cgroup2 = Cgroup2::host().expect("the host's cgroup2 mount");
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let id = fs::metadata(cgroup2.path_of(own)).unwrap().ino();
        let pids = processes_of_id(cgroup2.mount(), id).unwrap();
        assert!(pids.contains(&std::process::id()), "{own}: {pids:?}");
        let gone = processes_of_id(cgroup2.mount(), u64::MAX - 1).unwrap_err();
        assert_eq!(gone.raw_os_error(), Some(libc::ESTALE), "{gone}");
    }

    #[test]
    fn level_and_id_come_from_the_directory() {
        let root = std::env::temp_dir().join(format!("hostnetd-cg-test-{}", std::process::id()));
        let cgroup = Cgroup2 {
            mount: root.clone(),
        };
        let (created, made_now) = cgroup.create("hostnetd/abc").unwrap();
        assert!(made_now);
        assert!(!cgroup.create("hostnetd/abc").unwrap().1, "made before");
        assert_eq!(created.level, 2);
        assert_eq!(
            created.id,
            fs::metadata(root.join("hostnetd/abc")).unwrap().ino()
        );
        // remove() needs a real cgroup (cgroup.kill); the end-to-end tests cover it.
        fs::remove_dir_all(root).unwrap();
    }
}
