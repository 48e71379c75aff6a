//! The OCI runtime config (config.json) of a host-network container.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::user::ProcessUser;
use crate::sys::mounts::{self, Mount};

/// Everything about a container's process that the OCI config needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ProcessUser,
    pub hostname: String,
    pub capabilities: Capabilities,
    pub volumes: Vec<Volume>,
    /// Some: the process gets a terminal (`-t`), of this size (rows, columns) when known.
    pub terminal: Option<Option<(u16, u16)>>,
}

/// Docker's default capability set, less NET_RAW: raw sockets would bypass port ownership.
const DEFAULT_CAPABILITIES: [&str; 13] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability name Linux 6.x knows, for validating --cap-add and --cap-drop.
const KNOWN_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's masked and read-only /proc paths: host-wide knobs a container must not read or set.
const MASKED_PATHS: [&str; 9] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
];
const READONLY_PATHS: [&str; 6] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/sys/firmware",
];

/// The capability set: docker's defaults adjusted by --cap-add and --cap-drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities(BTreeSet<String>);

impl Capabilities {
    /// Applies drops, then adds, as docker does; `ALL` stands for every capability.
    pub fn from_flags(add: &[String], drop: &[String]) -> Result<Self, String> {
        let mut set: BTreeSet<String> =
            DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        for name in drop {
            match normalise(name)? {
                None => set.clear(),
                Some(cap) => {
                    set.remove(&cap);
                }
            }
        }
        for name in add {
            match normalise(name)? {
                None => set.extend(KNOWN_CAPABILITIES.iter().map(|c| c.to_string())),
                Some(cap) => {
                    set.insert(cap);
                }
            }
        }
        Ok(Self(set))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }
}

/// `net_raw`, `NET_RAW` and `CAP_NET_RAW` all name CAP_NET_RAW; `None` is ALL.
fn normalise(name: &str) -> Result<Option<String>, String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if KNOWN_CAPABILITIES.contains(&full.as_str()) {
        Ok(Some(full))
    } else {
        Err(format!(
            "unknown capability {name:?}: use a name such as NET_RAW or CAP_NET_ADMIN, or ALL"
        ))
    }
}

/// A `-v HOST:CONTAINER[:ro]` bind mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

impl std::str::FromStr for Volume {
    type Err = String;

    /// `HOST:CONTAINER[:ro|rw]`; HOST must exist, both must be absolute.
    fn from_str(value: &str) -> Result<Self, String> {
        let parts: Vec<&str> = value.split(':').collect();
        let (host, container, read_only) = match parts.as_slice() {
            [host, container] => (*host, *container, false),
            [host, container, "ro"] => (*host, *container, true),
            [host, container, "rw"] => (*host, *container, false),
            _ => {
                return Err(format!(
                    "invalid volume {value:?}: expected HOST:CONTAINER[:ro|rw]"
                ))
            }
        };
        if !host.starts_with('/') || !container.starts_with('/') {
            return Err(format!(
                "invalid volume {value:?}: both paths must be absolute"
            ));
        }
        let host = std::path::Path::new(host)
            .canonicalize()
            .map_err(|error| format!("invalid volume {value:?}: {host}: {error}"))?;
        Ok(Self {
            host,
            container: container.to_string(),
            read_only,
        })
    }
}

/// The config.json for `process`, with its root at `rootfs` and its cgroup at `cgroups_path`
/// (relative to the cgroup mounts). No network namespace: the container uses the host's stack.
pub fn oci_config(
    process: &ProcessSpec,
    rootfs: &str,
    readonly: bool,
    cgroups_path: &str,
) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": process_config(process),
        "root": { "path": rootfs, "readonly": readonly },
        "hostname": process.hostname,
        "mounts": mounts(&process.volumes),
        "linux": {
            "cgroupsPath": cgroups_path,
            "seccomp": seccomp(&process.capabilities),
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ],
            "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        }
    })
}

fn process_config(process: &ProcessSpec) -> Value {
    let caps = process.capabilities.names();
    // As docker does for a non-root user: the caps stay in the bounding set only.
    let effective: Vec<&str> = if process.user.uid == 0 {
        caps.clone()
    } else {
        Vec::new()
    };
    let mut config = json!({
        "terminal": process.terminal.is_some(),
        "user": {
            "uid": process.user.uid,
            "gid": process.user.gid,
            "additionalGids": process.user.additional_gids,
        },
        "args": process.args,
        "env": process.env,
        "cwd": process.cwd,
        "capabilities": {
            "bounding": caps,
            "effective": effective,
            "permitted": effective,
        },
        "noNewPrivileges": false,
    });
    if let Some(Some((rows, cols))) = process.terminal {
        config["consoleSize"] = json!({ "height": rows, "width": cols });
    }
    config
}

const CLONE_NEWUSER: u64 = 0x1000_0000;

