//! The `hostnetd` command.
mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hostnetd: {}", describe(&error));
            ExitCode::from(125)
        }
    }
}

/// The error and its causes, each said once: most of hostnetd's errors already quote their
/// source (`cannot read X: No such file or directory`), which `{:#}` would repeat.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
