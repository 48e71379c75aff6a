//! The body of `POST /v1/containers` (`hostnetd run`'s flags, as given) and its validation
//! into the request the Host runs: the daemon validates, so every client gets the same errors.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    datapath::Bandwidth,
    host::{
        run::{ContainerSource, RunRequest},
        HostError,
    },
    images,
    policy::{
        logs::LogOptions, parse_declarations, rate::RateLimit, restart::RestartPolicy,
        rules::RuleSet,
    },
    runtime::{Capabilities, RootfsSource, Volume},
};

/// The body of `POST /v1/containers`: `hostnetd run`'s flags, as given. The daemon validates
/// it, so every client gets the same errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSpec {
    pub name: Option<String>,
    /// The image to run (`nginx`, `registry:5000/app:v2`, an image ID); or give `rootfs`.
    pub image: Option<String>,
    pub rootfs: Option<PathBuf>,
    /// Replaces the image's Cmd (with `rootfs`: the whole command).
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint; empty clears it.
    pub entrypoint: Option<String>,
    /// Port specs, each possibly comma-separated: `80`, `53/udp`, `127.0.0.1:8080/tcp`.
    /// None given with an image means the image's exposed ports.
    pub ports: Vec<String>,
    /// `KEY=VALUE` entries (the client resolves a bare `KEY` from its own environment).
    pub env: Vec<String>,
    /// `HOST:CONTAINER[:ro|rw]`.
    pub volumes: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Egress allowed, `CIDR[:PORT[-PORT]][/PROTO]` (each possibly comma-separated); with any,
    /// all other egress is denied.
    pub egress_allow: Vec<String>,
    /// Egress denied; wins over allow rules.
    pub egress_deny: Vec<String>,
    /// Sources allowed to reach the owned ports, `CIDR[:PORT[-PORT]][/PROTO]`; with any, the
    /// rest is dropped.
    #[serde(default)]
    pub ingress_allow: Vec<String>,
    /// The container's output limit, `RATE[:BURST]` as tc writes it (`200mbit`, `1gbit:2mb`).
    pub egress_rate: Option<String>,
    /// The limit on what reaches its owned ports, likewise.
    pub ingress_rate: Option<String>,
    /// `no`, `on-failure[:N]` or `always`.
    pub restart: Option<String>,
    /// `--log-opt` values, `max-size=SIZE` (`100k`, `10m`, `1g`) or `max-file=N`; what is not
    /// given comes from the daemon's defaults.
    pub log_opts: Vec<String>,
    /// Forget the container (record and logs) when it exits.
    pub auto_remove: bool,
    /// Give the container a terminal (`-t`).
    pub tty: bool,
    /// Keep its stdin open for attached clients (`-i`).
    pub interactive: bool,
    /// The terminal's size at the start, `[rows, columns]` (the client's own window).
    pub terminal_size: Option<[u16; 2]>,
}