/// A filter that allows everything but what would let a container undo its own enforcement,
/// as docker's default profile does for these calls: bpf(2) (opening hostnetd's pinned
/// programs and maps, or enumerating and detaching any) without CAP_BPF or CAP_SYS_ADMIN, and
/// user namespaces (every capability inside one, over namespaces of its own) without
/// CAP_SYS_ADMIN. clone3 hides its flags from seccomp, so it is ENOSYS and libc falls back to
/// clone, whose flags are checked.
fn seccomp(capabilities: &Capabilities) -> Value {
    let refuse = |name: &str, errno: i32| json!({ "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": errno });
    let mut syscalls = Vec::new();
    if !capabilities.contains("CAP_BPF") && !capabilities.contains("CAP_SYS_ADMIN") {
        syscalls.push(refuse("bpf", libc::EPERM));
    }
    if !capabilities.contains("CAP_SYS_ADMIN") {
        for name in ["unshare", "clone"] {
            let mut rule = refuse(name, libc::EPERM);
            rule["args"] = json!([{ "index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER,
                                    "op": "SCMP_CMP_MASKED_EQ" }]);
            syscalls.push(rule);
        }
        syscalls.push(refuse("clone3", libc::ENOSYS));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": seccomp_architectures(),
        "syscalls": syscalls,
    })
}

/// This machine's system call ABIs: a 32-bit call must not slip past a 64-bit-only filter.
fn seccomp_architectures() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    }
}

fn mounts(volumes: &[Volume]) -> Value {
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"] }),
        // sysfs cannot be mounted without a network namespace of one's own, so the host's is
        // bound, read-only and alone: not the file systems mounted below it, among them the
        // BPF filesystem, whose pins (hostnetd's links and maps) a container could otherwise
        // open with bpf(BPF_OBJ_GET) and detach or rewrite. The cgroup tree comes back,
        // recursively read-only, so a container cannot move itself into another cgroup.
        json!({ "destination": "/sys", "type": "bind", "source": "/sys",
                "options": ["bind", "nosuid", "noexec", "nodev", "ro"] }),
    ];
    mounts.extend(read_only_cgroup_tree(
        kernel_has_mount_setattr(),
        host_cgroup_submounts(),
    ));
    mounts.extend([
        json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"] }),
        json!({ "destination": "/run", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=755"] }),
    ]);
    mounts.extend(volumes.iter().map(|volume| {
        let mode = if volume.read_only { "ro" } else { "rw" };
        json!({ "destination": volume.container, "type": "bind", "source": volume.host,
                "options": ["rbind", "rprivate", mode] })
    }));
    Value::Array(mounts)
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The host's cgroup tree, read-only all the way down: recursively (runc's "rro") where the
/// kernel has mount_setattr(2), Linux 5.12; before, the tree and then each file system mounted
/// below it (a hybrid host's v1 controllers, its cgroup2 at `unified`), one by one.
fn read_only_cgroup_tree(recursive: bool, submounts: &[String]) -> Vec<Value> {
    let options = ["nosuid", "noexec", "nodev"];
    if recursive {
        return vec![
            json!({ "destination": CGROUP_ROOT, "type": "bind", "source": CGROUP_ROOT,
                            "options": ["rbind", options[0], options[1], options[2], "rro"] }),
        ];
    }
    let top = json!({ "destination": CGROUP_ROOT, "type": "bind", "source": CGROUP_ROOT,
                      "options": ["rbind", options[0], options[1], options[2], "ro"] });
    let below = submounts.iter().map(|path| {
        json!({ "destination": path, "type": "bind", "source": path,
                "options": ["bind", options[0], options[1], options[2], "ro"] })
    });
    std::iter::once(top).chain(below).collect()
}

/// Mount points below /sys/fs/cgroup, parents before children.
fn cgroup_submounts(table: &[Mount]) -> Vec<String> {
    let mut below: Vec<String> = (table.iter())
        .filter(|mount| {
            mount.target.starts_with(CGROUP_ROOT) && mount.target != Path::new(CGROUP_ROOT)
        })
        .map(|mount| mount.target.to_string_lossy().into_owned())
        .collect();
    below.sort();
    below.dedup();
    below
}

/// The host's mounts below the cgroup root, read once per process: the host's mount table
/// grows with every container's root filesystem, and reading it whole for each new container
/// made every start slower than the one before. A hierarchy mounted after the daemon started
/// stays out of containers until it restarts (the /sys bind is not recursive): the safe side.
fn host_cgroup_submounts() -> &'static [String] {
    static SUBMOUNTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SUBMOUNTS.get_or_init(|| cgroup_submounts(&mounts::host().unwrap_or_default()))
}

/// mount_setattr(-1, "", 0, NULL, 0) answers EBADF where the call exists, ENOSYS where not.
/// Asked once per process.
fn kernel_has_mount_setattr() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(probe_mount_setattr)
}

