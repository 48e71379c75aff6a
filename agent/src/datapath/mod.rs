//! Loading, pinning and attaching hostnetd's eBPF programs, and the maps they read.
//!
//! Pin layout, under `<bpffs>/hostnetd/v<ABI_VERSION>` (a new ABI gets a fresh directory, because
//! the kernel reuses a pinned map without checking its layout):
//!
//! ```text
//! maps/PORT_OWNERS, maps/BIND_ADDRS     the ownership tables
//! progs/{bind4,bind6,host_bind4,host_bind6}
//! links/host_bind{4,6}                  root-cgroup links: host protection
//! containers/<id>/bind{4,6}             each container's links
//! ```
//!
//! Links are pinned so that enforcement outlives the process that attached it. Nothing else in
//! the agent imports `aya`.
mod bpffs;
mod owners;

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::FdLink, CgroupAttachMode, CgroupSockAddr, CgroupSockAddrAttachType, ProgramError,
    },
    EbpfLoader,
};
use hostnetd_common::ABI_VERSION;

pub use bpffs::ensure_bpffs;
pub use owners::OwnerTable;

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
}

/// One cgroup hook: the program's name in the object and where it attaches.
#[derive(Clone, Copy)]
struct Hook {
    name: &'static str,
    attach: CgroupSockAddrAttachType,
}

const CONTAINER_HOOKS: [Hook; 2] = [
    Hook {
        name: "bind4",
        attach: CgroupSockAddrAttachType::Bind4,
    },
    Hook {
        name: "bind6",
        attach: CgroupSockAddrAttachType::Bind6,
    },
];
const HOST_HOOKS: [Hook; 2] = [
    Hook {
        name: "host_bind4",
        attach: CgroupSockAddrAttachType::Bind4,
    },
    Hook {
        name: "host_bind6",
        attach: CgroupSockAddrAttachType::Bind6,
    },
];

/// hostnetd's programs and maps, loaded once per host and shared through pins.
pub struct Datapath {
    root: PathBuf,
    owners: OwnerTable,
}

impl Datapath {
    /// Where a base directory (normally `/sys/fs/bpf/hostnetd`) keeps this ABI's pins.
    pub fn pin_root(base: &Path) -> PathBuf {
        base.join(format!("v{ABI_VERSION}"))
    }

    /// Opens the pinned datapath under `base`, loading and pinning it first if absent, and
    /// attaches host protection to the cgroup2 root. Callers serialise this with the host lock.
    pub fn open_or_load(base: &Path, cgroup: &Cgroup2) -> Result<Self, DatapathError> {
        let root = Self::pin_root(base);
        if !root.join("progs").join(HOST_HOOKS[1].name).exists() {
            load_and_pin(&root)?;
        }
        let datapath = Self {
            owners: OwnerTable::open(&root.join("maps"))?,
            root,
        };
        datapath.attach_host_protection(cgroup)?;
        Ok(datapath)
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

    fn attach_pinned(&self, hook: &Hook, cgroup: &Path, pin: &Path) -> Result<(), DatapathError> {
        if pin.exists() {
            return Ok(());
        }
        let prog_pin = self.root.join("progs").join(hook.name);
        let program = |source| DatapathError::Program {
            name: hook.name,
            source,
        };
        let mut prog = CgroupSockAddr::from_pin(&prog_pin, hook.attach).map_err(program)?;
        let cgroup_dir = File::open(cgroup).map_err(|source| DatapathError::Io {
            action: "open",
            path: cgroup.into(),
            source,
        })?;
        let link_id = prog
            .attach(cgroup_dir, CgroupAttachMode::Single)
            .map_err(program)?;
        let link = prog.take_link(link_id).map_err(program)?;
        let link = FdLink::try_from(link).map_err(|source| DatapathError::Link {
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
        let program: &mut CgroupSockAddr = ebpf
            .program_mut(hook.name)
            .and_then(|program| program.try_into().ok())
            .ok_or(DatapathError::MissingProgram(hook.name))?;
        let error = |source| DatapathError::Program {
            name: hook.name,
            source,
        };
        program.load().map_err(error)?;
        let pin = progs.join(hook.name);
        program
            .pin(&pin)
            .map_err(|source| DatapathError::Pin { path: pin, source })?;
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
