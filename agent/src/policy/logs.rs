//! `--log-opt max-size=SIZE --log-opt max-file=N`: how much of its output a container keeps,
//! as docker's json-file driver takes them. The log is rotated when it would grow past
//! max-size, and at most max-file files are kept, so a container that writes without pause
//! never holds more than max-size × max-file of disk.
//!
//! Unlike docker (unlimited by default), hostnetd keeps [`LogLimits::DEFAULT`] (10m × 5, as
//! containerd's CRI does) unless config.toml or the container says otherwise.
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a rotated log may hold, resolved for one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Bytes a log file may reach before it is rotated (a single longer line gets a file of
    /// its own).
    pub max_size: u64,
    /// Files kept, the current one included.
    pub max_file: u32,
}

impl LogLimits {
    pub const DEFAULT: Self = Self {
        max_size: 10 << 20,
        max_file: 5,
    };
}

impl Default for LogLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The `--log-opt` values given for one container; what is missing comes from the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub max_size: Option<u64>,
    pub max_file: Option<u32>,
}

/// More files than this would make each reader's look at the rotated files slow.
pub const MAX_FILES: u32 = 100;

const SIZE_HELP: &str = "give a size in bytes or with a unit k, m or g, such as 100k, 10m or 1g";
const FILES_HELP: &str = "give a whole number of files from 1 to 100, such as 3";

impl LogOptions {
    /// `--log-opt` values, each `KEY=VALUE`; a later value of a key replaces an earlier one.
    pub fn parse(options: &[String]) -> Result<Self, String> {
        let mut parsed = Self::default();
        for option in options {
            parsed
                .set(option)
                .map_err(|reason| format!("invalid --log-opt {option:?}: {reason}"))?;
        }
        Ok(parsed)
    }

    fn set(&mut self, option: &str) -> Result<(), String> {
        let Some((key, value)) = option.split_once('=') else {
            return Err("expected KEY=VALUE, as max-size=10m or max-file=3".into());
        };
        match key {
            "max-size" => self.max_size = Some(parse_size(value)?),
            "max-file" => self.max_file = Some(parse_max_file(value)?),
            _ => {
                return Err(format!(
                    "unknown option {key:?}; use max-size=SIZE or max-file=N"
                ))
            }
        }
        Ok(())
    }

    /// These options, the `defaults` where none was given.
    pub fn over(self, defaults: LogLimits) -> LogLimits {
        LogLimits {
            max_size: self.max_size.unwrap_or(defaults.max_size),
            max_file: self.max_file.unwrap_or(defaults.max_file),
        }
    }
}

/// A size as docker takes it: bytes (`1048576`), or a number with a binary unit k, m or g
/// (`100k`, `1.5m`, `1g`, also `10MB`, `10MiB`); at least one byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let split = (lower.find(|c: char| !c.is_ascii_digit() && c != '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(SIZE_HELP.into()),
    };
    let parts: Vec<&str> = number.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|part| part.is_empty()) {
        return Err(SIZE_HELP.into());
    }
    let number: f64 = number.parse().map_err(|_| SIZE_HELP.to_string())?;
    let bytes = number * multiplier as f64;
    if bytes < 1.0 {
        return Err(format!("it must be at least 1 byte; {SIZE_HELP}"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!("it is too large; {SIZE_HELP}"));
    }
    Ok(bytes as u64)
}

/// A count of files: 1 to [`MAX_FILES`].
pub fn parse_max_file(text: &str) -> Result<u32, String> {
    let count: u32 = text.trim().parse().map_err(|_| FILES_HELP.to_string())?;
    check_max_file(count)
}

pub fn check_max_file(count: u32) -> Result<u32, String> {
    if (1..=MAX_FILES).contains(&count) {
        Ok(count)
    } else {
        Err(FILES_HELP.into())
    }
}

/// A size as `parse_size` reads it, in the largest unit that divides it: `10m`, `100k`, `1500`.
pub struct DisplaySize(pub u64);

impl fmt::Display for DisplaySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, shift) in [("g", 30), ("m", 20), ("k", 10)] {
            if bytes != 0 && bytes.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", bytes >> shift);
            }
        }
        write!(f, "{bytes}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(list: &[&str]) -> Result<LogOptions, String> {
        LogOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sizes_are_read_as_docker_reads_them() {
        for (text, bytes) in [
            ("1", 1),
            ("1500", 1500),
            ("100k", 100 << 10),
            ("100K", 100 << 10),
            ("10m", 10 << 20),
            ("10MB", 10 << 20),
            ("10MiB", 10 << 20),
            ("1.5m", 3 << 19),
            ("1g", 1 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "", "0", "0k", "10q", "k", "-1", "1.m", ".5m", "1..5m", "10 mm", "1e3",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_display_in_their_largest_exact_unit() {
        for (bytes, text) in [
            (10 << 20, "10m"),
            (100 << 10, "100k"),
            (1500, "1500"),
            (1 << 30, "1g"),
        ] {
            assert_eq!(DisplaySize(bytes).to_string(), text);
            assert_eq!(parse_size(text), Ok(bytes));
        }
    }

    #[test]
    fn options_fill_in_over_the_defaults_and_bad_ones_are_named() {
        let given = options(&["max-size=100k", "max-file=2", "max-file=3"]).unwrap();
        assert_eq!(
            given.over(LogLimits::DEFAULT),
            LogLimits {
                max_size: 100 << 10,
                max_file: 3
            }
        );
        let size_only = options(&["max-size=1m"]).unwrap().over(LogLimits::DEFAULT);
        assert_eq!(size_only.max_file, LogLimits::DEFAULT.max_file);
        assert_eq!(
            options(&[]).unwrap().over(LogLimits::DEFAULT),
            LogLimits::DEFAULT
        );
        assert_eq!(
            options(&["max-sise=1m"]).unwrap_err(),
            "invalid --log-opt \"max-sise=1m\": unknown option \"max-sise\"; use max-size=SIZE or max-file=N"
        );
        assert_eq!(
            options(&["max-file"]).unwrap_err(),
            "invalid --log-opt \"max-file\": expected KEY=VALUE, as max-size=10m or max-file=3"
        );
        for bad in ["max-file=0", "max-file=x", "max-file=101", "max-file=-1"] {
            assert!(options(&[bad]).is_err(), "{bad} accepted");
        }
    }
}
