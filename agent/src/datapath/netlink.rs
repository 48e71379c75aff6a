//! One rtnetlink socket for the tc requests aya has no call for: the clsact qdisc's filters
//! (`clsact`) and the egress root qdisc (`qdisc`). Messages are encoded and decoded field by
//! field, in native byte order as the kernel lays out its structs, so that a test can build a
//! kernel's reply in a byte buffer and read it with the code that reads the real one.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_DELQDISC: u16 = 37;
pub const RTM_GETQDISC: u16 = 38;
pub const RTM_NEWTFILTER: u16 = 44;
pub const RTM_GETTFILTER: u16 = 46;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_DUMP: u16 = 0x300;

/// The parent of a device's egress root qdisc.
pub const TC_H_ROOT: u32 = 0xffff_ffff;
/// The parent of clsact and ingress qdiscs (`TC_H_INGRESS` is the same value): off the
/// egress path.
pub const TC_H_CLSACT: u32 = 0xffff_fff1;
/// A qdisc's or filter's kind, a NUL-terminated string.
pub const TCA_KIND: u16 = 1;

/// `struct nlmsghdr`, `struct tcmsg`, `struct nlattr`'s header.
const HEADER_LEN: usize = 16;
const TCMSG_LEN: usize = 20;
const ATTR_HEADER_LEN: usize = 4;
/// The flag bits of an attribute's type (nested, network byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// The kernel caps a dump's datagrams below 32 KiB, so one read never truncates.
const RECEIVE_BUFFER: usize = 32 * 1024;

/// The fields of `struct tcmsg` hostnetd uses; its family is always AF_UNSPEC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcMsg {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
}

impl TcMsg {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        for field in [self.ifindex, self.handle, self.parent, 0] {
            out.extend_from_slice(&field.to_ne_bytes());
        }
    }

    /// The tcmsg at the head of a reply's payload, and the bytes of its attributes.
    pub fn parse(payload: &[u8]) -> Option<(Self, &[u8])> {
        let tc = Self {
            ifindex: u32_at(payload, 4)?,
            handle: u32_at(payload, 8)?,
            parent: u32_at(payload, 12)?,
        };
        Some((tc, payload.get(TCMSG_LEN..)?))
    }
}

/// A tc request as the kernel reads it: a header, a tcmsg, then attributes.
pub struct TcRequest(Vec<u8>);

impl TcRequest {
    pub fn new(kind: u16, flags: u16, tc: TcMsg) -> Self {
        let mut bytes = Vec::with_capacity(HEADER_LEN + TCMSG_LEN);
        // The length is filled in as attributes are added; one request per socket: seq 1.
        for field in [0u32, u32::from(kind) | u32::from(flags) << 16, 1, 0] {
            bytes.extend_from_slice(&field.to_ne_bytes());
        }
        tc.encode(&mut bytes);
        Self(bytes).with_length()
    }

    /// Appends a string attribute with its NUL, as iproute2 sends TCA_KIND.
    pub fn string(mut self, kind: u16, value: &str) -> Self {
        let len = (ATTR_HEADER_LEN + value.len() + 1) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(0);
        self.0.resize(align(self.0.len()), 0);
        self.with_length()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn with_length(mut self) -> Self {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// Sends `request` on a socket of its own and reads the replies until the dump's end or the
/// request's acknowledgement, handing each reply's type and payload to `seen`; a netlink
/// error becomes the io::Error of its errno. An acknowledged request needs NLM_F_ACK: without
/// it the kernel sends nothing on success.
pub fn exchange(request: &TcRequest, mut seen: impl FnMut(u16, &[u8])) -> io::Result<()> {
    let socket = RouteSocket::open()?;
    socket.send(request.bytes())?;
    socket.receive(&mut seen)
}

/// Reads one datagram's messages into `seen`: true once the dump ended or the request was
/// answered.
pub fn read_messages(mut rest: &[u8], seen: &mut impl FnMut(u16, &[u8])) -> io::Result<bool> {
    while rest.len() >= HEADER_LEN {
        let len = u32_at(rest, 0).unwrap_or_default() as usize;
        let kind = u16_at(rest, 4).unwrap_or_default();
        if len < HEADER_LEN || len > rest.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink reply",
            ));
        }
        let payload = &rest[HEADER_LEN..len];
        match kind {
            // A dump's end carries an errno too, when the dump failed midway.
            NLMSG_DONE | NLMSG_ERROR => return netlink_status(payload).map(|()| true),
            kind => seen(kind, payload),
        }
        rest = rest.get(align(len)..).unwrap_or_default();
    }
    Ok(false)
}

