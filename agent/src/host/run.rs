//! Creating a container from a validated request (the API validates it): admit it (claim its
//! ports under the host lock), prepare its bundle, and hand it to its own monitor process,
//! which starts it through runc with enforcement attached before its first instruction.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
};

use super::{Disposition, Host, HostError};
use crate::{
    datapath::{usage::WrittenRules, Bandwidth, CgroupHistory, Datapath, KernelPolicy},
    images::{self, ImageRecord, RunConfig},
    ownership::{
        self,
        capacity::{self, Footprint},
    },
    policy::{
        self,
        logs::LogOptions,
        rate::RateLimit,
        restart::RestartPolicy,
        rules::{Action, RuleSet},
        OwnedPort, PortDeclarations,
    },
    runtime::{
        mount_rootfs, oci_config, resolve_user,
        supervise::{self, new_container_id},
        Capabilities, ProcessSpec, RootfsSource, Volume,
    },
    store::{CgroupRecord, ContainerImage, ContainerRecord, ContainerState, PortClaim},
    sys::{cgroup::ContainerCgroup, time::now},
};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A validated [`RunSpec`].
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub name: Option<String>,
    pub source: ContainerSource,
    pub command: Vec<String>,
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub volumes: Vec<Volume>,
    /// None: the image's exposed ports.
    pub ports: Option<PortDeclarations>,
    pub capabilities: Capabilities,
    pub egress: RuleSet,
    pub ingress: RuleSet,
    pub bandwidth: Bandwidth,
    pub restart: RestartPolicy,
    /// `--log-opt`s given; the host's defaults fill in the rest.
    pub log_options: LogOptions,
    pub auto_remove: bool,
    pub tty: bool,
    /// stdin kept open for attached clients.
    pub interactive: bool,
    /// (rows, columns) of the terminal at the start.
    pub terminal_size: Option<(u16, u16)>,
}

/// What a container's root filesystem is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerSource {
    /// An image reference, resolved against the image store at creation.
    Image(String),
    /// A host directory, shown read-only.
    HostDirectory(PathBuf),
}

/// A request resolved against its image: everything admission and the bundle need.
struct Resolved {
    process: ProcessSpec,
    ports: PortDeclarations,
    image: Option<ContainerImage>,
    rootfs: PathBuf,
}

impl Host {
    /// Creates and starts a container; returns once it runs (its monitor said so) or has
    /// failed to start, in which case nothing is left behind. The log comes back opened for
    /// reading from its start, so that not a line is lost even if `--rm` forgets the container
    /// before the caller reads it.
    pub fn create_container(
        &self,
        request: &RunRequest,
    ) -> Result<(ContainerRecord, fs::File), HostError> {
        // Held until the record names its image, so that `rmi` cannot remove it meanwhile.
        let _images = self.images.lock_shared()?;
        let resolved = self.resolve(request)?;
        let record = self.admit(request, &resolved)?;
        // Until a monitor exists, nothing else would ever release the container.
        let started = self
            .prepare_bundle(&record, &resolved.process)
            .and_then(|()| self.open_new_log(&record.id))
            .and_then(|log| Ok((log, self.start_monitor(&record)?)));
        let (log, monitor) = match started {
            Ok(started) => started,
            Err(error) => {
                let (_lock, mut datapath) = self.lock_datapath()?;
                self.release(&mut datapath, &record, Disposition::Forget)?;
                return Err(error);
            }
        };
        self.await_monitor(monitor, &record)?;
        Ok((self.store.get(&record.id)?.unwrap_or(record), log))
    }

    fn open_new_log(&self, id: &str) -> Result<fs::File, HostError> {
        let path = self.store.log_path(id);
        fs::File::create(&path).map_err(|e| io_error("create", path.display(), e))?;
        fs::File::open(&path).map_err(|e| io_error("open", path.display(), e))
    }

