//! `hostnetd exec`: a process in a running container, in its cgroup, so that its ports and
//! policy hold for it as for the container. The daemon checks the request and prepares the
//! process; unless detached, it runs here, through runc, in the user's own terminal: with
//! `-t` runc gives it a pty, puts this terminal in raw mode (restored when it ends), passes the
//! window size on and follows it through SIGWINCH.
use std::{io::IsTerminal as _, process::ExitCode, process::Stdio};

use anyhow::{bail, Context as _};
use hostnetd::api::{
    client::Client,
    exec::{ExecOutcome, ExecPlan, ExecSpec},
    run::parse_env,
};
use signal_hook::iterator::{exfiltrator::WithOrigin, SignalsInfo};

use super::containers::container_path;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open: pass this terminal's (or pipe's) input to the process.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Start it in the background and return; its output is discarded.
    #[arg(short = 'd', long)]
    detach: bool,
    /// USER[:GROUP], by name (from the container's /etc/passwd) or number.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Environment variable, KEY=VALUE (or KEY to pass on this shell's value).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// A container name, ID or unique ID prefix.
    container: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl ExecArgs {
    /// What can be refused before any daemon is asked.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.interactive && self.tty && !self.detach && !std::io::stdin().is_terminal() {
            bail!("the input device is not a TTY: leave out -t to pipe input to the process, or run `hostnetd exec -it` in a terminal");
        }
        self.spec().validate()?;
        Ok(())
    }

    fn spec(&self) -> ExecSpec {
        ExecSpec {
            command: self.command.clone(),
            env: self.env.iter().filter_map(|e| parse_env(e)).collect(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            tty: self.tty,
            detach: self.detach,
        }
    }
}

pub fn exec(client: &Client, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let path = container_path(&args.container, "/exec");
    let (argv, process) = match client.post::<ExecPlan>(&path, Some(&args.spec()))? {
        ExecPlan::Started { .. } => return Ok(ExitCode::SUCCESS),
        ExecPlan::Run { argv, process } => (argv, process),
    };
    let mut exec = ExecPlan::command(&argv, &process).context("cannot prepare runc exec")?;
    if !args.interactive {
        exec.command.stdin(Stdio::null());
    }
    // Signals sent to this command go to the process; those a terminal sends reach runc too
    // (the same process group), so they are not passed on twice.
    let mut signals = SignalsInfo::<WithOrigin>::new(hostnetd::runtime::supervise::FORWARDED)?;
    let running = exec
        .spawn()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let runc = running.pid() as i32;
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal.process.is_some() {
                // SAFETY: signalling the runc this command started.
                unsafe { libc::kill(runc, signal.signal) };
            }
        }
    });
    let outcome = running.wait().context("cannot wait for runc exec")?;
    handle.close();
    let _ = forwarder.join();
    match outcome {
        ExecOutcome::Exited(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        ExecOutcome::NotStarted { code, reason } => {
            eprintln!(
                "hostnetd: cannot run {:?} in container {}: {reason}",
                args.command[0], args.container
            );
            Ok(ExitCode::from(code as u8))
        }
    }
}