/// An NLMSG_ERROR's payload: 0 acknowledges, a negative errno refuses.
pub fn netlink_status(payload: &[u8]) -> io::Result<()> {
    match u32_at(payload, 0).map_or(0, |code| code as i32) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(-errno)),
    }
}

/// The attributes after a reply's fixed part, as (type, value); a malformed one ends them.
pub fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(bytes, 0)?);
        let kind = u16_at(bytes, 2)? & NLA_TYPE_MASK;
        let value = bytes.get(ATTR_HEADER_LEN..len)?;
        bytes = bytes.get(align(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// A string attribute's text, without its NUL.
pub fn attribute_string(value: &[u8]) -> String {
    let text = value.split(|&byte| byte == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

struct RouteSocket(OwnedFd);

impl RouteSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: the bytes are readable for their whole length.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn receive(&self, seen: &mut impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        loop {
            let read = self.recv(&mut buffer)?;
            if read_messages(&buffer[..read], seen)? {
                return Ok(());
            }
        }
    }

    fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the buffer is writable for its whole length.
            let read = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if read >= 0 {
                return Ok(read as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// Netlink messages and attributes start on 4-byte boundaries.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_ok_and_an_error_carries_its_errno() {
        assert!(netlink_status(&0i32.to_ne_bytes()).is_ok());
        let error = netlink_status(&(-libc::ENOENT).to_ne_bytes()).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn a_request_is_a_header_and_a_tcmsg() {
        let request = TcRequest::new(RTM_GETQDISC, NLM_F_REQUEST, TcMsg::default());
        assert_eq!(request.bytes().len(), 16 + 20);
        assert_eq!(u32_at(request.bytes(), 0), Some(36));
    }

    #[test]
    fn a_string_attribute_is_nul_terminated_and_padded() {
        let tc = TcMsg {
            ifindex: 7,
            handle: 0,
            parent: TC_H_ROOT,
        };
        let request = TcRequest::new(RTM_NEWQDISC, NLM_F_REQUEST, tc).string(TCA_KIND, "fq");
        let bytes = request.bytes();
        assert_eq!(bytes.len(), 36 + 8);
        assert_eq!(u32_at(bytes, 0), Some(44));
        assert_eq!(u16_at(bytes, 4), Some(RTM_NEWQDISC));
        assert_eq!(u32_at(bytes, 16 + 4), Some(7));
        assert_eq!(u32_at(bytes, 16 + 12), Some(TC_H_ROOT));
        assert_eq!(&bytes[36..], &[7, 0, 1, 0, b'f', b'q', 0, 0]);
    }

    #[test]
    fn attributes_stop_at_a_malformed_one() {
        let bytes = [7, 0, 1, 0, b'f', b'q', 0, 0, 2, 0, 2, 0];
        let found: Vec<_> = attributes(&bytes).collect();
        assert_eq!(found, [(TCA_KIND, &b"fq\0"[..])]);
        assert_eq!(attribute_string(found[0].1), "fq");
    }

    #[test]
    fn a_failed_dump_ends_with_its_errno() {
        let mut done = Vec::new();
        for field in [20u32, u32::from(NLMSG_DONE), 1, 0] {
            done.extend_from_slice(&field.to_ne_bytes());
        }
        done.extend_from_slice(&(-libc::EINTR).to_ne_bytes());
        let error = read_messages(&done, &mut |_, _| {}).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EINTR));
    }
}
