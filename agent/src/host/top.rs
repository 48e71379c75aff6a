//! `top`: the processes of a running container, wherever in its cgroup subtree they are
//! (its main process, what it started, `exec`'d ones).
use super::{Host, HostError};
use crate::{
    store::ContainerState,
    sys::{cgroup::processes_below, process::ProcessInfo},
};

impl Host {
    pub fn top(&self, reference: &str) -> Result<Vec<ProcessInfo>, HostError> {
        let record = self.store.find(reference)?;
        if record.state != ContainerState::Running {
            return Err(HostError::NotRunning {
                name: record.name,
                state: record.state.as_str(),
            });
        }
        let mut processes: Vec<ProcessInfo> = (processes_below(&record.cgroup.path).into_iter())
            .filter_map(ProcessInfo::read)
            .collect();
        processes.sort_by_key(|process| process.pid);
        Ok(processes)
    }
}
