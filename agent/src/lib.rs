//! hostnetd: host-network containers with their network isolation given back by eBPF.
//!
//! The modules, each depending only on those listed after it (docs/design.md draws them):
//! - `daemon`: the HTTP API server, its event feed and metrics;
//! - `api`: the API's bodies and their validation, and the client;
//! - `config`: the settings file and flags, into a [`HostConfig`];
//! - `host`: the [`Host`] and its verbs (run, update, stop, stats...);
//! - `ownership`, `runtime`, `images`, `datapath`: ports, runc, the image store, the eBPF
//!   programs and maps (aya stays in `datapath`);
//! - `store`: the records on disk;
//! - `policy`, `sys`: the rules' grammar, and the operating system's primitives.
pub mod api;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod host;
pub mod images;
pub mod ownership;
pub mod policy;
pub mod runtime;
pub mod store;
pub mod sys;

pub use api::RunSpec;
pub use host::{run::RunRequest, Host, HostConfig, HostError};
