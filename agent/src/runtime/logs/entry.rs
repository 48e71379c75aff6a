//! One line of a container's log.
use serde::{Deserialize, Serialize};

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

impl LogEntry {
    /// `text` from `stream`, stamped now.
    pub fn now(stream: Stream, text: &[u8]) -> Self {
        Self {
            stream,
            time_ns: u128::from(crate::sys::time::wall_clock_ns()),
            log: String::from_utf8_lossy(text).into_owned(),
        }
    }
}
