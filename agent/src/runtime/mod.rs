//! Running a container through runc, in the host's network namespace.
//!
//! A container's bundle lives in `<run_dir>/containers/<id>/`: `config.json` and `rootfs/`,
//! where the root filesystem is mounted before `runc create`. For `--rootfs DIR` that is a
//! private bind mount of DIR; for an image, an overlayfs of its layers and the container's own
//! writable layer.
pub mod attach;
mod error;
pub mod exec;
pub mod logs;
mod rootfs;
mod runc;
mod spec;
pub mod stdio;
pub mod supervise;
mod user;

pub use error::RuntimeError;
pub use rootfs::{mount_rootfs, unmount_rootfs, RootfsSource};
pub use runc::{ContainerStdio, Runc, RuncError};
pub use spec::{oci_config, Capabilities, ProcessSpec, Volume};
pub use user::{resolve_user, ProcessUser};
