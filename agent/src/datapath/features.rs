//! What this kernel's BPF can do, found by asking it: a version string says nothing about
//! backports (RHEL 9's 5.14 has TCX, for one), so every feature is tried with the smallest
//! program or map that needs it. Each probe loads nothing that stays: every descriptor it
//! opens is closed before it returns, and nothing is attached.
use std::{fmt, os::fd::OwnedFd, path::Path, sync::OnceLock};

use serde::{Deserialize, Serialize};

use super::syscall::{
    self, MapCreateAttr, BPF_LINK_CREATE, BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_PROG_QUERY,
};

/// The features hostnetd uses, as probed on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFeatures {
    /// The kernel describes its own types (/sys/kernel/btf/vmlinux).
    pub btf: bool,
    /// cgroup sock_addr programs load (bind, connect, sendmsg hooks).
    pub cgroup_sock_addr: bool,
    /// Programs attach to cgroups through BPF links (Linux 5.7), which are pinned so that
    /// enforcement outlives the process that attached it.
    pub cgroup_links: bool,
    /// The BPF ring buffer (Linux 5.8), which carries denial events.
    pub ring_buffer: bool,
    /// `bpf_set_retval` in sock_addr hooks (Linux 5.18): refused calls get EACCES or
    /// EADDRINUSE instead of the kernel's EPERM.
    pub set_retval: bool,
    /// TCX links on network devices (Linux 6.6); without them TC programs attach through a
    /// clsact qdisc.
    pub tcx: bool,
    /// BPF LSM programs run: `bpf` is among the active LSMs, and the kernel loads LSM programs
    /// (lockdown or a sandbox may refuse them).
    pub bpf_lsm: bool,
}

impl KernelFeatures {
    /// This kernel's features, probed once per process.
    pub fn host() -> Self {
        static PROBED: OnceLock<KernelFeatures> = OnceLock::new();
        *PROBED.get_or_init(Self::probe)
    }

    fn probe() -> Self {
        lift_memlock_limit();
        let cgroup_sock_addr = sock_addr_program(&[MOV_R0_1, EXIT]).is_ok();
        Self {
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            cgroup_sock_addr,
            cgroup_links: cgroup_sock_addr && cgroup_links(),
            ring_buffer: ring_buffer(),
            set_retval: sock_addr_program(&[MOV_R1_0, CALL_SET_RETVAL, MOV_R0_1, EXIT]).is_ok(),
            tcx: tcx(),
            bpf_lsm: {
                mount_securityfs_if_missing();
                bpf_lsm_active(Path::new(LSM_LIST)) && lsm_programs_load()
            },
        }
    }

    /// What the kernel lacks that hostnetd cannot do without, if anything: `Err` names each
    /// missing feature and what to do.
    pub fn require_floor(&self) -> Result<(), MissingFeatures> {
        let missing: Vec<&'static str> = [
            (
                self.btf,
                "BTF (/sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF)",
            ),
            (
                self.cgroup_sock_addr,
                "cgroup sock_addr BPF programs (CONFIG_CGROUP_BPF)",
            ),
            (self.cgroup_links, "BPF links on cgroups (Linux 5.7)"),
            (self.ring_buffer, "the BPF ring buffer (Linux 5.8)"),
        ]
        .into_iter()
        .filter_map(|(present, what)| (!present).then_some(what))
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MissingFeatures(missing))
        }
    }

    /// Each feature with whether this kernel has it and what hostnetd does about it, for
    /// `hostnetd info`.
    pub fn report(&self, tc_attach: TcAttach) -> Vec<FeatureReport> {
        let tc_mode = tc_attach.resolve(self);
        vec![
            FeatureReport::new(
                "btf",
                self.btf,
                "required",
                "required: the daemon refuses to start",
            ),
            FeatureReport::new(
                "cgroup_links",
                self.cgroup_links,
                "container hooks attach as pinned links",
                "required: the daemon refuses to start",
            ),
            FeatureReport::new(
                "ring_buffer",
                self.ring_buffer,
                "denial events are streamed (hostnetd events)",
                "required: the daemon refuses to start",
            ),
            FeatureReport::new(
                "set_retval",
                self.set_retval,
                "refused binds get EACCES or EADDRINUSE, refused connects and sends EACCES",
                "every refused bind, connect and send gets EPERM (enforcement is the same)",
            ),
            FeatureReport {
                name: "tcx".into(),
                available: self.tcx,
                effect: match tc_mode {
                    Ok(TcMode::Tcx) => "tc_ingress/tc_egress attach as TCX links".into(),
                    Ok(TcMode::Netlink) => {
                        "tc_ingress/tc_egress attach as clsact filters (netlink)".into()
                    }
                    Err(error) => error.to_string(),
                },
            },
            FeatureReport::new(
                "bpf_lsm",
                self.bpf_lsm,
                "socket_create refuses packet sockets to containers without --cap-add NET_RAW",
                "packet sockets are kept from containers by the missing CAP_NET_RAW alone",
            ),
        ]
    }
}

