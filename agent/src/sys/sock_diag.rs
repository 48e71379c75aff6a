//! The kernel's socket tables through netlink `sock_diag`, asked only for sockets on given
//! local ports: the kernel filters as it walks, and sends nothing else. Reading
//! /proc/net/{tcp,udp}{,6} instead formats every socket on the host as text, and walks the
//! whole table again for each read(2) of it.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
/// The attribute carrying the cgroup id of the process that made the socket (Linux 5.7).
const INET_DIAG_CGROUP_ID: u16 = 21;
/// `struct inet_diag_msg`'s length; attributes follow it.
const INET_DIAG_MSG: usize = 72;

/// The kernel's TCP_LISTEN state, as sock_diag and /proc/net/tcp both give it.
pub const TCP_LISTEN: u8 = 10;

/// Which sockets a dump asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum States {
    /// TCP listeners only. The kernel then walks only its listening hash; any other state
    /// makes it walk the whole established hash, every bucket of it (262144 on a 24 GiB host:
    /// about 9 ms a family here), whatever the filter.
    Listening,
    /// Every socket (UDP's table is small, and a bound UDP socket is a service).
    All,
}

impl States {
    fn mask(self) -> u32 {
        match self {
            Self::Listening => 1 << TCP_LISTEN,
            Self::All => u32::MAX,
        }
    }
}

/// Port ranges one filter holds (20 bytes each): the filter is a netlink attribute, whose
/// length is 16 bits.
const RANGES_PER_DUMP: usize = 2048;

/// A socket bound to a local port, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub local: SocketAddr,
    pub state: u8,
    /// 0 for a socket no process holds any more (an orphan, closing).
    pub inode: u64,
    /// The cgroup of the process that made it; None before Linux 5.7.
    pub cgroup_id: Option<u64>,
}

/// Sockets of `protocol` (IPPROTO_TCP or IPPROTO_UDP) and `family` (AF_INET or AF_INET6) in
/// `states`, bound to a local port within `ranges` (inclusive).
pub fn bound_sockets(
    family: u8,
    protocol: u8,
    states: States,
    ranges: &[(u16, u16)],
) -> io::Result<Vec<DiagSocket>> {
    let socket = open()?;
    let mut found = Vec::new();
    for chunk in ranges.chunks(RANGES_PER_DUMP) {
        send_request(&socket, family, protocol, states, &port_filter(chunk))?;
        receive_dump(&socket, &mut found)?;
    }
    Ok(found)
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel's filter bytecode accepting a source (local) port in any of `ranges`, as `ss`
/// compiles "sport >= A and sport <= B or ...": per range, ">= low" and "<= high", each
/// jumping past the range when false (to the next range, or past the end: reject), and
/// between ranges an unconditional jump to the end (accept) that a match falls into. The
/// kernel checks that every jump lands on an instruction the true branches reach, which this
/// layout keeps.
fn port_filter(ranges: &[(u16, u16)]) -> Vec<u8> {
    let mut code = Vec::with_capacity(ranges.len() * 20);
    if ranges.is_empty() {
        // Nothing wanted: jump past the end, which rejects every socket.
        op(&mut code, INET_DIAG_BC_JMP, 4, 8);
        return code;
    }
    for (index, &(low, high)) in ranges.iter().enumerate() {
        op(&mut code, INET_DIAG_BC_S_GE, 8, 20);
        op(&mut code, 0, 0, low);
        op(&mut code, INET_DIAG_BC_S_LE, 8, 12);
        op(&mut code, 0, 0, high);
        let after = ranges.len() - index - 1;
        if after > 0 {
            // The ranges after this jump take 20 bytes each, the last one 16.
            let rest = after * 20 - 4;
            op(&mut code, INET_DIAG_BC_JMP, 4, (rest + 4) as u16);
        }
    }
    code
}

fn op(code: &mut Vec<u8>, opcode: u8, yes: u8, no: u16) {
    code.push(opcode);
    code.push(yes);
    code.extend_from_slice(&no.to_ne_bytes());
}

fn send_request(
    socket: &OwnedFd,
    family: u8,
    protocol: u8,
    states: States,
    filter: &[u8],
) -> io::Result<()> {
    const HEADER: usize = 16;
    const REQUEST: usize = 56;
    let attribute = 4 + filter.len();
    let length = HEADER + REQUEST + attribute;
    let mut message = Vec::with_capacity(length);
    // struct nlmsghdr
    message.extend_from_slice(&(length as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zero sockid.
    message.extend_from_slice(&[family, protocol, 0, 0]);
    message.extend_from_slice(&states.mask().to_ne_bytes());
    message.extend_from_slice(&[0u8; 48]);
    // struct rtattr INET_DIAG_REQ_BYTECODE
    message.extend_from_slice(&(attribute as u16).to_ne_bytes());
    message.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    message.extend_from_slice(filter);
    // SAFETY: the kernel's netlink address; the message is a live buffer of its length.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn receive_dump(socket: &OwnedFd, found: &mut Vec<DiagSocket>) -> io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv writes at most the buffer's length into it.
        let read = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if read < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if parse_messages(&buffer[..read as usize], found)? {
            return Ok(());
        }
    }
}

/// Parses one datagram of the dump into `found`; true at its end (NLMSG_DONE).
fn parse_messages(mut data: &[u8], found: &mut Vec<DiagSocket>) -> io::Result<bool> {
    while data.len() >= 16 {
        let length = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        if length < 16 || length > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a torn sock_diag message",
            ));
        }
        let payload = &data[16..length];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = payload.get(0..4).map_or(0, |bytes| {
                    i32::from_ne_bytes(bytes.try_into().expect("4 bytes"))
                });
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => found.extend(parse_socket(payload)),
            _ => {}
        }
        data = &data[(length + 3) & !3..data.len().max((length + 3) & !3)];
    }
    Ok(false)
}