    fn resolve(&self, request: &RunRequest) -> Result<Resolved, HostError> {
        match &request.source {
            ContainerSource::HostDirectory(dir) => Ok(Resolved {
                process: {
                    volume_targets_exist(dir, &request.volumes)?;
                    process_spec(request, &RunConfig::default(), std::slice::from_ref(dir))?
                },
                ports: request.ports.clone().unwrap_or_default(),
                image: None,
                rootfs: dir.clone(),
            }),
            ContainerSource::Image(reference) => {
                let image = self.images.resolve(reference)?;
                let layers = self.images.lower_dirs(&image);
                let run = &image.config.config;
                let ports = match &request.ports {
                    Some(ports) => ports.clone(),
                    None => {
                        policy::parse_declarations(&run.exposed_port_specs()).map_err(|error| {
                            HostError::Invalid(format!(
                                "the image's exposed ports cannot be owned ({error}); give --ports"
                            ))
                        })?
                    }
                };
                Ok(Resolved {
                    process: process_spec(request, run, &layers)?,
                    ports,
                    image: Some(ContainerImage {
                        id: image.id.to_string(),
                        name: image_display_name(reference, &image),
                        layers,
                        exposed_ports: run.exposed_port_specs(),
                        stop_signal: Some(run.stop_signal.clone()).filter(|s| !s.is_empty()),
                    }),
                    rootfs: PathBuf::new(),
                })
            }
        }
    }

    /// Under the host lock: refuses conflicts, then claims the ports, reserves them, and attaches
    /// the container's hooks to its new cgroup. On any failure nothing is left behind.
    fn admit(
        &self,
        request: &RunRequest,
        resolved: &Resolved,
    ) -> Result<ContainerRecord, HostError> {
        let (_lock, mut datapath) = self.lock_datapath()?;
        let records = self.reconcile(&mut datapath)?;
        let id = new_container_id().map_err(|e| io_error("generate an id for", "container", e))?;
        let name = request
            .name
            .clone()
            .unwrap_or_else(|| format!("hostnetd-{}", &id[..12]));
        if let Some(existing) = records.iter().find(|record| record.name == name) {
            return Err(HostError::NameInUse {
                name,
                id: existing.short_id().to_string(),
            });
        }
        let ports: Vec<OwnedPort> = resolved.ports.ports().collect();
        ownership::check_available(datapath.owners_ref(), &records, &self.procfs, &ports, None)?;
        self.check_room(&datapath, request, resolved, &records, &ports)?;
        let (cgroup, made_now) = self.cgroup.create(&self.config.container_cgroup(&id))?;
        let record = ContainerRecord {
            id,
            name,
            rootfs: resolved.rootfs.clone(),
            image: resolved.image.clone(),
            command: resolved.process.args.clone(),
            port_specs: (resolved.ports.specs().iter())
                .map(ToString::to_string)
                .collect(),
            ports: claims(&resolved.ports),
            egress_allow: request.egress.texts(Action::Allow),
            egress_deny: request.egress.texts(Action::Deny),
            ingress_allow: request.ingress.texts(Action::Allow),
            allow_raw_sockets: request.capabilities.contains("CAP_NET_RAW"),
            egress_rate: request.bandwidth.egress.map(|limit| limit.to_string()),
            ingress_rate: request.bandwidth.ingress.map(|limit| limit.to_string()),
            cgroup: CgroupRecord::from(&cgroup),
            update_in_progress: false,
            state: ContainerState::Created,
            supervisor: Host::identity(),
            restart: request.restart,
            log_limits: request.log_options.over(self.config.log_limits),
            restart_count: 0,
            stop_requested: false,
            pid: None,
            exit_code: None,
            auto_remove: request.auto_remove,
            created_at: now(),
            started_at: None,
            finished_at: None,
            final_traffic: None,
            engine: None,
            tty: request.tty,
            open_stdin: request.interactive,
        };
        if let Err(error) = self.store.save(&record) {
            // No record names the cgroup yet: nothing else would ever remove it.
            let _ = cgroup.remove();
            return Err(error.into());
        }
        let history = cgroup_history(made_now);
        if let Err(error) = self.enforce(&mut datapath, &record, &ports, &cgroup, history) {
            self.release(&mut datapath, &record, Disposition::Forget)?;
            return Err(error);
        }
        Ok(record)
    }

    /// Installs the record's policy, claims its ports and attaches the hooks to `cgroup`.
    pub(crate) fn enforce(
        &self,
        datapath: &mut Datapath,
        record: &ContainerRecord,
        ports: &[OwnedPort],
        cgroup: &ContainerCgroup,
        history: CgroupHistory,
    ) -> Result<(), HostError> {
        // The policy holds before the first port is claimed, and both before any process runs.
        let generation =
            datapath
                .policies()
                .install(cgroup.id, history, &kernel_policy(record)?)?;
        ownership::claim(datapath.owners(), cgroup, generation, &record.ports)?;
        let records = self.store.list()?;
        ownership::sync_reserved_ports(&self.store, &self.reserved, &records)?;
        // A host process may have bound a port between the check and the claim; now that the
        // claim blocks new binds, one more look closes that window.
        let late = ownership::host_conflicts(&self.procfs, ports, None, &records)?;
        if !late.is_empty() {
            return Err(ownership::OwnershipError::Conflicts(late).into());
        }
        datapath.attach_container(&record.id, cgroup)?;
        Ok(())
    }

