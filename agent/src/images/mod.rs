//! The image store, under `<state_dir>/images`:
//! ```text
//! lock                     flock(2): shared while a container is created from an image,
//!                          exclusive while images are committed or removed
//! blobs/sha256/<hex>       configs and layer blobs, as fetched, verified by digest
//! layers/<diff-id hex>/    each layer unpacked once, shared by every image that has it
//! records/<id hex>.json    one ImageRecord per image (its ID is its config's digest)
//! tmp/<pid>-<n>/           an import in progress: staged, verified, then renamed into place
//! ```
//! A pull or load stages everything in its own tmp directory and commits it under the
//! exclusive lock at the end, so a failure (a digest mismatch, a corrupt archive, a lost
//! registry) leaves nothing behind. Blobs and layers no image references are collected at
//! each commit and removal.
pub mod archive;
mod certs;
mod config;
pub mod credentials;
mod digest;
mod error;
mod layers;
pub mod login;
mod reference;
mod refusal;
pub mod registry;
mod store;

pub use config::{ImageConfigFile, RunConfig};
pub use credentials::Credentials;
pub use digest::Digest;
pub use error::ImageError;
pub use layers::LayerError;
pub use reference::{display_name, normalize, registry_name};
pub use registry::PullOptions;
pub use store::{ImageLock, ImageRecord, ImageStore, ImageUsers, LayerRecord, Removed, Staging};
