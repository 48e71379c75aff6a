//! Loading, pinning and attaching hostnetd's eBPF programs, and the maps they read.
//!
//! Pin layout, under `<bpffs>/hostnetd/v<ABI_VERSION>` (a new ABI gets a fresh directory, because
//! the kernel reuses a pinned map without checking its layout):
//!
//! ```text
//! maps/PORT_OWNERS, maps/BIND_ADDRS     the ownership tables
//! maps/SETTINGS, maps/CONTAINER_POLICIES, maps/EGRESS_RULES, maps/INGRESS_RULES   policy
//! maps/VERDICTS                         the ingress hooks' per-CPU verdict cache
//! maps/PORT_ROWS, maps/PORT_ROW_USE    owned ports' counter rows, and which are given
//! maps/TRAFFIC, maps/DEVICE_TRAFFIC, maps/DENIALS, maps/EVENTS, maps/DATAPATH_STATS   accounting
//! progs/<name>                          every program, by its name below
//! links/host_bind{4,6}                  root-cgroup links: host protection
//! links/tc/<ifindex>-<ifname>-<prog>    TCX links on the host's interfaces
//! links/clsact/<ifindex>-<ifname>-<prog>@<prio>_<handle>   or, without TCX, clsact filters
//! links/clsact/<ifindex>-<ifname>-qdisc  a clsact qdisc hostnetd added (empty directories:
//!                                       a netlink filter has no descriptor to pin)
//! containers/<id>/<hook>                each container's links
//! ```
//!
//! Links are pinned so that enforcement outlives the process that attached it. Nothing else in
//! the agent imports `aya`.
mod barrier;
mod bpffs;
mod clsact;
mod devices;
mod error;
mod features;
mod interfaces;
mod limits;
mod log_level;
mod netlink;
mod owners;
mod pins;
mod policies;
mod programs;
mod qdisc;
mod ring;
mod rows;
mod syscall;
mod traffic;
pub mod transition;
pub mod usage;

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, CgroupSockAddrAttachType, CgroupSockAttachType, Lsm, ProgramError,
        SchedClassifier, SockOps,
    },
    EbpfLoader,
};
use hostnetd_common::ABI_VERSION;

pub use bpffs::ensure_bpffs;
pub use error::DatapathError;
pub use features::{FeatureReport, KernelFeatures, MissingFeatures, NoTcx, TcAttach, TcMode};
pub use limits::{device_pacing, Bandwidth, DevicePacing, LimitTable};
pub use log_level::BpfLogLevel;
pub use owners::OwnerTable;
pub use policies::{CgroupHistory, KernelPolicy, PolicyTable};
pub use qdisc::{remove_fq_root, replace_root_with_fq, PacingMode};
pub use ring::{read_health, EventRing};
pub use rows::{default_port_rows, port_rows_bytes, read_row_use, MAX_PORT_ROWS};
pub use traffic::{traffic_stats, DatapathHealth, TrafficRow, TrafficTable};

use pins::create_dir;

use crate::sys::{
    cgroup::{Cgroup2, ContainerCgroup},
    listing::KeptListing,
};

/// A directory `log-level-N` records the aya-log level the pinned programs were loaded with
/// (bpffs holds no regular files, and no dots in names).
const LOG_LEVEL_PREFIX: &str = "log-level-";

/// The compiled eBPF object, built by agent/build.rs.
static DATAPATH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hostnetd-datapath"));

/// One cgroup hook: the program's name in the object and where it attaches.
#[derive(Clone, Copy)]
struct Hook {
    name: &'static str,
    attach: Attach,
}

#[derive(Clone, Copy)]
enum Attach {
    SockAddr(CgroupSockAddrAttachType),
    Sock(CgroupSockAttachType),
    Skb(CgroupSkbAttachType),
    SockOps,
}

const fn sock_addr(name: &'static str, attach: CgroupSockAddrAttachType) -> Hook {
    Hook {
        name,
        attach: Attach::SockAddr(attach),
    }
}

