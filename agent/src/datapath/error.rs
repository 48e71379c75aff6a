//! What loading, attaching and reading the datapath can fail with.
use std::path::PathBuf;

use aya::programs::ProgramError;

use super::features::{MissingFeatures, NoTcx};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("eBPF program {0} is missing from the object or has the wrong type")]
    MissingProgram(&'static str),
    #[error("eBPF map {name}: {}", with_causes(source))]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("cannot pin {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("cannot link {path}: {source}")]
    Link {
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a container's cgroup is {level} levels deep, and containers already sit at {} different depths ({in_use:?}), all the hooks look at; run it at one of those depths", hostnetd_common::MAX_CONTAINER_DEPTHS)]
    ContainerDepth { level: u32, in_use: Vec<u32> },
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error(transparent)]
    MissingFeatures(#[from] MissingFeatures),
    #[error(transparent)]
    NoTcx(#[from] NoTcx),
    #[error("cannot {what} (rtnetlink): {source}")]
    Netlink {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("port {port} is owned by cgroup {cgroup_id}, not by this container")]
    PortTaken { port: String, cgroup_id: u64 },
}

/// An error and the errors that caused it, `: `-separated: aya's syscall errors keep the errno
/// (`No space left on device`) in their source, which a plain display drops.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

/// The error of map `name`, for `map_err`.
pub fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}
