//! The clsact qdisc, for kernels without TCX: aya adds the qdisc and the filters, but cannot
//! tell whether a qdisc still has filters of others, which decides whether hostnetd may
//! remove the qdisc it added. Two rtnetlink requests do that here.
use std::{io, mem::size_of};

/// `TC_H_CLSACT` and its two blocks, as `tc filter show dev X ingress|egress` names them.
const TC_H_CLSACT: u32 = 0xffff_fff1;
const INGRESS_BLOCK: u32 = 0xffff_fff2;
const EGRESS_BLOCK: u32 = 0xffff_fff3;
const CLSACT_HANDLE: u32 = 0xffff_0000;

const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TcMsg {
    family: u8,
    _pad: [u8; 3],
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    header: NlMsgHdr,
    tc: TcMsg,
}

/// Whether the clsact qdisc of `ifindex` holds any filter, on either side.
pub fn has_filters(ifindex: u32) -> io::Result<bool> {
    for block in [INGRESS_BLOCK, EGRESS_BLOCK] {
        let socket = RouteSocket::open()?;
        let mut found = false;
        socket.send(
            RTM_GETTFILTER,
            NLM_F_REQUEST | NLM_F_DUMP,
            ifindex,
            block,
            0,
        )?;
        socket.receive(|kind| found |= kind == RTM_NEWTFILTER)?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the clsact qdisc of `ifindex` (and with it any filter it still holds).
pub fn remove_qdisc(ifindex: u32) -> io::Result<()> {
    let socket = RouteSocket::open()?;
    socket.send(
        RTM_DELQDISC,
        NLM_F_REQUEST | NLM_F_ACK,
        ifindex,
        TC_H_CLSACT,
        CLSACT_HANDLE,
    )?;
    socket.receive(|_| {})
}

struct RouteSocket(std::os::fd::OwnedFd);

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
        use std::os::fd::FromRawFd as _;
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn send(
        &self,
        kind: u16,
        flags: u16,
        ifindex: u32,
        parent: u32,
        handle: u32,
    ) -> io::Result<()> {
        let request = Request {
            header: NlMsgHdr {
                len: size_of::<Request>() as u32,
                kind,
                flags,
                seq: 1,
                pid: 0,
            },
            tc: TcMsg {
                family: libc::AF_UNSPEC as u8,
                ifindex: ifindex as i32,
                handle,
                parent,
                ..TcMsg::default()
            },
        };
        use std::os::fd::AsRawFd as _;
        // SAFETY: the request is plain data of the length given.
        let sent = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                (&request as *const Request).cast(),
                size_of::<Request>(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads replies until the dump's end or the request's acknowledgement, handing each
    /// message's type to `seen`; a netlink error becomes the io::Error of its errno.
    fn receive(&self, mut seen: impl FnMut(u16)) -> io::Result<()> {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            use std::os::fd::AsRawFd as _;
            // SAFETY: the buffer is writable for its whole length.
            let read = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if read < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buffer[..read as usize];
            while rest.len() >= size_of::<NlMsgHdr>() {
                // SAFETY: at least a header's bytes remain; read unaligned.
                let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
                let len = header.len as usize;
                if len < size_of::<NlMsgHdr>() || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                match header.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return netlink_status(&rest[size_of::<NlMsgHdr>()..len]),
                    kind => seen(kind),
                }
                rest = &rest[(len + 3) & !3..];
            }
        }
    }
}

/// An NLMSG_ERROR's payload: 0 acknowledges, a negative errno refuses.
fn netlink_status(payload: &[u8]) -> io::Result<()> {
    let code = payload.get(..4).map_or(0, |bytes| {
        i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    });
    match code {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(-errno)),
    }
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
        assert_eq!(size_of::<Request>(), 16 + 20);
    }
}
