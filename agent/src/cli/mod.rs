//! Command-line arguments, and one small module per subcommand that calls the library and prints.
mod ports;
mod ps;
mod rm;
mod run;
mod teardown;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use hostnetd::{Host, HostConfig};

#[derive(Parser, Debug)]
#[command(
    name = "hostnetd",
    version,
    about = "Host-network containers with port ownership enforced by eBPF"
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct GlobalArgs {
    /// Container records and the host lock.
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_STATE_DIR",
        default_value = "/var/lib/hostnetd"
    )]
    state_dir: PathBuf,
    /// Bundles and runc state.
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_RUN_DIR",
        default_value = "/run/hostnetd"
    )]
    run_dir: PathBuf,
    /// Where the BPF filesystem is (mounted there if missing).
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_BPFFS",
        default_value = "/sys/fs/bpf"
    )]
    bpffs: PathBuf,
    /// hostnetd's pins, inside the BPF filesystem.
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_BPF_DIR",
        default_value = "/sys/fs/bpf/hostnetd"
    )]
    bpf_dir: PathBuf,
    /// The cgroup (relative to the cgroup2 root) that holds every container.
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_CGROUP_PARENT",
        default_value = "hostnetd"
    )]
    cgroup_parent: String,
    /// The OCI runtime binary.
    #[arg(long, global = true, env = "HOSTNETD_RUNC", default_value = "runc")]
    runc: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command in a new host-network container, owning the declared ports.
    Run(Box<run::RunArgs>),
    /// List containers.
    Ps(ps::PsArgs),
    /// Remove containers.
    Rm(rm::RmArgs),
    /// List owned ports and their owners.
    Ports(ports::PortsArgs),
    /// Detach hostnetd from the host: unpin programs and maps, return reserved ports.
    Teardown,
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let host = Host::open(cli.global.into_config())?;
    match cli.command {
        Command::Run(args) => run::run(&host, *args),
        Command::Ps(args) => ps::ps(&host, args),
        Command::Rm(args) => rm::rm(&host, args),
        Command::Ports(args) => ports::ports(&host, args),
        Command::Teardown => teardown::teardown(&host),
    }
}

impl GlobalArgs {
    fn into_config(self) -> HostConfig {
        HostConfig {
            state_dir: self.state_dir,
            run_dir: self.run_dir,
            bpffs: self.bpffs,
            bpf_dir: self.bpf_dir,
            cgroup_parent: self.cgroup_parent.trim_matches('/').to_string(),
            runc: self.runc,
        }
    }
}
