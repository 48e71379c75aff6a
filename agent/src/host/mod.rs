//! The host hostnetd manages: its directories, the datapath, the store, and reconciliation of
//! containers whose supervising process died. Each verb of the Host has a file of its own
//! below; they build on this one, never this one on them.
pub mod attach;
pub mod control;
pub mod engine;
pub mod exec;
pub mod images;
pub mod monitor;
mod qdisc;
pub mod run;
pub mod start;
pub mod stats;
pub mod top;
pub mod update;
use std::{
    collections::HashSet,
    fs, io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use crate::{
    datapath::{
        default_port_rows, ensure_bpffs, BpfLogLevel, Datapath, DatapathError, DatapathOptions,
        KernelFeatures, TcAttach,
    },
    images::{ImageError, ImageStore},
    ownership::{
        self, capacity::TableFull, reserved_ports::ReservedPorts, sockets::ProcFs, OwnershipError,
    },
    policy::logs::{DisplaySize, LogLimits},
    runtime::{supervise::LivenessCache, unmount_rootfs, Runc, RuntimeError},
    store::{ContainerRecord, ContainerState, HostLock, Store, StoreError},
    sys::{
        cgroup::{Cgroup2, CgroupError},
        listing::KeptListing,
        process::ProcessIdentity,
        safe_remove,
        time::now,
    },
};

/// runc's cgroup, below the container's.
pub const RUNC_CGROUP: &str = "ctr";

/// The monitors' cgroup, below the cgroup parent beside the containers' (whose names are
/// 64 hexadecimal digits).
pub const MONITORS_CGROUP: &str = "monitors";

/// Where hostnetd keeps its state; each has a command-line flag and environment variable.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Container records and the host lock (/var/lib/hostnetd).
    pub state_dir: PathBuf,
    /// Bundles and runc's state: gone at reboot, like the containers (/run/hostnetd).
    pub run_dir: PathBuf,
    /// The BPF filesystem mount (/sys/fs/bpf).
    pub bpffs: PathBuf,
    /// hostnetd's pins below it (/sys/fs/bpf/hostnetd).
    pub bpf_dir: PathBuf,
    /// The cgroup, relative to the cgroup2 root, that holds every container (hostnetd).
    pub cgroup_parent: String,
    pub runc: PathBuf,
    /// Keep host processes off container-owned ports (`--no-host-protection` turns it off).
    pub host_protection: bool,
    /// The interfaces to put fq on so that bandwidth limits pace, comma-separated, or `all`
    /// (`--manage-qdisc`); empty: none.
    pub manage_qdisc: String,
    /// aya-log level the programs are loaded with.
    pub bpf_log_level: BpfLogLevel,
    /// How the TC programs attach to the host's interfaces (`--tc-attach`).
    pub tc_attach: TcAttach,
    /// What a container's log keeps unless its `--log-opt`s say otherwise (`--log-max-size`,
    /// `--log-max-file`).
    pub log_limits: LogLimits,
    /// Owned ports that get a counter row of their own when the datapath is loaded
    /// (`--traffic-rows`); unset: as many as 16 MiB pays for on this host's CPUs.
    pub traffic_rows: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the name {name:?} is already used by container {id}; pick another --name or remove it with `hostnetd rm {name}`")]
    NameInUse { name: String, id: String },
    #[error("container {name} is {state}: stop it first, or remove it with --force")]
    StillRunning { name: String, state: &'static str },
    #[error("container {name} is {state}, not running")]
    NotRunning { name: String, state: &'static str },
    #[error("container {name} is run by {engine}: use `{engine} {verb} {engine_name}`; hostnetd only owns its ports and policy")]
    EngineOwned {
        name: String,
        engine: String,
        engine_name: String,
        verb: &'static str,
    },
    #[error("cannot start the process in container {name}: {reason}")]
    ExecFailed { name: String, reason: String },
    #[error("the container failed to start: {0}")]
    StartFailed(String),
    #[error(transparent)]
    TableFull(#[from] TableFull),
}

impl HostConfig {
    /// Depth of container cgroups (`<parent>/<id>`) below the cgroup2 root.
    pub fn container_level(&self) -> u32 {
        let parent = self
            .cgroup_parent
            .split('/')
            .filter(|c| !c.is_empty())
            .count();
        parent as u32 + 1
    }

    /// A container's cgroup relative to the cgroup2 root (`hostnetd/<id>`): it owns the ports.
    pub fn container_cgroup(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent.trim_matches('/'))
    }

    /// Where the monitors run (`hostnetd/monitors`), apart from the daemon's cgroup: a host
    /// socket's holder is looked for among the processes of the cgroup that made it, and
    /// where the daemon shares its cgroup with host services (a host without systemd), 500
    /// containers' monitors there made that search grow with the containers.
    pub fn monitors_cgroup(&self) -> String {
        format!("{}/{MONITORS_CGROUP}", self.cgroup_parent.trim_matches('/'))
    }

    /// A container's cgroup as /proc/PID/cgroup names it (`/hostnetd/<id>`).
    pub fn container_cgroup_dir(&self, id: &str) -> String {
        format!("/{}", self.container_cgroup(id))
    }

    /// runc's `cgroupsPath`: the container's process runs in a child of the owning cgroup.
    pub fn runc_cgroups_path(&self, id: &str) -> String {
        format!("{}/{RUNC_CGROUP}", self.container_cgroup_dir(id))
    }

    /// What the datapath is loaded with here; refused, changing nothing, on a kernel below
    /// hostnetd's floor or without the TC attach mode asked for.
    pub fn datapath_options(&self) -> Result<DatapathOptions, HostError> {
        let features = KernelFeatures::host();
        features.require_floor().map_err(DatapathError::from)?;
        Ok(DatapathOptions {
            container_level: self.container_level(),
            host_protection: self.host_protection,
            log_level: self.bpf_log_level.as_u8(),
            set_retval: features.set_retval,
            bpf_lsm: features.bpf_lsm,
            tc_mode: (self.tc_attach.resolve(&features)).map_err(DatapathError::from)?,
            traffic_rows: self.traffic_rows.unwrap_or_else(default_port_rows),
        })
    }

    /// The global flags that give another hostnetd process (a monitor, a daemon) this config.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: &std::ffi::OsStr| {
            args.push(name.into());
            args.push(value.to_os_string());
        };
        flag("--state-dir", self.state_dir.as_os_str());
        flag("--run-dir", self.run_dir.as_os_str());
        flag("--bpffs", self.bpffs.as_os_str());
        flag("--bpf-dir", self.bpf_dir.as_os_str());
        flag("--cgroup-parent", self.cgroup_parent.as_ref());
        flag("--runc", self.runc.as_os_str());
        if !self.host_protection {
            args.push("--no-host-protection".into());
        }
        if !self.manage_qdisc.is_empty() {
            args.push("--manage-qdisc".into());
            args.push(self.manage_qdisc.clone().into());
        }
        if self.bpf_log_level != BpfLogLevel::Off {
            args.push("--bpf-log-level".into());
            args.push(self.bpf_log_level.as_str().into());
        }
        if self.tc_attach != TcAttach::Auto {
            args.push("--tc-attach".into());
            args.push(self.tc_attach.as_str().into());
        }
        if let Some(rows) = self.traffic_rows {
            args.push("--traffic-rows".into());
            args.push(rows.to_string().into());
        }
        if self.log_limits != LogLimits::DEFAULT {
            args.push("--log-max-size".into());
            args.push(DisplaySize(self.log_limits.max_size).to_string().into());
            args.push("--log-max-file".into());
            args.push(self.log_limits.max_file.to_string().into());
        }
        args
    }
}

