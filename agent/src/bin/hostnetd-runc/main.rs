//! `hostnetd-runc`: the OCI runtime an engine (Docker, containerd, podman, a Kubernetes
//! RuntimeClass) calls in place of runc. A container that shares the host's network
//! namespace is admitted at `create` (its ports claimed, its policy attached to its cgroup
//! before its first instruction) and released at `delete`; every other call, and every
//! container with a network namespace of its own, goes to runc untouched.
mod args;
mod bundle;

use std::{
    ffi::OsString,
    fs,
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use args::RuncCall;
use bundle::Bundle;
use hostnetd::{
    api::{client::Client, EngineRelease},
    config::{Settings, DEFAULT_CONFIG},
    sys::time::{now, rfc3339},
};

/// The exit code of a create hostnetd refused (runc's own for a failed command).
const REFUSED: u8 = 1;

fn main() -> ExitCode {
    let call = match RuncCall::parse(std::env::args_os().skip(1)) {
        Ok(call) => call,
        Err(error) => {
            eprintln!("hostnetd-runc: {error}");
            return ExitCode::from(REFUSED);
        }
    };
    let runtime = match Runtime::new(&call) {
        Ok(runtime) => runtime,
        Err(error) => return runtime_error(&call, &error),
    };
    let outcome = match call.command.as_deref() {
        Some("create") => runtime.create(&call),
        Some("delete") => runtime.delete(&call),
        Some("run") => runtime.refuse_run(&call),
        _ => Err(runtime.exec_runc(&call)),
    };
    outcome.unwrap_or_else(|error| runtime_error(&call, &error))
}

/// Says `error` where the engine shows it: on stderr, and in runc's `--log` as the JSON line
/// Docker and containerd read a runtime's error from.
fn runtime_error(call: &RuncCall, error: &str) -> ExitCode {
    let message = format!("hostnetd-runc: {error}");
    eprintln!("{message}");
    if let Some(log) = call.global("--log") {
        let line = if call.global("--log-format").as_deref() == Some("json") {
            serde_json::json!({"level": "error", "msg": message, "time": rfc3339(now())})
                .to_string()
        } else {
            format!("level=error msg={message:?}")
        };
        if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(file, "{line}");
        }
    }
    ExitCode::from(REFUSED)
}

/// hostnetd's settings and the runc hostnetd-runc hands calls on to.
struct Runtime {
    settings: Settings,
    runc: PathBuf,
}

impl Runtime {
    fn new(call: &RuncCall) -> Result<Self, String> {
        let settings = settings(call.config.as_deref())?;
        let runc = real_runc(&settings.host_config().runc)?;
        Ok(Self { settings, runc })
    }

    /// Replaces this process with runc, given the same arguments; returns only the error.
    fn exec_runc(&self, call: &RuncCall) -> String {
        let error = Command::new(&self.runc).args(call.runc_args()).exec();
        format!("cannot run {}: {error}", self.runc.display())
    }

    /// runc with the engine's own arguments, to completion.
    fn run_as_given(&self, call: &RuncCall) -> Result<std::process::ExitStatus, String> {
        (Command::new(&self.runc).args(call.runc_args()).status())
            .map_err(|e| format!("cannot run {}: {e}", self.runc.display()))
    }

    fn runc(&self, call: &RuncCall, args: &[OsString]) -> Command {
        let mut command = Command::new(&self.runc);
        command.args(&call.globals).args(args);
        command
    }

