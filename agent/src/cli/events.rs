//! `hostnetd events`: denials and container lifecycle events, one per line.
use std::{io::Write as _, process::ExitCode};

use hostnetd::{
    api::client::{Client, ClientError},
    daemon::feed::Event,
};
use hyper::Method;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Show the events kept since this time (RFC 3339 or Unix seconds) first; without it only
    /// new events are shown.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Print the kept events and exit instead of following new ones.
    #[arg(long)]
    no_stream: bool,
    /// `text` (default) or `json` (one object per line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

pub fn events(client: &Client, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let mut query = format!("follow={}", !args.no_stream);
    if let Some(since) = &args.since {
        query += &format!("&since={}", encode(since));
    }
    let json = args.format == "json";
    client.stream_lines(
        Method::GET,
        &format!("/v1/events?{query}"),
        None::<&()>,
        |line| {
            let event: Event =
                serde_json::from_slice(line).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let text = if json {
                serde_json::to_string(&event).map_err(|e| ClientError::Protocol(e.to_string()))?
            } else {
                event.human_line()
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
            Ok(())
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes what a query value cannot carry as is (`+` of a time zone, spaces).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
