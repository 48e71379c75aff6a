//! Sockets bound on the host, from procfs: which ports are taken, and by which processes.
//!
//! Admission uses this to refuse a port a host process already holds, naming the process.
use std::{
    collections::HashSet,
    fmt, fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use hostnetd_common::Proto;

use crate::sys::sock_diag::{self, States, TCP_LISTEN};

const TABLES: [(&str, Proto); 4] = [
    ("tcp", Proto::Tcp),
    ("tcp6", Proto::Tcp),
    ("udp", Proto::Udp),
    ("udp6", Proto::Udp),
];

#[derive(Debug, thiserror::Error)]
pub enum SocketScanError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundSocket {
    pub proto: Proto,
    pub local: SocketAddr,
    pub inode: u64,
    pub state: u8,
    /// The cgroup of the process that made it, where the kernel says (sock_diag, 5.7 on).
    pub cgroup_id: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketHolder {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// Its cgroup v2 path (`/hostnetd/<id>/ctr`), empty when unknown.
    pub cgroup: String,
}

impl SocketHolder {
    /// Whether the process is in cgroup `dir` (a path such as `/hostnetd/<id>`) or below it.
    pub fn is_within(&self, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        !dir.is_empty()
            && (self.cgroup == dir
                || self
                    .cgroup
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

impl fmt::Display for SocketHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.cmdline.is_empty() {
            &self.comm
        } else {
            &self.cmdline
        };
        write!(f, "pid {} ({what})", self.pid)
    }
}

pub struct ProcFs {
    root: PathBuf,
    /// Ask the kernel through sock_diag (the host's own /proc), else read the tables.
    sock_diag: bool,
    /// The cgroup2 mount, to look for a socket's holder first in the cgroup that made it.
    cgroup2: Option<PathBuf>,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            sock_diag: false,
            cgroup2: None,
        }
    }

    /// The host's /proc, its sockets asked of the kernel, their holders looked for first in
    /// the cgroup (on the cgroup2 mount `cgroup2`) that made each.
    pub fn host(cgroup2: &Path) -> Self {
        Self {
            sock_diag: true,
            cgroup2: Some(cgroup2.to_path_buf()),
            ..Self::new("/proc")
        }
    }

    /// Every socket bound to a local port in this network namespace.
    pub fn bound_sockets(&self) -> Result<Vec<BoundSocket>, SocketScanError> {
        let mut sockets = Vec::new();
        for (table, proto) in TABLES {
            let path = self.root.join("net").join(table);
            let text = match read_in_large_chunks(&path) {
                Ok(text) => text,
                // No tcp6/udp6 table when IPv6 is disabled.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(SocketScanError::Read { path, source }),
            };
            sockets.extend(text.lines().skip(1).filter_map(|row| parse_row(row, proto)));
        }
        Ok(sockets)
    }

    /// The sockets bound to any of `wanted`: asked of the kernel with a filter by port, or
    /// where it cannot answer (the inet_diag modules missing) read from the /proc tables.
    pub fn find_bound(&self, wanted: &[(Proto, u16)]) -> Result<Vec<BoundSocket>, SocketScanError> {
        if self.sock_diag {
            if let Ok(sockets) = diag_bound(wanted) {
                return Ok(sockets);
            }
        }
        let wanted: HashSet<(Proto, u16)> = wanted.iter().copied().collect();
        let mut sockets = self.bound_sockets()?;
        sockets.retain(|socket| wanted.contains(&(socket.proto, socket.local.port())));
        Ok(sockets)
    }

    /// The processes with a descriptor for `socket`; vanished or hidden ones are skipped.
    ///
    /// They are looked for first among the processes of the cgroup that made the socket: on
    /// a host that groups its services in cgroups, that is the service, whatever else runs.
    /// Only when none there holds it (it was handed to another process, or its maker moved
    /// or exited) is every process searched.
    ///
    /// `hostnetd_pids` (supervisors and container inits) are searched only when no other
    /// process holds the socket: each container adds two, and a socket on a port it owns is
    /// named by the owner table, not by this search. Looking through them first would make
    /// every refused admission slower with each container running.
    pub fn socket_holders(
        &self,
        socket: &BoundSocket,
        hostnetd_pids: &HashSet<u32>,
    ) -> Vec<SocketHolder> {
        let target = format!("socket:[{}]", socket.inode);
        if let Some(makers) = self.processes_of_cgroup(socket.cgroup_id) {
            let holders = self.holders_among(makers, &target, hostnetd_pids);
            if !holders.is_empty() {
                return holders;
            }
        }
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let every = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok());
        self.holders_among(every.collect(), &target, hostnetd_pids)
    }

    fn processes_of_cgroup(&self, cgroup_id: Option<u64>) -> Option<Vec<u32>> {
        crate::sys::cgroup::processes_of_id(self.cgroup2.as_deref()?, cgroup_id?).ok()
    }

    /// Those of `pids` that hold `target`, hostnetd's own searched only when no other does.
    fn holders_among(
        &self,
        pids: Vec<u32>,
        target: &str,
        hostnetd_pids: &HashSet<u32>,
    ) -> Vec<SocketHolder> {
        let (ours, others): (Vec<u32>, Vec<u32>) = pids
            .into_iter()
            .partition(|pid| hostnetd_pids.contains(pid));
        let holders_in = |pids: Vec<u32>| -> Vec<SocketHolder> {
            (pids.into_iter())
                .filter(|pid| self.holds(*pid, target))
                .map(|pid| self.holder(pid))
                .collect()
        };
        let holders = holders_in(others);
        if holders.is_empty() {
            holders_in(ours)
        } else {
            holders
        }
    }

    fn holds(&self, pid: u32, target: &str) -> bool {
        let Ok(fds) = fs::read_dir(self.root.join(pid.to_string()).join("fd")) else {
            return false;
        };
        fds.filter_map(Result::ok)
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target))
    }

    fn holder(&self, pid: u32) -> SocketHolder {
        let dir = self.root.join(pid.to_string());
        let comm = read_trimmed(&dir.join("comm"));
        let raw = fs::read(dir.join("cmdline")).unwrap_or_default();
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let cmdline: String = args.join(" ").chars().take(80).collect();
        let cgroup = fs::read_to_string(dir.join("cgroup"))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("0::").map(str::to_string))
            .unwrap_or_default();
        SocketHolder {
            pid,
            comm,
            cmdline,
            cgroup,
        }
    }
}

