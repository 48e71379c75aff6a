//! Operations on existing containers: inspect, stop, kill, wait, rename and remove. Each one
//! talks to runc and the store; the container's monitor notices the exit and releases it.
use std::{
    fs, thread,
    time::{Duration, Instant},
};

use super::{Host, HostError};
use crate::{
    runtime::RuntimeError,
    store::{ContainerRecord, ContainerState},
};

const POLL: Duration = Duration::from_millis(50);

/// How a container ended, as `wait` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    /// None when the container never ran or its monitor died before recording it.
    pub exit_code: Option<i32>,
}

impl Host {
    pub fn inspect(&self, reference: &str) -> Result<ContainerRecord, HostError> {
        Ok(self.store.find(reference)?)
    }

    /// SIGTERM (or the image's StopSignal), then SIGKILL after `timeout`; the restart policy
    /// leaves it down. Returns once the container has exited and its ports are released.
    pub fn stop(&self, reference: &str, timeout: Duration) -> Result<ContainerRecord, HostError> {
        let record = self.request_stop(reference)?;
        if !record.state.is_live() {
            return Ok(record);
        }
        let stop_signal = (record.image.as_ref())
            .and_then(|image| image.stop_signal.as_deref())
            .and_then(|name| crate::runtime::supervise::parse_signal(name).ok())
            .unwrap_or(libc::SIGTERM);
        self.signal(&record, stop_signal)?;
        if self.wait_until_exited(&record.id, Some(timeout))?.is_none() {
            self.signal(&record, libc::SIGKILL)?;
            self.wait_until_exited(&record.id, None)?;
        }
        Ok(self.store.get(&record.id)?.unwrap_or(record))
    }

    /// Sends `signal` to the container's main process. Like docker, a killed container is not
    /// restarted by its policy.
    pub fn kill(&self, reference: &str, signal: i32) -> Result<ContainerRecord, HostError> {
        let record = self.own_container(self.store.find(reference)?, "kill")?;
        if record.state != ContainerState::Running {
            return Err(HostError::NotRunning {
                name: record.name,
                state: record.state.as_str(),
            });
        }
        if matches!(
            signal,
            libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGQUIT
        ) {
            self.request_stop(reference)?;
        }
        self.signal(&record, signal)?;
        Ok(record)
    }

    /// Removes an exited container; with `force`, kills and releases a live one first.
    pub fn remove(&self, reference: &str, force: bool) -> Result<ContainerRecord, HostError> {
        let record = self.own_container(self.store.find(reference)?, "rm")?;
        if record.state.is_live() {
            if !force {
                return Err(HostError::StillRunning {
                    name: record.name,
                    state: record.state.as_str(),
                });
            }
            self.stop(&record.id, Duration::ZERO)?;
        }
        let _lock = self.store.lock()?;
        // The exit file stays: a foreground `run` attached to this container still reads it.
        self.store.remove(&record.id)?;
        Ok(record)
    }

    /// Blocks until the container has exited and been released; its exit code.
    pub fn wait(&self, reference: &str) -> Result<ExitStatus, HostError> {
        let id = match self.store.find(reference) {
            Ok(record) => self.own_container(record, "wait")?.id,
            // A `--rm` container that already ended is known by its exit file only.
            Err(error) => match self.exit_file_status(reference) {
                Some(status) => return Ok(status),
                None => return Err(error.into()),
            },
        };
        Ok(self
            .wait_until_exited(&id, None)?
            .unwrap_or(ExitStatus { exit_code: None }))
    }

    /// Gives the container a new name (a valid one: the API checks it), refused when another
    /// container has it. Its ID, ports, logs and processes are untouched.
    pub fn rename(&self, reference: &str, name: &str) -> Result<ContainerRecord, HostError> {
        let _lock = self.store.lock()?;
        let record = self.own_container(self.store.find(reference)?, "rename")?;
        if let Some(holder) = (self.store.list()?.into_iter())
            .find(|other| other.name == name && other.id != record.id)
        {
            return Err(HostError::NameInUse {
                name: name.to_string(),
                id: holder.short_id().to_string(),
            });
        }
        let renamed = ContainerRecord {
            name: name.to_string(),
            ..record
        };
        self.store.save(&renamed)?;
        Ok(renamed)
    }

    /// Marks the container as stopped by request, so its monitor does not restart it.
    fn request_stop(&self, reference: &str) -> Result<ContainerRecord, HostError> {
        let _lock = self.store.lock()?;
        let mut record = self.own_container(self.store.find(reference)?, "stop")?;
        if record.state.is_live() {
            record.stop_requested = true;
            self.store.save_until_reboot(&record)?;
        }
        Ok(record)
    }

    fn signal(&self, record: &ContainerRecord, signal: i32) -> Result<(), HostError> {
        self.runc
            .kill(&record.id, signal)
            .map_err(RuntimeError::from)?;
        Ok(())
    }

    /// Polls until the container is released (exited and kept, or forgotten), or `timeout`
    /// passes (None). A monitor that died is reconciled here, so a wait never hangs on it.
    fn wait_until_exited(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<ExitStatus>, HostError> {
        let start = Instant::now();
        let mut last_liveness_check = Instant::now();
        loop {
            match self.store.get(id)? {
                Some(record) if !record.state.is_live() => {
                    return Ok(Some(ExitStatus {
                        exit_code: record.exit_code,
                    }));
                }
                Some(record) => {
                    if last_liveness_check.elapsed() > Duration::from_secs(1) {
                        last_liveness_check = Instant::now();
                        if !record.supervisor.is_alive() {
                            let (_lock, mut datapath) = self.lock_datapath()?;
                            self.reconcile(&mut datapath)?;
                        }
                    }
                }
                // Forgotten (`--rm`): the monitor writes the exit file once the output is drained.
                None => match self.exit_file_status(id) {
                    Some(status) => return Ok(Some(status)),
                    None if start.elapsed() > Duration::from_secs(10) => {
                        return Ok(Some(ExitStatus { exit_code: None }));
                    }
                    None => {}
                },
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    fn exit_file_status(&self, id: &str) -> Option<ExitStatus> {
        let text = fs::read_to_string(self.exit_file(id)).ok()?;
        Some(ExitStatus {
            exit_code: text.trim().parse().ok(),
        })
    }

    /// Whether the monitor has finished with the container (its exit file exists).
    pub fn has_finished(&self, id: &str) -> bool {
        self.exit_file(id).exists()
    }
}
