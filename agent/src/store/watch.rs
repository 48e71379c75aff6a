//! The records' directory watched through inotify, by the daemon only (one inotify instance
//! per process, and the host has few of them to spare: not one per monitor). Its listing is
//! then kept whole, and a command reads again only the records that changed since the last
//! one: listing 500 containers costs what listing one does.
use std::{
    collections::HashSet,
    ffi::{CString, OsStr, OsString},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// What happened in the directory since the last look.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Changes {
    /// These names were written, renamed in or out, or removed.
    Named(HashSet<OsString>),
    /// Events were lost (the kernel's queue overflowed, or the watch went): list it all.
    Unknown,
}

pub(super) struct DirectoryWatch {
    inotify: OwnedFd,
}

impl DirectoryWatch {
    pub(super) fn new(dir: &Path) -> io::Result<Self> {
        // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nobody else.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mask = libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE
            | libc::IN_CLOSE_WRITE
            | libc::IN_ONLYDIR;
        // SAFETY: a valid descriptor and NUL-terminated path.
        if unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { inotify })
    }

    /// The names the events since the last call carry.
    pub(super) fn changes(&self) -> Changes {
        let mut names = HashSet::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: read writes at most the buffer's length into it.
            let read = unsafe {
                libc::read(
                    self.inotify.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if read < 0 {
                let error = io::Error::last_os_error();
                return match error.kind() {
                    io::ErrorKind::WouldBlock => Changes::Named(names),
                    io::ErrorKind::Interrupted => continue,
                    _ => Changes::Unknown,
                };
            }
            match parse_events(&buffer[..read as usize]) {
                Some(more) => names.extend(more),
                None => return Changes::Unknown,
            }
        }
    }
}

/// The names in a buffer of `struct inotify_event`s; None when one says events were lost
/// or the watch is gone.
fn parse_events(mut data: &[u8]) -> Option<Vec<OsString>> {
    const HEADER: usize = 16;
    let mut names = Vec::new();
    while data.len() >= HEADER {
        let mask = u32::from_ne_bytes(data[4..8].try_into().ok()?);
        let length = u32::from_ne_bytes(data[12..16].try_into().ok()?) as usize;
        if mask & (libc::IN_Q_OVERFLOW | libc::IN_IGNORED) != 0 {
            return None;
        }
        let raw = data.get(HEADER..HEADER + length)?;
        let name = raw.split(|&b| b == 0).next().unwrap_or_default();
        if !name.is_empty() {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
        data = &data[HEADER + length..];
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt as _;

    #[test]
    fn writes_renames_and_removals_are_named_once_looked_at() {
        let dir = std::env::temp_dir().join(format!("hostnetd-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let watch = DirectoryWatch::new(&dir).unwrap();
        assert_eq!(watch.changes(), Changes::Named(HashSet::new()));
        std::fs::write(dir.join("a.json.tmp"), "{}").unwrap();
        std::fs::rename(dir.join("a.json.tmp"), dir.join("a.json")).unwrap();
        std::fs::write(dir.join("b.json"), "{}").unwrap();
        std::fs::remove_file(dir.join("b.json")).unwrap();
        let Changes::Named(names) = watch.changes() else {
            panic!("events lost");
        };
        let names: HashSet<String> = names
            .into_iter()
            .map(|name| String::from_utf8(name.into_vec()).unwrap())
            .collect();
        let expected: HashSet<String> = ["a.json.tmp", "a.json", "b.json"].map(String::from).into();
        assert_eq!(names, expected);
        assert_eq!(watch.changes(), Changes::Named(HashSet::new()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
