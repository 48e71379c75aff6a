//! State files: JSON written whole or not at all, and flock(2)-ed lock files.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot {action} {path}: {source}{}", full_hint(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What to do about a full file system, which the error alone does not say.
pub fn full_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            "; the file system of hostnetd's state directory is full: free space on it and retry"
        }
        _ => "",
    }
}

/// The error of `action` on `path`, for `map_err`.
pub fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io {
        action,
        path,
        source,
    }
}

/// `text`, the content of `path`, as a `T`.
pub fn parse_json<T: DeserializeOwned>(path: &Path, text: &[u8]) -> Result<T, FileError> {
    serde_json::from_slice(text).map_err(|source| FileError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Opens (creating) `path` and flocks it with `operation` (LOCK_EX or LOCK_SH), blocking.
pub fn lock_file(path: &Path, operation: libc::c_int) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = fs::read(path).map_err(io_error("read", path))?;
    parse_json(path, &text)
}

/// What a state file must survive besides a crash of the process that writes it (which
/// the page cache survives: every write is whole or not at all, by a rename).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A power loss too: the file and its directory are fsynced, in the background where a
    /// process runs a [`BackgroundSync`] (the daemon: off the path of every command), else
    /// before the write returns.
    Durable,
    /// Only while the machine runs: facts a reboot makes moot (a running container's pid and
    /// state, the ports reserved in the kernel), which the kernel forgets as well.
    UntilReboot,
}

/// Writes `value` as JSON to a temporary sibling and renames it into place, made durable as
/// [`Durability::Durable`] says.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    write_json_with(path, value, Durability::Durable)
}

pub fn write_json_with<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), FileError> {
    let json = serde_json::to_vec_pretty(value).map_err(|source| FileError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    let deferred = durability == Durability::Durable && BackgroundSync::running();
    let sync_now = durability == Durability::Durable && !deferred;
    let written = File::create(&tmp)
        .map_err(io_error("create", &tmp))
        .and_then(|mut file| {
            file.write_all(&json).map_err(io_error("write", &tmp))?;
            if sync_now {
                file.sync_all().map_err(io_error("sync", &tmp))?;
            }
            Ok(())
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(io_error("rename", path)));
    if let Err(error) = written {
        // A full disk fails the write: the old file stays whole, and no torn one lingers.
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    if deferred {
        BackgroundSync::note(path);
    } else if sync_now {
        if let Some(parent) = path.parent() {
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(io_error("sync", parent))?;
        }
    }
    Ok(())
}

/// Makes durable, a moment after they were written, the files this process wrote: one
/// thread, which fsyncs each file written since its last round and then each of their
/// directories. A command never waits for the disk (an fsync costs milliseconds, each
/// command wrote several); a power loss within that moment loses a change only to state
/// the power loss ended anyway.
pub struct BackgroundSync;

static PENDING: std::sync::Mutex<Option<std::collections::BTreeSet<PathBuf>>> =
    std::sync::Mutex::new(None);
static WAKE: std::sync::Condvar = std::sync::Condvar::new();
/// How long the thread waits after a first write for more to sync in the same round.
const SYNC_BATCH: std::time::Duration = std::time::Duration::from_millis(100);

impl BackgroundSync {
    /// Starts the thread (once per process).
    pub fn start() -> io::Result<()> {
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_some() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("sync".into())
            .spawn(Self::run)?;
        *pending = Some(std::collections::BTreeSet::new());
        Ok(())
    }

    fn running() -> bool {
        PENDING.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn note(path: &Path) {
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(paths) = pending.as_mut() {
            paths.insert(path.to_path_buf());
            WAKE.notify_one();
        }
    }

    /// Waits until everything written so far is on disk (tests, and a daemon that stops).
    pub fn flush() {
        Self::sync(Self::take());
    }

    fn take() -> std::collections::BTreeSet<PathBuf> {
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        pending.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn run() {
        loop {
            {
                let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
                while pending.as_ref().is_some_and(|paths| paths.is_empty()) {
                    pending = WAKE.wait(pending).unwrap_or_else(|p| p.into_inner());
                }
            }
            std::thread::sleep(SYNC_BATCH);
            Self::sync(Self::take());
        }
    }

    fn sync(paths: std::collections::BTreeSet<PathBuf>) {
        let mut directories = std::collections::BTreeSet::new();
        for path in paths {
            // A file removed or replaced since is fine: the replacement was noted too.
            if let Ok(file) = File::open(&path) {
                let _ = file.sync_all();
            }
            if let Some(parent) = path.parent() {
                directories.insert(parent.to_path_buf());
            }
        }
        for directory in directories {
            if let Ok(dir) = File::open(&directory) {
                let _ = dir.sync_all();
            }
        }
    }
}
