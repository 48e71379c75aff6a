//! `hostnetd ports`.
use std::process::ExitCode;

use hostnetd::Host;

#[derive(clap::Args, Debug)]
pub struct PortsArgs {
    /// Read the kernel's owner table instead of the container records, as JSON.
    #[arg(long)]
    kernel: bool,
}

pub fn ports(host: &Host, args: PortsArgs) -> anyhow::Result<ExitCode> {
    if args.kernel {
        let owned: Vec<_> = host
            .kernel_owners()?
            .into_iter()
            .map(|(port, owner)| serde_json::json!({ "port": port, "cgroup_id": owner.cgroup_id }))
            .collect();
        println!("{}", serde_json::Value::Array(owned));
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16}  {:<24}  CONTAINER", "PORT", "ADDRESSES");
    for (claim, record) in host.owned_ports()? {
        let addresses = match &claim.addresses {
            None => "*".to_string(),
            Some(list) => list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        println!(
            "{:<16}  {:<24}  {} ({})",
            claim.port.to_string(),
            addresses,
            record.name,
            record.short_id()
        );
    }
    Ok(ExitCode::SUCCESS)
}