    fn create(&self, call: &RuncCall) -> Result<ExitCode, String> {
        let create = call.create()?;
        let bundle = Bundle::read(&create.bundle)?;
        if !bundle.shares_network(Path::new(HOST_NETNS)) {
            return Err(self.exec_runc(call));
        }
        // Everything checkable is checked before runc makes anything: bad declarations
        // leave nothing behind. This process stands in for the init process and its cgroup
        // until runc has made them.
        let mut admission = bundle.admission(&create.id, std::process::id(), "/".into())?;
        admission.validate().map_err(|e| e.to_string())?;
        let client = self.client()?;
        let status = self.run_as_given(call)?;
        if !status.success() {
            return Ok(exit_code(status));
        }
        let admitted = init_pid(self, call, &create).and_then(|pid| {
            admission.init_pid = pid;
            admission.cgroup = cgroup_of(pid)?;
            client
                .post::<serde_json::Value>("/v1/engine/containers", Some(&admission))
                .map_err(|e| e.to_string())
        });
        if let Err(error) = admitted {
            // Refused: the container runc made is removed, so the engine sees a failed create.
            let _ = self
                .runc(
                    call,
                    &["delete".into(), "--force".into(), create.id.clone().into()],
                )
                .status();
            return Err(error);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn delete(&self, call: &RuncCall) -> Result<ExitCode, String> {
        let status = self.run_as_given(call)?;
        let Some(id) = call.last_id() else {
            return Ok(exit_code(status));
        };
        // A failed delete leaves a container that still exists alone (not stopped yet, and
        // no --force); one that is gone anyway is released.
        let gone = status.success()
            || !(self.runc(call, &["state".into(), id.clone().into()]))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|state| state.success());
        if gone {
            let path = format!("/v1/engine/containers/{id}");
            self.client()?.delete::<EngineRelease>(&path).map_err(|e| {
                format!("the container is deleted but hostnetd did not release it: {e}")
            })?;
        }
        Ok(exit_code(status))
    }

    /// `runc run` (create and start in one, in the foreground): no engine uses it, and a
    /// host-network container run through it would go unenforced.
    fn refuse_run(&self, call: &RuncCall) -> Result<ExitCode, String> {
        let bundle_dir = call.create().map(|create| create.bundle)?;
        if !Bundle::read(&bundle_dir)?.shares_network(Path::new(HOST_NETNS)) {
            return Err(self.exec_runc(call));
        }
        Err("`run` of a host-network container is not supported: hostnetd admits it between `create` and `start`; use those".into())
    }

    fn client(&self) -> Result<Client, String> {
        Client::connect_or_start_with(
            &self.settings,
            &self.settings.daemon_args(),
            &hostnetd_binary()?,
        )
        .map_err(|e| e.to_string())
    }
}

/// This process's network namespace: the engine's, which is the host's.
const HOST_NETNS: &str = "/proc/self/ns/net";

/// The config file (`--hostnetd-config`, else $HOSTNETD_CONFIG, else the default when
/// present) under the same environment variables the hostnetd command reads.
fn settings(config: Option<&Path>) -> Result<Settings, String> {
    let from_env = std::env::var_os("HOSTNETD_CONFIG").map(PathBuf::from);
    let (path, required) = match config.map(Path::to_path_buf).or(from_env) {
        Some(path) => (path, true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let file = Settings::load(&path, required).map_err(|e| e.to_string())?;
    let env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let path_env = |name: &str| env(name).map(PathBuf::from);
    let text_env = |name: &str| env(name).map(|v| v.to_string_lossy().into_owned());
    let flags = Settings {
        state_dir: path_env("HOSTNETD_STATE_DIR"),
        run_dir: path_env("HOSTNETD_RUN_DIR"),
        socket: path_env("HOSTNETD_SOCKET"),
        bpffs: path_env("HOSTNETD_BPFFS"),
        bpf_dir: path_env("HOSTNETD_BPF_DIR"),
        cgroup_parent: text_env("HOSTNETD_CGROUP_PARENT"),
        runc: path_env("HOSTNETD_RUNC"),
        log_level: text_env("HOSTNETD_LOG_LEVEL"),
        auth_file: path_env("HOSTNETD_AUTH_FILE"),
        certs_dir: path_env("HOSTNETD_CERTS_DIR"),
        ..Settings::default()
    };
    Ok(flags.or(file))
}

/// Where a binary named without a directory is looked for after PATH: engines call their
/// runtime with a PATH of their own (podman's conmon leaves out the sbin directories).
const SYSTEM_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// A binary: `name` itself when it has a directory, else the first on PATH, then in the
/// system's directories.
fn find_binary(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return Some(name.to_path_buf());
    }
    let path_dirs = (std::env::var_os("PATH").into_iter())
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
    path_dirs
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// runc itself; never hostnetd-runc (an engine pointed at it through a `runc` symlink would
/// call itself forever).
fn real_runc(configured: &Path) -> Result<PathBuf, String> {
    let found = find_binary(configured).ok_or_else(|| {
        format!(
            "runc ({}) is not on PATH; install runc, or set runc = \"/path/to/runc\" in hostnetd's config",
            configured.display()
        )
    })?;
    let itself = std::env::current_exe().and_then(fs::canonicalize).ok();
    if fs::canonicalize(&found).ok() == itself {
        return Err(format!(
            "{} is hostnetd-runc itself; set runc = \"/path/to/the/real/runc\" in hostnetd's config",
            found.display()
        ));
    }
    Ok(found)
}

/// `hostnetd`, beside this binary (as the install puts them), else on PATH: a daemon it starts
/// when none answers.
fn hostnetd_binary() -> Result<PathBuf, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("hostnetd")))
        .filter(|path| path.is_file());
    beside
        .or_else(|| find_binary(Path::new("hostnetd")))
        .ok_or_else(|| "the hostnetd binary is neither beside hostnetd-runc nor on PATH".into())
}

/// The container's init process: from `create`'s pid file, else runc's state.
fn init_pid(runtime: &Runtime, call: &RuncCall, create: &args::CreateArgs) -> Result<u32, String> {
    if let Some(path) = &create.pid_file {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read runc's pid file {}: {e}", path.display()))?;
        return text
            .trim()
            .parse()
            .map_err(|_| format!("runc's pid file {} holds {text:?}", path.display()));
    }
    let output = (runtime
        .runc(call, &["state".into(), create.id.clone().into()])
        .output())
    .map_err(|e| format!("cannot run runc state: {e}"))?;
    let state: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("runc state {}: {e}", create.id))?;
    (state["pid"].as_u64())
        .and_then(|pid| u32::try_from(pid).ok())
        .ok_or_else(|| format!("runc state {} gives no pid", create.id))
}

/// The process's cgroup in the unified hierarchy, as /proc/PID/cgroup names it.
fn cgroup_of(pid: u32) -> Result<String, String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!("{path} shows no cgroup v2 path; hostnetd needs the unified hierarchy")
        })
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
