//! `hostnetd monitor ID`: the process that owns one container's life, independent of the
//! daemon. It mounts the container's root filesystem in a mount namespace of its own (the
//! host's never shows it), holds the container's stdio and writes its log, starts it through
//! runc, waits
//! for it, applies the restart policy (the ports stay owned across restarts), records the exit
//! code and finally releases everything. The daemon may be stopped or killed meanwhile.
use std::{
    fs, io,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use super::{
    run::{io_error, MONITOR_FAILED, MONITOR_RUNNING},
    Disposition, Host, HostError,
};
use crate::{
    policy::restart::RestartPolicy,
    runtime::{
        attach::{self, Attachments},
        logs::LogWriter,
        stdio::{Relays, RunIo},
        supervise::{become_subreaper, wait_exit_code},
        RuntimeError,
    },
    store::{ContainerRecord, ContainerState},
    sys::{mounts, time},
};

/// How long the output of an exited container may take to reach the log and the clients.
const LAST_OUTPUT: Duration = Duration::from_secs(2);

/// Where the container's output goes, and its input comes from, across its runs.
struct ContainerIo<'a> {
    log: &'a LogWriter,
    attachments: &'a Attachments,
}

impl Host {
    /// The monitor's whole life; `report` receives one line once the container first runs or
    /// fails to.
    pub fn monitor(&self, id: &str, mut report: impl io::Write) -> Result<(), HostError> {
        // First, while this process has one thread: the kernel gives a new mount namespace
        // only to a process that shares its filesystem context with no other thread.
        if let Err(error) = mounts::enter_private_mount_namespace() {
            // The root filesystem is then mounted in the host's namespace, as a daemon crash
            // recovery expects anyway; only the host's mount table grows.
            eprintln!("hostnetd monitor: mounting in the host's mount namespace: {error}");
        }
        leave_the_daemons_session().map_err(|e| io_error("start a session for", id, e))?;
        become_subreaper().map_err(|e| io_error("become subreaper for", id, e))?;
        self.move_to_monitors_cgroup();
        let record = self.adopt(id)?;
        let log_path = self.store.log_path(id);
        let log = LogWriter::open(&log_path, record.log_limits)
            .map_err(|e| io_error("open", log_path.display(), e))?;
        let socket = attach::socket_path(&self.config.run_dir, id);
        // What a terminal or an open stdin shows before the first client attaches is kept
        // for it: `run -i -t` attaches just after the start.
        let attachments = Attachments::serve(&socket, record.tty || record.open_stdin)
            .map_err(|e| io_error("serve attach socket", socket.display(), e))?;
        let io = ContainerIo {
            log: &log,
            attachments: &attachments,
        };
        let outcome = (self.mount_bundle_rootfs(&record))
            .and_then(|()| self.run_with_restarts(record, &io, &mut report));
        let released = self.finish(id, &outcome);
        attachments.close();
        self.write_exit_file(id, outcome.as_ref().ok().copied());
        if let Err(error) = &outcome {
            // Reported only now: whoever waits for the start sees nothing left behind.
            let _ = writeln!(report, "{MONITOR_FAILED} {error}");
        }
        released.and(outcome.map(drop))
    }

    /// Moves this process into the monitors' cgroup, beside the start rather than before it:
    /// a move waits for an RCU grace period (the kernel's cgroup threadgroup lock, 6-16 ms on
    /// an idle host), and nothing of the start needs it done. Until then, and if it fails,
    /// the monitor works as well from the daemon's cgroup; only the holder search is slower.
    fn move_to_monitors_cgroup(&self) {
        let cgroup = self.cgroup.clone();
        let monitors = self.config.monitors_cgroup();
        let moved = thread::Builder::new()
            .name("cgroup-move".into())
            .spawn(move || {
                if let Err(error) = cgroup.enter(&monitors) {
                    eprintln!("hostnetd monitor: staying in the daemon's cgroup: {error}");
                }
            });
        if let Err(error) = moved {
            eprintln!("hostnetd monitor: staying in the daemon's cgroup: {error}");
        }
    }

    /// Makes this process the container's recorded supervisor.
    fn adopt(&self, id: &str) -> Result<ContainerRecord, HostError> {
        let _lock = self.store.lock()?;
        let record = self
            .store
            .get(id)?
            .ok_or_else(|| HostError::Invalid(format!("no container {id}")))?;
        let record = ContainerRecord {
            supervisor: Host::identity(),
            ..record
        };
        self.store.save_until_reboot(&record)?;
        Ok(record)
    }

