//! Writing a container's log: the monitor's relays append whole lines (or chunks of a long
//! one, see [`crate::runtime::attach`]), and the file is rotated between them at the
//! container's limits.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{
    entry::{LogEntry, Stream},
    rotation,
};
use crate::policy::logs::LogLimits;

/// The container's log, shared by the copier of each stream.
#[derive(Clone)]
pub struct LogWriter {
    file: Arc<Mutex<RotatingFile>>,
}

impl LogWriter {
    pub fn open(path: &Path, limits: LogLimits) -> io::Result<Self> {
        Ok(Self {
            file: Arc::new(Mutex::new(RotatingFile::open(path, limits)?)),
        })
    }

    pub fn write(&self, stream: Stream, text: &[u8]) -> io::Result<()> {
        let mut line =
            serde_json::to_vec(&LogEntry::now(stream, text)).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.append(&line)
    }
}

/// The log's current file and how full it is.
struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Bytes in `file`, counted as they are written: no line costs a stat.
    written: u64,
    limits: LogLimits,
}

impl RotatingFile {
    fn open(path: &Path, limits: LogLimits) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            written: file.metadata()?.len(),
            file,
            limits,
        })
    }

    /// Appends one whole line, rotating first when it would take the file past max-size (a
    /// line longer than that gets a file of its own).
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let length = line.len() as u64;
        if self.written > 0 && self.written.saturating_add(length) > self.limits.max_size {
            self.rotate()?;
        }
        self.written += length;
        self.file.write_all(line)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if !self.still_named()? {
            // `rm` removed the log while the container's last output drains: that goes into
            // the removed file (readers may hold it), never into new files nothing would remove.
            return Ok(());
        }
        rotation::shift(&self.path, self.limits.max_file)?;
        self.file = rotation::start_new(&self.path)?;
        self.written = 0;
        Ok(())
    }

    /// Whether the log's name is still this file's.
    fn still_named(&self) -> io::Result<bool> {
        let inode = self.file.metadata()?.ino();
        Ok(rotation::inode_of(&self.path) == Some(inode))
    }
}
