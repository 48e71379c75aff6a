//! `hostnetd run`: foreground (streaming the container's output, exiting with its exit code)
//! or detached with `-d`.
use std::{
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use super::{
    attach::{proxy_signals, require_terminal, session},
    images::pull_image,
    terminal::window_size,
};
use hostnetd::{
    api::client::{Client, ClientError},
    api::run::parse_env,
    api::{AttachEvent, AttachPoint, Created},
    policy::file::PolicyFile,
    runtime::logs::Stream,
    RunSpec,
};
use hyper::Method;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Container name (unique).
    #[arg(long)]
    name: Option<String>,
    /// Run in the background and print the container's ID.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Remove the container (record and logs) when it exits.
    #[arg(long)]
    rm: bool,
    /// Keep stdin open: pass this terminal's (or pipe's) input to the container.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the container a terminal. In a terminal, ctrl-p ctrl-q detaches from it
    /// (`hostnetd attach` goes back).
    #[arg(short = 't', long)]
    tty: bool,
    /// Restart policy: no, on-failure[:MAX_RETRIES] or always. Ports stay owned across restarts.
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Log option, repeatable: max-size=SIZE (100k, 10m, 1g: rotate the log at that size) or
    /// max-file=N (files kept) [default: the daemon's, 10m and 5].
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opts: Vec<String>,
    /// Ports the container owns: 80, 80/tcp, 53/udp, 8000-8099/udp, 127.0.0.1:8080, [::1]:8080.
    #[arg(short = 'p', long = "ports", value_name = "SPEC[,SPEC...]")]
    ports: Vec<String>,
    /// Root filesystem directory (`/` runs host binaries on a read-only view of the host).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Environment variable, KEY=VALUE (or KEY to pass on this shell's value).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Bind mount, HOST:CONTAINER[:ro|rw].
    #[arg(short = 'v', long = "volume")]
    volumes: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// USER[:GROUP], by name (from the container's /etc/passwd) or number.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Add a capability (NET_RAW, NET_ADMIN, ... or ALL).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Allow egress to CIDR[:PORT[-PORT]][/tcp|udp]; with any, all other egress is denied.
    #[arg(long = "egress-allow", value_name = "RULE")]
    egress_allow: Vec<String>,
    /// Deny egress to CIDR[:PORT[-PORT]][/tcp|udp]; wins over --egress-allow.
    #[arg(long = "egress-deny", value_name = "RULE")]
    egress_deny: Vec<String>,
    /// Let packets reach the owned ports only from CIDR[:PORT[-PORT]][/tcp|udp]; with any, the
    /// rest is dropped (and counted) before the socket lookup.
    #[arg(long = "ingress-allow", value_name = "RULE")]
    ingress_allow: Vec<String>,
    /// Limit the container's output to RATE[:BURST], as tc writes rates (200mbit, 1gbit:2mb,
    /// 500kbps): paced where fq is the device's qdisc, policed elsewhere.
    #[arg(long = "egress-rate", value_name = "RATE[:BURST]")]
    egress_rate: Option<String>,
    /// Limit what reaches the owned ports to RATE[:BURST] (policed at the host's interfaces).
    #[arg(long = "ingress-rate", value_name = "RATE[:BURST]")]
    ingress_rate: Option<String>,
    /// Ports and policy from a TOML file (see docs/policy.md), added to the flags' own.
    #[arg(long, value_name = "FILE.toml")]
    policy: Option<PathBuf>,
    /// Drop a capability (or ALL).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Replace the image's Entrypoint ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// When to pull the image: missing (when not stored here), always, or never.
    #[arg(long, value_parser = ["missing", "always", "never"], default_value = "missing")]
    pull: String,
    /// Reach this registry (HOST[:PORT]) over plain HTTP when pulling; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// The image and the command replacing its Cmd; with --rootfs, the command alone.
    #[arg(
        trailing_var_arg = true,
        required = true,
        value_name = "IMAGE [COMMAND]"
    )]
    args: Vec<String>,
}

/// What `run` does besides the request: detach, and how to get the image.
pub struct RunOptions {
    pub detach: bool,
    pub pull: String,
    pub insecure_registries: Vec<String>,
}

/// Runs the container; a missing image is pulled first (`--pull missing`, as docker does:
/// the daemon says it is missing, then it is pulled and the run asked again, so that a stored
/// image costs no extra question), or always, or never.
pub fn run(client: &Client, spec: &RunSpec, options: &RunOptions) -> anyhow::Result<ExitCode> {
    let image = spec.image.as_deref();
    if let (Some(image), "always") = (image, options.pull.as_str()) {
        pull_image(client, image, &options.insecure_registries, false)?;
    }
    match start(client, spec, options) {
        Err(error) if options.pull == "missing" && is_missing_image(&error) => {
            let image = image.unwrap_or_default();
            eprintln!("Unable to find image '{image}' here");
            pull_image(client, image, &options.insecure_registries, false)?;
            start(client, spec, options)
        }
        other => other,
    }
}

fn is_missing_image(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<ClientError>(),
        Some(ClientError::Api(api)) if api.code == "no_such_image"
    )
}

