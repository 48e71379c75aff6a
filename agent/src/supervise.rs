//! Process plumbing for monitors and clients: becoming a container's parent, collecting its
//! exit status, detaching into a new session, signals, ids and times.
use std::{
    fs, io,
    time::{SystemTime, UNIX_EPOCH},
};

use signal_hook::consts::signal;

use crate::store::ProcessIdentity;

/// Signals a foreground `run` passes on to the container, as `docker run` does.
pub const FORWARDED: [i32; 6] = [
    signal::SIGINT,
    signal::SIGTERM,
    signal::SIGHUP,
    signal::SIGQUIT,
    signal::SIGUSR1,
    signal::SIGUSR2,
];

/// `TERM`, `SIGTERM`, `sigterm` or `15`, as `docker kill -s` takes them.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    const NAMES: [(&str, i32); 12] = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("TERM", libc::SIGTERM),
        ("STOP", libc::SIGSTOP),
        ("CONT", libc::SIGCONT),
        ("WINCH", libc::SIGWINCH),
        ("ALRM", libc::SIGALRM),
        ("PIPE", libc::SIGPIPE),
    ];
    if let Ok(number) = text.parse::<i32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, number)| *number).ok_or_else(|| {
        format!("invalid signal {text:?}: use a name such as TERM, KILL, HUP or a number from 1 to 64")
    })
}

/// Starts the command's process in a session of its own, so that it outlives its parent and
/// never gets the parent terminal's signals.
pub fn in_new_session(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ProcessIdentity {
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
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

/// Makes this process the reaper of its orphaned descendants: runc's container init is
/// re-parented to us when `runc create` exits, so we can wait for it like a child.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for `pid` (our child or adopted orphan) and returns its exit code the way a shell
/// reports it: the status, or 128 + the signal that killed it.
pub fn wait_exit_code(pid: u32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes into our status integer.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if rc == pid as i32 {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(128 + libc::WTERMSIG(status))
    }
}

/// 64 hex characters from the kernel's random source, as docker's container ids.
pub fn new_container_id() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom fills our buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessIdentity::current();
        assert!(me.is_alive());
        assert!(!ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        }
        .is_alive());
    }

    #[test]
    // wait_exit_code reaps the children by pid, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn exit_codes_follow_the_shell() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        assert_eq!(wait_exit_code(child.id()).unwrap(), 7);
        let child = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        assert_eq!(wait_exit_code(child.id()).unwrap(), 137);
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("1"), Ok(libc::SIGHUP));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").unwrap_err().contains("TERM"));
    }

    #[test]
    fn container_ids_are_64_hex_characters() {
        let id = new_container_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_container_id().unwrap());
    }
}