/// [`ProcFs::find_bound`] through sock_diag: one filtered dump per family and protocol asked
/// for. Sockets are kept as the /proc tables show them: no orphans (inode 0).
fn diag_bound(wanted: &[(Proto, u16)]) -> io::Result<Vec<BoundSocket>> {
    let mut sockets = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let ports: Vec<u16> = (wanted.iter())
            .filter(|(p, _)| *p == proto)
            .map(|(_, port)| *port)
            .collect();
        if ports.is_empty() {
            continue;
        }
        let ranges = sock_diag::ranges_of(ports);
        let (ipproto, states) = match proto {
            Proto::Tcp => (libc::IPPROTO_TCP, States::Listening),
            Proto::Udp => (libc::IPPROTO_UDP, States::All),
        };
        for family in [libc::AF_INET, libc::AF_INET6] {
            let found = sock_diag::bound_sockets(family as u8, ipproto as u8, states, &ranges);
            let found = match found {
                // No IPv6 on this host: nothing bound there.
                Err(error) if family == libc::AF_INET6 && is_unsupported(&error) => continue,
                other => other?,
            };
            sockets.extend(
                found
                    .into_iter()
                    .filter(|s| s.inode != 0)
                    .map(|s| BoundSocket {
                        proto,
                        local: s.local,
                        inode: s.inode,
                        state: s.state,
                        cgroup_id: s.cgroup_id,
                    }),
            );
        }
    }
    Ok(sockets)
}