pub struct Host {
    pub(crate) config: HostConfig,
    pub(crate) store: Store,
    pub(crate) cgroup: Cgroup2,
    pub(crate) runc: Runc,
    pub(crate) procfs: ProcFs,
    pub(crate) reserved: ReservedPorts,
    pub(crate) images: ImageStore,
    /// Whether this process has swept the kernel's tables for entries no record owns.
    swept: AtomicBool,
    /// The live containers' supervisors, checked on every command.
    supervisors: LivenessCache,
    /// The containers attached in the kernel and the writable layers on disk, as last listed
    /// (each command looks for those no record accounts for).
    attached: KeptListing,
    writable_layers: KeptListing,
}

impl Host {
    pub fn open(config: HostConfig) -> Result<Self, HostError> {
        Self::open_in(config, None)
    }

    /// A host working in the cgroup2 mount `cgroup2` when a parent process found it already
    /// (a monitor's daemon), else in the one the mount table names.
    pub fn open_in(config: HostConfig, cgroup2: Option<&Path>) -> Result<Self, HostError> {
        let cgroup = match cgroup2 {
            Some(mount) => Cgroup2::at(mount)?,
            None => Cgroup2::host()?,
        };
        let store = Store::open(&config.state_dir)?;
        let runc = Runc::new(&config.runc, config.run_dir.join("runc"));
        let images = ImageStore::open(&config.state_dir)?;
        Ok(Self {
            images,
            config,
            store,
            procfs: ProcFs::host(cgroup.mount()),
            cgroup,
            runc,
            reserved: ReservedPorts::host(),
            swept: AtomicBool::new(false),
            supervisors: LivenessCache::default(),
            attached: KeptListing::default(),
            writable_layers: KeptListing::default(),
        })
    }

