//! Container records and the host lock, under the state directory (/var/lib/hostnetd).
//!
//! Layout:
//! ```text
//! lock                     flock(2)-ed by every command that changes ownership
//! containers/<id>.json     one ContainerRecord per container
//! logs/<id>.log            the container's output (json lines), kept until `rm`
//! logs/<id>.log.N          its rotated files, .1 the newest (see crate::runtime::logs)
//! rootfs/<id>/             an image container's writable layer, kept until `rm`
//! images/                  the image store (see crate::images)
//! reserved-ports.json      ports hostnetd added to net.ipv4.ip_local_reserved_ports
//! ```
//! Every file is written to a temporary sibling and renamed over the old one, so a crash
//! mid-write leaves the old or the new content, never a torn one. What must survive a power
//! loss is fsynced too (by the daemon's background thread, off the command's path); what a
//! reboot makes moot is not ([`Durability`]).
pub mod traffic;
mod watch;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    ffi::{OsStr, OsString},
    fs::{self, File},
    io::{self, Read as _},
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    policy::{logs::LogLimits, restart::RestartPolicy, OwnedPort},
    sys::{
        cgroup::ContainerCgroup,
        files::{self, lock_file, read_json, write_json, write_json_with, Durability, FileError},
        listing::KeptListing,
        process::ProcessIdentity,
        safe_remove::{self, RemoveError},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container reference {reference:?} is ambiguous: it matches {matches}")]
    Ambiguous { reference: String, matches: String },
    #[error(transparent)]
    Remove(#[from] RemoveError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Admitted: ports claimed, cgroup made, not running yet.
    Created,
    Running,
    /// Exited, and waiting out the restart policy's back-off; its ports stay owned.
    Restarting,
    Exited,
}

impl ContainerState {
    /// Whether the container holds its ports and cgroup (every state but exited).
    pub fn is_live(self) -> bool {
        self != Self::Exited
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortClaim {
    pub port: OwnedPort,
    /// `None`: any local address; otherwise the only addresses the container may bind.
    pub addresses: Option<Vec<IpAddr>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    pub path: PathBuf,
    pub id: u64,
    pub level: u32,
}

impl From<&ContainerCgroup> for CgroupRecord {
    fn from(cgroup: &ContainerCgroup) -> Self {
        Self {
            path: cgroup.path.clone(),
            id: cgroup.id,
            level: cgroup.level,
        }
    }
}

impl CgroupRecord {
    pub fn to_cgroup(&self) -> ContainerCgroup {
        ContainerCgroup {
            path: self.path.clone(),
            id: self.id,
            level: self.level,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The host directory given with --rootfs (empty for an image).
    pub rootfs: PathBuf,
    #[serde(default)]
    pub image: Option<ContainerImage>,
    pub command: Vec<String>,
    /// The --ports values as given, for display.
    pub port_specs: Vec<String>,
    pub ports: Vec<PortClaim>,
    /// Egress rules as given (`10.0.0.0/8:5432/tcp`).
    #[serde(default)]
    pub egress_allow: Vec<String>,
    #[serde(default)]
    pub egress_deny: Vec<String>,
    /// Ingress rules as given.
    #[serde(default)]
    pub ingress_allow: Vec<String>,
    /// Raw and packet sockets allowed (`--cap-add NET_RAW`).
    #[serde(default)]
    pub allow_raw_sockets: bool,
    /// Bandwidth limits (`--egress-rate`, `--ingress-rate`), in their canonical text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<String>,
    pub cgroup: CgroupRecord,
    /// An update of the container's policy began and has not finished: the owner table may
    /// hold slots of this container that `ports` does not list, so its next update or release
    /// searches the whole table.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_in_progress: bool,
    pub state: ContainerState,
    /// The `hostnetd monitor` process that runs and waits for the container.
    pub supervisor: ProcessIdentity,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How much output its log keeps (`--log-opt`, over config.toml's defaults).
    #[serde(default)]
    pub log_limits: LogLimits,
    #[serde(default)]
    pub restart_count: u32,
    /// Set by stop, kill and rm, so that the restart policy leaves the container down.
    #[serde(default)]
    pub stop_requested: bool,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub auto_remove: bool,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// The last counters of an exited container (a live one's are read from the kernel).
    #[serde(default)]
    pub final_traffic: Option<traffic::TrafficStats>,
    /// Set for a container an engine (Docker, containerd, podman) runs through hostnetd-runc:
    /// the engine owns its process, bundle and cgroup; hostnetd its ports and policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineContainer>,
    /// It has a terminal (`run -t`).
    #[serde(default)]
    pub tty: bool,
    /// Its stdin is open to attached clients (`run -i`).
    #[serde(default)]
    pub open_stdin: bool,
}

/// Who runs an engine's container, as hostnetd-runc found it at `create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineContainer {
    /// `docker`, `containerd`, `podman`, `kubernetes`, or `oci` for an engine not recognised.
    pub engine: String,
    /// The engine's own name for it (`web` for `docker run --name web`), else its ID.
    pub name: String,
    /// The image as the engine names it, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The image a container runs, as resolved when it was created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerImage {
    /// The image ID (its config digest).
    pub id: String,
    /// As `ps` shows it: `nginx:latest`.
    pub name: String,
    /// Its unpacked layers, top first: the overlay's lower directories.
    pub layers: Vec<PathBuf>,
    pub exposed_ports: Vec<String>,
    /// The image's StopSignal, which `stop` sends instead of SIGTERM.
    pub stop_signal: Option<String>,
}

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// Whether hostnetd runs the container itself (its monitor, bundle and cgroup), rather
    /// than an engine through hostnetd-runc.
    pub fn is_own(&self) -> bool {
        self.engine.is_none()
    }
}

pub struct Store {
    dir: PathBuf,
    /// Records as last read, by file name: the daemon lists every record on each command, and
    /// parsing hundreds of unchanged files again made each command slower with every container.
    cache: Mutex<HashMap<OsString, (FileStamp, Arc<ContainerRecord>)>>,
    /// The daemon's listing, kept whole while inotify names no change ([`Store::watch`]).
    watched: Mutex<Option<WatchedRecords>>,
}

struct WatchedRecords {
    watch: watch::DirectoryWatch,
    records: HashMap<OsString, Arc<ContainerRecord>>,
}

fn is_record_file(name: &Path) -> bool {
    name.extension().is_some_and(|ext| ext == "json")
}

/// What tells one version of a record file from another. Records are never written in place
/// (a new file is renamed over the old), so a new version has a new inode; a cached version is
/// trusted only once its modification time is [`FileStamp::SETTLED`] old, so that an inode
/// freed and reused within one tick of the file system's clock cannot pass for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    inode: u64,
    size: u64,
    modified: (i64, i64),
}

impl FileStamp {
    const SETTLED: Duration = Duration::from_secs(1);

    fn of(metadata: &fs::Metadata) -> Self {
        Self {
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
        }
    }

    pub fn is_settled(&self) -> bool {
        let modified = UNIX_EPOCH + Duration::new(self.modified.0.max(0) as u64, 0);
        SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age > Self::SETTLED)
    }
}

/// Held while ownership changes; released on drop (closing the file releases the flock).
pub struct HostLock {
    _file: File,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for sub in ["containers", "logs", "specs"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error("create", &path))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            cache: Mutex::default(),
            watched: Mutex::default(),
        })
    }

    /// Blocks until this process holds the host-wide lock.
    pub fn lock(&self) -> Result<HostLock, StoreError> {
        let path = self.dir.join("lock");
        let file = lock_file(&path, libc::LOCK_EX).map_err(io_error("lock", &path))?;
        Ok(HostLock { _file: file })
    }

    /// A stamp of the records' directory, which changes whenever a record is written or
    /// removed (each write renames a new file into it); None when it cannot be read.
    pub fn records_stamp(&self) -> Option<FileStamp> {
        let metadata = fs::metadata(self.dir.join("containers")).ok()?;
        Some(FileStamp::of(&metadata))
    }

    /// From now on, this process's listing is kept whole and only records that inotify says
    /// changed are read again: for the daemon, which lists the records on every command.
    pub fn watch(&self) -> Result<(), StoreError> {
        let dir = self.dir.join("containers");
        // Watching first: a record written meanwhile is read again, never missed.
        let watch = watch::DirectoryWatch::new(&dir).map_err(io_error("watch", &dir))?;
        let records = self.read_all()?;
        *self.watched.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(WatchedRecords { watch, records });
        Ok(())
    }

    /// Every record, oldest first. Files unchanged since this process last read them are not
    /// read again, and the records are shared, not copied: the daemon lists them all on
    /// every command.
    pub fn list(&self) -> Result<Vec<Arc<ContainerRecord>>, StoreError> {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let mut records: Vec<Arc<ContainerRecord>> = match watched.as_mut() {
            Some(watched) => {
                self.catch_up(watched)?;
                watched.records.values().cloned().collect()
            }
            None => {
                drop(watched);
                return self.list_unwatched();
            }
        };
        records.sort_by_key(|record| record.created_at);
        Ok(records)
    }

    /// Reads again the records inotify named since the last listing.
    fn catch_up(&self, watched: &mut WatchedRecords) -> Result<(), StoreError> {
        let dir = self.dir.join("containers");
        match watched.watch.changes() {
            watch::Changes::Unknown => watched.records = self.read_all()?,
            watch::Changes::Named(names) => {
                for name in names {
                    if !is_record_file(Path::new(&name)) {
                        continue;
                    }
                    match read_stamped(&dir.join(&name))? {
                        Some((_, record)) => watched.records.insert(name, Arc::new(record)),
                        None => watched.records.remove(&name),
                    };
                }
            }
        }
        Ok(())
    }

    /// Every record file, read.
    fn read_all(&self) -> Result<HashMap<OsString, Arc<ContainerRecord>>, StoreError> {
        let mut records = HashMap::new();
        for entry in self.record_files()? {
            if let Some((_, record)) = read_stamped(&entry.path())? {
                records.insert(entry.file_name(), Arc::new(record));
            }
        }
        Ok(records)
    }

    /// The entries of the records' directory that are records (not a write's temporary file).
    fn record_files(&self) -> Result<Vec<fs::DirEntry>, StoreError> {
        let dir = self.dir.join("containers");
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("read", &dir))? {
            let entry = entry.map_err(io_error("read", &dir))?;
            if is_record_file(Path::new(&entry.file_name())) {
                files.push(entry);
            }
        }
        Ok(files)
    }

    fn list_unwatched(&self) -> Result<Vec<Arc<ContainerRecord>>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut records = Vec::new();
        let mut listed = HashSet::new();
        for entry in self.record_files()? {
            let path = entry.path();
            let name = entry.file_name();
            // Through the directory's descriptor (fstatat), not the whole path again.
            let Some(record) = read_cached(&mut cache, &name, &path, entry.metadata())? else {
                continue;
            };
            records.push(record);
            listed.insert(name);
        }
        cache.retain(|name, _| listed.contains(name));
        records.sort_by_key(|record: &Arc<ContainerRecord>| record.created_at);
        Ok(records)
    }

    /// Finds a container by exact name, exact id, or unique id prefix.
    pub fn find(&self, reference: &str) -> Result<ContainerRecord, StoreError> {
        let records = self.list()?;
        if let Some(record) = records
            .iter()
            .find(|r| r.name == reference || r.id == reference)
        {
            return Ok(ContainerRecord::clone(record));
        }
        let matches: Vec<_> = records
            .into_iter()
            .filter(|r| r.id.starts_with(reference))
            .collect();
        match matches.as_slice() {
            [one] => Ok(ContainerRecord::clone(one)),
            [] => Err(StoreError::NotFound(reference.to_string())),
            many => Err(StoreError::Ambiguous {
                reference: reference.to_string(),
                matches: many
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Saves a record that must outlive a reboot: a new container, a new name, an exit.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        Ok(write_json(&self.record_path(&record.id), record)?)
    }

    /// Saves what only a running machine needs (a running container's pid and state, an
    /// update under way): a reboot makes it moot, so it is never waited for on disk.
    pub fn save_until_reboot(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.id);
        Ok(write_json_with(&path, record, Durability::UntilReboot)?)
    }

    /// The record with exactly this id, if it still exists.
    pub fn get(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        read_unless_removed(&self.record_path(id))
    }

    /// The container's OCI configuration as it was first run, kept so that `start` runs the
    /// same process again once its bundle is gone.
    pub fn spec_path(&self, id: &str) -> PathBuf {
        self.dir.join("specs").join(format!("{id}.json"))
    }

    pub fn save_spec(&self, id: &str, spec: &serde_json::Value) -> Result<(), StoreError> {
        Ok(write_json(&self.spec_path(id), spec)?)
    }

    /// The kept configuration; None for a container recorded before specs were kept.
    pub fn spec(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        read_unless_removed(&self.spec_path(id))
    }

    /// The container's output, one JSON entry per line (see [`crate::runtime::logs`]).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{id}.log"))
    }

    /// What the container's monitor itself reports (start failures, restarts).
    pub fn monitor_log_path(&self, id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{id}.monitor.log"))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.record_path(id).exists()
    }

    /// Forgets the container: its record and its logs.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let writable = self.writable_layer_dir(id);
        match fs::remove_dir_all(&writable) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(io_error("remove", &writable)(error));
            }
            _ => {}
        }
        let mut files = vec![
            self.record_path(id),
            self.spec_path(id),
            self.monitor_log_path(id),
        ];
        files.extend(self.log_files(id)?);
        for path in files {
            match fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error("remove", &path)(error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The container's log and every file its rotation made (`<id>.log.1`, ...), whatever
    /// its limits were.
    fn log_files(&self, id: &str) -> Result<Vec<PathBuf>, StoreError> {
        let dir = self.dir.join("logs");
        let prefix = format!("{id}.log");
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("read", &dir))? {
            let entry = entry.map_err(io_error("read", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let rest = name.strip_prefix(&prefix);
            if rest.is_some_and(|rest| rest.is_empty() || rest.starts_with('.')) {
                files.push(entry.path());
            }
        }
        Ok(files)
    }

    /// An image container's own writable layer (overlayfs upper and work directories).
    pub fn writable_layer_dir(&self, id: &str) -> PathBuf {
        self.dir.join("rootfs").join(id)
    }

    /// Removes writable layers no record accounts for (a crash between `rm` and its cleanup).
    pub fn remove_orphan_writable_layers(
        &self,
        known: &HashSet<&str>,
        listing: &KeptListing,
    ) -> Result<(), StoreError> {
        let dir = self.dir.join("rootfs");
        for name in listing.names(&dir) {
            if !known.contains(name.as_str()) {
                let path = dir.join(name);
                // The upper and work directories of an overlay: nothing is mounted below,
                // and the removal would stop at a mount if something were.
                safe_remove::remove_tree(&path)?;
            }
        }
        Ok(())
    }

    /// Ports hostnetd itself added to the reserved-ports sysctl.
    pub fn reserved_by_us(&self) -> Result<BTreeSet<u16>, StoreError> {
        let path = self.dir.join("reserved-ports.json");
        if !path.exists() {
            return Ok(BTreeSet::new());
        }
        Ok(read_json(&path)?)
    }

    pub fn save_reserved_by_us(&self, ports: &BTreeSet<u16>) -> Result<(), StoreError> {
        // The kernel forgets its reserved ports at a reboot too.
        let path = self.dir.join("reserved-ports.json");
        Ok(write_json_with(&path, ports, Durability::UntilReboot)?)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join("containers").join(format!("{id}.json"))
    }
}

/// The record in `path`, from `cache` when the file is the version cached there.
fn read_cached(
    cache: &mut HashMap<OsString, (FileStamp, Arc<ContainerRecord>)>,
    name: &OsStr,
    path: &Path,
    metadata: io::Result<fs::Metadata>,
) -> Result<Option<Arc<ContainerRecord>>, StoreError> {
    let stamp = match metadata {
        Ok(metadata) => FileStamp::of(&metadata),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error("read", path)(source)),
    };
    if let Some((cached, record)) = cache.get(name) {
        if *cached == stamp {
            return Ok(Some(record.clone()));
        }
    }
    let Some((stamp, record)) = read_stamped(path)? else {
        cache.remove(name);
        return Ok(None);
    };
    let record = Arc::new(record);
    if stamp.is_settled() {
        cache.insert(name.to_os_string(), (stamp, record.clone()));
    } else {
        cache.remove(name);
    }
    Ok(Some(record))
}

/// A record and the stamp of the very file it was read from; None when it is not there.
fn read_stamped(path: &Path) -> Result<Option<(FileStamp, ContainerRecord)>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error("read", path)(source)),
    };
    let stamp = FileStamp::of(&file.metadata().map_err(io_error("read", path))?);
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(io_error("read", path))?;
    let record = files::parse_json(path, &text)?;
    Ok(Some((stamp, record)))
}

