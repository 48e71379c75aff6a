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

/// Writes `value` as JSON to a temporary sibling, fsyncs it, and renames it into place.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    let json = serde_json::to_vec_pretty(value).map_err(|source| FileError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    let written = File::create(&tmp)
        .map_err(io_error("create", &tmp))
        .and_then(|mut file| {
            file.write_all(&json).map_err(io_error("write", &tmp))?;
            file.sync_all().map_err(io_error("sync", &tmp))
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(io_error("rename", path)));
    if let Err(error) = written {
        // A full disk fails the write: the old file stays whole, and no torn one lingers.
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("sync", parent))?;
    }
    Ok(())
}
