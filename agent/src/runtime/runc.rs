//! The runc command line: run, kill, delete (and exec, in `exec`).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("cannot run {binary}: {source}; install runc (`cargo xtask setup` does)")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("runc {action} {id} failed: {stderr}")]
    Failed {
        action: &'static str,
        id: String,
        stderr: String,
    },
}

/// The container's stdio for `runc create`. With a terminal, runc gives the container the
/// terminal instead and sends its master to `console_socket`.
pub struct ContainerStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    pub console_socket: Option<PathBuf>,
}

/// runc with hostnetd's own state root, so that its containers never mix with other engines'.
#[derive(Clone, Debug)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

impl Runc {
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            root: root.into(),
        }
    }

    /// Creates and starts the container in one command (`runc run --detach`), with `stdio`;
    /// its init, once runc exits, is the caller's child if the caller is a subreaper. runc's
    /// own messages go to `log_file`: reading runc's stderr would read the container's, and
    /// waiting for it to close would wait for the container. The container's cgroup parent
    /// holds its hooks already, so its first instruction runs under them: no `create`, hook,
    /// `start` sequence is needed (and one runc command fewer is 10 ms of every start).
    pub fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log_file: &Path,
        stdio: ContainerStdio,
    ) -> Result<(), RuncError> {
        let mut command = Command::new(&self.binary);
        command
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log_file)
            .args(["--log-format", "json"]);
        command
            .args(["run", "--detach", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(socket) = &stdio.console_socket {
            command.arg("--console-socket").arg(socket);
        }
        command.arg(id);
        let status = command.status().map_err(|source| RuncError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(log_file).unwrap_or_default();
        let errors = runc_json_errors(&log);
        Err(RuncError::Failed {
            action: "run",
            id: id.to_string(),
            // runc says "runc run failed: ..." itself: once is enough.
            stderr: errors
                .strip_prefix("runc run failed: ")
                .unwrap_or(&errors)
                .to_string(),
        })
    }

    /// Sends `signal` to the container's init. One that has already exited is not an error.
    pub fn kill(&self, id: &str, signal: i32) -> Result<(), RuncError> {
        let mut command = self.command();
        command
            .args(["kill", id, &signal.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match self.check("kill", id, command) {
            Err(RuncError::Failed { stderr, .. }) if init_already_gone(&stderr) => Ok(()),
            other => other,
        }
    }

    /// Force-deletes the container: kills what runs and removes runc's state. A container runc
    /// does not know (never created, or already deleted) is fine.
    pub fn delete(&self, id: &str) -> Result<(), RuncError> {
        let mut command = self.command();
        command
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match self.check("delete", id, command) {
            Err(RuncError::Failed { stderr, .. }) if stderr.contains("does not exist") => Ok(()),
            other => other,
        }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// runc's state directory for hostnetd's containers.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root);
        command
    }

    fn check(&self, action: &'static str, id: &str, mut command: Command) -> Result<(), RuncError> {
        let output: Output =
            command
                .stderr(Stdio::piped())
                .output()
                .map_err(|source| RuncError::Spawn {
                    binary: self.binary.clone(),
                    source,
                })?;
        if output.status.success() {
            return Ok(());
        }
        Err(RuncError::Failed {
            action,
            id: id.to_string(),
            stderr: runc_message(&String::from_utf8_lossy(&output.stderr)),
        })
    }
}

/// runc logs `time=... level=error msg="..."`; the message is what a user needs.
fn runc_message(stderr: &str) -> String {
    let messages: Vec<&str> = stderr
        .lines()
        .map(|line| match line.split_once("msg=\"") {
            Some((_, rest)) => rest.trim_end_matches('"'),
            None => line,
        })
        .filter(|line| !line.trim().is_empty())
        .collect();
    messages.join("; ")
}

/// Whether runc's error says the init it was to signal has already exited: stopped before
/// runc looked ("not running"), deleted ("does not exist"), or exited between runc's look and
/// its signal ("unable to signal init: os: process already finished"), which `rm -f` meets
/// when the SIGKILL follows a SIGTERM the init obeyed at once.
fn init_already_gone(stderr: &str) -> bool {
    ["not running", "does not exist", "process already finished"]
        .iter()
        .any(|gone| stderr.contains(gone))
}

/// The `error`-level messages of a `--log-format json` log, one JSON object per line.
pub(super) fn runc_json_error_messages(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| matches!(entry["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|entry| entry["msg"].as_str().map(str::to_string))
        .collect()
}

/// [`runc_json_error_messages`] as one line, for an error.
pub(super) fn runc_json_errors(log: &str) -> String {
    let messages = runc_json_error_messages(log);
    if messages.is_empty() {
        "no error in runc's log".to_string()
    } else {
        messages.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_log_lines_are_reduced_to_their_message() {
        let stderr = "time=\"2026\" level=error msg=\"container does not exist\"\n";
        assert_eq!(runc_message(stderr), "container does not exist");
        assert_eq!(runc_message("plain failure\n"), "plain failure");
    }

    #[test]
    fn json_logs_are_reduced_to_their_errors() {
        let log =
            "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"bad rootfs\"}\n";
        assert_eq!(runc_json_errors(log), "bad rootfs");
    }

    #[test]
    fn an_init_that_exited_before_or_during_a_kill_is_gone() {
        // runc 1.1's messages, as the failed kill in `rm -f` printed them.
        for gone in [
            "container not running",
            "container does not exist",
            "unable to signal init: os: process already finished",
        ] {
            assert!(init_already_gone(gone), "{gone}");
        }
        assert!(!init_already_gone(
            "unable to signal init: permission denied"
        ));
    }

    #[test]
    fn a_missing_runc_binary_says_how_to_install_it() {
        let runc = Runc::new("/nonexistent/runc", "/tmp");
        let error = runc.delete("x").unwrap_err().to_string();
        assert!(error.contains("install runc"), "{error}");
    }
}