const fn skb(name: &'static str, attach: CgroupSkbAttachType) -> Hook {
    Hook {
        name,
        attach: Attach::Skb(attach),
    }
}

const CONTAINER_HOOKS: [Hook; 10] = [
    sock_addr("bind4", CgroupSockAddrAttachType::Bind4),
    sock_addr("bind6", CgroupSockAddrAttachType::Bind6),
    sock_addr("connect4", CgroupSockAddrAttachType::Connect4),
    sock_addr("connect6", CgroupSockAddrAttachType::Connect6),
    sock_addr("sendmsg4", CgroupSockAddrAttachType::UDPSendMsg4),
    sock_addr("sendmsg6", CgroupSockAddrAttachType::UDPSendMsg6),
    Hook {
        name: "sock_create",
        attach: Attach::Sock(CgroupSockAttachType::SockCreate),
    },
    skb("skb_ingress", CgroupSkbAttachType::Ingress),
    skb("skb_egress", CgroupSkbAttachType::Egress),
    Hook {
        name: "sock_ops",
        attach: Attach::SockOps,
    },
];
const HOST_HOOKS: [Hook; 2] = [
    sock_addr("host_bind4", CgroupSockAddrAttachType::Bind4),
    sock_addr("host_bind6", CgroupSockAddrAttachType::Bind6),
];

/// How the datapath is loaded and attached on this host.
#[derive(Clone, Copy, Debug)]
pub struct DatapathOptions {
    /// Depth of container cgroups below the cgroup2 root.
    pub container_level: u32,
    /// Keep host processes off container-owned ports.
    pub host_protection: bool,
    /// The aya-log level the programs are loaded with (0: off).
    pub log_level: u8,
    /// Whether refused calls get their own errno (`bpf_set_retval`) or the kernel's EPERM.
    pub set_retval: bool,
    /// Whether BPF LSM is active, for `socket_create`.
    pub bpf_lsm: bool,
    pub tc_mode: TcMode,
    /// Owned ports with a counter row of their own (`PORT_ROWS`), when the datapath is loaded.
    pub traffic_rows: u32,
}

/// hostnetd's programs and maps, loaded once per host and shared through pins.
pub struct Datapath {
    root: PathBuf,
    owners: OwnerTable,
    policies: PolicyTable,
    traffic: TrafficTable,
}

impl Datapath {
    /// Where a base directory (normally `/sys/fs/bpf/hostnetd`) keeps this ABI's pins.
    pub fn pin_root(base: &Path) -> PathBuf {
        base.join(format!("v{ABI_VERSION}"))
    }

    /// Opens the pinned datapath under `base`, loading and pinning it first if absent, tells
    /// the hooks the depth of container cgroups, and attaches host protection to the cgroup2
    /// root unless `host_protection` is off (then it is detached). Callers serialise this with
    /// the host lock, and have checked the kernel's features against hostnetd's floor.
    pub fn open_or_load(
        base: &Path,
        cgroup: &Cgroup2,
        options: &DatapathOptions,
    ) -> Result<Self, DatapathError> {
        let root = Self::pin_root(base);
        // The last program pinned: present only when loading completed.
        if !root.join("progs").join(programs::LAST_PROGRAM).exists() {
            if let Err(error) = load_and_pin(&root, options) {
                // Maps pinned before a program failed to load would be reused, unchecked,
                // by the next attempt: nothing half-loaded is left (bpffs holds no mounts).
                let _ = fs::remove_dir_all(&root);
                // And the base directory, if the attempt created it (only when empty).
                let _ = fs::remove_dir(base);
                return Err(error);
            }
        }
        let mut datapath = Self {
            owners: OwnerTable::open(&root.join("maps"))?,
            policies: PolicyTable::open(&root.join("maps"))?,
            traffic: TrafficTable::open(&root.join("maps"))?,
            root,
        };
        datapath.policies.open_epoch(options.container_level)?;
        if options.host_protection {
            datapath.attach_host_protection(cgroup)?;
        } else {
            datapath.detach_host_protection()?;
        }
        datapath.attach_devices(Path::new(programs::SYS_CLASS_NET), options.tc_mode)?;
        datapath.policies.sync_paced_devices()?;
        if options.bpf_lsm {
            datapath.attach_lsm()?;
        }
        Ok(datapath)
    }

