//! `hostnetd ps`.
use std::process::ExitCode;

use hostnetd::{store::ContainerState, Host};

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show exited containers too.
    #[arg(short, long)]
    all: bool,
}

pub fn ps(host: &Host, args: PsArgs) -> anyhow::Result<ExitCode> {
    println!(
        "{:<12}  {:<20}  {:<8}  {:<24}  COMMAND",
        "CONTAINER ID", "NAME", "STATE", "PORTS"
    );
    for record in host.list()? {
        let state = match (record.state, record.exit_code) {
            (ContainerState::Created, _) => "created".to_string(),
            (ContainerState::Running, _) => "running".to_string(),
            (ContainerState::Exited, Some(code)) => format!("exited({code})"),
            (ContainerState::Exited, None) => "exited".to_string(),
        };
        if record.state == ContainerState::Exited && !args.all {
            continue;
        }
        println!(
            "{:<12}  {:<20}  {:<8}  {:<24}  {}",
            record.short_id(),
            record.name,
            state,
            record.port_specs.join(","),
            record.command.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