    /// The bundle runc runs: config.json and the root filesystem's mount point, where the
    /// monitor mounts it. runc's cgroup is a child of the container's own, which holds the
    /// ports and the programs: runc removes its cgroup when the container is deleted for a
    /// restart, and the ownership must survive that.
    fn prepare_bundle(
        &self,
        record: &ContainerRecord,
        process: &ProcessSpec,
    ) -> Result<(), HostError> {
        let bundle = self.make_bundle_dir(&record.id)?;
        let mut process = process.clone();
        process.hostname = record.name.clone();
        process.env.push(format!("HOSTNAME={}", record.name));
        let cgroups_path = self.config.runc_cgroups_path(&record.id);
        // An image's root is the container's own overlay, writable as in docker; a host
        // directory is shown read-only.
        let readonly = record.image.is_none();
        let config = oci_config(&process, "rootfs", readonly, &cgroups_path);
        self.store.save_spec(&record.id, &config)?;
        write_bundle_config(&bundle, &config)
    }

    /// The container's bundle directory with an empty `rootfs` in it; returns the bundle.
    pub(crate) fn make_bundle_dir(&self, id: &str) -> Result<PathBuf, HostError> {
        let bundle = self.bundle_dir(id);
        let rootfs = bundle.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(|e| io_error("create", rootfs.display(), e))?;
        Ok(bundle)
    }

    /// Mounts the container's root filesystem (its image's layers under its own writable
    /// layer, or its host directory) in its bundle. The monitor does it in its own mount
    /// namespace: the host's mount table, which runc reads and copies for every container it
    /// starts, stays the same size however many containers run.
    pub(crate) fn mount_bundle_rootfs(&self, record: &ContainerRecord) -> Result<(), HostError> {
        let bundle = self.bundle_dir(&record.id);
        let source = match &record.image {
            Some(image) => RootfsSource::Image {
                layers: image.layers.clone(),
                writable: self.store.writable_layer_dir(&record.id),
            },
            None => RootfsSource::HostDirectory(record.rootfs.clone()),
        };
        mount_rootfs(&source, &bundle.join("rootfs"))?;
        Ok(())
    }

    /// Starts `hostnetd monitor ID`, which outlives the daemon in a session of its own.
    pub(crate) fn start_monitor(&self, record: &ContainerRecord) -> Result<Child, HostError> {
        let exe =
            std::env::current_exe().map_err(|e| io_error("find", "the hostnetd binary", e))?;
        let monitor_log = self.store.monitor_log_path(&record.id);
        let log = fs::File::create(&monitor_log)
            .map_err(|e| io_error("create", monitor_log.display(), e))?;
        let mut command = Command::new(exe);
        command
            .args(self.config.to_args())
            .arg("monitor")
            .arg("--cgroup2")
            .arg(self.cgroup.mount())
            .arg(&record.id);
        // No pre_exec: the monitor makes its own session as it starts (`Host::monitor`), so
        // that the spawn takes posix_spawn's fast path rather than a fork of the daemon.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        command
            .spawn()
            .map_err(|e| io_error("start", "hostnetd monitor", e))
    }

    /// Waits for the monitor's first report: the container runs, or it failed (and the monitor
    /// released it).
    pub(crate) fn await_monitor(
        &self,
        mut child: Child,
        record: &ContainerRecord,
    ) -> Result<(), HostError> {
        let monitor_log = self.store.monitor_log_path(&record.id);
        let report = child.stdout.take().map(BufReader::new).and_then(|mut out| {
            let mut line = String::new();
            out.read_line(&mut line).ok().map(|_| line)
        });
        // The monitor lives on; it is reaped when it ends, so it never lingers as a zombie.
        supervise::reap_in_background(child);
        match report.as_deref().map(str::trim) {
            Some(line) if line.starts_with(MONITOR_RUNNING) => Ok(()),
            Some(line) if line.starts_with(MONITOR_FAILED) => Err(HostError::StartFailed(
                line[MONITOR_FAILED.len()..].trim().to_string(),
            )),
            _ => {
                let detail = fs::read_to_string(&monitor_log).unwrap_or_default();
                let (_lock, mut datapath) = self.lock_datapath()?;
                self.reconcile(&mut datapath)?;
                Err(HostError::StartFailed(format!(
                    "the container's monitor ended before starting it: {}",
                    detail.trim()
                )))
            }
        }
    }
}