/// One line of `hostnetd info`'s feature table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureReport {
    pub name: String,
    pub available: bool,
    /// What hostnetd does with it, or without it.
    pub effect: String,
}

impl FeatureReport {
    fn new(name: &'static str, available: bool, with: &str, without: &str) -> Self {
        let effect = if available { with } else { without };
        Self {
            name: name.into(),
            available,
            effect: effect.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this kernel lacks what hostnetd cannot run without: {}; use a kernel that has it (Linux 5.10 or later with BTF, as Debian, Ubuntu, RHEL 9 and Amazon Linux ship)", .0.join(", "))]
pub struct MissingFeatures(pub Vec<&'static str>);

/// How `tc_ingress` and `tc_egress` attach to the host's interfaces (`--tc-attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcAttach {
    /// TCX where the kernel has it, a clsact qdisc's filters elsewhere.
    #[default]
    Auto,
    Tcx,
    Netlink,
}

/// The attach mode in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcMode {
    Tcx,
    Netlink,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "--tc-attach tcx: this kernel has no TCX links (Linux 6.6); use --tc-attach auto or netlink"
)]
pub struct NoTcx;

impl TcAttach {
    const NAMES: [&'static str; 3] = ["auto", "tcx", "netlink"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn resolve(self, features: &KernelFeatures) -> Result<TcMode, NoTcx> {
        match (self, features.tcx) {
            (Self::Netlink, _) | (Self::Auto, false) => Ok(TcMode::Netlink),
            (Self::Tcx | Self::Auto, true) => Ok(TcMode::Tcx),
            (Self::Tcx, false) => Err(NoTcx),
        }
    }
}

impl std::str::FromStr for TcAttach {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        (Self::NAMES
            .iter()
            .zip([Self::Auto, Self::Tcx, Self::Netlink]))
        .find_map(|(name, mode)| (*name == text).then_some(mode))
        .ok_or_else(|| format!("invalid TC attach mode {text:?}: use auto, tcx or netlink"))
    }
}

impl fmt::Display for TcAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Before Linux 5.11 the kernel charges BPF maps and programs to RLIMIT_MEMLOCK, whose
/// default (8 MiB, or 64 KiB on older systems) a few datapaths exhaust: loads then fail with
/// EPERM. Later kernels charge the memory cgroup instead and ignore the limit, so lifting it
/// (as libbpf and bpftool do) changes nothing there.
fn lift_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot lift RLIMIT_MEMLOCK: {}; kernels before 5.11 may refuse BPF loads",
            std::io::Error::last_os_error()
        );
    }
}

const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// The active LSMs are listed only in securityfs, which systemd mounts at boot; where nothing
/// did (a minimal init), it is mounted as systemd would, read-only data the kernel provides.
fn mount_securityfs_if_missing() {
    let dir = Path::new("/sys/kernel/security");
    if Path::new(LSM_LIST).exists() || !dir.is_dir() {
        return;
    }
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let rc = unsafe {
        libc::mount(
            c"securityfs".as_ptr(),
            c"/sys/kernel/security".as_ptr(),
            c"securityfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        tracing::debug!(
            "cannot mount securityfs: {}; BPF LSM counted as inactive",
            std::io::Error::last_os_error()
        );
    }
}

fn bpf_lsm_active(lsm_list: &Path) -> bool {
    std::fs::read_to_string(lsm_list)
        .is_ok_and(|list| list.trim().split(',').any(|lsm| lsm == "bpf"))
}

// The probes speak the bpf(2) syscall directly: aya loads programs only from an object file,
// and these are a few instructions each.

const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_PROG_TYPE_LSM: u32 = 29;
const BPF_LSM_MAC: u32 = 27;
const BPF_CGROUP_INET4_BIND: u32 = 8;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_FUNC_SET_RETVAL: i32 = 186;
const LOOPBACK_IFINDEX: u32 = 1;

/// One eBPF instruction as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const MOV_R0_1: Insn = Insn {
    code: 0xb7,
    regs: 0,
    off: 0,
    imm: 1,
};
const MOV_R0_0: Insn = Insn {
    code: 0xb7,
    regs: 0,
    off: 0,
    imm: 0,
};
const MOV_R1_0: Insn = Insn {
    code: 0xb7,
    regs: 1,
    off: 0,
    imm: 0,
};
const CALL_SET_RETVAL: Insn = Insn {
    code: 0x85,
    regs: 0,
    off: 0,
    imm: BPF_FUNC_SET_RETVAL,
};
const EXIT: Insn = Insn {
    code: 0x95,
    regs: 0,
    off: 0,
    imm: 0,
};

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// bpf(2): a new descriptor (or, for a query, none), or the errno.
fn bpf<T>(command: libc::c_long, attr: &mut T) -> Result<Option<OwnedFd>, i32> {
    let errno = |error: std::io::Error| error.raw_os_error().unwrap_or(0);
    // SAFETY: every caller passes an initialised bpf_attr prefix for its command, whose
    // pointers are to live locals; the kernel reads (and for queries writes) only that much.
    unsafe {
        if command == BPF_PROG_QUERY {
            syscall::bpf(command, attr).map(|_| None).map_err(errno)
        } else {
            syscall::bpf_fd(command, attr).map(Some).map_err(errno)
        }
    }
}

