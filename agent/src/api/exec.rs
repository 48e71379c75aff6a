//! `POST /v1/containers/REF/exec`: `hostnetd exec`'s flags as given, validated by the daemon;
//! and the answer, which either says the daemon started the process (`detach`) or hands the
//! caller the `runc exec` to run in the user's own terminal.
use std::{ffi::OsString, os::unix::ffi::OsStringExt as _};

use serde::{Deserialize, Serialize};

use super::run::validate_workdir;
use crate::host::{
    exec::{ExecRequest, ExecStart},
    HostError,
};
pub use crate::runtime::exec::{ExecCommand, ExecOutcome};

/// The body of `POST /v1/containers/REF/exec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecSpec {
    pub command: Vec<String>,
    /// `KEY=VALUE` entries added to the container's environment.
    pub env: Vec<String>,
    /// USER[:GROUP], by name (from the container's /etc/passwd) or number.
    pub user: Option<String>,
    /// An absolute directory in the container (default: the container's own).
    pub workdir: Option<String>,
    /// A terminal for the process (ignored with `detach`: nobody would read it).
    pub tty: bool,
    /// Started by the daemon, stdio on /dev/null; the answer comes once it runs.
    pub detach: bool,
}

/// The answer to `POST /v1/containers/REF/exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecPlan {
    /// The daemon started it (`detach`).
    Started { pid: u32 },
    /// Run `argv` with `process` (the OCI process, JSON) at descriptor 3 and an empty log
    /// at descriptor 4, with the caller's stdio: the exit code is the process's, unless the
    /// log holds runc's error.
    Run {
        argv: Vec<String>,
        process: serde_json::Value,
    },
}

impl ExecSpec {
    pub fn validate(&self) -> Result<ExecRequest, HostError> {
        let invalid = |message: String| HostError::Invalid(message);
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(invalid(
                "no command to run: give it after the container, e.g. `hostnetd exec web sh`"
                    .into(),
            ));
        }
        if let Some(workdir) = &self.workdir {
            validate_workdir(workdir)?;
        }
        if let Some(bad) = (self.env.iter()).find(|e| !e.contains('=') || e.starts_with('=')) {
            return Err(invalid(format!(
                "invalid environment entry {bad:?}: use KEY=VALUE"
            )));
        }
        Ok(ExecRequest {
            command: self.command.clone(),
            env: self.env.clone(),
            user: self.user.clone().filter(|user| !user.is_empty()),
            workdir: self.workdir.clone(),
            tty: self.tty,
            detach: self.detach,
        })
    }
}

impl From<ExecStart> for ExecPlan {
    fn from(start: ExecStart) -> Self {
        match start {
            ExecStart::Detached { pid } => Self::Started { pid },
            ExecStart::ForCaller { argv, process } => Self::Run {
                argv: argv
                    .into_iter()
                    .map(|arg| String::from_utf8_lossy(&arg.into_vec()).into_owned())
                    .collect(),
                process,
            },
        }
    }
}

impl ExecPlan {
    /// The command a `Run` plan describes, ready to run.
    pub fn command(argv: &[String], process: &serde_json::Value) -> std::io::Result<ExecCommand> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        ExecCommand::new(&argv, process)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_required_and_entries_must_be_key_value() {
        let spec = |command: &[&str], env: &[&str]| ExecSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            ..ExecSpec::default()
        };
        assert!(spec(&[], &[])
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no command"));
        assert!(spec(&["sh"], &["NOVALUE"]).validate().is_err());
        assert!(spec(&["sh"], &["=x"]).validate().is_err());
        let request = spec(&["sh", "-c", "true"], &["A=1"]).validate().unwrap();
        assert_eq!(request.command, ["sh", "-c", "true"]);
        let relative = ExecSpec {
            workdir: Some("tmp".into()),
            ..spec(&["sh"], &[])
        };
        assert!(relative.validate().is_err());
    }
}
