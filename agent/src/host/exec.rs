//! `exec`: a process started in a running container as its own main process runs: the same
//! capabilities, namespaces, cgroup (and so the same ports and policy) and environment, with
//! the request's command, additions to the environment, user and working directory.
use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::{
    run::{io_error, merge_env},
    Host, HostError,
};
use crate::{
    runtime::{
        resolve_user,
        supervise::{new_container_id, reap_pid_in_background},
        RuncError,
    },
    store::ContainerState,
};

/// A validated `hostnetd exec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// `KEY=VALUE` entries added to the container's environment.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub detach: bool,
}

/// How an exec goes on.
#[derive(Debug)]
pub enum ExecStart {
    /// Started by the daemon, detached; it runs with its stdio on /dev/null.
    Detached { pid: u32 },
    /// For the caller to run in the user's terminal: `argv` with `process` at the
    /// descriptors [`crate::runtime::exec`] names.
    ForCaller { argv: Vec<OsString>, process: Value },
}

impl Host {
    pub fn exec(&self, reference: &str, request: &ExecRequest) -> Result<ExecStart, HostError> {
        let record = self.own_container(self.store.find(reference)?, "exec")?;
        if record.state != ContainerState::Running {
            return Err(HostError::NotRunning {
                name: record.name,
                state: record.state.as_str(),
            });
        }
        let bundle = self.bundle_dir(&record.id);
        let config_path = bundle.join("config.json");
        let text = fs::read_to_string(&config_path)
            .map_err(|e| io_error("read", config_path.display(), e))?;
        let config: Value = serde_json::from_str(&text).map_err(|e| {
            HostError::Invalid(format!("corrupt bundle {}: {e}", config_path.display()))
        })?;
        // The root filesystem is mounted in the monitor's namespace only: the container's own
        // root, as its first process sees it, is where its users are.
        let root = match record.pid {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/root")),
            None => bundle.join("rootfs"),
        };
        let process = exec_process(&config["process"], request, &root)?;
        if !request.detach {
            let argv = self.runc.exec_argv(&record.id, request.tty, None);
            return Ok(ExecStart::ForCaller { argv, process });
        }
        let tag = new_container_id().map_err(|e| io_error("generate an id for", "exec", e))?;
        let pid_file = bundle.join(format!("exec-{}.pid", &tag[..16]));
        let pid = (self.runc.exec_detached(&record.id, &process, &pid_file)).map_err(|error| {
            HostError::ExecFailed {
                name: record.name.clone(),
                reason: match error {
                    RuncError::Failed { stderr, .. } => stderr,
                    other => other.to_string(),
                },
            }
        })?;
        reap_pid_in_background(pid);
        Ok(ExecStart::Detached { pid })
    }
}

/// The container's own process (from its config.json) with the request applied, as docker
/// does: the environment extended (a tty gets TERM=xterm unless set), the user resolved
/// against the container's /etc/passwd, and a non-root user's capabilities kept only in the
/// bounding set.
fn exec_process(base: &Value, request: &ExecRequest, rootfs: &Path) -> Result<Value, HostError> {
    let mut process = base.clone();
    let terminal = request.tty && !request.detach;
    process["args"] = json!(request.command);
    process["terminal"] = json!(terminal);
    let base_env: Vec<String> = serde_json::from_value(base["env"].clone()).unwrap_or_default();
    let mut env = request.env.clone();
    if terminal && !base_env.iter().chain(&env).any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process["env"] = json!(merge_env(&base_env, &env));
    if let Some(dir) = &request.workdir {
        process["cwd"] = json!(dir);
    }
    if let Some(user) = &request.user {
        let user = resolve_user(&[rootfs.to_path_buf()], user)?;
        let effective = if user.uid == 0 {
            base["capabilities"]["bounding"].clone()
        } else {
            json!([])
        };
        process["capabilities"]["effective"] = effective.clone();
        process["capabilities"]["permitted"] = effective;
        process["user"] = json!({
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": user.additional_gids,
        });
    }
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "terminal": false,
            "user": { "uid": 0, "gid": 0, "additionalGids": [] },
            "args": ["nginx"],
            "env": ["PATH=/bin", "MODE=prod"],
            "cwd": "/srv",
            "capabilities": { "bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                              "permitted": ["CAP_CHOWN"] },
        })
    }

    #[test]
    fn the_request_replaces_args_extends_env_and_keeps_the_rest() {
        let request = ExecRequest {
            command: vec!["sh".into()],
            env: vec!["MODE=debug".into(), "EXTRA=1".into()],
            workdir: Some("/tmp".into()),
            tty: true,
            ..ExecRequest::default()
        };
        let process = exec_process(&base(), &request, Path::new("/nonexistent")).unwrap();
        assert_eq!(process["args"], json!(["sh"]));
        assert_eq!(
            process["env"],
            json!(["PATH=/bin", "MODE=debug", "EXTRA=1", "TERM=xterm"])
        );
        assert_eq!(process["cwd"], json!("/tmp"));
        assert_eq!(process["terminal"], json!(true));
        assert_eq!(process["capabilities"]["effective"], json!(["CAP_CHOWN"]));
    }

    #[test]
    fn a_detached_exec_has_no_terminal_and_a_non_root_user_no_effective_capabilities() {
        let request = ExecRequest {
            command: vec!["id".into()],
            user: Some("1000:1000".into()),
            tty: true,
            detach: true,
            ..ExecRequest::default()
        };
        let process = exec_process(&base(), &request, Path::new("/nonexistent")).unwrap();
        assert_eq!(process["terminal"], json!(false));
        assert_eq!(process["user"]["uid"], json!(1000));
        assert_eq!(process["capabilities"]["effective"], json!([]));
        assert_eq!(process["capabilities"]["bounding"], json!(["CAP_CHOWN"]));
        assert!(!process["env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")));
    }
}
