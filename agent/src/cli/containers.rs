//! ps, inspect, logs, stop, kill, rm, ports, port, top and teardown: each one request (per
//! container).
use std::{io::Write as _, process::ExitCode};

use hostnetd::{
    api::client::{Client, ClientError},
    api::{update::NO_LIMIT, ContainerView, PolicyUpdate, PortEntry, ProcessInfo},
    config::Settings,
    runtime::logs::{LogEntry, Stream},
    Host,
};
use hyper::Method;

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show exited containers too.
    #[arg(short, long)]
    all: bool,
    /// Only print IDs.
    #[arg(short, long)]
    quiet: bool,
}

pub fn ps(client: &Client, args: PsArgs) -> anyhow::Result<ExitCode> {
    let views: Vec<ContainerView> = client.get(&format!("/v1/containers?all={}", args.all))?;
    if args.quiet {
        views
            .iter()
            .for_each(|view| println!("{}", view.short_id()));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12}  {:<20}  {:<24}  {:<12}  {:<24}  COMMAND",
        "CONTAINER ID", "NAME", "IMAGE", "STATE", "PORTS"
    );
    for view in &views {
        let state = match (view.state.as_str(), view.exit_code) {
            ("exited", Some(code)) => format!("exited({code})"),
            (state, _) => state.to_string(),
        };
        let image = match (&view.image, &view.engine) {
            (Some(image), _) => image.clone(),
            (None, Some(engine)) => format!("({engine})"),
            (None, None) => format!("--rootfs {}", view.rootfs),
        };
        println!(
            "{:<12}  {:<20}  {:<24}  {:<12}  {:<24}  {}",
            view.short_id(),
            view.name,
            image,
            state,
            view.policy.ports.join(","),
            view.command.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Container names, IDs or unique ID prefixes; or image names or IDs.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Containers first, then images, as `docker inspect` does.
pub fn inspect(client: &Client, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut views = Vec::new();
    let failed = for_each(&args.containers, |reference| {
        let view = match client.get::<ContainerView>(&container_path(reference, "")) {
            Ok(container) => {
                serde_json::to_value(container).map_err(|e| ClientError::Protocol(e.to_string()))?
            }
            Err(ClientError::Api(error)) if error.code == "not_found" => client
                .get::<serde_json::Value>(&super::images::image_path(reference))
                .map_err(|image_error| match image_error {
                    ClientError::Api(e)
                        if e.code == "no_such_image" || e.code == "invalid_argument" =>
                    {
                        ClientError::Api(error)
                    }
                    other => other,
                })?,
            Err(error) => return Err(error),
        };
        views.push(view);
        Ok(None)
    });
    println!("{}", serde_json::to_string_pretty(&views)?);
    Ok(failed)
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Keep printing output as it comes, until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    container: String,
}

pub fn logs(client: &Client, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let mut query = format!("follow={}", args.follow);
    if let Some(tail) = args.tail {
        query.push_str(&format!("&tail={tail}"));
    }
    let path = format!("{}?{query}", container_path(&args.container, "/logs"));
    client.stream_lines(Method::GET, &path, None::<&()>, |line| {
        let entry: LogEntry =
            serde_json::from_slice(line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let _ = match entry.stream {
            Stream::Stdout => std::io::stdout().write_all(entry.log.as_bytes()),
            Stream::Stderr => std::io::stderr().write_all(entry.log.as_bytes()),
        };
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn stop(client: &Client, args: StopArgs) -> anyhow::Result<ExitCode> {
    Ok(for_each(&args.containers, |reference| {
        let path = format!("{}?t={}", container_path(reference, "/stop"), args.time);
        Ok(Some(client.post::<ContainerView>(&path, None::<&()>)?.name))
    }))
}

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `docker start`: each exited container runs again, its ports admitted again.
pub fn start(client: &Client, args: StartArgs) -> anyhow::Result<ExitCode> {
    Ok(for_each(&args.containers, |reference| {
        let path = container_path(reference, "/start");
        client.post::<ContainerView>(&path, None::<&()>)?;
        Ok(Some(reference.to_string()))
    }))
}

pub fn restart(client: &Client, args: StopArgs) -> anyhow::Result<ExitCode> {
    Ok(for_each(&args.containers, |reference| {
        let path = format!("{}?t={}", container_path(reference, "/restart"), args.time);
        client.post::<ContainerView>(&path, None::<&()>)?;
        Ok(Some(reference.to_string()))
    }))
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// The signal: a name (TERM, HUP, ...) or a number.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

impl KillArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        hostnetd::runtime::supervise::parse_signal(&self.signal).map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

pub fn kill(client: &Client, args: KillArgs) -> anyhow::Result<ExitCode> {
    Ok(for_each(&args.containers, |reference| {
        let path = format!(
            "{}?signal={}",
            container_path(reference, "/kill"),
            args.signal
        );
        Ok(Some(client.post::<ContainerView>(&path, None::<&()>)?.name))
    }))
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// The new set of owned ports, replacing the old one (`run --ports` grammar:
    /// 80,443/tcp,5000-5100/udp,127.0.0.1:8080,[::1]:9090).
    #[arg(long = "ports", value_name = "SPEC")]
    ports: Vec<String>,
    /// Own no ports any more.
    #[arg(long = "no-ports", conflicts_with = "ports")]
    no_ports: bool,
    /// The new egress allow rules (replacing the old ones), CIDR[:PORT[-PORT]][/tcp|udp].
    #[arg(long = "egress-allow", value_name = "RULE")]
    egress_allow: Vec<String>,
    /// The new egress deny rules (replacing the old ones).
    #[arg(long = "egress-deny", value_name = "RULE")]
    egress_deny: Vec<String>,
    /// Remove every egress rule.
    #[arg(long = "no-egress-rules", conflicts_with_all = ["egress_allow", "egress_deny"])]
    no_egress_rules: bool,
    /// The new ingress rules (replacing the old ones): sources allowed to reach the owned
    /// ports, CIDR[:PORT[-PORT]][/tcp|udp].
    #[arg(long = "ingress-allow", value_name = "RULE")]
    ingress_allow: Vec<String>,
    /// Remove every ingress rule: any source may reach the owned ports.
    #[arg(long = "no-ingress-rules", conflicts_with = "ingress_allow")]
    no_ingress_rules: bool,
    /// The new output limit, RATE[:BURST] (200mbit, 1gbit:2mb), in force at once.
    #[arg(long = "egress-rate", value_name = "RATE[:BURST]")]
    egress_rate: Option<String>,
    /// Remove the output limit.
    #[arg(long = "no-egress-rate", conflicts_with = "egress_rate")]
    no_egress_rate: bool,
    /// The new limit on what reaches the owned ports.
    #[arg(long = "ingress-rate", value_name = "RATE[:BURST]")]
    ingress_rate: Option<String>,
    /// Remove the limit on what reaches the owned ports.
    #[arg(long = "no-ingress-rate", conflicts_with = "ingress_rate")]
    no_ingress_rate: bool,
    container: String,
}

/// A validated `update`: the container and the request body. Bad input is refused here,
/// before a daemon is asked (or started); what is not given stays as it is.
pub fn update_request(args: UpdateArgs) -> anyhow::Result<(String, PolicyUpdate)> {
    let ports = args.no_ports || !args.ports.is_empty();
    let egress =
        args.no_egress_rules || !args.egress_allow.is_empty() || !args.egress_deny.is_empty();
    let ingress = args.no_ingress_rules || !args.ingress_allow.is_empty();
    let rate = |given: Option<String>, removed: bool| match removed {
        true => Some(NO_LIMIT.to_string()),
        false => given,
    };
    let egress_rate = rate(args.egress_rate, args.no_egress_rate);
    let ingress_rate = rate(args.ingress_rate, args.no_ingress_rate);
    anyhow::ensure!(
        ports || egress || ingress || egress_rate.is_some() || ingress_rate.is_some(),
        "nothing to update: give --ports SPEC (or --no-ports), --egress-allow, \
         --egress-deny RULE (or --no-egress-rules), --ingress-allow RULE \
         (or --no-ingress-rules) and/or --egress-rate, --ingress-rate RATE \
         (or --no-egress-rate, --no-ingress-rate)"
    );
    let body = PolicyUpdate {
        ports: ports.then_some(args.ports),
        egress_allow: egress.then_some(args.egress_allow),
        egress_deny: egress.then_some(args.egress_deny),
        ingress_allow: ingress.then_some(args.ingress_allow),
        egress_rate,
        ingress_rate,
    };
    body.validate()?;
    Ok((args.container, body))
}

/// Replaces a running container's ports and egress rules atomically.
pub fn update(client: &Client, container: &str, body: &PolicyUpdate) -> anyhow::Result<ExitCode> {
    let view: ContainerView = client.post(&container_path(container, "/update"), Some(body))?;
    println!("{}", view.name);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Kill and release a running container.
    #[arg(short, long)]
    force: bool,
    /// Container names, IDs or unique ID prefixes; or image names or IDs.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(client: &Client, args: RmArgs) -> anyhow::Result<ExitCode> {
    Ok(for_each(&args.containers, |reference| {
        let path = format!("{}?force={}", container_path(reference, ""), args.force);
        Ok(Some(client.delete::<ContainerView>(&path)?.name))
    }))
}

#[derive(clap::Args, Debug)]
pub struct PortsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Read the kernel's owner table instead of the container records, as JSON.
    #[arg(long)]
    kernel: bool,
}

pub fn ports(client: &Client, args: PortsArgs) -> anyhow::Result<ExitCode> {
    if args.kernel {
        let owned: serde_json::Value = client.get("/v1/ports?kernel=true")?;
        println!("{owned}");
        return Ok(ExitCode::SUCCESS);
    }
    let entries: Vec<PortEntry> = client.get("/v1/ports")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16}  {:<24}  CONTAINER", "PORT", "ADDRESSES");
    for entry in entries {
        let addresses = entry
            .addresses
            .map_or_else(|| "*".to_string(), |list| list.join(","));
        let short = &entry.container_id[..12.min(entry.container_id.len())];
        println!(
            "{:<16}  {:<24}  {} ({short})",
            entry.port, addresses, entry.container_name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Through the daemon when one runs (it exits afterwards); directly otherwise, so that tearing
/// down never starts a daemon first.
pub fn teardown(settings: &Settings) -> anyhow::Result<ExitCode> {
    let client = Client::new(&settings.socket())?;
    if client.ping().is_ok() {
        let _: serde_json::Value = client.post("/v1/teardown", None::<&()>)?;
        wait_for_socket_gone(&settings.socket());
    } else {
        Host::open(settings.host_config())?.teardown()?;
    }
    eprintln!("hostnetd: detached from this host");
    Ok(ExitCode::SUCCESS)
}

fn wait_for_socket_gone(socket: &std::path::Path) {
    for _ in 0..100 {
        if !socket.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub(super) fn container_path(reference: &str, suffix: &str) -> String {
    let encoded: String = reference
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("/v1/containers/{encoded}{suffix}")
}

/// Runs `action` on each reference, printing what it returns and each error; exit 1 if any failed.
fn for_each(
    references: &[String],
    mut action: impl FnMut(&str) -> Result<Option<String>, ClientError>,
) -> ExitCode {
    let mut failed = false;
    for reference in references {
        match action(reference) {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(error) => {
                eprintln!("hostnetd: {reference}: {error}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(clap::Args, Debug)]
pub struct PortArgs {
    /// A container name, ID or unique ID prefix.
    container: String,
    /// Only this port: `80` or `80/tcp` (TCP when no protocol is given), as `docker port`.
    port: Option<String>,
}

impl PortArgs {
    /// The port filter is checked before any daemon is asked.
    pub fn check(&self) -> anyhow::Result<()> {
        self.wanted().map(drop)
    }

    /// `80/tcp` for `80`; the filter as `PortView::port` writes ports.
    fn wanted(&self) -> anyhow::Result<Option<String>> {
        let Some(text) = &self.port else {
            return Ok(None);
        };
        let (number, proto) = text.split_once('/').unwrap_or((text, "tcp"));
        let valid =
            number.parse::<u16>().is_ok_and(|port| port > 0) && matches!(proto, "tcp" | "udp");
        if !valid {
            anyhow::bail!("invalid port {text:?}: give PORT or PORT/tcp or PORT/udp, as 80/tcp");
        }
        Ok(Some(format!("{number}/{proto}")))
    }
}

/// `docker port`: where each owned port listens. A host-network container's port is the
/// host's own, on every address or on those it declared.
pub fn port(client: &Client, args: PortArgs) -> anyhow::Result<ExitCode> {
    let wanted = args.wanted()?;
    let view: ContainerView = client.get(&container_path(&args.container, ""))?;
    let mut shown = 0;
    for owned in
        (view.ports.iter()).filter(|owned| wanted.as_ref().is_none_or(|w| *w == owned.port))
    {
        let number = owned.port.split('/').next().unwrap_or_default();
        let addresses = match &owned.addresses {
            Some(addresses) => addresses.clone(),
            None => vec!["0.0.0.0".to_string(), "::".to_string()],
        };
        for address in addresses {
            let address = if address.contains(':') {
                format!("[{address}]")
            } else {
                address
            };
            match &wanted {
                Some(_) => println!("{address}:{number}"),
                None => println!("{} -> {address}:{number}", owned.port),
            }
            shown += 1;
        }
    }
    if shown == 0 {
        if let Some(port) = wanted {
            anyhow::bail!("container {} owns no port {port}", view.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// A container name, ID or unique ID prefix.
    container: String,
}

/// `docker top`: the container's processes, users named as the host names them.
pub fn top(client: &Client, args: TopArgs) -> anyhow::Result<ExitCode> {
    let processes: Vec<ProcessInfo> = client.get(&container_path(&args.container, "/top"))?;
    let users = host_users();
    println!("{:<12}  {:>8}  {:>8}  CMD", "UID", "PID", "PPID");
    for process in processes {
        let user = users
            .get(&process.uid)
            .cloned()
            .unwrap_or_else(|| process.uid.to_string());
        println!(
            "{user:<12}  {:>8}  {:>8}  {}",
            process.pid, process.ppid, process.command
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The host's user names by uid, from /etc/passwd (empty when it cannot be read).
fn host_users() -> std::collections::HashMap<u32, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    (passwd.lines())
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[derive(clap::Args, Debug)]
pub struct RenameArgs {
    /// The container: a name, ID or unique ID prefix.
    container: String,
    /// Its new name.
    name: String,
}

impl RenameArgs {
    /// The new name is checked before any daemon is asked.
    pub fn check(&self) -> anyhow::Result<()> {
        Ok(hostnetd::api::run::validate_name(&self.name)?)
    }
}

pub fn rename(client: &Client, args: RenameArgs) -> anyhow::Result<ExitCode> {
    let path = format!(
        "{}?name={}",
        container_path(&args.container, "/rename"),
        args.name
    );
    client.post::<ContainerView>(&path, None::<&()>)?;
    Ok(ExitCode::SUCCESS)
}
