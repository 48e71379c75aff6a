//! `hostnetd teardown`.
use std::process::ExitCode;

use hostnetd::Host;

pub fn teardown(host: &Host) -> anyhow::Result<ExitCode> {
    host.teardown()?;
    println!("hostnetd: detached from this host");
    Ok(ExitCode::SUCCESS)
}
