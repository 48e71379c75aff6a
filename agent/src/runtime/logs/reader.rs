//! Reading a rotated log: its files oldest first, then, when followed, whatever is appended,
//! across rotations.
use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{entry::LogEntry, rotation};

/// Entries one call returns at most, so that a long log is streamed, not held in memory.
const BATCH: usize = 1000;

/// Reads a log from its oldest file and then, on each call to [`LogReader::next_entries`],
/// whatever was appended since, moving on to each newer file once the one it reads is complete.
///
/// The files it has found stay open, so their lines are read even once the files are rotated
/// away or removed (`--rm`); it keeps at most `max_file` of them ahead, so a reader that fell
/// behind holds no more disk than the log itself, and skips what it missed.
pub struct LogReader {
    path: PathBuf,
    max_file: u32,
    current: BufReader<File>,
    /// Files found newer than `current`, oldest first.
    newer: VecDeque<File>,
    /// The inode of the newest file found.
    newest: u64,
    partial: Vec<u8>,
}

impl LogReader {
    /// Every file of the log at `path`, which keeps at most `max_file` files.
    pub fn open(path: &Path, max_file: u32) -> io::Result<Self> {
        let mut files = rotation::open_all(path, max_file)?;
        let newest = files[0].inode;
        files.reverse();
        let mut files = files.into_iter().map(|found| found.file);
        let oldest = files
            .next()
            .expect("open_all finds at least the current file");
        Ok(Self {
            newer: files.collect(),
            ..Self::starting_at(oldest, newest, path, max_file)
        })
    }

    /// The log at `path` from `file`, its first file, opened earlier (so that a container
    /// forgotten at once has still been read from its start).
    pub fn from_first_file(file: File, path: &Path, max_file: u32) -> io::Result<Self> {
        let inode = file.metadata()?.ino();
        Ok(Self::starting_at(file, inode, path, max_file))
    }

    fn starting_at(file: File, newest: u64, path: &Path, max_file: u32) -> Self {
        Self {
            path: path.to_path_buf(),
            max_file,
            current: BufReader::new(file),
            newer: VecDeque::new(),
            newest,
            partial: Vec::new(),
        }
    }

    /// The last `count` entries written so far; later calls read on from there.
    pub fn tail(&mut self, count: usize) -> io::Result<Vec<LogEntry>> {
        let mut last = VecDeque::with_capacity(count.min(BATCH));
        loop {
            let entries = self.next_entries()?;
            if entries.is_empty() {
                return Ok(last.into());
            }
            for entry in entries {
                if last.len() == count {
                    last.pop_front();
                }
                if count > 0 {
                    last.push_back(entry);
                }
            }
        }
    }

    /// Complete entries appended since the last call, in order, up to a batch; a half-written
    /// last line waits. Empty when there is nothing new.
    pub fn next_entries(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut entries = Vec::new();
        loop {
            self.read_current(&mut entries)?;
            if entries.len() >= BATCH {
                return Ok(entries);
            }
            if self.newer.is_empty() {
                self.find_newer()?;
            }
            let Some(next) = self.newer.pop_front() else {
                return Ok(entries);
            };
            // A newer file exists, so this one is complete; it may have been completed after
            // the read above.
            self.read_current(&mut entries)?;
            if entries.len() >= BATCH {
                self.newer.push_front(next);
                return Ok(entries);
            }
            self.current = BufReader::new(next);
            // Only a crash mid-line leaves a line unfinished; it never will be now.
            self.partial.clear();
        }
    }

    /// Reads the current file's complete lines until its end or a full batch.
    fn read_current(&mut self, entries: &mut Vec<LogEntry>) -> io::Result<()> {
        while entries.len() < BATCH {
            let read = self.current.read_until(b'\n', &mut self.partial)?;
            if read == 0 || !self.partial.ends_with(b"\n") {
                // At the end for now; a half-written line stays in `partial` until completed.
                return Ok(());
            }
            if let Ok(entry) = serde_json::from_slice::<LogEntry>(&self.partial) {
                entries.push(entry);
            }
            self.partial.clear();
        }
        Ok(())
    }

    /// Opens the files made since the newest one found, if the log was rotated since (one
    /// stat when it was not). A log removed meanwhile has nothing newer.
    fn find_newer(&mut self) -> io::Result<()> {
        if rotation::inode_of(&self.path).is_none_or(|inode| inode == self.newest) {
            return Ok(());
        }
        let files = match rotation::open_all(&self.path, self.max_file) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        // Newest first; all of them are new when the newest found was already rotated away.
        let fresh: Vec<_> = (files.into_iter())
            .take_while(|file| file.inode != self.newest)
            .collect();
        if let Some(newest) = fresh.first() {
            self.newest = newest.inode;
        }
        self.newer
            .extend(fresh.into_iter().rev().map(|found| found.file));
        let excess = self.newer.len().saturating_sub(self.max_file as usize);
        self.newer.drain(..excess);
        Ok(())
    }
}
