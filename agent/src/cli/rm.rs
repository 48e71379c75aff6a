//! `hostnetd rm`.
use std::process::ExitCode;

use hostnetd::Host;

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Kill and release a running container.
    #[arg(short, long)]
    force: bool,
    /// Names, ids or unique id prefixes.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(host: &Host, args: RmArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for reference in &args.containers {
        match host.remove(reference, args.force) {
            Ok(record) => println!("{}", record.name),
            Err(error) => {
                eprintln!("hostnetd: {reference}: {error}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
