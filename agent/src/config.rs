//! /etc/hostnetd/config.toml: the same settings as the global flags, which override it.
//!
//! ```toml
//! state_dir = "/var/lib/hostnetd"
//! run_dir = "/run/hostnetd"
//! socket = "/run/hostnetd/hostnetd.sock"
//! bpffs = "/sys/fs/bpf"
//! bpf_dir = "/sys/fs/bpf/hostnetd"
//! cgroup_parent = "hostnetd"
//! runc = "runc"
//! log_level = "info"
//! insecure_registries = ["registry.lan:5000"]   # reached over plain HTTP
//! auth_file = "/var/lib/hostnetd/auth.json"     # `hostnetd login`'s, docker's config.json format
//! certs_dir = "/etc/hostnetd/certs.d"           # HOST:PORT/ca.crt: a registry's own CA
//! host_protection = true    # false: host processes may bind container-owned ports
//! manage_qdisc = "eth0"     # put fq on these interfaces (or "all"), so bandwidth limits pace
//! metrics_addr = "127.0.0.1:9323"   # serve Prometheus metrics there (off when absent)
//! tc_attach = "auto"        # tcx, or netlink (a clsact qdisc); auto: TCX where the kernel has it
//! traffic_rows = 16384      # owned ports counted in a per-CPU array row of their own
//! log_max_size = "10m"      # containers' logs rotate at this size (--log-opt max-size)
//! log_max_file = 5          # and keep this many files (--log-opt max-file)
//! ```
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    datapath::{port_rows_bytes, BpfLogLevel, TcAttach, MAX_PORT_ROWS},
    host::HostConfig,
    images::PullOptions,
    policy::logs::{check_max_file, parse_size, LogLimits},
};

