//! Processes named so that a reused pid is never mistaken for the process it once was.
use std::fs;

use serde::{Deserialize, Serialize};

/// A process, identified across pid reuse by its start time (field 22 of /proc/PID/stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessIdentity {
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    /// The process `pid` is now; None when there is none.
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// True while the same process (not a later one reusing its pid) is alive.
    pub fn is_alive(&self) -> bool {
        start_time(self.pid).is_some_and(|start| start == self.start_time)
    }
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().nth(19)?.parse().ok()
}

/// What `top` shows of a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// The real user id.
    pub uid: u32,
    /// Its command line; `[comm]` for a process without one (a kernel thread, a zombie).
    pub command: String,
}

impl ProcessInfo {
    /// The process `pid` as /proc shows it now; None once it is gone.
    pub fn read(pid: u32) -> Option<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            (status.lines())
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u32>().ok())
        };
        let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let words: Vec<String> = (raw.split(|&byte| byte == 0))
            .filter(|word| !word.is_empty())
            .map(|word| String::from_utf8_lossy(word).into_owned())
            .collect();
        let command = if words.is_empty() {
            let name = (status.lines())
                .find_map(|line| line.strip_prefix("Name:"))
                .unwrap_or_default();
            format!("[{}]", name.trim())
        } else {
            words.join(" ")
        };
        Some(Self {
            pid,
            ppid: field("PPid:")?,
            uid: field("Uid:")?,
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_back_as_itself() {
        let me = ProcessInfo::read(std::process::id()).unwrap();
        // SAFETY: getuid and getppid have no preconditions.
        let (uid, ppid) = unsafe { (libc::getuid(), libc::getppid()) };
        assert_eq!((me.uid, me.ppid as i32), (uid, ppid));
        assert!(me.command.contains("hostnetd"), "{}", me.command);
        assert_eq!(ProcessInfo::read(u32::MAX), None);
    }
}
