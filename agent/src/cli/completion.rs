//! Shell completions and man pages, generated from the command line's own definition so they
//! never drift from it.
use std::{fs, path::Path, process::ExitCode};

use anyhow::Context as _;
use clap_complete::Shell;

/// `command` is the whole command line's definition.
pub fn completion(shell: Shell, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    clap_complete::generate(shell, &mut command, "hostnetd", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes `hostnetd.1` and a `hostnetd-COMMAND.1` per visible command into `dir`.
pub fn manpages(dir: &Path, command: clap::Command) -> anyhow::Result<ExitCode> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_page(dir, "hostnetd", command.clone())?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("hostnetd-{}", sub.get_name());
        write_page(dir, &name, sub.clone().name(name.clone()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .with_context(|| format!("cannot render the man page {name}"))?;
    fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}