pub const DEFAULT_CONFIG: &str = "/etc/hostnetd/config.toml";
pub const DEFAULT_CERTS_DIR: &str = "/etc/hostnetd/certs.d";

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub state_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub bpffs: Option<PathBuf>,
    pub bpf_dir: Option<PathBuf>,
    pub cgroup_parent: Option<String>,
    pub runc: Option<PathBuf>,
    pub log_level: Option<String>,
    pub insecure_registries: Option<Vec<String>>,
    /// Registry credentials (`hostnetd login`), in docker's config.json format.
    pub auth_file: Option<PathBuf>,
    /// CAs trusted for one registry each: `HOST:PORT/*.crt`, docker's certs.d layout.
    pub certs_dir: Option<PathBuf>,
    /// Whether host processes are kept off container-owned ports (default true).
    pub host_protection: Option<bool>,
    /// The interfaces the daemon puts fq on, comma-separated, or `all` (default none).
    pub manage_qdisc: Option<String>,
    /// Where the daemon serves Prometheus metrics: `HOST:PORT`, or a port on 127.0.0.1.
    pub metrics_addr: Option<String>,
    /// Debug logging from the eBPF programs: off (default), error, warn, info, debug, trace.
    pub bpf_log_level: Option<String>,
    /// How the TC programs attach to the host's interfaces: auto (default), tcx or netlink.
    pub tc_attach: Option<String>,
    /// The size at which a container's log is rotated, unless its `--log-opt max-size` says
    /// (default 10m).
    pub log_max_size: Option<String>,
    /// The log files a container keeps, unless its `--log-opt max-file` says (default 5).
    pub log_max_file: Option<u32>,
    /// Owned ports counted in a per-CPU array row of their own (default: what 16 MiB pays
    /// for on this host's CPUs, at most 16384); applies when the datapath is loaded.
    pub traffic_rows: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Settings {
    /// The config file at `path`. A missing file is an empty one unless `required` (the user
    /// named it with --config).
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Self::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The settings in `text`, or `line N: reason` (toml's own rendering spans several lines
    /// of ASCII art, which an error on one line cannot show).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| match error.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {}", error.message())
            }
            None => error.message().to_string(),
        })
    }

    /// `self` where set, `fallback` elsewhere.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            state_dir: self.state_dir.or(fallback.state_dir),
            run_dir: self.run_dir.or(fallback.run_dir),
            socket: self.socket.or(fallback.socket),
            bpffs: self.bpffs.or(fallback.bpffs),
            bpf_dir: self.bpf_dir.or(fallback.bpf_dir),
            cgroup_parent: self.cgroup_parent.or(fallback.cgroup_parent),
            runc: self.runc.or(fallback.runc),
            log_level: self.log_level.or(fallback.log_level),
            insecure_registries: self.insecure_registries.or(fallback.insecure_registries),
            auth_file: self.auth_file.or(fallback.auth_file),
            certs_dir: self.certs_dir.or(fallback.certs_dir),
            host_protection: self.host_protection.or(fallback.host_protection),
            manage_qdisc: self.manage_qdisc.or(fallback.manage_qdisc),
            metrics_addr: self.metrics_addr.or(fallback.metrics_addr),
            bpf_log_level: self.bpf_log_level.or(fallback.bpf_log_level),
            tc_attach: self.tc_attach.or(fallback.tc_attach),
            log_max_size: self.log_max_size.or(fallback.log_max_size),
            log_max_file: self.log_max_file.or(fallback.log_max_file),
            traffic_rows: self.traffic_rows.or(fallback.traffic_rows),
        }
    }

    pub fn host_config(&self) -> HostConfig {
        HostConfig {
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(|| "/var/lib/hostnetd".into()),
            run_dir: self.run_dir(),
            bpffs: self.bpffs.clone().unwrap_or_else(|| "/sys/fs/bpf".into()),
            bpf_dir: self
                .bpf_dir
                .clone()
                .unwrap_or_else(|| "/sys/fs/bpf/hostnetd".into()),
            cgroup_parent: (self
                .cgroup_parent
                .as_deref()
                .unwrap_or("hostnetd")
                .trim_matches('/'))
            .to_string(),
            runc: self.runc.clone().unwrap_or_else(|| "runc".into()),
            host_protection: self.host_protection.unwrap_or(true),
            manage_qdisc: self.manage_qdisc.clone().unwrap_or_default(),
            bpf_log_level: (self.bpf_log_level.as_deref())
                .and_then(|text| text.parse().ok())
                .unwrap_or_default(),
            tc_attach: (self.tc_attach.as_deref())
                .and_then(|text| text.parse().ok())
                .unwrap_or_default(),
            log_limits: self.log_limits().unwrap_or_default(),
            traffic_rows: self.traffic_rows().ok().flatten(),
        }
    }

    /// Checks the containers' default log limits, which `host_config` takes as given.
    pub fn log_limits(&self) -> Result<LogLimits, String> {
        let defaults = LogLimits::DEFAULT;
        let max_size = match &self.log_max_size {
            Some(text) => parse_size(text)
                .map_err(|reason| format!("invalid log_max_size {text:?}: {reason}"))?,
            None => defaults.max_size,
        };
        let max_file = match self.log_max_file {
            Some(count) => check_max_file(count)
                .map_err(|reason| format!("invalid log_max_file {count}: {reason}"))?,
            None => defaults.max_file,
        };
        Ok(LogLimits { max_size, max_file })
    }

    /// Checks the row count, which `host_config` takes as given.
    pub fn traffic_rows(&self) -> Result<Option<u32>, String> {
        match self.traffic_rows {
            Some(rows) if rows > MAX_PORT_ROWS => Err(format!(
                "invalid traffic_rows {rows}: at most {MAX_PORT_ROWS} owned ports can have a \
                 row of their own (ports beyond are still counted, in the hashes); {rows} rows \
                 would take {} MiB on this host",
                port_rows_bytes(rows) >> 20
            )),
            rows => Ok(rows),
        }
    }

    /// Checks the TC attach mode, which `host_config` takes as given.
    pub fn tc_attach(&self) -> Result<TcAttach, String> {
        self.tc_attach
            .as_deref()
            .map_or(Ok(Default::default()), str::parse)
    }

    /// Checks the eBPF log level, which `host_config` takes as given.
    pub fn bpf_log_level(&self) -> Result<BpfLogLevel, String> {
        self.bpf_log_level
            .as_deref()
            .map_or(Ok(BpfLogLevel::Off), str::parse)
    }

    /// How the daemon reaches registries: plain HTTP, CAs and credentials.
    pub fn pull_options(&self) -> PullOptions {
        PullOptions {
            insecure_registries: self.insecure_registries.clone().unwrap_or_default(),
            certs_dir: self.certs_dir(),
            auth_file: self.auth_file(),
        }
    }

    /// `auth_file`, or auth.json in the state directory (root's alone, as the state is).
    pub fn auth_file(&self) -> PathBuf {
        self.auth_file
            .clone()
            .unwrap_or_else(|| self.host_config().state_dir.join("auth.json"))
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.certs_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_CERTS_DIR.into())
    }

    fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| "/run/hostnetd".into())
    }

    /// The API socket: `socket`, or hostnetd.sock in the run directory.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.run_dir().join("hostnetd.sock"))
    }

    /// Where to serve metrics, if anywhere.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        (self.metrics_addr.as_deref())
            .map(parse_metrics_addr)
            .transpose()
    }

    /// The flags that give a daemon started by a client exactly these settings.
    pub fn daemon_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = self.host_config().to_args();
        args.extend(["--socket".into(), self.socket().into_os_string()]);
        args.extend(["--log-level".into(), self.log_level().into()]);
        args.extend(["--auth-file".into(), self.auth_file().into_os_string()]);
        args.extend(["--certs-dir".into(), self.certs_dir().into_os_string()]);
        if let Some(addr) = &self.metrics_addr {
            args.extend(["--metrics-addr".into(), addr.into()]);
        }
        args
    }

    pub fn log_level(&self) -> &str {
        self.log_level.as_deref().unwrap_or("info")
    }
}

