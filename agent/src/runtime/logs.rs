//! Container output, as docker's json-file driver keeps it: one JSON object per line with the
//! stream it came from, its time, and the text (a line, or a chunk when a line is too long).
use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::fd::OwnedFd,
    path::Path,
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
};

use serde::{Deserialize, Serialize};

/// Longer lines are split, so one runaway line never holds the whole log in memory.
const MAX_CHUNK: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub stream: Stream,
    /// Nanoseconds since the epoch.
    pub time_ns: u128,
    pub log: String,
}

/// The container's log file, shared by the copier of each stream.
#[derive(Clone)]
pub struct LogWriter {
    file: Arc<Mutex<File>>,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn write(&self, stream: Stream, text: &[u8]) -> io::Result<()> {
        let entry = LogEntry {
            stream,
            time_ns: now_ns(),
            log: String::from_utf8_lossy(text).into_owned(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(&line)
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

fn now_ns() -> u128 {
    u128::from(crate::sys::time::wall_clock_ns())
}

/// Reads a log from its start (or its last `tail` entries) and then, on each call to
/// [`LogReader::next_entries`], whatever was appended since.
pub struct LogReader {
    reader: BufReader<File>,
    partial: Vec<u8>,
}

impl LogReader {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self::from_file(File::open(path)?))
    }

    pub fn from_file(file: File) -> Self {
        Self {
            reader: BufReader::new(file),
            partial: Vec::new(),
        }
    }

    /// The entries written so far, keeping only the last `tail` when given.
    pub fn initial(&mut self, tail: Option<usize>) -> io::Result<Vec<LogEntry>> {
        let mut entries = self.next_entries()?;
        if let Some(tail) = tail {
            let skip = entries.len().saturating_sub(tail);
            entries.drain(..skip);
        }
        Ok(entries)
    }

    /// Complete entries appended since the last call; a half-written last line waits.
    pub fn next_entries(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut entries = Vec::new();
        loop {
            let read = self.reader.read_until(b'\n', &mut self.partial)?;
            if read == 0 || !self.partial.ends_with(b"\n") {
                // At the end for now; a half-written line stays in `partial` until completed.
                return Ok(entries);
            }
            if let Ok(entry) = serde_json::from_slice::<LogEntry>(&self.partial) {
                entries.push(entry);
            }
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd as _;

    #[test]
    fn entries_roundtrip_with_tail_and_follow() {
        let path = std::env::temp_dir().join(format!("hostnetd-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let writer = LogWriter::open(&path).unwrap();
        for n in 0..5 {
            writer
                .write(Stream::Stdout, format!("line {n}\n").as_bytes())
                .unwrap();
        }
        let mut reader = LogReader::open(&path).unwrap();
        let tail: Vec<String> = reader
            .initial(Some(2))
            .unwrap()
            .into_iter()
            .map(|e| e.log)
            .collect();
        assert_eq!(tail, ["line 3\n", "line 4\n"]);
        assert!(reader.next_entries().unwrap().is_empty());
        writer.write(Stream::Stderr, b"late\n").unwrap();
        let late = reader.next_entries().unwrap();
        assert_eq!(late.len(), 1);
        assert_eq!(
            (late[0].stream, late[0].log.as_str()),
            (Stream::Stderr, "late\n")
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_pipe_is_copied_line_by_line_until_closed() {
        let path = std::env::temp_dir().join(format!("hostnetd-pipe-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let writer = LogWriter::open(&path).unwrap();
        let (read_end, write_end) = std::io::pipe().unwrap();
        let copier = writer.copy_from(Stream::Stdout, OwnedFd::from(read_end));
        let mut input = File::from(write_end.as_fd().try_clone_to_owned().unwrap());
        drop(write_end);
        input.write_all(b"one\ntwo\nno newline").unwrap();
        drop(input);
        copier.join().unwrap();
        let logs: Vec<String> = LogReader::open(&path)
            .unwrap()
            .initial(None)
            .unwrap()
            .into_iter()
            .map(|e| e.log)
            .collect();
        assert_eq!(logs, ["one\n", "two\n", "no newline"]);
        std::fs::remove_file(path).unwrap();
    }
}
