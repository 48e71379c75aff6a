//! The benchmark's own small peer, run on the host, in a hostnetd container and in a network
//! namespace alike (`cargo xtask bench` builds it in release mode):
//!
//! ```text
//! benchpeer accept PORT                    listen on 0.0.0.0:PORT; accept and close at once,
//!                                          forever (the connection-rate server)
//! benchpeer connect PORT SECONDS           connect to 127.0.0.1:PORT, wait for the server's
//!                                          close, close; repeat for SECONDS
//! benchpeer syscall OP PORT SECONDS        repeat one socket call for SECONDS; OP is
//!                                          bind (socket, bind 127.0.0.1:PORT, close),
//!                                          connect (connect a UDP socket to 127.0.0.1:PORT),
//!                                          sendto (an unconnected UDP datagram to PORT);
//!                                          bind6, connect6, sendto6: the same on [::1]
//! ```
//!
//! Results are one `key=value` line: `count=N seconds=S`.
use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["accept", port] => parse(port).and_then(accept_forever),
        ["connect", port, seconds] => {
            parse(port).and_then(|port| report(connect_loop(port, parse_secs(seconds)?)))
        }
        ["syscall", op, port, seconds] => parse(port)
            .and_then(|port| report(syscall_loop(op, port, parse_secs(seconds)?))),
        _ => Err(
            "usage: benchpeer accept PORT | connect PORT SECONDS | syscall bind|connect|sendto[6] PORT SECONDS"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("benchpeer: {message}");
            ExitCode::from(2)
        }
    }
}

fn parse(port: &str) -> Result<u16, String> {
    port.parse()
        .map_err(|_| format!("invalid port {port:?}: give a number 1-65535"))
}

fn parse_secs(seconds: &str) -> Result<Duration, String> {
    seconds
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("invalid duration {seconds:?}: give seconds, such as 5 or 0.5"))
}

fn report(result: Result<(u64, Duration), String>) -> Result<(), String> {
    let (count, elapsed) = result?;
    println!("count={count} seconds={:.6}", elapsed.as_secs_f64());
    Ok(())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn accept_forever(port: u16) -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    loop {
        // Dropping the stream closes it: the server closes first, so TIME_WAIT stays on the
        // server's side and the client never runs out of ephemeral ports.
        if let Err(error) = listener.accept() {
            eprintln!("benchpeer: accept: {error}");
        }
    }
}

/// One connection's whole life per iteration: handshake, the server's close seen, our close.
fn connect_loop(port: u16, duration: Duration) -> Result<(u64, Duration), String> {
    let address = loopback(port);
    let start = Instant::now();
    let mut count = 0;
    let mut buf = [0u8; 16];
    while start.elapsed() < duration {
        let mut stream = TcpStream::connect(address)
            .map_err(|e| format!("connect to {address} (after {count} connections): {e}"))?;
        // Read to EOF: the connection is complete once the server has closed it.
        while stream.read(&mut buf).map_err(|e| format!("read: {e}"))? > 0 {}
        count += 1;
    }
    Ok((count, start.elapsed()))
}

fn syscall_loop(op: &str, port: u16, duration: Duration) -> Result<(u64, Duration), String> {
    // `bind6`, `connect6`, `sendto6`: the same over IPv6, where the v6 programs run.
    let (call, ip) = match op.strip_suffix('6') {
        Some(call) => (call, IpAddr::V6(Ipv6Addr::LOCALHOST)),
        None => (op, IpAddr::V4(Ipv4Addr::LOCALHOST)),
    };
    let target = SocketAddr::new(ip, port);
    let any_port = SocketAddr::new(ip, 0);
    match call {
        "bind" => timed(duration, || bind_once(target)),
        "connect" => {
            let socket = UdpSocket::bind(any_port).map_err(|e| format!("socket: {e}"))?;
            timed(duration, || {
                socket.connect(target).map_err(|e| format!("connect: {e}"))
            })
        }
        "sendto" => {
            // Datagrams go to a socket of our own that is never read: once its buffer is full
            // they are dropped quietly, with no ICMP error as a closed port would send.
            let _sink = UdpSocket::bind(target)
                .map_err(|e| format!("cannot bind the sink on {target}: {e}"))?;
            let socket = UdpSocket::bind(any_port).map_err(|e| format!("socket: {e}"))?;
            timed(duration, || {
                socket
                    .send_to(b"x", target)
                    .map(drop)
                    .map_err(|e| format!("sendto: {e}"))
            })
        }
        _ => Err(format!(
            "unknown syscall {op:?}: use bind, connect or sendto (bind6, connect6, sendto6 for IPv6)"
        )),
    }
}

/// socket, bind, close: without listen(2), which would add its own cost.
fn bind_once(address: SocketAddr) -> Result<(), String> {
    let (family, storage, length) = sockaddr(address);
    // SAFETY: plain socket calls on a descriptor this function owns and closes; `storage`
    // holds a sockaddr of `length` bytes.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let rc = libc::bind(fd, std::ptr::from_ref(&storage).cast(), length);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(format!("bind {address}: {error}"));
        }
    }
    Ok(())
}

/// The C form of `address`: its family, a sockaddr_in or sockaddr_in6, and its length.
fn sockaddr(address: SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let length = match address {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let family = libc::c_int::from(storage.ss_family);
    (family, storage, length as libc::socklen_t)
}

/// Repeats `op` in batches (so the clock is read rarely) until `duration` has passed.
fn timed(
    duration: Duration,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<(u64, Duration), String> {
    const BATCH: u64 = 256;
    let start = Instant::now();
    let mut count = 0;
    while start.elapsed() < duration {
        for _ in 0..BATCH {
            op()?;
        }
        count += BATCH;
    }
    Ok((count, start.elapsed()))
}
