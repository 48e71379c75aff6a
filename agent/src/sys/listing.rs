//! A directory's listing kept by a long-lived process and read again only when the directory
//! changed: the daemon looks on every command for what a crash left behind (containers
//! attached without a record, writable layers of removed containers), and listing those
//! directories grows with the containers.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Mutex, PoisonError},
};

/// The names in a directory as last listed, with the stamp it had then.
#[derive(Default)]
pub struct KeptListing(Mutex<Option<(DirStamp, Vec<String>)>>);

impl KeptListing {
    /// The names in `dir` (none when it cannot be read), listed again only when its stamp
    /// changed since the last call.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        let stamp = DirStamp::of(dir);
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (&*kept, stamp) {
            (Some((seen, names)), Some(stamp)) if *seen == stamp => names.clone(),
            _ => {
                let names = list(dir);
                *kept = stamp.map(|stamp| (stamp, names.clone()));
                names
            }
        }
    }
}

fn list(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    (entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok())).collect()
}

/// What tells a directory of directories changed: an entry added or removed changes its
/// link count and its change time. The inode tells a directory made again from the one
/// listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirStamp {
    inode: u64,
    links: u64,
    changed_ns: i128,
}

impl DirStamp {
    fn of(dir: &Path) -> Option<Self> {
        let meta = fs::metadata(dir).ok()?;
        Some(Self {
            inode: meta.ino(),
            links: meta.nlink(),
            changed_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_to_the_directory_is_listed_again() {
        let dir = std::env::temp_dir().join(format!("hostnetd-listing-{}", std::process::id()));
        fs::create_dir_all(dir.join("a")).unwrap();
        let kept = KeptListing::default();
        assert_eq!(kept.names(&dir), ["a"]);
        fs::create_dir(dir.join("b")).unwrap();
        let mut names = kept.names(&dir);
        names.sort();
        assert_eq!(names, ["a", "b"]);
        fs::remove_dir(dir.join("a")).unwrap();
        assert_eq!(kept.names(&dir), ["b"]);
        fs::remove_dir(dir.join("b")).unwrap();
        fs::remove_dir(&dir).unwrap();
        assert!(kept.names(&dir).is_empty());
    }
}