/// Loads a cgroup/bind4 program of these instructions: Ok if the verifier takes it.
fn sock_addr_program(insns: &[Insn]) -> Result<OwnedFd, i32> {
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_CGROUP_INET4_BIND,
        ..Default::default()
    };
    bpf(BPF_PROG_LOAD, &mut attr)?.ok_or(0)
}

/// An LSM program without a hook to attach to: EINVAL where LSM programs may load (the hook
/// is missing), EPERM where the kernel refuses them whatever the hook.
fn lsm_programs_load() -> bool {
    let license = c"GPL";
    let insns = [MOV_R0_0, EXIT];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_LSM,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_LSM_MAC,
        ..Default::default()
    };
    matches!(bpf(BPF_PROG_LOAD, &mut attr), Err(libc::EINVAL))
}

/// BPF_LINK_CREATE knows cgroup targets: given no cgroup (fd -1) it says EBADF, where a kernel
/// without cgroup links says EINVAL. Nothing is attached either way.
fn cgroup_links() -> bool {
    let Ok(program) = sock_addr_program(&[MOV_R0_1, EXIT]) else {
        return false;
    };
    use std::os::fd::AsRawFd as _;
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: u32::MAX,
        attach_type: BPF_CGROUP_INET4_BIND,
        flags: 0,
    };
    matches!(bpf(BPF_LINK_CREATE, &mut attr), Err(libc::EBADF))
}

fn ring_buffer() -> bool {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        max_entries: page_size(),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr).is_ok()
}

/// Asking loopback which TCX programs it has: a kernel without TCX does not know the attach
/// type (EINVAL). Cilium probes the same way, for the same backports.
fn tcx() -> bool {
    let mut attr = ProgQueryAttr {
        target_ifindex: LOOPBACK_IFINDEX,
        attach_type: BPF_TCX_INGRESS,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).is_ok()
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_lsm_is_active_only_when_listed() {
        let dir = std::env::temp_dir().join(format!("hostnetd-lsm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("lsm");
        std::fs::write(&list, "lockdown,capability,landlock,yama,apparmor,bpf").unwrap();
        assert!(bpf_lsm_active(&list));
        std::fs::write(&list, "lockdown,capability,bpfilter_not,apparmor").unwrap();
        assert!(!bpf_lsm_active(&list));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!bpf_lsm_active(&dir.join("lsm")));
    }

    #[test]
    fn the_attach_mode_follows_the_probe_unless_forced() {
        let with = |tcx| KernelFeatures {
            tcx,
            ..all_features()
        };
        assert_eq!(TcAttach::Auto.resolve(&with(true)).unwrap(), TcMode::Tcx);
        assert_eq!(
            TcAttach::Auto.resolve(&with(false)).unwrap(),
            TcMode::Netlink
        );
        assert_eq!(
            TcAttach::Netlink.resolve(&with(true)).unwrap(),
            TcMode::Netlink
        );
        assert!(TcAttach::Tcx.resolve(&with(false)).is_err());
        assert_eq!("netlink".parse::<TcAttach>().unwrap(), TcAttach::Netlink);
        assert!("clsact"
            .parse::<TcAttach>()
            .unwrap_err()
            .contains("auto, tcx or netlink"));
    }

    #[test]
    fn the_floor_names_every_missing_feature() {
        assert!(all_features().require_floor().is_ok());
        let old = KernelFeatures {
            btf: false,
            ring_buffer: false,
            ..all_features()
        };
        let error = old.require_floor().unwrap_err().to_string();
        assert!(error.contains("BTF"), "{error}");
        assert!(error.contains("ring buffer"), "{error}");
        assert!(!error.contains("links"), "{error}");
    }

    #[test]
    fn without_set_retval_info_says_eperm() {
        let old = KernelFeatures {
            set_retval: false,
            ..all_features()
        };
        let report = old.report(TcAttach::Auto);
        let line = report.iter().find(|f| f.name == "set_retval").unwrap();
        assert!(!line.available);
        assert!(line.effect.contains("EPERM"), "{}", line.effect);
    }

    fn all_features() -> KernelFeatures {
        KernelFeatures {
            btf: true,
            cgroup_sock_addr: true,
            cgroup_links: true,
            ring_buffer: true,
            set_retval: true,
            tcx: true,
            bpf_lsm: true,
        }
    }
}