    pub fn policies(&mut self) -> &mut PolicyTable {
        &mut self.policies
    }

    pub fn owners(&mut self) -> &mut OwnerTable {
        &mut self.owners
    }

    pub fn owners_ref(&self) -> &OwnerTable {
        &self.owners
    }

    pub fn traffic(&mut self) -> &mut TrafficTable {
        &mut self.traffic
    }

    pub fn traffic_ref(&self) -> &TrafficTable {
        &self.traffic
    }

    /// Every container's traffic rows, owned ports' rows and the hashes' together.
    pub fn all_traffic_rows(
        &self,
        containers: &std::collections::HashSet<u64>,
    ) -> Result<std::collections::HashMap<u64, Vec<TrafficRow>>, DatapathError> {
        self.traffic.all_rows(self.owners.rows(), containers)
    }

    /// The traffic figures of the container `cgroup_id` now.
    pub fn traffic_stats(
        &self,
        cgroup_id: u64,
    ) -> Result<crate::store::traffic::TrafficStats, DatapathError> {
        self.traffic.stats(self.owners.rows(), cgroup_id)
    }

    /// The containers' bandwidth limits and what they did.
    pub fn limits(&self) -> &LimitTable {
        self.policies.limits()
    }

    /// Attaches the container hooks to its cgroup and pins the links, and tells the packet
    /// hooks whose they are; idempotent.
    pub fn attach_container(
        &mut self,
        id: &str,
        cgroup: &ContainerCgroup,
    ) -> Result<(), DatapathError> {
        let dir = self.container_dir(id);
        create_dir(&dir)?;
        CONTAINER_HOOKS
            .iter()
            .try_for_each(|hook| self.attach_pinned(hook, &cgroup.path, &dir.join(hook.name)))?;
        self.traffic.name_container(cgroup.id)
    }