fn start(client: &Client, spec: &RunSpec, options: &RunOptions) -> anyhow::Result<ExitCode> {
    if options.detach || spec.tty || spec.interactive {
        let created: Created = client.post("/v1/containers", Some(spec))?;
        if options.detach {
            println!("{}", created.id);
            return Ok(ExitCode::SUCCESS);
        }
        return attached(client, &created.id, spec.interactive);
    }
    let target: Arc<Mutex<Option<String>>> = Arc::default();
    proxy_signals(client, target.clone())?;
    let mut exit_code = None;
    client.stream_lines(
        Method::POST,
        "/v1/containers?attach=true",
        Some(spec),
        |line| {
            match serde_json::from_slice::<AttachEvent>(line) {
                Ok(AttachEvent::Created(created)) => {
                    *target.lock().unwrap_or_else(|p| p.into_inner()) = Some(created.id);
                }
                Ok(AttachEvent::Log(entry)) => {
                    let _ = match entry.stream {
                        Stream::Stdout => std::io::stdout().write_all(entry.log.as_bytes()),
                        Stream::Stderr => std::io::stderr().write_all(entry.log.as_bytes()),
                    };
                }
                Ok(AttachEvent::Exit(status)) => exit_code = Some(status.exit_code),
                Ok(AttachEvent::Error(error)) => return Err(ClientError::Api(error)),
                Err(error) => return Err(ClientError::Protocol(error.to_string())),
            }
            Ok(())
        },
    )?;
    let _ = std::io::stdout().flush();
    match exit_code {
        Some(Some(code)) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        Some(None) => anyhow::bail!("the container ended without an exit code (its monitor died)"),
        None => anyhow::bail!(
            "the daemon closed the stream before the container exited; see `hostnetd ps -a`"
        ),
    }
}

/// The session of a foreground `run -i`/`-t` with the container just started: through its
/// attach socket, or (when it has ended already) its log and exit code.
fn attached(client: &Client, id: &str, with_stdin: bool) -> anyhow::Result<ExitCode> {
    let point = match client.get::<AttachPoint>(&format!("/v1/containers/{id}/attach")) {
        Ok(point) => point,
        Err(ClientError::Api(error))
            if ["not_running", "not_found"].contains(&error.code.as_str()) =>
        {
            AttachPoint {
                id: id.to_string(),
                socket: PathBuf::new(),
                tty: false,
                open_stdin: false,
            }
        }
        Err(error) => return Err(error.into()),
    };
    session(client, &point, with_stdin, true)
}

/// The request, and what else to do; a bad `--policy` file is an error here.
pub fn spec(mut args: RunArgs) -> anyhow::Result<(RunSpec, RunOptions)> {
    if args.tty && args.interactive && !args.detach {
        require_terminal("hostnetd run -it")?;
    }
    if let Some(path) = &args.policy {
        let file = PolicyFile::load(path).map_err(anyhow::Error::msg)?;
        args.ports.extend(file.ports);
        args.egress_allow.extend(file.egress_allow);
        args.egress_deny.extend(file.egress_deny);
        args.ingress_allow.extend(file.ingress_allow);
        // A flag given on the command line wins over the file.
        args.egress_rate = args.egress_rate.or(file.egress_rate);
        args.ingress_rate = args.ingress_rate.or(file.ingress_rate);
        if file.raw_sockets {
            args.cap_add.push("NET_RAW".into());
        }
    }
    // With --rootfs every argument is the command; otherwise the first names the image.
    let (image, command) = match (&args.rootfs, args.args.split_first()) {
        (None, Some((image, command))) => (Some(image.clone()), command.to_vec()),
        _ => (None, args.args),
    };
    let spec = RunSpec {
        name: args.name,
        image,
        // Relative to where the user is, not to where the daemon runs.
        rootfs: args
            .rootfs
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir)),
        command,
        entrypoint: args.entrypoint,
        ports: args.ports,
        env: args
            .env
            .iter()
            .filter_map(|entry| parse_env(entry))
            .collect(),
        volumes: args.volumes.iter().map(|v| absolute_volume(v)).collect(),
        workdir: args.workdir,
        user: args.user,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        egress_allow: args.egress_allow,
        egress_deny: args.egress_deny,
        ingress_allow: args.ingress_allow,
        egress_rate: args.egress_rate,
        ingress_rate: args.ingress_rate,
        restart: args.restart,
        log_opts: args.log_opts,
        auto_remove: args.rm,
        tty: args.tty,
        interactive: args.interactive,
        // The container's terminal starts at this one's size.
        terminal_size: (args.tty)
            .then(|| window_size(libc::STDIN_FILENO).or_else(|| window_size(libc::STDOUT_FILENO)))
            .flatten()
            .map(|(rows, cols)| [rows, cols]),
    };
    let options = RunOptions {
        detach: args.detach,
        pull: args.pull,
        insecure_registries: args.insecure_registries,
    };
    Ok((spec, options))
}

/// `./data:/srv` names a directory relative to the user's working directory.
fn absolute_volume(volume: &str) -> String {
    match volume.split_once(':') {
        Some((host, rest)) if host.starts_with('.') => {
            format!(
                "{}:{rest}",
                std::path::absolute(host).map_or(host.into(), |p| p.display().to_string())
            )
        }
        _ => volume.to_string(),
    }
}
