//! `hostnetd run`.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use hostnetd::{
    lifecycle::{parse_env, validate_name, validate_workdir},
    policy::{parse_port_specs, PortDeclarations},
    runtime::{Capabilities, RootfsSource, Volume},
    Host, RunRequest,
};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Container name (unique).
    #[arg(long)]
    name: Option<String>,
    /// Remove the container's record when it exits.
    #[arg(long)]
    rm: bool,
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
    /// Drop a capability (or ALL).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(host: &Host, args: RunArgs) -> anyhow::Result<ExitCode> {
    let request = request(args)?;
    let code = host.run(request)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn request(args: RunArgs) -> anyhow::Result<RunRequest> {
    let rootfs = args.rootfs.context(
        "no root filesystem: give --rootfs DIR (--rootfs / runs host binaries read-only)",
    )?;
    let mut specs = Vec::new();
    for value in &args.ports {
        specs.extend(parse_port_specs(value)?);
    }
    if let Some(name) = &args.name {
        validate_name(name)?;
    }
    if let Some(workdir) = &args.workdir {
        validate_workdir(workdir)?;
    }
    Ok(RunRequest {
        name: args.name,
        rootfs: RootfsSource::host_directory(&rootfs)?,
        args: args.command,
        env: args
            .env
            .iter()
            .filter_map(|entry| parse_env(entry))
            .collect(),
        workdir: args.workdir,
        user: args.user,
        volumes: args
            .volumes
            .iter()
            .map(|v| v.parse::<Volume>())
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        ports: PortDeclarations::from_specs(specs)?,
        capabilities: Capabilities::from_flags(&args.cap_add, &args.cap_drop)
            .map_err(anyhow::Error::msg)?,
        auto_remove: args.rm,
    })
}
