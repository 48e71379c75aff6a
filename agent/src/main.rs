//! The `hostnetd` command.
mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hostnetd: {error:#}");
            ExitCode::from(125)
        }
    }
}