fn is_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::ENOENT | libc::EOPNOTSUPP)
    )
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

/// Reads a /proc/net table with few, large reads: each read(2) of these files walks the
/// kernel's whole socket hash table again, and `read_to_string` starts with small reads.
fn read_in_large_chunks(path: &Path) -> io::Result<String> {
    use std::io::Read as _;
    const CHUNK: usize = 1 << 20;
    let mut file = fs::File::open(path)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut filled = 0;
    loop {
        let read = file.read(&mut buffer[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
        if buffer.len() - filled < CHUNK / 2 {
            buffer.resize(buffer.len() + CHUNK, 0);
        }
    }
    buffer.truncate(filled);
    String::from_utf8(buffer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One row of /proc/net/{tcp,udp}{,6}, for a socket that holds its port as a service does:
/// a TCP listener, or any bound UDP socket. None for headers, unbound sockets and TCP
/// connections (what sock_diag is asked for too: [`States::Listening`]).
fn parse_row(row: &str, proto: Proto) -> Option<BoundSocket> {
    let fields: Vec<&str> = row.split_whitespace().collect();
    let local = parse_address(fields.get(1)?)?;
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode: u64 = fields.get(9)?.parse().ok()?;
    let holds_port = proto == Proto::Udp || state == TCP_LISTEN;
    (local.port() != 0 && holds_port).then_some(BoundSocket {
        proto,
        local,
        inode,
        state,
        cgroup_id: None,
    })
}

/// `0100007F:4E20` or a 32-digit IPv6 form: the address in host-order words, the port in hex.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut octets = [0u8; 16];
            for (word, chunk) in octets.chunks_exact_mut(4).enumerate() {
                let hex = addr.get(word * 8..word * 8 + 8)?;
                chunk.copy_from_slice(&u32::from_str_radix(hex, 16).ok()?.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    fn fake_proc(tag: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("hostnetd-procfs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("net")).unwrap();
        root
    }

    /// A socket the fake /proc's processes may hold, made by no cgroup known.
    fn socket(inode: u64) -> BoundSocket {
        BoundSocket {
            proto: Proto::Tcp,
            local: "127.0.0.1:20000".parse().unwrap(),
            inode,
            state: TCP_LISTEN,
            cgroup_id: None,
        }
    }

    fn row(local: &str, state: &str, inode: u64) -> String {
        format!("   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1\n")
    }

    #[test]
    fn addresses_decode_from_host_order_words() {
        assert_eq!(
            parse_address("0100007F:4E20"),
            Some("127.0.0.1:20000".parse().unwrap())
        );
        let v6 = parse_address("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(v6, "[::1]:80".parse().unwrap());
        let mapped = parse_address("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(mapped, "[::ffff:127.0.0.1]:80".parse().unwrap());
    }

    #[test]
    fn bound_sockets_are_listeners_and_bound_udp_sockets() {
        let root = fake_proc("bound");
        let tcp = [
            row("0100007F:4E20", "0A", 11),
            row("0100007F:4E21", "06", 12),
            row("0100007F:4E22", "01", 0),
        ];
        fs::write(root.join("net/tcp"), format!("{HEADER}{}", tcp.concat())).unwrap();
        let udp = [
            row("00000000:4E23", "07", 13),
            row("00000000:0000", "07", 14),
        ];
        fs::write(root.join("net/udp"), format!("{HEADER}{}", udp.concat())).unwrap();
        fs::write(
            root.join("net/udp6"),
            format!(
                "{HEADER}{}",
                row("00000000000000000000000001000000:4E24", "07", 15)
            ),
        )
        .unwrap();
        let sockets = ProcFs::new(&root).bound_sockets().unwrap();
        let seen: Vec<(Proto, u16, u64)> = sockets
            .iter()
            .map(|s| (s.proto, s.local.port(), s.inode))
            .collect();
        assert_eq!(
            seen,
            vec![
                (Proto::Tcp, 20000, 11),
                (Proto::Udp, 20003, 13),
                (Proto::Udp, 20004, 15)
            ]
        );
        let found = ProcFs::new(&root)
            .find_bound(&[(Proto::Udp, 20004), (Proto::Tcp, 20003)])
            .unwrap();
        assert_eq!(found.len(), 1);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn holders_are_found_through_fd_links() {
        let root = fake_proc("holders");
        fs::create_dir_all(root.join("42/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[12345]", root.join("42/fd/3")).unwrap();
        fs::write(root.join("42/comm"), "busybox\n").unwrap();
        fs::write(root.join("42/cmdline"), b"busybox\0httpd\0-f\0").unwrap();
        fs::write(root.join("42/cgroup"), "0::/hostnetd/abc/ctr\n").unwrap();
        fs::create_dir_all(root.join("43/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[999]", root.join("43/fd/3")).unwrap();
        let holders = ProcFs::new(&root).socket_holders(&socket(12345), &HashSet::new());
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].to_string(), "pid 42 (busybox httpd -f)");
        assert!(holders[0].is_within("/hostnetd/abc"));
        assert!(!holders[0].is_within("/hostnetd/ab"));
        assert!(!holders[0].is_within("/hostnetd/other"));
        assert!(!holders[0].is_within(""));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn hostnetd_processes_are_searched_only_when_no_other_holds_the_socket() {
        let root = fake_proc("ours-last");
        for (pid, socket) in [(42, 7), (50, 7), (51, 8)] {
            fs::create_dir_all(root.join(format!("{pid}/fd"))).unwrap();
            std::os::unix::fs::symlink(
                format!("socket:[{socket}]"),
                root.join(format!("{pid}/fd/3")),
            )
            .unwrap();
            fs::write(root.join(format!("{pid}/comm")), format!("p{pid}\n")).unwrap();
        }
        let procfs = ProcFs::new(&root);
        let ours = HashSet::from([50, 51]);
        let pids = |socket| -> Vec<u32> {
            (procfs.socket_holders(&self::socket(socket), &ours).iter())
                .map(|holder| holder.pid)
                .collect()
        };
        assert_eq!(pids(7), [42]);
        assert_eq!(pids(8), [51]);
        assert_eq!(pids(9), Vec::<u32>::new());
        fs::remove_dir_all(root).unwrap();
    }

    /// The kernel's answer and the /proc tables' agree on the ports asked about.
    #[test]
    fn sock_diag_and_the_proc_tables_agree() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let v6 = std::net::TcpListener::bind("[::]:0").unwrap();
        let dual = v6.local_addr().unwrap().port();
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        let wanted = [
            (Proto::Tcp, tcp),
            (Proto::Tcp, dual),
            (Proto::Udp, udp_port),
        ];
        let key = |s: &BoundSocket| (s.proto as u8, s.local, s.inode, s.state);
        let mut diag: Vec<_> = diag_bound(&wanted).unwrap().iter().map(key).collect();
        let mut proc: Vec<_> = (ProcFs::new("/proc").find_bound(&wanted).unwrap().iter())
            .map(key)
            .collect();
        diag.sort();
        proc.sort();
        assert_eq!(diag, proc);
        // The two listeners and the UDP socket; the connections do not hold their ports.
        assert_eq!(diag.len(), 3, "{diag:?}");
    }

    #[test]
    fn the_real_host_shows_a_socket_this_test_binds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cgroup2 = crate::sys::cgroup::Cgroup2::host().unwrap();
        let host = ProcFs::host(cgroup2.mount());
        let found = host.find_bound(&[(Proto::Tcp, port)]).unwrap();
        assert_eq!(found.len(), 1);
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let own_id =
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(cgroup2.path_of(own)).unwrap());
        assert_eq!(
            found[0].cgroup_id,
            Some(own_id),
            "the kernel names the maker's cgroup"
        );
        let holders = host.socket_holders(&found[0], &HashSet::new());
        assert_eq!(holders.first().map(|h| h.pid), Some(std::process::id()));
    }
}