/// A record, or None when it is not there: `rm` of another container may remove a record
/// between a listing and its read (commands do not hold the host lock to read).
fn read_unless_removed<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, StoreError> {
    match read_json(path) {
        Ok(record) => Ok(Some(record)),
        Err(_) if !path.exists() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let to_file_error = files::io_error(action, path);
    move |source| StoreError::File(to_file_error(source))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hostnetd_common::Proto;

    /// The records as [`Store::list`] gives them, unshared for comparing.
    fn listed(store: &Store) -> Vec<ContainerRecord> {
        (store.list().unwrap().into_iter())
            .map(Arc::unwrap_or_clone)
            .collect()
    }

    fn temp_store(tag: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hostnetd-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (Store::open(&dir).unwrap(), dir)
    }

    /// A created container owning 127.0.0.1:20080/tcp.
    pub(crate) fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            rootfs: "/".into(),
            image: None,
            egress_allow: Vec::new(),
            egress_deny: Vec::new(),
            ingress_allow: Vec::new(),
            allow_raw_sockets: false,
            egress_rate: None,
            ingress_rate: None,
            command: vec!["true".into()],
            port_specs: vec!["127.0.0.1:20080/tcp".into()],
            ports: vec![PortClaim {
                port: OwnedPort {
                    proto: Proto::Tcp,
                    port: 20080,
                },
                addresses: Some(vec!["127.0.0.1".parse().unwrap()]),
            }],
            cgroup: CgroupRecord {
                path: "/sys/fs/cgroup/hostnetd/x".into(),
                id: 7,
                level: 2,
            },
            update_in_progress: false,
            state: ContainerState::Created,
            supervisor: ProcessIdentity {
                pid: 1,
                start_time: 2,
            },
            restart: RestartPolicy::No,
            log_limits: LogLimits::DEFAULT,
            restart_count: 0,
            stop_requested: false,
            pid: None,
            exit_code: None,
            auto_remove: true,
            created_at: 1,
            started_at: None,
            finished_at: None,
            final_traffic: None,
            engine: None,
            tty: false,
            open_stdin: false,
        }
    }

    #[test]
    fn records_roundtrip_and_are_found_by_name_id_and_prefix() {
        let (store, dir) = temp_store("find");
        let web = record("abcdef0123456789", "web1");
        store.save(&web).unwrap();
        store.save(&record("abc999", "web2")).unwrap();
        assert_eq!(store.find("web1").unwrap(), web);
        assert_eq!(store.find("abcdef").unwrap(), web);
        assert!(matches!(
            store.find("abc"),
            Err(StoreError::Ambiguous { .. })
        ));
        assert!(matches!(store.find("zzz"), Err(StoreError::NotFound(_))));
        store.remove(&web.id).unwrap();
        store.remove(&web.id).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn remove_takes_every_rotated_log_file_and_no_other_containers() {
        let (store, dir) = temp_store("rotated");
        let (web, other) = (record("abcdef", "web1"), record("abcdef0", "web2"));
        store.save(&web).unwrap();
        store.save(&other).unwrap();
        let logs = dir.join("logs");
        let ours = [
            "abcdef.log",
            "abcdef.log.1",
            "abcdef.log.7",
            "abcdef.log.new",
        ];
        let theirs = ["abcdef0.log", "abcdef0.log.1", "abcdef0.monitor.log"];
        for name in ours.iter().chain(&theirs).chain(&["abcdef.monitor.log"]) {
            fs::write(logs.join(name), b"{}\n").unwrap();
        }
        store.remove(&web.id).unwrap();
        let mut left: Vec<String> = (fs::read_dir(&logs).unwrap())
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, theirs);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_watched_listing_follows_what_other_processes_write_and_remove() {
        let (daemon, dir) = temp_store("watched");
        let monitor = Store::open(&dir).unwrap();
        daemon.save(&record("a1", "web")).unwrap();
        daemon.watch().unwrap();
        assert_eq!(listed(&daemon), [record("a1", "web")]);
        // Another process (a monitor) changes a record, adds one, and one goes.
        let mut running = record("a1", "web");
        running.state = ContainerState::Running;
        monitor.save_until_reboot(&running).unwrap();
        let mut second = record("b2", "db");
        second.created_at += 1;
        monitor.save(&second).unwrap();
        assert_eq!(listed(&daemon), [running.clone(), second]);
        monitor.remove("b2").unwrap();
        assert_eq!(listed(&daemon), [running]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_listed_record_is_cached_until_its_file_changes() {
        let (store, dir) = temp_store("cache");
        let web = record("abcdef0123456789", "web1");
        store.save(&web).unwrap();
        let path = store.record_path(&web.id);
        // Only a settled file is cached: age this one.
        let old = SystemTime::now() - Duration::from_secs(10);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(listed(&store), std::slice::from_ref(&web));
        assert_eq!(store.cache.lock().unwrap().len(), 1);
        // Read from the cache: the file's own content no longer matters while its stamp holds.
        let stamp = FileStamp::of(&fs::metadata(&path).unwrap());
        store
            .cache
            .lock()
            .unwrap()
            .values_mut()
            .next()
            .map(|(_, record)| Arc::make_mut(record))
            .unwrap()
            .name = "cached".into();
        assert_eq!(store.list().unwrap()[0].name, "cached");
        assert_eq!(stamp, FileStamp::of(&fs::metadata(&path).unwrap()));
        // A new version is a new file, read at once though written within the same second.
        let renamed = ContainerRecord {
            name: "web2".into(),
            ..web.clone()
        };
        store.save(&renamed).unwrap();
        assert_eq!(listed(&store), std::slice::from_ref(&renamed));
        assert!(
            store.cache.lock().unwrap().is_empty(),
            "a fresh file is not cached"
        );
        store.remove(&web.id).unwrap();
        assert!(store.list().unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_temporary_file_never_replaces_a_record() {
        let (store, dir) = temp_store("torn");
        let web = record("abcdef", "web1");
        store.save(&web).unwrap();
        fs::write(dir.join("containers/abcdef.json.tmp"), b"{\"id\":").unwrap();
        assert_eq!(listed(&store), vec![web]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_record_removed_while_read_is_gone_but_a_corrupt_one_is_an_error() {
        let (store, dir) = temp_store("vanished");
        let path = dir.join("containers/abcdef.json");
        assert_eq!(read_unless_removed::<ContainerRecord>(&path).unwrap(), None);
        assert_eq!(store.get("abcdef").unwrap(), None);
        fs::write(&path, b"{\"id\":").unwrap();
        assert!(matches!(
            store.list(),
            Err(StoreError::File(FileError::Corrupt { .. }))
        ));
        assert!(matches!(
            store.get("abcdef"),
            Err(StoreError::File(FileError::Corrupt { .. }))
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reserved_ports_persist() {
        let (store, dir) = temp_store("reserved");
        assert!(store.reserved_by_us().unwrap().is_empty());
        let ports = BTreeSet::from([20080, 20081]);
        store.save_reserved_by_us(&ports).unwrap();
        assert_eq!(store.reserved_by_us().unwrap(), ports);
        fs::remove_dir_all(dir).unwrap();
    }
}
