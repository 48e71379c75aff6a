//! `attach`: where a running container's monitor serves its output and takes its input.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Host, HostError};
use crate::runtime::attach::socket_path;

/// The answer to `GET /v1/containers/REF/attach`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachPoint {
    pub id: String,
    /// The monitor's Unix socket (see [`crate::runtime::attach`] for its frames).
    pub socket: PathBuf,
    /// The container has a terminal: its output is one stream, and keys go to it raw.
    pub tty: bool,
    /// Its stdin takes input.
    pub open_stdin: bool,
}

impl Host {
    pub fn attach_point(&self, reference: &str) -> Result<AttachPoint, HostError> {
        let record = self.own_container(self.store.find(reference)?, "attach")?;
        if !record.state.is_live() {
            return Err(HostError::NotRunning {
                name: record.name,
                state: record.state.as_str(),
            });
        }
        Ok(AttachPoint {
            socket: socket_path(&self.config.run_dir, &record.id),
            id: record.id,
            tty: record.tty,
            open_stdin: record.open_stdin,
        })
    }
}