    /// Keeps this process's listing of the records whole, reading again only what changed
    /// (the daemon's: it lists them on every command).
    pub fn watch_records(&self) -> Result<(), HostError> {
        Ok(self.store.watch()?)
    }

    /// Takes the host lock and opens (loading if need be) the datapath, as this kernel's
    /// features allow.
    pub(crate) fn lock_datapath(&self) -> Result<(HostLock, Datapath), HostError> {
        let options = self.config.datapath_options()?;
        let lock = self.store.lock()?;
        ensure_bpffs(&self.config.bpffs)?;
        let datapath = Datapath::open_or_load(&self.config.bpf_dir, &self.cgroup, &options)?;
        Ok((lock, datapath))
    }

    /// Every container, after releasing those whose supervisor died, so no dead one shows as live.
    pub fn list(&self) -> Result<Vec<Arc<ContainerRecord>>, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        self.reconcile(&mut datapath)
    }

    /// Releases what every dead supervisor left behind: ports, links, cgroups, bundles.
    /// Returns every record as it stands afterwards, so that callers under the same lock need
    /// not read them all again (each is a file: admission time would grow with the count).
    pub(crate) fn reconcile(
        &self,
        datapath: &mut Datapath,
    ) -> Result<Vec<Arc<ContainerRecord>>, HostError> {
        let mut records = self.store.list()?;
        let mut released = false;
        let live = || records.iter().filter(|r| r.state.is_live());
        let dead = (self.supervisors).dead_among(live().map(|record| &record.supervisor));
        for record in live() {
            if dead.contains(&record.supervisor) {
                eprintln!(
                    "hostnetd: container {} lost its {} (pid {}); releasing its ports",
                    record.name,
                    if record.is_own() {
                        "supervisor"
                    } else {
                        "main process"
                    },
                    record.supervisor.pid
                );
                let disposition = if record.auto_remove || !record.is_own() {
                    Disposition::Forget
                } else {
                    Disposition::Keep(None)
                };
                self.release(datapath, record, disposition)?;
                released = true;
            }
        }
        {
            let known: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            for orphan in datapath
                .attached_containers_kept(&self.attached)
                .iter()
                .filter(|id| !known.contains(id.as_str()))
            {
                datapath.detach_container(orphan)?;
            }
            self.store
                .remove_orphan_writable_layers(&known, &self.writable_layers)?;
        }
        if released {
            records = self.store.list()?;
        }
        let supervising: HashSet<ProcessIdentity> = (records.iter())
            .filter(|record| record.state.is_live())
            .map(|record| record.supervisor)
            .collect();
        self.supervisors
            .retain(|process| supervising.contains(process));
        // Entries no record owns are left only by a process that died half-way: its
        // containers' supervisors are then found dead above, or it was this daemon, whose
        // successor sweeps once when it starts. Sweeping on every command would walk every
        // key of every table, a cost that grows with the containers.
        if released || !self.has_swept() {
            let live: HashSet<u64> = (records.iter())
                .filter(|record| record.state.is_live())
                .map(|record| record.cgroup.id)
                .collect();
            datapath.owners().sweep_addresses(&live)?;
            datapath.policies().sweep(&live)?;
            datapath.traffic().sweep(&live)?;
            datapath.owners().sweep_rows()?;
            self.swept.store(true, Ordering::Relaxed);
        }
        Ok(records)
    }

    /// Whether this process has swept the kernel's tables clean of entries no live record
    /// accounts for (an admission may then count entries from the records).
    pub(crate) fn has_swept(&self) -> bool {
        self.swept.load(Ordering::Relaxed)
    }

    /// Undoes everything a container holds, in the reverse order of acquisition, then keeps its
    /// record as exited or forgets it. Safe to repeat: each step tolerates "already gone".
    pub(crate) fn release(
        &self,
        datapath: &mut Datapath,
        record: &ContainerRecord,
        disposition: Disposition,
    ) -> Result<(), HostError> {
        if record.is_own() {
            self.runc.delete(&record.id).map_err(RuntimeError::from)?;
        }
        // Read before the counters go: an exited container shows its last figures until rm.
        let final_traffic = match &disposition {
            Disposition::Keep(_) => Some(datapath.traffic_stats(record.cgroup.id)?),
            Disposition::Forget => None,
        };
        if record.is_own() {
            let bundle = self.bundle_dir(&record.id);
            unmount_rootfs(&bundle.join("rootfs"))?;
            remove_dir_all(&bundle)?;
        }
        datapath.detach_container(&record.id)?;
        ownership::release(datapath.owners(), record)?;
        datapath.policies().remove(record.cgroup.id)?;
        datapath.traffic().remove(record.cgroup.id)?;
        // An engine's container's cgroup is its runtime's to remove.
        if record.is_own() {
            record.cgroup.to_cgroup().remove()?;
            self.cgroup
                .remove_v1_twins(&self.config.container_cgroup(&record.id));
        }
        match disposition {
            Disposition::Forget => self.store.remove(&record.id)?,
            // `rm --force` may have removed the record meanwhile; it must stay removed.
            Disposition::Keep(_) if !self.store.contains(&record.id) => {}
            Disposition::Keep(exit_code) => self.store.save(&ContainerRecord {
                state: ContainerState::Exited,
                exit_code,
                pid: None,
                finished_at: last_finish(record),
                final_traffic,
                ..record.clone()
            })?,
        }
        ownership::sync_reserved_ports(&self.store, &self.reserved, &self.store.list()?)?;
        self.supervisors
            .retain(|process| *process != record.supervisor);
        Ok(())
    }

    /// Unloads hostnetd from the host: host protection detached, every pin removed, hostnetd's
    /// reserved ports returned. Refused while containers run.
    pub fn teardown(&self) -> Result<(), HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        self.reconcile(&mut datapath)?;
        let live: Vec<String> = (self.store.list()?.into_iter())
            .filter(|r| r.state.is_live())
            .map(|r| r.name.clone())
            .collect();
        if !live.is_empty() {
            return Err(HostError::Invalid(format!(
                "containers still running: {}; stop them first",
                live.join(", ")
            )));
        }
        ownership::sync_reserved_ports(&self.store, &self.reserved, &[])?;
        self.restore_qdiscs();
        datapath.unload()?;
        // Empty by now: monitors exit with their containers.
        let _ = fs::remove_dir(self.cgroup.path_of(&self.config.monitors_cgroup()));
        let parent = self.cgroup.path_of(&self.config.cgroup_parent);
        let _ = fs::remove_dir(parent);
        self.cgroup.remove_v1_twins(&self.config.cgroup_parent);
        Ok(())
    }

    pub(crate) fn bundle_dir(&self, id: &str) -> PathBuf {
        self.config.run_dir.join("containers").join(id)
    }

    pub(crate) fn identity() -> ProcessIdentity {
        ProcessIdentity::current()
    }
}

/// What happens to a container's record once its resources are released.
pub(crate) enum Disposition {
    /// Keep it, exited, with this exit code (unknown when the supervisor died).
    Keep(Option<i32>),
    Forget,
}

/// Removes a directory tree, never crossing into another mount (see `safe_remove`).
pub(crate) fn remove_dir_all(path: &Path) -> Result<(), HostError> {
    safe_remove::remove_tree(path).map_err(|error| HostError::Invalid(error.to_string()))
}

/// When the container stopped running: the monitor recorded its exit already (an event was
/// dated from it), unless the container was lost while running.
fn last_finish(record: &ContainerRecord) -> Option<u64> {
    match (record.state, record.finished_at) {
        (ContainerState::Running, _) | (_, None) => Some(now()),
        (_, finished) => finished,
    }
}