/// `--metrics-addr`: `HOST:PORT`, `[V6]:PORT`, or a bare port on 127.0.0.1.
pub fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        format!("invalid metrics address {text:?}: give HOST:PORT (127.0.0.1:9323) or a port")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file = Settings::parse("state_dir = \"/srv/hn\"\ncgroup_parent = \"/hn/\"\n").unwrap();
        let flags = Settings {
            state_dir: Some("/flag".into()),
            ..Settings::default()
        };
        let merged = flags.or(file);
        let config = merged.host_config();
        assert_eq!(config.state_dir, Path::new("/flag"));
        assert_eq!(config.cgroup_parent, "hn");
        assert_eq!(config.run_dir, Path::new("/run/hostnetd"));
        assert_eq!(merged.socket(), Path::new("/run/hostnetd/hostnetd.sock"));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_named() {
        let error = Settings::parse("stat_dir = \"/x\"").unwrap_err();
        assert!(error.contains("stat_dir"), "{error}");
        assert!(Settings::parse("state_dir = 3").is_err());
    }

    #[test]
    fn a_missing_default_file_is_empty_but_a_named_one_is_an_error() {
        let missing = Path::new("/nonexistent/hostnetd.toml");
        assert_eq!(Settings::load(missing, false).unwrap(), Settings::default());
        assert!(Settings::load(missing, true)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent"));
    }

    #[test]
    fn log_limits_default_to_ten_megabytes_times_five_and_bad_ones_are_named() {
        assert_eq!(Settings::default().log_limits(), Ok(LogLimits::DEFAULT));
        let file = Settings::parse("log_max_size = \"100k\"\nlog_max_file = 3\n").unwrap();
        let expected = LogLimits {
            max_size: 100 << 10,
            max_file: 3,
        };
        assert_eq!(file.log_limits(), Ok(expected));
        assert_eq!(file.host_config().log_limits, expected);
        let zero = Settings::parse("log_max_file = 0").unwrap();
        assert_eq!(
            zero.log_limits().unwrap_err(),
            "invalid log_max_file 0: give a whole number of files from 1 to 100, such as 3"
        );
        assert!(Settings::parse("log_max_file = \"3\"").is_err());
    }

    #[test]
    fn a_bare_port_listens_on_loopback() {
        assert_eq!(
            parse_metrics_addr("9323").unwrap().to_string(),
            "127.0.0.1:9323"
        );
        assert_eq!(
            parse_metrics_addr("[::1]:9323").unwrap().to_string(),
            "[::1]:9323"
        );
        assert!(parse_metrics_addr("localhost")
            .unwrap_err()
            .contains("localhost"));
    }
}
