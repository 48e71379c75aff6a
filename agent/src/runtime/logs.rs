//! Container output, as docker's json-file driver keeps it: one JSON object per line with the
//! stream it came from, its time, and the text (a line, or a chunk when a line is too long),
//! in files rotated at the container's [`LogLimits`] (see [`rotation`] for the files).
mod entry;
mod reader;
pub mod rotation;
mod writer;

pub use crate::policy::logs::LogLimits;
pub use entry::{LogEntry, Stream};
pub use reader::LogReader;
pub use writer::LogWriter;

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        collections::HashSet,
        fs::{self, File},
        os::unix::fs::MetadataExt as _,
        path::PathBuf,
        thread,
    };

    /// A directory of its own for one test's log files.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("hostnetd-logs-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn log(&self) -> PathBuf {
            self.0.join("c.log")
        }

        /// Every file in the directory, by name.
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = (fs::read_dir(&self.0).unwrap())
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }

        /// Bytes on disk, each inode counted once.
        fn bytes(&self) -> u64 {
            let mut seen = HashSet::new();
            (fs::read_dir(&self.0).unwrap())
                .map(|entry| entry.unwrap().metadata().unwrap())
                .filter(|metadata| seen.insert(metadata.ino()))
                .map(|metadata| metadata.len())
                .sum()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn limits(max_size: u64, max_file: u32) -> LogLimits {
        LogLimits { max_size, max_file }
    }

    fn write_numbers(writer: &LogWriter, numbers: std::ops::Range<u32>) {
        for n in numbers {
            writer
                .write(Stream::Stdout, format!("{n}\n").as_bytes())
                .unwrap();
        }
    }

    fn numbers(entries: Vec<LogEntry>) -> Vec<u32> {
        (entries.iter())
            .map(|entry| entry.log.trim().parse().unwrap())
            .collect()
    }

    /// Everything a reader gets until it has nothing new.
    fn drain(reader: &mut LogReader) -> Vec<u32> {
        let mut all = Vec::new();
        loop {
            let batch = numbers(reader.next_entries().unwrap());
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    /// The length of one entry line holding `n`.
    fn line_length(n: u32) -> u64 {
        let entry = LogEntry::now(Stream::Stdout, format!("{n}\n").as_bytes());
        serde_json::to_vec(&entry).unwrap().len() as u64 + 1
    }

    #[test]
    fn entries_roundtrip_with_tail_and_follow() {
        let dir = TempDir::new("roundtrip");
        let writer = LogWriter::open(&dir.log(), LogLimits::DEFAULT).unwrap();
        for n in 0..5 {
            writer
                .write(Stream::Stdout, format!("line {n}\n").as_bytes())
                .unwrap();
        }
        let mut reader = LogReader::open(&dir.log(), 5).unwrap();
        let tail: Vec<String> = reader.tail(2).unwrap().into_iter().map(|e| e.log).collect();
        assert_eq!(tail, ["line 3\n", "line 4\n"]);
        assert!(reader.next_entries().unwrap().is_empty());
        writer.write(Stream::Stderr, b"late\n").unwrap();
        let late = reader.next_entries().unwrap();
        assert_eq!(late.len(), 1);
        assert_eq!(
            (late[0].stream, late[0].log.as_str()),
            (Stream::Stderr, "late\n")
        );
    }

    #[test]
    fn rotation_keeps_max_file_files_within_max_size_and_reads_back_in_order() {
        let dir = TempDir::new("rotate");
        let line = line_length(1000);
        let writer = LogWriter::open(&dir.log(), limits(10 * line, 3)).unwrap();
        for n in 1000..1100 {
            write_numbers(&writer, n..n + 1);
            assert!(dir.bytes() <= 30 * line, "{} bytes after {n}", dir.bytes());
            assert!(dir.names().len() <= 3, "{:?}", dir.names());
        }
        assert_eq!(dir.names(), ["c.log", "c.log.1", "c.log.2"]);
        for name in dir.names() {
            assert_eq!(
                fs::metadata(dir.0.join(&name)).unwrap().len(),
                10 * line,
                "{name}"
            );
        }
        // The 30 newest lines, oldest file first.
        let mut reader = LogReader::open(&dir.log(), 3).unwrap();
        assert_eq!(drain(&mut reader), (1070..1100).collect::<Vec<_>>());
        let mut reader = LogReader::open(&dir.log(), 3).unwrap();
        assert_eq!(
            numbers(reader.tail(12).unwrap()),
            (1088..1100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_line_longer_than_max_size_gets_a_file_of_its_own() {
        let dir = TempDir::new("long");
        let writer = LogWriter::open(&dir.log(), limits(100, 2)).unwrap();
        let long = "x".repeat(500);
        for _ in 0..3 {
            writer.write(Stream::Stdout, long.as_bytes()).unwrap();
            writer.write(Stream::Stdout, b"short\n").unwrap();
        }
        assert_eq!(dir.names(), ["c.log", "c.log.1"]);
        let logs: Vec<String> = (LogReader::open(&dir.log(), 2).unwrap().tail(10).unwrap())
            .into_iter()
            .map(|entry| entry.log)
            .collect();
        assert_eq!(logs, [long.as_str(), "short\n"]);
    }

    #[test]
    fn one_file_is_replaced_when_full() {
        let dir = TempDir::new("one");
        let line = line_length(1000);
        let writer = LogWriter::open(&dir.log(), limits(4 * line, 1)).unwrap();
        write_numbers(&writer, 1000..1010);
        assert_eq!(dir.names(), ["c.log"]);
        let mut reader = LogReader::open(&dir.log(), 1).unwrap();
        assert_eq!(drain(&mut reader), [1008, 1009]);
    }

    #[test]
    fn a_follower_continues_across_rotations_without_loss_or_repeat() {
        let dir = TempDir::new("follow");
        let line = line_length(1000);
        let writer = LogWriter::open(&dir.log(), limits(5 * line, 3)).unwrap();
        let mut reader = LogReader::open(&dir.log(), 3).unwrap();
        let mut seen = Vec::new();
        // Read between writes of every size: mid-file, at a rotation, two rotations apart.
        for (start, count) in [
            (1000, 3),
            (1003, 2),
            (1005, 1),
            (1006, 9),
            (1015, 10),
            (1025, 7),
        ] {
            write_numbers(&writer, start..start + count);
            seen.extend(drain(&mut reader));
        }
        assert_eq!(seen, (1000..1032).collect::<Vec<_>>());
    }

    #[test]
    fn a_follower_that_fell_behind_skips_ahead_without_repeating() {
        let dir = TempDir::new("behind");
        let line = line_length(1000);
        let writer = LogWriter::open(&dir.log(), limits(5 * line, 2)).unwrap();
        let mut reader = LogReader::open(&dir.log(), 2).unwrap();
        write_numbers(&writer, 1000..1002);
        let mut seen = drain(&mut reader);
        // Many rotations while it does not read: its open file is kept, the rest is missed.
        write_numbers(&writer, 1002..1050);
        seen.extend(drain(&mut reader));
        assert_eq!(&seen[..5], [1000, 1001, 1002, 1003, 1004]);
        assert_eq!(&seen[seen.len() - 10..], (1040..1050).collect::<Vec<_>>());
        assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    }

    #[test]
    fn a_reader_from_the_first_file_reads_on_after_the_log_is_removed() {
        let dir = TempDir::new("removed");
        let line = line_length(1000);
        let writer = LogWriter::open(&dir.log(), limits(5 * line, 3)).unwrap();
        let first = File::open(dir.log()).unwrap();
        let mut reader = LogReader::from_first_file(first, &dir.log(), 3).unwrap();
        write_numbers(&writer, 1000..1007);
        let mut seen = drain(&mut reader);
        write_numbers(&writer, 1007..1009);
        // `rm` takes every file; what the reader holds is still read, and nothing comes back.
        for name in dir.names() {
            fs::remove_file(dir.0.join(name)).unwrap();
        }
        write_numbers(&writer, 1009..1030);
        seen.extend(drain(&mut reader));
        assert_eq!(seen, (1000..1030).collect::<Vec<_>>());
        assert!(dir.names().is_empty(), "{:?}", dir.names());
    }

    #[test]
    fn a_follower_racing_a_writer_never_repeats_and_reaches_the_end() {
        let dir = TempDir::new("race");
        let line = line_length(100_000);
        let writer = LogWriter::open(&dir.log(), limits(40 * line, 3)).unwrap();
        let mut reader = LogReader::open(&dir.log(), 3).unwrap();
        let copy = writer.clone();
        let writing = thread::spawn(move || write_numbers(&copy, 100_000..120_000));
        let mut seen = Vec::new();
        while !writing.is_finished() {
            seen.extend(numbers(reader.next_entries().unwrap()));
        }
        writing.join().unwrap();
        seen.extend(drain(&mut reader));
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "out of order or repeated"
        );
        assert_eq!(seen.last(), Some(&119_999));
        assert!(dir.bytes() <= 120 * line);
    }
}