fn probe_mount_setattr() -> bool {
    // SAFETY: a system call with invalid arguments, which the kernel refuses before using them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    };
    !(rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ProcessUser;

    #[test]
    fn without_mount_setattr_each_cgroup_mount_is_bound_read_only() {
        let table = mounts::parse(
            "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
             cgroup /sys/fs/cgroup/cpu\\040set cgroup rw 0 0\n\
             proc /proc proc rw 0 0\n",
        );
        let below = cgroup_submounts(&table);
        assert_eq!(below, ["/sys/fs/cgroup/cpu set", "/sys/fs/cgroup/unified"]);
        let plain = read_only_cgroup_tree(false, &below);
        assert_eq!(plain.len(), 3);
        assert!(plain
            .iter()
            .all(|m| m["options"].as_array().unwrap().contains(&json!("ro"))));
        assert_eq!(plain[2]["destination"], "/sys/fs/cgroup/unified");
        let recursive = read_only_cgroup_tree(true, &below);
        assert_eq!(recursive.len(), 1);
        assert!(recursive[0]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("rro")));
    }

    fn process(add: &[&str], drop: &[&str]) -> ProcessSpec {
        let strings = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        ProcessSpec {
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: ProcessUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
            },
            hostname: "web1".into(),
            capabilities: Capabilities::from_flags(&strings(add), &strings(drop)).unwrap(),
            volumes: vec![Volume {
                host: "/srv".into(),
                container: "/data".into(),
                read_only: true,
            }],
            terminal: None,
        }
    }

    #[test]
    fn no_network_namespace_and_no_net_raw_by_default() {
        let config = oci_config(&process(&[], &[]), "rootfs", true, "/hostnetd/abc");
        let namespaces = config["linux"]["namespaces"].to_string();
        assert!(!namespaces.contains("network"), "{namespaces}");
        let bounding = config["process"]["capabilities"]["bounding"].to_string();
        for forbidden in ["CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_BPF"] {
            assert!(!bounding.contains(forbidden), "{forbidden} in {bounding}");
        }
        assert!(bounding.contains("CAP_NET_BIND_SERVICE"));
    }

    #[test]
    fn cap_add_and_drop_follow_docker() {
        let caps = process(&["net_raw"], &["CHOWN"]).capabilities;
        assert!(caps.contains("CAP_NET_RAW"));
        assert!(!caps.contains("CAP_CHOWN"));
        let only_bind = process(&["NET_BIND_SERVICE"], &["ALL"]).capabilities;
        assert_eq!(only_bind.names(), vec!["CAP_NET_BIND_SERVICE"]);
        assert!(Capabilities::from_flags(&["NET_WIZARD".into()], &[]).is_err());
    }

    #[test]
    fn volumes_become_bind_mounts() {
        let config = oci_config(&process(&[], &[]), "rootfs", true, "/hostnetd/abc");
        let mounts = config["mounts"].as_array().unwrap();
        let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(data["options"][2], "ro");
        assert_eq!(data["source"], "/srv");
    }

    #[test]
    fn volumes_parse_like_docker() {
        let volume: Volume = "/tmp:/data:ro".parse().unwrap();
        assert!(volume.read_only);
        assert_eq!(volume.container, "/data");
        assert!(!"/tmp:/data".parse::<Volume>().unwrap().read_only);
        for bad in [
            "/tmp",
            "tmp:/data",
            "/tmp:data",
            "/tmp:/data:rx",
            "/nonexistent-dir:/d",
        ] {
            assert!(bad.parse::<Volume>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bpf_and_user_namespaces_are_filtered_unless_granted() {
        let refused = |add: &[&str]| {
            let config = oci_config(&process(add, &[]), "rootfs", true, "/hostnetd/abc");
            let seccomp = &config["linux"]["seccomp"];
            assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
            (seccomp["syscalls"].as_array().unwrap().iter())
                .map(|rule| rule["names"][0].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(refused(&[]), ["bpf", "unshare", "clone", "clone3"]);
        assert_eq!(refused(&["BPF"]), ["unshare", "clone", "clone3"]);
        assert!(refused(&["SYS_ADMIN"]).is_empty());
    }

    #[test]
    fn sys_is_bound_without_the_file_systems_below_it() {
        let config = oci_config(&process(&[], &[]), "rootfs", true, "/hostnetd/abc");
        let mounts = config["mounts"].as_array().unwrap();
        let options = |destination: &str| {
            let mount = mounts
                .iter()
                .find(|m| m["destination"] == destination)
                .unwrap();
            mount["options"].as_array().unwrap().clone()
        };
        // Not rbind: the BPF filesystem at /sys/fs/bpf must not come along.
        assert_eq!(options("/sys")[0], "bind");
        assert!(options("/sys").contains(&json!("ro")));
        let recursive = if kernel_has_mount_setattr() {
            "rro"
        } else {
            "ro"
        };
        assert!(options("/sys/fs/cgroup").contains(&json!(recursive)));
    }

    #[test]
    fn non_root_users_get_no_effective_capabilities() {
        let mut spec = process(&[], &[]);
        spec.user.uid = 1000;
        let config = oci_config(&spec, "rootfs", true, "/hostnetd/abc");
        assert_eq!(config["process"]["capabilities"]["effective"], json!([]));
    }
}