    /// Runs the container until it exits for good; returns its last exit code.
    fn run_with_restarts(
        &self,
        mut record: ContainerRecord,
        io: &ContainerIo,
        report: &mut impl io::Write,
    ) -> Result<i32, HostError> {
        let mut first = true;
        loop {
            let (pid, relays) = self.start_once(&record, io, !first)?;
            if std::mem::take(&mut first) {
                let _ = writeln!(report, "{MONITOR_RUNNING} {pid}");
            }
            let code =
                wait_exit_code(pid).map_err(|e| io_error("wait for", format!("pid {pid}"), e))?;
            // Clients get all of the output before they hear of the exit.
            relays.finish(LAST_OUTPUT);
            io.attachments.exited(code);
            record = self.record_exit(&record.id, code)?;
            if !record
                .restart
                .restarts_after(code, record.restart_count, record.stop_requested)
            {
                return Ok(code);
            }
            eprintln!(
                "hostnetd monitor: {} exited with {code}; restarting ({})",
                record.name, record.restart
            );
            if !self.sleep_unless_stopped(&record.id, RestartPolicy::delay(record.restart_count)) {
                return Ok(code);
            }
            record = self.update(&record.id, |r| r.restart_count += 1)?;
        }
    }

    /// Runs the container once; `restart`: it ran before under this id.
    fn start_once(
        &self,
        record: &ContainerRecord,
        io: &ContainerIo,
        restart: bool,
    ) -> Result<(u32, Relays), HostError> {
        let bundle = self.bundle_dir(&record.id);
        let pid_file = bundle.join("pid");
        let _ = fs::remove_file(&pid_file);
        if restart {
            // A restart reuses the id: runc must forget the previous run first.
            self.runc.delete(&record.id).map_err(RuntimeError::from)?;
        }
        let console =
            attach::socket_path(&self.config.run_dir, &record.id).with_extension("console");
        let mut run_io = RunIo::prepare(record.tty, record.open_stdin, &console)
            .map_err(|e| io_error("prepare the stdio of", &record.id, e))?;
        let stdio = run_io.for_runc().expect("stdio taken once");
        (self.runc.run_detached(
            &record.id,
            &bundle,
            &pid_file,
            &bundle.join("runc.log"),
            stdio,
        ))
        .map_err(RuntimeError::from)?;
        let relays = (run_io.connect(io.attachments, io.log))
            .map_err(|e| io_error("connect the stdio of", &record.id, e))?;
        let pid = read_pid(&pid_file)?;
        // Only now has it run: a failed `runc run` leaves a container that never ran, which
        // `finish` forgets rather than keeping it as exited.
        self.update(&record.id, |r| {
            r.state = ContainerState::Running;
            r.pid = Some(pid);
            r.started_at = Some(time::now());
        })?;
        Ok((pid, relays))
    }

    fn record_exit(&self, id: &str, code: i32) -> Result<ContainerRecord, HostError> {
        self.update(id, |r| {
            r.state = ContainerState::Restarting;
            r.pid = None;
            r.exit_code = Some(code);
            r.finished_at = Some(time::now());
        })
    }

    /// Reads, changes and saves the record under the host lock, so that a concurrent `stop`
    /// (which sets `stop_requested`) is never overwritten.
    fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, HostError> {
        let _lock = self.store.lock()?;
        let mut record = self
            .store
            .get(id)?
            .ok_or_else(|| HostError::Invalid(format!("container {id} was removed")))?;
        change(&mut record);
        self.store.save_until_reboot(&record)?;
        Ok(record)
    }

    /// Waits out a restart back-off; false when a stop was requested meanwhile.
    fn sleep_unless_stopped(&self, id: &str, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50).min(deadline - Instant::now()));
            if self
                .store
                .get(id)
                .ok()
                .flatten()
                .is_none_or(|r| r.stop_requested)
            {
                return false;
            }
        }
        true
    }

    /// Releases the container's resources: kept as exited with its code, or forgotten (`--rm`,
    /// or a first start that failed).
    fn finish(&self, id: &str, outcome: &Result<i32, HostError>) -> Result<(), HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        let Some(record) = self.store.get(id)? else {
            return Ok(());
        };
        let never_ran = outcome.is_err() && record.started_at.is_none();
        let disposition = match outcome {
            _ if record.auto_remove || never_ran => Disposition::Forget,
            Ok(code) => Disposition::Keep(Some(*code)),
            Err(_) => Disposition::Keep(record.exit_code),
        };
        self.release(&mut datapath, &record, disposition)
    }

    /// `<run_dir>/exits/<id>`: the final exit code, for whoever waits on a container that
    /// `--rm` has already forgotten.
    pub(crate) fn exit_file(&self, id: &str) -> PathBuf {
        self.config.run_dir.join("exits").join(id)
    }

    fn write_exit_file(&self, id: &str, code: Option<i32>) {
        let path = self.exit_file(id);
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let text = code.map_or_else(|| "failed".to_string(), |c| c.to_string());
        let _ = fs::write(path, text);
    }
}

/// A session of its own, as the monitor's first act: it outlives the daemon and never gets the
/// signals of a terminal the daemon was started from.
fn leave_the_daemons_session() -> io::Result<()> {
    // SAFETY: setsid takes no arguments; it fails only for a process group leader, which a
    // process the daemon spawned is not.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_pid(path: &std::path::Path) -> Result<u32, HostError> {
    let text =
        fs::read_to_string(path).map_err(|source| io_error("read", path.display(), source))?;
    text.trim()
        .parse()
        .map_err(|_| HostError::Invalid(format!("runc wrote no pid to {}", path.display())))
}