pub(crate) fn write_bundle_config(
    bundle: &std::path::Path,
    config: &serde_json::Value,
) -> Result<(), HostError> {
    let path = bundle.join("config.json");
    fs::write(&path, config.to_string()).map_err(|source| io_error("write", path.display(), source))
}

/// What a cgroup made now (or found there) may hold in the kernel's tables.
pub(crate) fn cgroup_history(made_now: bool) -> CgroupHistory {
    if made_now {
        CgroupHistory::New
    } else {
        CgroupHistory::MayHaveEntries
    }
}

impl Host {
    /// Refuses a container whose addresses, rules or traffic rows do not fit in the host's
    /// shared tables, before anything of it exists.
    fn check_room(
        &self,
        datapath: &Datapath,
        request: &RunRequest,
        resolved: &Resolved,
        records: &[Arc<ContainerRecord>],
        ports: &[OwnedPort],
    ) -> Result<(), HostError> {
        let policy = KernelPolicy {
            egress: request.egress.clone(),
            ingress: request.ingress.clone(),
            allow_raw_sockets: false,
            bandwidth: request.bandwidth,
        };
        self.check_room_for(datapath, &policy, &resolved.ports, records, ports)
    }

    /// Refuses a container with `policy` and `declarations` when the host's shared tables have
    /// no room for it. Where the records' own footprints leave room in the rule tries, those
    /// need no walk: each prefix is written while a record accounts for it, once this process
    /// has swept away what none does; an update a crash left half done (both generations)
    /// is walked, as is every refusal, which states the maps' own figures.
    pub(crate) fn check_room_for(
        &self,
        datapath: &Datapath,
        policy: &KernelPolicy,
        declarations: &PortDeclarations,
        records: &[Arc<ContainerRecord>],
        ports: &[OwnedPort],
    ) -> Result<(), HostError> {
        let footprint = Footprint::of(policy, &claims(declarations))
            .map_err(|error| HostError::Invalid(error.to_string()))?;
        if let Some(written) = self.written_rules(records) {
            let bound = datapath.table_fill_within(written)?;
            if capacity::check_new_container(&bound, records, footprint, ports).is_ok() {
                return Ok(());
            }
        }
        let tables = datapath.table_fill()?;
        Ok(capacity::check_new_container(
            &tables, records, footprint, ports,
        )?)
    }

    /// At most what the records' containers hold in the rule tries: each rule gives at most
    /// one prefix (rules on one prefix share its entry), so the rules are counted, not
    /// compiled (compiling is quadratic in a container's rules). None when the records cannot
    /// tell: not swept yet, or an update left half done.
    fn written_rules(&self, records: &[Arc<ContainerRecord>]) -> Option<WrittenRules> {
        if !self.has_swept() || records.iter().any(|record| record.update_in_progress) {
            return None;
        }
        let mut written = WrittenRules::default();
        for record in records {
            let egress = record.egress_allow.len() + record.egress_deny.len();
            let ingress = record.ingress_allow.len();
            written.egress = written.egress.checked_add(u32::try_from(egress).ok()?)?;
            written.ingress = written.ingress.checked_add(u32::try_from(ingress).ok()?)?;
        }
        Some(written)
    }
}

/// The process as the image configures it, with the request's overrides applied the way
/// docker applies them: `--entrypoint` replaces the Entrypoint (and drops the image's Cmd),
/// a command replaces the Cmd, `-e` entries override the image's by name, and `-w`/`-u`
/// replace WorkingDir/User. `roots` are where /etc/passwd is looked up, topmost first.
fn process_spec(
    request: &RunRequest,
    image: &RunConfig,
    roots: &[PathBuf],
) -> Result<ProcessSpec, HostError> {
    let entrypoint = match &request.entrypoint {
        Some(entrypoint) if entrypoint.is_empty() => Vec::new(),
        Some(entrypoint) => vec![entrypoint.clone()],
        None => image.entrypoint.clone(),
    };
    let command = if !request.command.is_empty() {
        request.command.clone()
    } else if request.entrypoint.is_some() {
        Vec::new()
    } else {
        image.cmd.clone()
    };
    let args = [entrypoint, command].concat();
    if args.is_empty() {
        return Err(HostError::Invalid(
            "no command: the image sets neither Entrypoint nor Cmd; give the command after the image"
                .into(),
        ));
    }
    let user = request.user.as_deref().unwrap_or(&image.user);
    let workdir = (request.workdir.clone())
        .or_else(|| Some(image.working_dir.clone()).filter(|dir| !dir.is_empty()))
        .unwrap_or_else(|| "/".into());
    Ok(ProcessSpec {
        args,
        env: merge_env(&image.env, &request.env),
        cwd: workdir,
        user: resolve_user(roots, user)?,
        hostname: String::new(),
        capabilities: request.capabilities.clone(),
        volumes: request.volumes.clone(),
        terminal: request.tty.then_some(request.terminal_size),
    })
}

