//! Loading, pinning and attaching hostnetd's eBPF programs, and the maps they read.
//!
//! Pin layout, under `<bpffs>/hostnetd/v<ABI_VERSION>` (a new ABI gets a fresh directory, because
//! the kernel reuses a pinned map without checking its layout):
//!
//! ```text
//! maps/PORT_OWNERS, maps/BIND_ADDRS     the ownership tables
//! maps/SETTINGS, maps/CONTAINER_POLICIES, maps/EGRESS_RULES   policy
//! progs/<name>                          every program, by its name below
//! links/host_bind{4,6}                  root-cgroup links: host protection
//! containers/<id>/<hook>                each container's links
//! ```
//!
//! Links are pinned so that enforcement outlives the process that attached it. Nothing else in
//! the agent imports `aya`.
mod barrier;
mod bpffs;
mod owners;
mod policies;
mod transition;

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::FdLink, CgroupAttachMode, CgroupSock, CgroupSockAddr, CgroupSockAddrAttachType,
        CgroupSockAttachType, ProgramError,
    },
    EbpfLoader,
};
use hostnetd_common::ABI_VERSION;

pub use bpffs::ensure_bpffs;
pub use owners::OwnerTable;
pub use policies::{KernelPolicy, PolicyTable};
pub use transition::StagedPolicy;

use owners::open_map;

use crate::cgroup::{Cgroup2, ContainerCgroup};

/// The compiled eBPF object, built by agent/build.rs.
static DATAPATH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hostnetd-datapath"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("eBPF program {0} is missing from the object or has the wrong type")]
    MissingProgram(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("cannot pin {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("cannot link {path}: {source}")]
    Link {
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error("port {port} is owned by cgroup {cgroup_id}, not by this container")]
    PortTaken { port: String, cgroup_id: u64 },
}

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
}

const fn sock_addr(name: &'static str, attach: CgroupSockAddrAttachType) -> Hook {
    Hook {
        name,
        attach: Attach::SockAddr(attach),
    }
}

const CONTAINER_HOOKS: [Hook; 7] = [
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
];
const HOST_HOOKS: [Hook; 2] = [
    sock_addr("host_bind4", CgroupSockAddrAttachType::Bind4),
    sock_addr("host_bind6", CgroupSockAddrAttachType::Bind6),
];

/// hostnetd's programs and maps, loaded once per host and shared through pins.
pub struct Datapath {
    root: PathBuf,
    owners: OwnerTable,
    policies: PolicyTable,
}

impl Datapath {
    /// Where a base directory (normally `/sys/fs/bpf/hostnetd`) keeps this ABI's pins.
    pub fn pin_root(base: &Path) -> PathBuf {
        base.join(format!("v{ABI_VERSION}"))
    }

    /// Opens the pinned datapath under `base`, loading and pinning it first if absent, tells
    /// the hooks the depth of container cgroups, and attaches host protection to the cgroup2
    /// root unless `host_protection` is off (then it is detached). Callers serialise this with
    /// the host lock.
    pub fn open_or_load(
        base: &Path,
        cgroup: &Cgroup2,
        container_level: u32,
        host_protection: bool,
    ) -> Result<Self, DatapathError> {
        let root = Self::pin_root(base);
        if !root.join("progs").join(CONTAINER_HOOKS[6].name).exists() {
            load_and_pin(&root)?;
        }
        let mut datapath = Self {
            owners: OwnerTable::open(&root.join("maps"))?,
            policies: PolicyTable::open(&root.join("maps"))?,
            root,
        };
        datapath.policies.set_container_level(container_level)?;
        if host_protection {
            datapath.attach_host_protection(cgroup)?;
        } else {
            datapath.detach_host_protection()?;
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

    /// Attaches the container hooks to its cgroup and pins the links; idempotent.
    pub fn attach_container(
        &self,
        id: &str,
        cgroup: &ContainerCgroup,
    ) -> Result<(), DatapathError> {
        let dir = self.container_dir(id);
        create_dir(&dir)?;
        CONTAINER_HOOKS
            .iter()
            .try_for_each(|hook| self.attach_pinned(hook, &cgroup.path, &dir.join(hook.name)))
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
        let link = match hook.attach {
            Attach::SockAddr(attach) => {
                let mut prog = CgroupSockAddr::from_pin(&prog_pin, attach).map_err(program)?;
                let link_id = prog
                    .attach(cgroup_dir, CgroupAttachMode::Single)
                    .map_err(program)?;
                FdLink::try_from(prog.take_link(link_id).map_err(program)?)
            }
            Attach::Sock(attach) => {
                let mut prog = CgroupSock::from_pin(&prog_pin, attach).map_err(program)?;
                let link_id = prog
                    .attach(cgroup_dir, CgroupAttachMode::Single)
                    .map_err(program)?;
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

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}

/// Loads the object with its maps pinned under `root/maps` and pins every program.
fn load_and_pin(root: &Path) -> Result<(), DatapathError> {
    let maps = root.join("maps");
    let progs = root.join("progs");
    create_dir(&maps)?;
    create_dir(&progs)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&maps)
        .load(DATAPATH_OBJECT)?;
    for hook in CONTAINER_HOOKS.iter().chain(&HOST_HOOKS) {
        let error = |source| DatapathError::Program {
            name: hook.name,
            source,
        };
        let missing = DatapathError::MissingProgram(hook.name);
        let pin = progs.join(hook.name);
        let program = ebpf.program_mut(hook.name).ok_or(missing)?;
        let pinned = match hook.attach {
            Attach::SockAddr(_) => {
                let program: &mut CgroupSockAddr = program
                    .try_into()
                    .map_err(|_| DatapathError::MissingProgram(hook.name))?;
                program.load().map_err(error)?;
                program.pin(&pin)
            }
            Attach::Sock(_) => {
                let program: &mut CgroupSock = program
                    .try_into()
                    .map_err(|_| DatapathError::MissingProgram(hook.name))?;
                program.load().map_err(error)?;
                program.pin(&pin)
            }
        };
        pinned.map_err(|source| DatapathError::Pin { path: pin, source })?;
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), DatapathError> {
    fs::create_dir_all(path).map_err(|source| DatapathError::Io {
        action: "create",
        path: path.into(),
        source,
    })
}
