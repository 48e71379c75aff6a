//! What making or running a container can fail with.
use std::path::PathBuf;

use super::runc::RuncError;

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