impl RunSpec {
    pub fn validate(&self) -> Result<RunRequest, HostError> {
        let invalid = |message: String| HostError::Invalid(message);
        let source = match (&self.image, &self.rootfs) {
            (Some(image), None) => {
                images::normalize(image)?;
                ContainerSource::Image(image.clone())
            }
            (None, Some(rootfs)) => {
                if self.command.is_empty() {
                    return Err(invalid(
                        "no command: give the command to run after the flags".into(),
                    ));
                }
                if self.entrypoint.is_some() {
                    return Err(invalid(
                        "--entrypoint applies to images; with --rootfs give the whole command"
                            .into(),
                    ));
                }
                let RootfsSource::HostDirectory(dir) = RootfsSource::host_directory(rootfs)? else {
                    unreachable!("host_directory makes a host directory source");
                };
                ContainerSource::HostDirectory(dir)
            }
            (Some(_), Some(_)) => {
                return Err(invalid("give an image or --rootfs DIR, not both".into()))
            }
            (None, None) => {
                return Err(invalid(
                    "no image: give the image to run (or --rootfs DIR to run a host directory)"
                        .into(),
                ))
            }
        };
        let ports = if self.ports.is_empty() && self.image.is_some() {
            None
        } else {
            Some(parse_declarations(&self.ports).map_err(invalid)?)
        };
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(workdir) = &self.workdir {
            validate_workdir(workdir)?;
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|entry| !entry.contains('=') || entry.starts_with('='))
        {
            return Err(invalid(format!(
                "invalid environment entry {bad:?}: use KEY=VALUE"
            )));
        }
        if self.auto_remove && self.restart.as_deref().is_some_and(|r| r != "no") {
            return Err(invalid(
                "--rm and --restart cannot be combined: a restarted container is never removed"
                    .into(),
            ));
        }
        Ok(RunRequest {
            name: self.name.clone(),
            source,
            command: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            volumes: (self
                .volumes
                .iter()
                .map(|v| v.parse::<Volume>())
                .collect::<Result<_, _>>())
            .map_err(invalid)?,
            ports,
            capabilities: Capabilities::from_flags(&self.cap_add, &self.cap_drop)
                .map_err(invalid)?,
            egress: RuleSet::parse(&self.egress_allow, &self.egress_deny)
                .map_err(|e| invalid(e.to_string()))?,
            ingress: RuleSet::parse_ingress(&self.ingress_allow).map_err(invalid)?,
            bandwidth: Bandwidth {
                egress: rate_flag("--egress-rate", self.egress_rate.as_deref())?,
                ingress: rate_flag("--ingress-rate", self.ingress_rate.as_deref())?,
            },
            restart: match &self.restart {
                Some(text) => text.parse().map_err(invalid)?,
                None => RestartPolicy::No,
            },
            log_options: LogOptions::parse(&self.log_opts).map_err(invalid)?,
            auto_remove: self.auto_remove,
            tty: self.tty,
            interactive: self.interactive,
            terminal_size: self.terminal_size.map(|[rows, cols]| (rows, cols)),
        })
    }
}

/// A `--egress-rate`/`--ingress-rate` value, parsed; the error names the flag.
pub fn rate_flag(flag: &str, text: Option<&str>) -> Result<Option<RateLimit>, HostError> {
    let parsed = text.map(str::parse::<RateLimit>).transpose();
    parsed.map_err(|error| HostError::Invalid(format!("{flag}: {error}")))
}

/// Container names as docker accepts them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 long.
pub fn validate_name(name: &str) -> Result<(), HostError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "invalid container name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

pub fn validate_workdir(workdir: &str) -> Result<(), HostError> {
    if workdir.starts_with('/') {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "invalid working directory {workdir:?}: it must be an absolute path inside the container"
        )))
    }
}

/// `KEY=VALUE` as given; a bare `KEY` takes this process's value, and is dropped when unset.
pub fn parse_env(entry: &str) -> Option<String> {
    if entry.contains('=') {
        return Some(entry.to_string());
    }
    std::env::var(entry)
        .ok()
        .map(|value| format!("{entry}={value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert!(validate_name("web1").is_ok());
        assert!(validate_name("db_2.prod-x").is_ok());
        for bad in ["", "-web", "web one", "web/1", "ü"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn env_entries_pass_or_inherit() {
        assert_eq!(parse_env("A=b=c").as_deref(), Some("A=b=c"));
        assert_eq!(parse_env("HOSTNETD_SURELY_UNSET_VARIABLE"), None);
        std::env::set_var("HOSTNETD_TEST_ENV", "x");
        assert_eq!(
            parse_env("HOSTNETD_TEST_ENV").as_deref(),
            Some("HOSTNETD_TEST_ENV=x")
        );
    }

    #[test]
    fn workdir_must_be_absolute() {
        assert!(validate_workdir("/srv").is_ok());
        assert!(validate_workdir("srv").is_err());
    }
}
