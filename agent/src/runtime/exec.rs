//! `runc exec`: a process started in a running container, in its cgroup (so that its ports
//! and policy hold for it exactly as for the container) and its namespaces.
//!
//! The process's JSON and runc's log travel in memory files at fixed descriptors
//! ([`PROCESS_FD`], [`LOG_FD`]) rather than in files: nothing is left to clean up, and the
//! command line never holds the environment.
use std::{
    ffi::{CString, OsString},
    fs::File,
    io::{self, Read as _, Seek as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::Path,
    process::{Child, Command, Stdio},
};

use serde_json::Value;

use super::runc::{runc_json_error_messages, runc_json_errors, Runc, RuncError};

/// The descriptor runc reads the process's JSON from (`--process /proc/self/fd/3`).
pub const PROCESS_FD: i32 = 3;
/// The descriptor runc writes its JSON log to (`--log /proc/self/fd/4`).
pub const LOG_FD: i32 = 4;

/// A `runc exec` ready to run: the command, and the memory file runc logs into.
pub struct ExecCommand {
    pub command: Command,
    log: File,
}

/// How a `runc exec` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The process ran and exited with this code (128 + N for signal N).
    Exited(i32),
    /// runc could not start it; the code a shell gives such a failure (127: not found, 126:
    /// found but not runnable) and runc's reason.
    NotStarted { code: i32, reason: String },
}

impl Runc {
    /// The command line of `runc exec` for container `id`, reading the process from
    /// [`PROCESS_FD`] and logging to [`LOG_FD`]; `pid_file` makes it detach.
    pub fn exec_argv(&self, id: &str, tty: bool, pid_file: Option<&Path>) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            self.binary().into(),
            "--root".into(),
            self.root().into(),
            "--log".into(),
            format!("/proc/self/fd/{LOG_FD}").into(),
            "--log-format".into(),
            "json".into(),
            "exec".into(),
            "--process".into(),
            format!("/proc/self/fd/{PROCESS_FD}").into(),
        ];
        if tty {
            argv.push("--tty".into());
        }
        if let Some(pid_file) = pid_file {
            argv.extend(["--detach".into(), "--pid-file".into(), pid_file.into()]);
        }
        argv.push(id.into());
        argv
    }

    /// Starts `process` in container `id` detached, its stdio /dev/null; returns its pid once
    /// it runs. It is re-parented to the nearest subreaper (the daemon) when runc exits.
    pub fn exec_detached(
        &self,
        id: &str,
        process: &Value,
        pid_file: &Path,
    ) -> Result<u32, RuncError> {
        let argv = self.exec_argv(id, false, Some(pid_file));
        let spawn_error = |source| RuncError::Spawn {
            binary: self.binary().to_path_buf(),
            source,
        };
        let mut exec = ExecCommand::new(&argv, process).map_err(spawn_error)?;
        exec.command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = exec.command.status().map_err(spawn_error)?;
        let failure = |stderr: String| RuncError::Failed {
            action: "exec",
            id: id.to_string(),
            stderr,
        };
        if !status.success() {
            return Err(failure(runc_json_errors(&exec.log_text())));
        }
        let text = std::fs::read_to_string(pid_file).unwrap_or_default();
        let _ = std::fs::remove_file(pid_file);
        text.trim()
            .parse()
            .map_err(|_| failure("runc wrote no pid".into()))
    }
}

impl ExecCommand {
    /// `argv` (from [`Runc::exec_argv`]) with `process` at [`PROCESS_FD`] and an empty log at
    /// [`LOG_FD`]; stdio is the caller's unless it sets them.
    pub fn new(argv: &[OsString], process: &Value) -> io::Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
        let process_file = memory_file("hostnetd-exec-process", process.to_string().as_bytes())?;
        let log = memory_file("hostnetd-exec-log", b"")?;
        let mut command = Command::new(program);
        command.args(args);
        place_descriptors(
            &mut command,
            [
                (OwnedFd::from(process_file), PROCESS_FD),
                (OwnedFd::from(log.try_clone()?), LOG_FD),
            ],
        );
        Ok(Self { command, log })
    }

    /// Starts the command; stdio is the caller's unless set on `command`.
    pub fn spawn(mut self) -> io::Result<RunningExec> {
        let child = self.command.spawn()?;
        Ok(RunningExec {
            child,
            log: self.log,
        })
    }

    fn log_text(&mut self) -> String {
        read_log(&mut self.log)
    }
}