    /// Drops the container's links: removing the last reference to a link detaches it.
    pub fn detach_container(&self, id: &str) -> Result<(), DatapathError> {
        let dir = self.container_dir(id);
        match fs::remove_dir_all(&dir) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                Err(DatapathError::Io {
                    action: "remove",
                    path: dir,
                    source,
                })
            }
            _ => Ok(()),
        }
    }

    /// Ids of containers that have pinned links.
    pub fn attached_containers(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join("containers")) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect()
    }

    /// [`Self::attached_containers`], listed again only when the directory of their pins
    /// changed since `listing` was kept (each container's pins are a directory in it).
    pub fn attached_containers_kept(&self, listing: &KeptListing) -> Vec<String> {
        listing.names(&self.root.join("containers"))
    }

    /// Detaches host protection and removes every pin; refuses while containers are attached.
    pub fn unload(self) -> Result<(), DatapathError> {
        let attached = self.attached_containers();
        if !attached.is_empty() {
            return Err(DatapathError::Bpffs(format!(
                "{} container(s) still attached ({}); remove them first",
                attached.len(),
                attached.join(", ")
            )));
        }
        // clsact filters live on in the kernel without pins: detached one by one.
        self.detach_devices()?;
        let root = self.root.clone();
        drop(self);
        fs::remove_dir_all(&root).map_err(|source| DatapathError::Io {
            action: "remove",
            path: root.clone(),
            source,
        })?;
        // The base directory is shared by ABI versions; remove it only once it is empty.
        if let Some(base) = root.parent() {
            let _ = fs::remove_dir(base);
        }
        Ok(())
    }

    fn attach_host_protection(&self, cgroup: &Cgroup2) -> Result<(), DatapathError> {
        let links = self.root.join("links");
        create_dir(&links)?;
        HOST_HOOKS
            .iter()
            .try_for_each(|hook| self.attach_pinned(hook, cgroup.mount(), &links.join(hook.name)))
    }

    /// `socket_create` watches every socket on the host (an LSM hook is not per cgroup), and
    /// refuses packet sockets to containers' processes only.
    fn attach_lsm(&self) -> Result<(), DatapathError> {
        let pin = self.root.join("links").join(LSM_PROGRAM);
        if pin.exists() {
            return Ok(());
        }
        let program = |source| DatapathError::Program {
            name: LSM_PROGRAM,
            source,
        };
        let mut prog = Lsm::from_pin(self.root.join("progs").join(LSM_PROGRAM)).map_err(program)?;
        let link_id = prog.attach().map_err(program)?;
        let link = FdLink::from(prog.take_link(link_id).map_err(program)?);
        link.pin(&pin)
            .map_err(|source| DatapathError::Pin { path: pin, source })?;
        Ok(())
    }

    /// Removing the pinned links detaches them (`--no-host-protection`); absent is fine.
    fn detach_host_protection(&self) -> Result<(), DatapathError> {
        let links = self.root.join("links");
        for hook in &HOST_HOOKS {
            let pin = links.join(hook.name);
            match fs::remove_file(&pin) {
                Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                    return Err(DatapathError::Io {
                        action: "remove",
                        path: pin,
                        source,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn attach_pinned(&self, hook: &Hook, cgroup: &Path, pin: &Path) -> Result<(), DatapathError> {
        if pin.exists() {
            return Ok(());
        }
        let prog_pin = self.root.join("progs").join(hook.name);
        let program = |source| DatapathError::Program {
            name: hook.name,
            source,
        };
        let cgroup_dir = File::open(cgroup).map_err(|source| DatapathError::Io {
            action: "open",
            path: cgroup.into(),
            source,
        })?;
        // Each program type has its own attach signature; the rest is the same.
        macro_rules! attach_single {
            ($kind:ty, $attach:expr, $($args:expr),+) => {{
                let mut prog = <$kind>::from_pin(&prog_pin, $attach).map_err(program)?;
                let link_id = prog.attach($($args),+).map_err(program)?;
                FdLink::try_from(prog.take_link(link_id).map_err(program)?)
            }};
        }
        let single = CgroupAttachMode::Single;
        let link = match hook.attach {
            Attach::SockAddr(attach) => attach_single!(CgroupSockAddr, attach, cgroup_dir, single),
            Attach::Sock(attach) => attach_single!(CgroupSock, attach, cgroup_dir, single),
            Attach::Skb(attach) => attach_single!(CgroupSkb, attach, cgroup_dir, attach, single),
            Attach::SockOps => {
                let mut prog = SockOps::from_pin(&prog_pin).map_err(program)?;
                let link_id = prog.attach(cgroup_dir, single).map_err(program)?;
                FdLink::try_from(prog.take_link(link_id).map_err(program)?)
            }
        };
        let link = link.map_err(|source| DatapathError::Link {
            path: pin.into(),
            source,
        })?;
        link.pin(pin).map_err(|source| DatapathError::Pin {
            path: pin.into(),
            source,
        })?;
        Ok(())
    }

    /// The aya-log level the pinned programs were loaded with, and the id of one of them,
    /// through which aya-log finds their log ring.
    pub fn log_source(&self) -> Result<(u8, u32), DatapathError> {
        let level = (fs::read_dir(&self.root).into_iter().flatten().flatten())
            .find_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_prefix(LOG_LEVEL_PREFIX)?.parse().ok()
            })
            .unwrap_or(0);
        let name = CONTAINER_HOOKS[0].name;
        let program = |source| DatapathError::Program { name, source };
        let prog = CgroupSockAddr::from_pin(
            self.root.join("progs").join(name),
            CgroupSockAddrAttachType::Bind4,
        )
        .map_err(program)?;
        Ok((level, prog.info().map_err(program)?.id()))
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}

/// Loads the object with its maps pinned under `root/maps` and pins every program. The
/// programs' aya-log statements above `log_level` (0: all) are pruned by the verifier, and so
/// is their `bpf_set_retval` call on a kernel without it.
fn load_and_pin(root: &Path, options: &DatapathOptions) -> Result<(), DatapathError> {
    let maps = root.join("maps");
    let progs = root.join("progs");
    create_dir(&maps)?;
    create_dir(&progs)?;
    let log_level = options.log_level;
    // The array must hold row 0, which names no row, beside the rows it gives.
    let port_rows = options.traffic_rows.min(MAX_PORT_ROWS) + 1;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&maps)
        .map_max_entries(hostnetd_common::MapName::PortRows.as_str(), port_rows)
        .override_global("AYA_LOG_LEVEL", &log_level, true)
        .override_global("HOSTNETD_SET_RETVAL", &u8::from(options.set_retval), true)
        .load(DATAPATH_OBJECT)?;
    rows::create_row_use(&maps)?;
    create_dir(&root.join(format!("{LOG_LEVEL_PREFIX}{log_level}")))?;
    for hook in CONTAINER_HOOKS.iter().chain(&HOST_HOOKS) {
        let error = |source| DatapathError::Program {
            name: hook.name,
            source,
        };
        let missing = DatapathError::MissingProgram(hook.name);
        let pin = progs.join(hook.name);
        let program = ebpf.program_mut(hook.name).ok_or(missing)?;
        // Loading is the same for every type, but aya gives them no common trait.
        macro_rules! load_as {
            ($kind:ty) => {{
                let program: &mut $kind = program
                    .try_into()
                    .map_err(|_| DatapathError::MissingProgram(hook.name))?;
                program.load().map_err(error)?;
                program.pin(&pin)
            }};
        }
        let pinned = match hook.attach {
            Attach::SockAddr(_) => load_as!(CgroupSockAddr),
            Attach::Sock(_) => load_as!(CgroupSock),
            Attach::Skb(_) => load_as!(CgroupSkb),
            Attach::SockOps => load_as!(SockOps),
        };
        pinned.map_err(|source| DatapathError::Pin { path: pin, source })?;
    }
    if options.bpf_lsm {
        load_lsm(&mut ebpf, &progs)?;
    }
    for name in programs::TC_PROGRAMS.map(|(name, _)| name) {
        let error = |source| DatapathError::Program { name, source };
        let pin = progs.join(name);
        let program: &mut SchedClassifier = (ebpf.program_mut(name))
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(|_| DatapathError::MissingProgram(name))?;
        program.load().map_err(error)?;
        (program.pin(&pin)).map_err(|source| DatapathError::Pin { path: pin, source })?;
    }
    Ok(())
}

/// The BPF LSM program, loaded only where BPF LSM is active.
const LSM_PROGRAM: &str = "socket_create";

fn load_lsm(ebpf: &mut aya::Ebpf, progs: &Path) -> Result<(), DatapathError> {
    let name = LSM_PROGRAM;
    let error = |source| DatapathError::Program { name, source };
    let btf = aya::Btf::from_sys_fs().map_err(|source| error(ProgramError::Btf(source)))?;
    let program: &mut Lsm = (ebpf.program_mut(name))
        .ok_or(DatapathError::MissingProgram(name))?
        .try_into()
        .map_err(|_| DatapathError::MissingProgram(name))?;
    program.load(name, &btf).map_err(error)?;
    let pin = progs.join(name);
    (program.pin(&pin)).map_err(|source| DatapathError::Pin { path: pin, source })
}
