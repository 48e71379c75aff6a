//! Command-line arguments, and one small module per group of subcommands. Every command but
//! `daemon` and `monitor` is a client of the daemon's API.
mod attach;
mod completion;
mod containers;
mod events;
mod exec;
mod images;
mod info;
mod login;
mod run;
mod stats;
mod terminal;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use hostnetd::{
    api::client::Client,
    config::{Settings, DEFAULT_CONFIG},
    Host,
};

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

/// Each overrides the config file's setting of the same name.
#[derive(clap::Args, Debug)]
struct GlobalArgs {
    /// The config file [default: /etc/hostnetd/config.toml, when present].
    #[arg(long, global = true, env = "HOSTNETD_CONFIG")]
    config: Option<PathBuf>,
    /// The API socket [default: RUN_DIR/hostnetd.sock].
    #[arg(long, global = true, env = "HOSTNETD_SOCKET")]
    socket: Option<PathBuf>,
    /// Container records, logs and the host lock [default: /var/lib/hostnetd].
    #[arg(long, global = true, env = "HOSTNETD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Bundles, runc state and the socket [default: /run/hostnetd].
    #[arg(long, global = true, env = "HOSTNETD_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Where the BPF filesystem is, mounted there if missing [default: /sys/fs/bpf].
    #[arg(long, global = true, env = "HOSTNETD_BPFFS")]
    bpffs: Option<PathBuf>,
    /// hostnetd's pins, inside the BPF filesystem [default: /sys/fs/bpf/hostnetd].
    #[arg(long, global = true, env = "HOSTNETD_BPF_DIR")]
    bpf_dir: Option<PathBuf>,
    /// The cgroup (relative to the cgroup2 root) that holds every container [default: hostnetd].
    #[arg(long, global = true, env = "HOSTNETD_CGROUP_PARENT")]
    cgroup_parent: Option<String>,
    /// The OCI runtime binary [default: runc].
    #[arg(long, global = true, env = "HOSTNETD_RUNC")]
    runc: Option<PathBuf>,
    /// Daemon log level: error, warn, info, debug or trace [default: info].
    #[arg(long, global = true, env = "HOSTNETD_LOG_LEVEL")]
    log_level: Option<String>,
    /// Registry credentials of `hostnetd login`, in docker's config.json format
    /// [default: STATE_DIR/auth.json].
    #[arg(long, global = true, env = "HOSTNETD_AUTH_FILE", value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// CAs trusted for one registry each, as docker's certs.d: DIR/HOST:PORT/ca.crt
    /// [default: /etc/hostnetd/certs.d].
    #[arg(long, global = true, env = "HOSTNETD_CERTS_DIR", value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    /// Let host processes bind container-owned ports (containers still keep off each other's).
    #[arg(long, global = true, env = "HOSTNETD_NO_HOST_PROTECTION")]
    no_host_protection: bool,
    /// Put fq as the root qdisc of these interfaces (comma-separated, or `all`: every one but
    /// loopback), so that bandwidth limits pace instead of police; what it replaced is put
    /// back once an interface is no longer listed.
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_MANAGE_QDISC",
        value_name = "IFACES"
    )]
    manage_qdisc: Option<String>,
    /// Serve Prometheus metrics at ADDR (HOST:PORT, or a port on 127.0.0.1) [default: off].
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_METRICS_ADDR",
        value_name = "ADDR"
    )]
    metrics_addr: Option<String>,
    /// Debug logging from the eBPF programs into the daemon's log: off, error, warn, info,
    /// debug or trace [default: off]. Applies when the datapath is loaded (after a teardown).
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_BPF_LOG_LEVEL",
        value_name = "LEVEL"
    )]
    bpf_log_level: Option<String>,
    /// How tc_ingress and tc_egress attach to the host's interfaces: auto (TCX where the kernel
    /// has it, else a clsact qdisc), tcx or netlink [default: auto].
    #[arg(long, global = true, env = "HOSTNETD_TC_ATTACH", value_name = "MODE")]
    tc_attach: Option<String>,
    /// The size at which containers' logs rotate unless their --log-opt max-size says: 100k,
    /// 10m, 1g or bytes [default: 10m].
    #[arg(
        long,
        global = true,
        env = "HOSTNETD_LOG_MAX_SIZE",
        value_name = "SIZE"
    )]
    log_max_size: Option<String>,
    /// The log files containers keep unless their --log-opt max-file says [default: 5].
    #[arg(long, global = true, env = "HOSTNETD_LOG_MAX_FILE", value_name = "N")]
    log_max_file: Option<u32>,
    /// Owned ports whose packets are counted in a per-CPU array row of their own, the fast
    /// path; ports beyond are counted in hashes. Costs 96 bytes per row per CPU; applies when
    /// the datapath is loaded (after a teardown) [default: what 16 MiB pays for, at most 16384].
    #[arg(long, global = true, env = "HOSTNETD_TRAFFIC_ROWS", value_name = "N")]
    traffic_rows: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: load the datapath and serve the API.
    Daemon,
    /// Run an image (or --rootfs DIR) in a new host-network container, owning the declared
    /// ports (by default the image's exposed ports).
    Run(Box<run::RunArgs>),
    /// Pull an image from a registry.
    Pull(images::PullArgs),
    /// Log in to a registry: the credentials are checked, then stored for pull and run.
    Login(login::LoginArgs),
    /// Forget a registry's stored credentials.
    Logout(login::LogoutArgs),
    /// Load images from a docker-archive or oci-archive tarball.
    Load(images::LoadArgs),
    /// List stored images.
    Images(images::ImagesArgs),
    /// Remove images (refused while a container uses them).
    Rmi(images::RmiArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Show a container as JSON.
    Inspect(containers::InspectArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after a timeout.
    Stop(containers::StopArgs),
    /// Start exited containers again, their ports admitted again.
    Start(containers::StartArgs),
    /// Stop containers (as stop does) and start them again.
    Restart(containers::StopArgs),
    /// Send a signal to containers.
    Kill(containers::KillArgs),
    /// Run a command in a running container, under its ports and policy.
    Exec(exec::ExecArgs),
    /// Attach to a running container's output, and its input or terminal (ctrl-p ctrl-q
    /// detaches).
    Attach(attach::AttachArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Replace a running container's ports and egress rules, atomically.
    Update(containers::UpdateArgs),
    /// List owned ports and their owners.
    Ports(containers::PortsArgs),
    /// Show where a container's ports listen (as `docker port`).
    Port(containers::PortArgs),
    /// Show a running container's processes (as `docker top`).
    Top(containers::TopArgs),
    /// Give a container a new name.
    Rename(containers::RenameArgs),
    /// Show containers' network traffic, packets, processes and denials.
    Stats(stats::StatsArgs),
    /// Show denials and container lifecycle events as they happen (like docker events).
    Events(events::EventsArgs),
    /// Show the daemon, and this kernel's BPF features with what hostnetd does about each.
    Info(info::InfoArgs),
    /// Stop the daemon and detach hostnetd from the host: unpin programs and maps, return
    /// reserved ports. Refused while containers run.
    Teardown,
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell
    /// (`source <(hostnetd completion bash)`).
    Completion { shell: clap_complete::Shell },
    /// Write the man pages (hostnetd.1, hostnetd-COMMAND.1) into DIR (for packaging).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// The per-container monitor the daemon starts (not for direct use).
    #[command(hide = true)]
    Monitor {
        id: String,
        /// The cgroup2 mount the daemon works in.
        #[arg(long)]
        cgroup2: Option<PathBuf>,
    },
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Command::Daemon | Command::Monitor { .. }) {
        end_quietly_on_a_closed_pipe();
    }
    // Generated from the command line alone: no settings, no daemon.
    match &cli.command {
        Command::Completion { shell } => return completion::completion(*shell, Cli::command()),
        Command::Manpages { dir } => return completion::manpages(dir, Cli::command()),
        _ => {}
    }
    let settings = cli.global.settings()?;
    let global_args = settings.daemon_args();
    match cli.command {
        Command::Daemon => daemon(settings),
        Command::Monitor { id, cgroup2 } => monitor(&settings, &id, cgroup2.as_deref()),
        Command::Teardown => containers::teardown(&settings),
        Command::Run(args) => {
            // Bad input is refused before any daemon is started: it changes nothing.
            let (spec, options) = run::spec(*args)?;
            spec.validate()?;
            run::run(
                &Client::connect_or_start(&settings, &global_args)?,
                &spec,
                &options,
            )
        }
        Command::Login(args) => {
            // Credentials are gathered (and bad ones refused) before any daemon is started.
            let request = login::request(args)?;
            login::login(
                &Client::connect_or_start(&settings, &global_args)?,
                &request,
            )
        }
        Command::Update(args) => {
            let (container, body) = containers::update_request(args)?;
            let client = Client::connect_or_start(&settings, &global_args)?;
            containers::update(&client, &container, &body)
        }
        command => {
            check_locally(&command)?;
            let client = Client::connect_or_start(&settings, &global_args)?;
            match command {
                Command::Ps(args) => containers::ps(&client, args),
                Command::Inspect(args) => containers::inspect(&client, args),
                Command::Logs(args) => containers::logs(&client, args),
                Command::Stop(args) => containers::stop(&client, args),
                Command::Start(args) => containers::start(&client, args),
                Command::Restart(args) => containers::restart(&client, args),
                Command::Kill(args) => containers::kill(&client, args),
                Command::Exec(args) => exec::exec(&client, args),
                Command::Attach(args) => attach::attach(&client, args),
                Command::Rm(args) => containers::rm(&client, args),
                Command::Ports(args) => containers::ports(&client, args),
                Command::Port(args) => containers::port(&client, args),
                Command::Top(args) => containers::top(&client, args),
                Command::Rename(args) => containers::rename(&client, args),
                Command::Stats(args) => stats::stats(&client, args),
                Command::Events(args) => events::events(&client, args),
                Command::Info(args) => info::info(&client, args),
                Command::Pull(args) => images::pull(&client, args),
                Command::Load(args) => images::load(&client, args),
                Command::Images(args) => images::images(&client, args),
                Command::Rmi(args) => images::rmi(&client, args),
                Command::Logout(args) => login::logout(&client, args),
                Command::Daemon
                | Command::Monitor { .. }
                | Command::Teardown
                | Command::Run(_)
                | Command::Update(_)
                | Command::Login(_)
                | Command::Completion { .. }
                | Command::Manpages { .. } => unreachable!("handled above"),
            }
        }
    }
}

/// What can be checked without the daemon is checked before one is started: bad input changes
/// nothing, not even whether a daemon runs.
fn check_locally(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Kill(args) => args.check(),
        Command::Exec(args) => args.check(),
        Command::Port(args) => args.check(),
        Command::Rename(args) => args.check(),
        Command::Pull(args) => args.check(),
        Command::Load(args) => args.check(),
        Command::Logout(args) => args.check(),
        _ => Ok(()),
    }
}