/// The image's environment with the request's entries replacing those of the same name, and a
/// default PATH when neither sets one.
pub(crate) fn merge_env(image: &[String], overrides: &[String]) -> Vec<String> {
    let key = |entry: &String| entry.split('=').next().unwrap_or_default().to_string();
    let mut env: Vec<String> = Vec::new();
    for entry in image.iter().chain(overrides) {
        match env.iter_mut().find(|existing| key(existing) == key(entry)) {
            Some(existing) => *existing = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
    if !env.iter().any(|entry| key(entry) == "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    env
}

/// The name `ps` shows for the image: as the user gave it, or the image's first tag when
/// given by ID.
fn image_display_name(reference: &str, image: &ImageRecord) -> String {
    match images::normalize(reference) {
        Ok(full) if image.tags.contains(&full) || image.repo_digests.contains(&full) => {
            images::display_name(&full)
        }
        _ => image.id.short().to_string(),
    }
}

/// A host directory is shown read-only and never changed, so a volume's mount point must
/// already be there: runc cannot create it (and must not, on the host's own root).
fn volume_targets_exist(dir: &std::path::Path, volumes: &[Volume]) -> Result<(), HostError> {
    for volume in volumes {
        let target = dir.join(volume.container.trim_start_matches('/'));
        if target.symlink_metadata().is_err() {
            return Err(HostError::Invalid(format!(
                "-v {}:{}: {} does not exist in the --rootfs directory {}, and hostnetd never changes a host directory; mount on a path that exists there",
                volume.host.display(),
                volume.container,
                volume.container,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// What the kernel enforces for the container beyond its ports, from its record.
pub(crate) fn kernel_policy(record: &ContainerRecord) -> Result<KernelPolicy, HostError> {
    Ok(KernelPolicy {
        egress: RuleSet::parse(&record.egress_allow, &record.egress_deny)
            .map_err(|e| HostError::Invalid(e.to_string()))?,
        ingress: RuleSet::parse_ingress(&record.ingress_allow).map_err(HostError::Invalid)?,
        allow_raw_sockets: record.allow_raw_sockets,
        bandwidth: Bandwidth {
            egress: parse_rate(record.egress_rate.as_deref())?,
            ingress: parse_rate(record.ingress_rate.as_deref())?,
        },
    })
}

fn parse_rate(text: Option<&str>) -> Result<Option<RateLimit>, HostError> {
    (text.map(str::parse::<RateLimit>).transpose()).map_err(|e| HostError::Invalid(e.to_string()))
}

/// The monitor's first line on stdout.
pub const MONITOR_RUNNING: &str = "running";
pub const MONITOR_FAILED: &str = "failed:";

pub(crate) fn claims(ports: &PortDeclarations) -> Vec<PortClaim> {
    ports
        .ports()
        .map(|port| PortClaim {
            port,
            addresses: ports.addresses(port).map(<[_]>::to_vec),
        })
        .collect()
}

pub(crate) fn io_error(
    action: &'static str,
    what: impl std::fmt::Display,
    source: std::io::Error,
) -> HostError {
    HostError::Io {
        action,
        path: PathBuf::from(what.to_string()),
        source,
    }
}

impl Host {
    /// Every port a live container owns, with its owner, from the records.
    pub fn owned_ports(&self) -> Result<Vec<(PortClaim, ContainerRecord)>, HostError> {
        let records = self.store.list()?;
        Ok(records
            .iter()
            .filter(|record| record.state.is_live())
            .flat_map(|record| {
                record
                    .ports
                    .iter()
                    .map(|claim| (claim.clone(), ContainerRecord::clone(record)))
            })
            .collect())
    }

    /// Every owned slot of the kernel's owner table (a full scan: for checks, not hot paths).
    pub fn kernel_owners(&self) -> Result<Vec<(OwnedPort, hostnetd_common::PortOwner)>, HostError> {
        let (_lock, datapath) = self.lock_datapath()?;
        Ok(datapath.owners_ref().all()?)
    }
}
