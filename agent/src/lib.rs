//! hostnetd: host-network containers with their network isolation given back by eBPF.
//!
//! The library holds the core (datapath loading, port ownership, cgroups, the runtime, the
//! store); the `hostnetd` binary's command line is a thin layer over [`host::Host`].
pub mod accounting;
pub mod api;
mod bpf_log;
pub mod capacity;
pub mod cgroup;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod events;
pub mod host;
mod image_ops;
pub mod images;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod ownership;
pub mod policy;
pub mod reserved_ports;
pub mod restart;
pub mod runtime;
mod safe_remove;
pub mod sockets;
pub mod store;
pub mod supervise;
pub mod update;
pub mod watch;

pub use host::{Host, HostConfig, HostError};
pub use lifecycle::{RunRequest, RunSpec};
