//! The files of a rotated log, as docker's json-file driver names them: `<id>.log` is written,
//! `<id>.log.1` is the one before it, up to `<id>.log.<max_file - 1>`, the oldest.
//!
//! A rotation shifts the rotated files up by one (the oldest is renamed over, so it is gone),
//! hard-links the full file as `.1`, and renames a new empty file over `<id>.log`. The log's own
//! name therefore always exists, and every file is complete before its successor appears: the
//! writer writes whole lines and rotates only between them. A reader that sees a newer file may
//! read the older one to its end and know nothing more will come.
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// `<id>.log.N`: the Nth file before the current one.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    suffixed(path, &n.to_string())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes room for a new file: `.1` becomes `.2` and so on (the one past `max_file` is dropped),
/// and the current file is also named `.1`.
pub fn shift(path: &Path, max_file: u32) -> io::Result<()> {
    for n in (1..max_file.saturating_sub(1)).rev() {
        ignore_missing(fs::rename(rotated(path, n), rotated(path, n + 1)))?;
    }
    if max_file >= 2 {
        // Still there only when it is the oldest kept (max_file 2).
        ignore_missing(fs::remove_file(rotated(path, 1)))?;
        fs::hard_link(path, rotated(path, 1))?;
    }
    Ok(())
}

/// Replaces the current file by a new empty one, in one rename; returns it open for appending.
pub fn start_new(path: &Path) -> io::Result<File> {
    let new = suffixed(path, "new");
    // Left over only by a crash mid-rotation.
    ignore_missing(fs::remove_file(&new))?;
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&new)?;
    fs::rename(&new, path)?;
    Ok(file)
}

/// A file of the log, opened, and its inode, which tells it apart under whatever name it has.
pub struct LogFile {
    pub inode: u64,
    pub file: File,
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(Self {
            inode: file.metadata()?.ino(),
            file,
        })
    }
}

/// The inode now named `path`, if any.
pub fn inode_of(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|metadata| metadata.ino())
}

/// Every file of the log, newest first, each opened once. Names only ever move to older
/// positions, so a walk from the newest sees them in order; a rotation that completes during
/// the walk may still have mixed two generations, so the walk is then repeated.
pub fn open_all(path: &Path, max_file: u32) -> io::Result<Vec<LogFile>> {
    let mut attempts = 0;
    loop {
        let files = open_once(path, max_file)?;
        attempts += 1;
        if inode_of(path) == Some(files[0].inode) || attempts == 10 {
            return Ok(files);
        }
    }
}

fn open_once(path: &Path, max_file: u32) -> io::Result<Vec<LogFile>> {
    let mut files = vec![LogFile::open(path)?];
    for n in 1..max_file {
        match LogFile::open(&rotated(path, n)) {
            // Mid-rotation, the current file is also `.1`.
            Ok(file) if files.iter().any(|seen| seen.inode == file.inode) => {}
            Ok(file) => files.push(file),
            // Mid-rotation, a name is missing until the next one moves up to it.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(files)
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
