//! Writing a container's log: the monitor's copiers append whole lines, and the file is
//! rotated between them at the container's limits.
use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
};

use super::{
    entry::{LogEntry, Stream},
    rotation,
};
use crate::policy::logs::LogLimits;

/// Longer lines are split, so one runaway line never holds the whole log in memory.
const MAX_CHUNK: usize = 16 * 1024;

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

    /// Copies everything read from `pipe` into the log, line by line, until every writer closed it.
    pub fn copy_from(&self, stream: Stream, pipe: OwnedFd) -> JoinHandle<()> {
        let writer = self.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(File::from(pipe));
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut reader)
                    .take(MAX_CHUNK as u64)
                    .read_until(b'\n', &mut line)
                {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        // A full disk loses output, never the container: it keeps running.
                        let _ = writer.write(stream, &line);
                    }
                }
            }
        })
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
