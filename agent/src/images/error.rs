//! What the image store, a pull or a load can fail with.
use std::{io, path::PathBuf};

use super::{credentials::CredentialError, digest::Digest, layers::LayerError};
use crate::sys::files::FileError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no such image: {0}; pull it with `hostnetd pull {0}` or load it with `hostnetd load -i FILE`")]
    NotFound(String),
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image reference {reference:?} is ambiguous: it matches {matches}")]
    Ambiguous { reference: String, matches: String },
    #[error("{what} is corrupt: expected digest {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("{0}")]
    Corrupt(String),
    #[error("cannot pull {reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("invalid registry name {name:?}: give HOST[:PORT], as registry.example.com:5000")]
    InvalidRegistry { name: String },
    #[error("login to {registry} refused: {reason}")]
    Unauthorized { registry: String, reason: String },
    #[error("cannot log in to {registry}: {message}")]
    Login { registry: String, message: String },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("image {image} is used by {containers}: remove {them} first (`hostnetd rm`){force}")]
    InUse {
        image: String,
        containers: String,
        them: &'static str,
        force: &'static str,
    },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}
