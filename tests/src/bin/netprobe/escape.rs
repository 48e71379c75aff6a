//! Escape probes: what a container might try to get around its policy. Each makes one attempt
//! and prints "ok" or "errno N", as the socket probes do.
//!
//! ```text
//! netprobe raw6                     a raw ICMPv6 socket
//! netprobe unshare-net              unshare(CLONE_NEWNET)
//! netprobe unshare-user-net         unshare(CLONE_NEWUSER | CLONE_NEWNET), then a bind
//!                                   to PORT in that namespace: "ok"/"errno" twice
//! netprobe setns PATH               setns into the network namespace PATH names
//! netprobe join-cgroup PATH         write our pid into PATH (a cgroup.procs file)
//! netprobe mount FSTYPE DIR         mount a new FSTYPE (bpf, cgroup2, ...) on DIR
//! netprobe remount-rw DIR           make the read-only bind mount at DIR writable
//! netprobe bpf-prog-ids             bpf(BPF_PROG_GET_NEXT_ID): enumerate loaded programs
//! netprobe bpf-map-create           bpf(BPF_MAP_CREATE): a small array map
//! netprobe bpf-obj-get PATH         bpf(BPF_OBJ_GET) on a pinned object
//! netprobe bpf-link-detach PATH     bpf(BPF_OBJ_GET) then bpf(BPF_LINK_DETACH) on a pinned link
//! netprobe unix-connect PATH        connect to a Unix stream socket
//! ```
use std::{ffi::CString, io::Write as _};

use super::{errno, print_result, report_socket};

pub fn raw6() -> Result<(), String> {
    // SAFETY: a socket syscall; report_socket closes the descriptor.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
    report_socket(fd);
    Ok(())
}

pub fn unshare_net() -> Result<(), String> {
    // SAFETY: unshare only changes this process's namespaces.
    print_result(outcome(unsafe { libc::unshare(libc::CLONE_NEWNET) }));
    Ok(())
}

/// A user namespace of its own gives a process every capability over a network namespace it
/// then makes: the cgroup hooks must still hold there (they follow the cgroup, not the netns).
pub fn unshare_user_net(args: &[String]) -> Result<(), String> {
    let port: u16 = parse(args, 0, "unshare-user-net PORT")?;
    // SAFETY: as above.
    let result = outcome(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) });
    print_result(result);
    if result == 0 {
        bring_loopback_up();
        let addr = std::net::IpAddr::from([127, 0, 0, 1]);
        match super::bind("tcp", addr, port, &[]) {
            // SAFETY: we own fd.
            Ok(fd) => print_result(unsafe { libc::close(fd) }),
            Err(errno) => print_result(errno),
        }
    }
    Ok(())
}

/// A new network namespace's loopback starts down; an address to bind needs it up.
fn bring_loopback_up() {
    // SAFETY: an ioctl on a socket this function owns, with a zeroed, then filled ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
        request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK) as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS, &request);
        libc::close(fd);
    }
}

pub fn setns(args: &[String]) -> Result<(), String> {
    let path = c_path(args, "setns PATH")?;
    // SAFETY: open and setns on a descriptor this function owns and closes.
    let result = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            errno()
        } else {
            let result = outcome(libc::setns(fd, libc::CLONE_NEWNET));
            libc::close(fd);
            result
        }
    };
    print_result(result);
    Ok(())
}

pub fn join_cgroup(args: &[String]) -> Result<(), String> {
    let path = args.first().ok_or("join-cgroup PATH")?;
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(std::process::id().to_string().as_bytes()));
    print_result(result.err().and_then(|e| e.raw_os_error()).unwrap_or(0));
    Ok(())
}

pub fn mount(args: &[String]) -> Result<(), String> {
    let [fstype, dir] = args else {
        return Err("mount FSTYPE DIR".into());
    };
    let fstype = CString::new(fstype.as_str()).map_err(|e| e.to_string())?;
    let dir = CString::new(dir.as_str()).map_err(|e| e.to_string())?;
    // SAFETY: mount with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    print_result(outcome(rc));
    Ok(())
}

pub fn remount_rw(args: &[String]) -> Result<(), String> {
    let dir = c_path(args, "remount-rw DIR")?;
    let flags = libc::MS_REMOUNT | libc::MS_BIND;
    // SAFETY: as above.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            dir.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    print_result(outcome(rc));
    Ok(())
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// bpf(2) with `attr` as its union bpf_attr (zero beyond what the command reads).
fn bpf(command: libc::c_long, attr: &[u32; 32]) -> libc::c_long {
    // SAFETY: attr is 128 readable bytes, more than any command used here reads.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_ptr(),
            std::mem::size_of_val(attr),
        )
    }
}

pub fn bpf_prog_ids() -> Result<(), String> {
    // start_id 0: the first program the kernel has.
    print_result(outcome_fd(bpf(BPF_PROG_GET_NEXT_ID, &[0; 32])));
    Ok(())
}

pub fn bpf_map_create() -> Result<(), String> {
    let mut attr = [0u32; 32];
    // map_type, key_size, value_size, max_entries.
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 8, 1]);
    print_result(outcome_fd(bpf(BPF_MAP_CREATE, &attr)));
    Ok(())
}

pub fn bpf_obj_get(args: &[String]) -> Result<(), String> {
    let path = c_path(args, "bpf-obj-get PATH")?;
    print_result(outcome_fd(obj_get(&path)));
    Ok(())
}

pub fn bpf_link_detach(args: &[String]) -> Result<(), String> {
    let path = c_path(args, "bpf-link-detach PATH")?;
    let fd = obj_get(&path);
    if fd < 0 {
        print_result(errno());
        return Ok(());
    }
    let mut attr = [0u32; 32];
    attr[0] = fd as u32;
    print_result(outcome_fd(bpf(BPF_LINK_DETACH, &attr)));
    Ok(())
}

fn obj_get(path: &CString) -> libc::c_long {
    let mut attr = [0u32; 32];
    let pointer = path.as_ptr() as u64;
    // pathname (a u64), then bpf_fd and file_flags, zero.
    attr[0] = pointer as u32;
    attr[1] = (pointer >> 32) as u32;
    bpf(BPF_OBJ_GET, &attr)
}

pub fn unix_connect(args: &[String]) -> Result<(), String> {
    let path = args.first().ok_or("unix-connect PATH")?;
    let result = std::os::unix::net::UnixStream::connect(path);
    print_result(result.err().and_then(|e| e.raw_os_error()).unwrap_or(0));
    Ok(())
}

/// 0, or the errno of a failed call that returned -1.
fn outcome(rc: libc::c_int) -> i32 {
    if rc == 0 {
        0
    } else {
        errno()
    }
}

/// 0 for a call that returned a descriptor or an id (not closed: the probe exits at once), or
/// its errno.
fn outcome_fd(rc: libc::c_long) -> i32 {
    if rc >= 0 {
        0
    } else {
        errno()
    }
}

fn c_path(args: &[String], usage: &str) -> Result<CString, String> {
    let path = args.first().ok_or(usage)?;
    CString::new(path.as_str()).map_err(|e| e.to_string())
}

fn parse<T: std::str::FromStr>(args: &[String], index: usize, usage: &str) -> Result<T, String> {
    (args.get(index).and_then(|text| text.parse().ok())).ok_or_else(|| usage.to_string())
}