/// A started `runc exec`.
pub struct RunningExec {
    child: Child,
    log: File,
}

impl RunningExec {
    /// runc's pid: what signals for the process go to (runc passes them on).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(mut self) -> io::Result<ExecOutcome> {
        let status = self.child.wait()?;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(outcome(code, &read_log(&mut self.log)))
    }
}

fn read_log(log: &mut File) -> String {
    let mut text = String::new();
    let _ = log.rewind();
    let _ = log.read_to_string(&mut text);
    text
}

/// runc exits with the process's code; it logs an error only when it could not start it.
fn outcome(code: i32, log: &str) -> ExecOutcome {
    let messages = runc_json_error_messages(log);
    if messages.is_empty() {
        return ExecOutcome::Exited(code);
    }
    let reason = messages.join("; ");
    let not_found = ["executable file not found", "no such file or directory"]
        .iter()
        .any(|text| reason.contains(text));
    ExecOutcome::NotStarted {
        code: if not_found { 127 } else { 126 },
        reason,
    }
}

/// An anonymous file in memory holding `contents`, its offset back at the start.
fn memory_file(name: &str, contents: &[u8]) -> io::Result<File> {
    let name = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(contents)?;
    file.rewind()?;
    Ok(file)
}

/// Makes each descriptor appear at its number in the command's process (and only there).
fn place_descriptors<const N: usize>(command: &mut Command, fds: [(OwnedFd, i32); N]) {
    // SAFETY: dup2 and close are async-signal-safe; the closure touches only the child.
    unsafe {
        command.pre_exec(move || {
            // Moved out of the way first, so that no dup2 overwrites a source still needed.
            let mut moved = [0; N];
            for (slot, (fd, _)) in moved.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64);
                if *slot < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (source, (_, target)) in moved.iter().zip(&fds) {
                // dup2 leaves the target without FD_CLOEXEC: it survives the exec.
                if libc::dup2(*source, *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(*source);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_errors_become_the_shells_codes_and_a_clean_log_is_the_process_own_exit() {
        assert_eq!(outcome(3, ""), ExecOutcome::Exited(3));
        assert_eq!(
            outcome(3, "{\"level\":\"info\",\"msg\":\"x\"}\n"),
            ExecOutcome::Exited(3)
        );
        let missing = "{\"level\":\"error\",\"msg\":\"exec failed: exec: \\\"nope\\\": executable file not found in $PATH\"}\n";
        assert!(matches!(
            outcome(255, missing),
            ExecOutcome::NotStarted { code: 127, .. }
        ));
        let denied = "{\"level\":\"error\",\"msg\":\"exec failed: permission denied\"}\n";
        assert!(matches!(
            outcome(255, denied),
            ExecOutcome::NotStarted { code: 126, .. }
        ));
    }

    #[test]
    fn the_child_reads_the_process_and_writes_the_log_at_their_descriptors() {
        let argv: Vec<OsString> = ["sh", "-c", "cat /proc/self/fd/3 > /proc/self/fd/4; exit 5"]
            .iter()
            .map(OsString::from)
            .collect();
        let mut exec = ExecCommand::new(&argv, &serde_json::json!({"args": ["x"]})).unwrap();
        let status = exec.command.status().unwrap();
        assert_eq!(status.code(), Some(5));
        assert_eq!(exec.log_text(), "{\"args\":[\"x\"]}");
    }
}
