//! `hostnetd info`: the daemon, and what this kernel lets hostnetd do.
use std::process::ExitCode;

use hostnetd::api::{client::Client, Info, PacingMode};

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Print the API's JSON instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn info(client: &Client, args: InfoArgs) -> anyhow::Result<ExitCode> {
    let info: Info = client.get("/v1/info")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", text(&info));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(info: &Info) -> String {
    let mut out = format!(
        "hostnetd {} (daemon pid {})\npins: {}\ncgroup parent: {}\n",
        info.version, info.pid, info.bpf_dir, info.cgroup_parent
    );
    if let Some(rows) = info.port_rows {
        out += &format!(
            "port counter rows: {} of {} given (owned ports beyond are counted in hashes; \
             --traffic-rows)\n",
            rows.given, rows.capacity
        );
    }
    out += "\n";
    out += &format!("{:<12}  {:<9}  {}\n", "FEATURE", "AVAILABLE", "EFFECT");
    for feature in &info.features {
        let available = if feature.available { "yes" } else { "no" };
        out += &format!(
            "{:<12}  {:<9}  {}\n",
            feature.name, available, feature.effect
        );
    }
    out += &format!("\n{:<16}  {:<10}  {}\n", "DEVICE", "QDISC", "RATE LIMITS");
    for device in &info.devices {
        let mode = match device.egress_limits {
            PacingMode::Edt => "paced (EDT: fq holds packets until their departure time)",
            PacingMode::Police => "policed (above the rate: dropped, or ECN-marked)",
        };
        out += &format!("{:<16}  {:<10}  {mode}\n", device.device, device.qdisc);
    }
    out
}