impl GlobalArgs {
    /// Flags (and their environment variables) over the config file.
    fn settings(self) -> anyhow::Result<Settings> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let file = Settings::load(&path, required)?;
        let flags = Settings {
            state_dir: self.state_dir,
            run_dir: self.run_dir,
            socket: self.socket,
            bpffs: self.bpffs,
            bpf_dir: self.bpf_dir,
            cgroup_parent: self.cgroup_parent,
            runc: self.runc,
            log_level: self.log_level,
            insecure_registries: None,
            auth_file: self.auth_file,
            certs_dir: self.certs_dir,
            host_protection: self.no_host_protection.then_some(false),
            manage_qdisc: self.manage_qdisc,
            metrics_addr: self.metrics_addr,
            bpf_log_level: self.bpf_log_level,
            tc_attach: self.tc_attach,
            log_max_size: self.log_max_size,
            log_max_file: self.log_max_file,
            traffic_rows: self.traffic_rows,
        };
        let settings = flags.or(file);
        // Refused here, before any command (or a daemon it would start) acts on it.
        settings.metrics_addr().map_err(anyhow::Error::msg)?;
        settings.bpf_log_level().map_err(anyhow::Error::msg)?;
        settings.tc_attach().map_err(anyhow::Error::msg)?;
        settings.log_limits().map_err(anyhow::Error::msg)?;
        settings.traffic_rows().map_err(anyhow::Error::msg)?;
        Ok(settings)
    }
}

fn daemon(settings: Settings) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(settings.log_level()))
        .with_context(|| {
            format!(
                "invalid log level {:?}: use error, warn, info, debug or trace",
                settings.log_level()
            )
        })?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the daemon's runtime")?;
    let served = runtime.block_on(hostnetd::daemon::serve(settings));
    // Threads that never end (the BPF log's reader) must not keep a daemon that failed alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served?;
    Ok(ExitCode::SUCCESS)
}

/// A command whose reader went away (`hostnetd ps | head`) ends as docker's does, silently
/// by SIGPIPE, rather than panicking on the failed print: Rust ignores SIGPIPE by default.
/// Not for the daemon and the monitors, which write to sockets whose peers may go at any time.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restoring a signal's default disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn monitor(settings: &Settings, id: &str, cgroup2: Option<&Path>) -> anyhow::Result<ExitCode> {
    let host = Host::open_in(settings.host_config(), cgroup2)?;
    host.monitor(id, std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}
