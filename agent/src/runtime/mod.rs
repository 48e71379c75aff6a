//! Running a container through runc, in the host's network namespace.
//!
//! A container's bundle lives in `<run_dir>/containers/<id>/`: `config.json` and `rootfs/`,
//! where the root filesystem is mounted before `runc create`. For `--rootfs DIR` that is a
//! private bind mount of DIR; for an image, an overlayfs of its layers and the container's own
//! writable layer.
mod rootfs;
mod runc;
mod spec;
mod user;

pub use rootfs::{mount_rootfs, unmount_rootfs};
pub use runc::{ContainerOutput, Runc, RuncError};
pub use spec::{oci_config, Capabilities, Volume};
pub use user::{resolve_user, ProcessUser};

use std::path::PathBuf;

/// Everything about a container's process that the OCI config needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ProcessUser,
    pub hostname: String,
    pub capabilities: Capabilities,
    pub volumes: Vec<Volume>,
}

/// Where a container's root filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootfsSource {
    /// A directory on the host, shown read-only (`--rootfs /` runs host binaries).
    HostDirectory(PathBuf),
    /// An image: its unpacked layers (top first) under an overlayfs whose writable layer is
    /// the container's own (`upper/` and overlayfs's `work/` in `writable`).
    Image {
        layers: Vec<PathBuf>,
        writable: PathBuf,
    },
}

impl RootfsSource {
    /// A host directory, which must exist; kept as an absolute, canonical path.
    pub fn host_directory(dir: &std::path::Path) -> Result<Self, RuntimeError> {
        let canonical = dir.canonicalize().map_err(|error| {
            RuntimeError::User(format!(
                "invalid rootfs {}: {error}; give an existing host directory",
                dir.display()
            ))
        })?;
        if !canonical.is_dir() {
            return Err(RuntimeError::User(format!(
                "invalid rootfs {}: not a directory; give an existing host directory",
                dir.display()
            )));
        }
        Ok(Self::HostDirectory(canonical))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Runc(#[from] RuncError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    User(String),
}