/// One `struct inet_diag_msg`.
fn parse_socket(message: &[u8]) -> Option<DiagSocket> {
    let family = *message.first()?;
    let state = *message.get(1)?;
    let port = u16::from_be_bytes(message.get(4..6)?.try_into().ok()?);
    let source = message.get(8..24)?;
    let inode = u32::from_ne_bytes(message.get(68..72)?.try_into().ok()?);
    let ip = match family as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(source[0], source[1], source[2], source[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(source).ok()?)),
        _ => return None,
    };
    Some(DiagSocket {
        local: SocketAddr::new(ip, port),
        state,
        inode: u64::from(inode),
        cgroup_id: attribute(message.get(INET_DIAG_MSG..)?, INET_DIAG_CGROUP_ID)
            .and_then(|value| Some(u64::from_ne_bytes(value.get(..8)?.try_into().ok()?))),
    })
}

/// The value of the netlink attribute of type `wanted` among `attributes`.
fn attribute(mut attributes: &[u8], wanted: u16) -> Option<&[u8]> {
    while attributes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == wanted {
            return Some(&attributes[4..length]);
        }
        attributes = attributes.get((length + 3) & !3..).unwrap_or_default();
    }
    None
}

/// The ports as inclusive ranges, fewest first: neighbours merged.
pub fn ranges_of(mut ports: Vec<u16>) -> Vec<(u16, u16)> {
    ports.sort_unstable();
    ports.dedup();
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for port in ports {
        match ranges.last_mut() {
            Some((_, high)) if u32::from(*high) + 1 == u32::from(port) => *high = port,
            _ => ranges.push((port, port)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    #[test]
    fn ports_merge_into_ranges() {
        assert_eq!(
            ranges_of(vec![5, 3, 4, 9, 3, 65535]),
            [(3, 5), (9, 9), (65535, 65535)]
        );
        assert_eq!(ranges_of(vec![]), []);
    }

    /// Runs the filter as the kernel's `inet_diag_bc_run` does: accepted when the jumps end
    /// exactly at the end.
    fn accepts(code: &[u8], port: u16) -> bool {
        let mut at = 0usize;
        let mut left = code.len() as i64;
        while left > 0 {
            let (opcode, yes, no) = (
                code[at],
                code[at + 1],
                u16::from_ne_bytes([code[at + 2], code[at + 3]]),
            );
            let operand = || u16::from_ne_bytes([code[at + 6], code[at + 7]]);
            let taken = match opcode {
                INET_DIAG_BC_JMP => false,
                INET_DIAG_BC_S_GE => port >= operand(),
                INET_DIAG_BC_S_LE => port <= operand(),
                _ => unreachable!(),
            };
            let step = if taken {
                usize::from(yes)
            } else {
                usize::from(no)
            };
            at += step;
            left -= step as i64;
        }
        left == 0
    }

    #[test]
    fn the_filter_accepts_exactly_the_ports_in_its_ranges() {
        let ranges = [(10, 20), (30, 30), (40, 41)];
        let code = port_filter(&ranges);
        assert_eq!(code.len(), 56);
        for port in 0..100 {
            let wanted = ranges
                .iter()
                .any(|&(low, high)| (low..=high).contains(&port));
            assert_eq!(accepts(&code, port), wanted, "port {port}");
        }
        assert!(!accepts(&port_filter(&[]), 10));
        assert!(accepts(&port_filter(&[(7, 7)]), 7));
    }

    /// The kernel's answer matches what this process bound: listeners, a connected socket,
    /// UDP, IPv6; nothing outside the asked ports.
    #[test]
    fn the_kernel_reports_exactly_the_sockets_on_the_asked_ports() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let udp = UdpSocket::bind("[::1]:0").unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let other_port = other.local_addr().unwrap().port();
        let (v4, v6) = (libc::AF_INET as u8, libc::AF_INET6 as u8);
        let (tcp, udp_proto) = (libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8);
        let just = [(tcp_port, tcp_port)];

        let all = bound_sockets(v4, tcp, States::All, &just).unwrap();
        // Every state: the listener and the accepted connection are on the port; the client's
        // end is on another.
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all
            .iter()
            .all(|s| s.local.port() == tcp_port && s.inode != 0));
        let listening = bound_sockets(v4, tcp, States::Listening, &just).unwrap();
        assert_eq!(listening.len(), 1, "{listening:?}");
        assert_eq!(listening[0].state, TCP_LISTEN);
        let ranges = ranges_of(vec![udp_port, other_port]);
        let bound_udp = bound_sockets(v6, udp_proto, States::All, &ranges).unwrap();
        assert_eq!(bound_udp.len(), 1, "{bound_udp:?}");
        assert_eq!(bound_udp[0].local, udp.local_addr().unwrap());
        let none = bound_sockets(v4, tcp, States::All, &[]).unwrap();
        assert!(none.is_empty(), "{none:?}");
    }
}
