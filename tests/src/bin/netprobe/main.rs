//! A socket probe run inside test containers (and on the host): performs binds and reports
//! the errno the kernel returned, one line per probe.
//!
//! ```text
//! netprobe bind PROTO ADDR PORT [reuseport] [dualstack] [hold] ...   "ok" or "errno N" per
//!                                  bind; a socket is closed at once unless `hold` keeps it open
//! netprobe listen ADDR PORT SECONDS       bind+listen, print "listening", hold, serve "hello"
//! netprobe raw                            try a raw ICMP socket
//! netprobe packet                         try a packet socket (AF_PACKET)
//! netprobe connect PROTO ADDR PORT ...    "ok" or "errno N" per connect (a refused TCP
//!                                  connect to a closed port is errno 111: the policy let it out)
//! netprobe sendto ADDR PORT ...           one UDP datagram per address, unconnected
//! netprobe loop SECONDS OP/PROTO/ADDR/PORT ...   repeat each probe (OP: bind or connect)
//!                                  until SECONDS pass; print "PROBE errno=N count=C" lines
//! netprobe trace SECONDS OP/PROTO/ADDR/PORT ...  the same loop, printing in order each change
//!                                  of a probe's outcome: "INDEX PROBE errno=N", then "runs=N";
//!                                  SIGUSR1 ends it before SECONDS pass
//! netprobe sleep SECONDS                  exit 0 after SECONDS, 143 on SIGTERM
//! netprobe connectfrom SRC DST PORT      TCP connect from SRC with a 1 s timeout: "ok" or
//!                                  "errno N" (115, EINPROGRESS, when nothing answered)
//! netprobe udpecho ADDR PORT SECONDS     echo every datagram until SECONDS pass
//! netprobe udpfrom SRC DST PORT          one datagram from SRC, then wait 1 s for its echo:
//!                                  "ok" or "errno 11" (EAGAIN, nothing came back)
//! netprobe udpburst LADDR LPORT PADDR PPORT COUNT SIZE   from LADDR:LPORT send COUNT
//!                                  datagrams of SIZE bytes to the peer, then receive COUNT
//! netprobe udpsend ADDR PORT COUNT SIZE  send COUNT datagrams of SIZE bytes as fast as the
//!                                  socket takes them; prints "sent N" (the sends that succeeded)
//! netprobe tcpclient ADDR PORT SEND RECV  connect, send SEND bytes in large writes, read RECV
//!                                  bytes and the peer's close, then close (the passive side)
//! netprobe tcpserver ADDR PORT RECV SEND  accept one connection, read RECV bytes, send SEND
//!                                  bytes and close first; prints "listening" when ready
//! netprobe raw6|unshare-net|setns|...     escape attempts: see escape.rs
//! ```
mod escape;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, TcpListener},
    os::fd::FromRawFd as _,
    process::ExitCode,
    time::Duration,
};

fn main() -> ExitCode {
    exit_on_sigterm();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bind") => binds(&args[1..]),
        Some("listen") => listen(&args[1..]),
        Some("raw") => raw(),
        Some("packet") => packet(),
        Some("connect") => connects(&args[1..]),
        Some("sendto") => sends(&args[1..]),
        Some("loop") => probe_loop(&args[1..]),
        Some("trace") => probe_trace(&args[1..]),
        Some("sleep") => sleep(&args[1..]),
        Some("udpburst") => udp_burst(&args[1..]),
        Some("udpsend") => udp_send(&args[1..]),
        Some("connectfrom") => connect_from(&args[1..]),
        Some("udpecho") => udp_echo(&args[1..]),
        Some("udpfrom") => udp_from(&args[1..]),
        Some("tcpclient") => tcp_client(&args[1..]),
        Some("tcpserver") => tcp_server(&args[1..]),
        Some(other) => escape_probe(other, &args[1..]),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("netprobe: {message}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str = "usage: netprobe bind|listen|raw|packet|connect|sendto|loop|trace|sleep|\
    udpburst|connectfrom|udpecho|udpfrom|tcpclient|tcpserver|raw6|\
    unshare-net|unshare-user-net|setns|join-cgroup|mount|remount-rw|bpf-prog-ids|bpf-map-create|\
    bpf-obj-get|bpf-link-detach|unix-connect ...";

fn escape_probe(name: &str, args: &[String]) -> Result<(), String> {
    match name {
        "raw6" => escape::raw6(),
        "unshare-net" => escape::unshare_net(),
        "unshare-user-net" => escape::unshare_user_net(args),
        "setns" => escape::setns(args),
        "join-cgroup" => escape::join_cgroup(args),
        "mount" => escape::mount(args),
        "remount-rw" => escape::remount_rw(args),
        "bpf-prog-ids" => escape::bpf_prog_ids(),
        "bpf-map-create" => escape::bpf_map_create(),
        "bpf-obj-get" => escape::bpf_obj_get(args),
        "bpf-link-detach" => escape::bpf_link_detach(args),
        "unix-connect" => escape::unix_connect(args),
        _ => Err(USAGE.to_string()),
    }
}

fn exit_on_sigterm() {
    extern "C" fn on_signal(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(143) };
    }
    // SAFETY: installing a handler that only calls _exit.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// Each probe is `PROTO ADDR PORT` followed by any of `reuseport`, `dualstack`, `hold`.
fn binds(args: &[String]) -> Result<(), String> {
    let mut held = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let [proto, addr, port, tail @ ..] = rest else {
            return Err(format!("incomplete probe {rest:?}"));
        };
        let flags: Vec<&str> = tail
            .iter()
            .take_while(|word| matches!(word.as_str(), "reuseport" | "dualstack" | "hold"))
            .map(String::as_str)
            .collect();
        rest = &tail[flags.len()..];
        let addr: IpAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let port: u16 = port.parse().map_err(|e| format!("{port}: {e}"))?;
        match bind(proto, addr, port, &flags) {
            Ok(fd) if flags.contains(&"hold") => {
                println!("ok");
                held.push(fd);
            }
            Ok(fd) => {
                println!("ok");
                // SAFETY: we own fd and nothing else refers to it.
                unsafe { libc::close(fd) };
            }
            Err(errno) => println!("errno {errno}"),
        }
    }
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    if !held.is_empty() {
        // Keep held sockets until the test ends us.
        std::thread::sleep(Duration::from_secs(600));
    }
    Ok(())
}

fn bind(proto: &str, addr: IpAddr, port: u16, flags: &[&str]) -> Result<i32, i32> {
    let kind = if proto == "udp" {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on descriptors this function owns.
    unsafe {
        let fd = libc::socket(family, kind, 0);
        if fd < 0 {
            return Err(errno());
        }
        if flags.contains(&"reuseport") {
            set_option(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1);
        }
        if family == libc::AF_INET6 {
            // A v4-mapped address can only be bound by a socket that also speaks IPv4.
            let v4_mapped = matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
            let v6only = if flags.contains(&"dualstack") || v4_mapped {
                0
            } else {
                1
            };
            set_option(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only);
        }
        let (storage, len) = sockaddr(addr, port);
        if libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) != 0 {
            let error = errno();
            libc::close(fd);
            return Err(error);
        }
        Ok(fd)
    }
}

unsafe fn set_option(fd: i32, level: i32, name: i32, value: i32) {
    let size = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: the caller's descriptor and a pointer to a live i32.
    unsafe { libc::setsockopt(fd, level, name, (&value as *const i32).cast(), size) };
}

fn sockaddr(addr: IpAddr, port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = port.to_be();
            sin6.sin6_addr.s6_addr = v6.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Serves "hello" to each connection until SECONDS pass.
fn listen(args: &[String]) -> Result<(), String> {
    let [addr, port, seconds] = args else {
        return Err("listen ADDR PORT SECONDS".into());
    };
    let listener = TcpListener::bind(format!("{addr}:{port}")).map_err(|e| e.to_string())?;
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds.parse().unwrap_or(30));
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let mut request = [0u8; 512];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"hello from the container\n");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(())
}

fn packet() -> Result<(), String> {
    // SAFETY: a socket syscall; the descriptor is closed right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0) };
    report_socket(fd);
    Ok(())
}

fn report_socket(fd: i32) {
    if fd < 0 {
        println!("errno {}", errno());
    } else {
        // SAFETY: we own fd.
        unsafe { libc::close(fd) };
        println!("ok");
    }
}

fn parse_target(addr: &str, port: &str) -> Result<(IpAddr, u16), String> {
    let addr: IpAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port}"))?;
    Ok((addr, port))
}

fn family_of(addr: IpAddr) -> i32 {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// Each probe is `PROTO ADDR PORT`: connect(2) on a fresh socket.
fn connects(args: &[String]) -> Result<(), String> {
    for probe in args.chunks(3) {
        let [proto, addr, port] = probe else {
            return Err(format!("incomplete probe {probe:?}"));
        };
        if !matches!(proto.as_str(), "tcp" | "udp") {
            return Err(format!("unknown protocol {proto}"));
        }
        let (addr, port) = parse_target(addr, port)?;
        print_result(connect_once(proto, addr, port)?);
    }
    Ok(())
}

/// Each probe is `ADDR PORT`: one sendto(2) of a datagram on an unconnected UDP socket.
fn sends(args: &[String]) -> Result<(), String> {
    for probe in args.chunks(2) {
        let [addr, port] = probe else {
            return Err(format!("incomplete probe {probe:?}"));
        };
        let (addr, port) = parse_target(addr, port)?;
        // SAFETY: as above.
        unsafe {
            let fd = libc::socket(family_of(addr), libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return Err(format!("socket: errno {}", errno()));
            }
            let (storage, len) = sockaddr(addr, port);
            let payload = b"probe";
            let rc = libc::sendto(
                fd,
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            );
            let result = if rc >= 0 { 0 } else { errno() };
            libc::close(fd);
            print_result(result);
        }
    }
    Ok(())
}

/// One `OP/PROTO/ADDR/PORT` probe of `loop` and `trace`.
struct Probe {
    name: String,
    op: String,
    proto: String,
    addr: IpAddr,
    port: u16,
}

impl Probe {
    fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.splitn(4, '/').collect();
        let [op, proto, addr, port] = parts[..] else {
            return Err(format!("bad probe {text}: use OP/PROTO/ADDR/PORT"));
        };
        let (addr, port) = parse_target(addr, port)?;
        Ok(Self {
            name: text.to_string(),
            op: op.to_string(),
            proto: proto.to_string(),
            addr,
            port,
        })
    }

    /// The errno of one bind (closed at once) or connect; 0 for success.
    fn run(&self) -> Result<i32, String> {
        match self.op.as_str() {
            "bind" => Ok(match bind(&self.proto, self.addr, self.port, &[]) {
                // SAFETY: we own fd.
                Ok(fd) => unsafe { libc::close(fd) },
                Err(errno) => errno,
            }),
            _ => connect_once(&self.proto, self.addr, self.port),
        }
    }
}

/// `SECONDS PROBE...`: the probes and when to stop.
fn parse_loop_args(args: &[String]) -> Result<(std::time::Instant, Vec<Probe>), String> {
    let [seconds, probes @ ..] = args else {
        return Err("SECONDS OP/PROTO/ADDR/PORT ...".into());
    };
    let seconds: u64 = seconds
        .parse()
        .map_err(|_| format!("bad seconds {seconds}"))?;
    let probes = probes
        .iter()
        .map(|p| Probe::parse(p))
        .collect::<Result<_, _>>()?;
    Ok((
        std::time::Instant::now() + Duration::from_secs(seconds),
        probes,
    ))
}

/// Repeats binds and connects while something else (a policy update) changes around them,
/// and reports every distinct outcome of each probe with its count.
fn probe_loop(args: &[String]) -> Result<(), String> {
    let (deadline, probes) = parse_loop_args(args)?;
    let mut outcomes = std::collections::BTreeMap::<(String, i32), u64>::new();
    while std::time::Instant::now() < deadline {
        for probe in &probes {
            *outcomes
                .entry((probe.name.clone(), probe.run()?))
                .or_default() += 1;
        }
    }
    for ((name, errno), count) in outcomes {
        println!("{name} errno={errno} count={count}");
    }
    Ok(())
}

/// Like `loop`, but keeps the order: each time a probe's outcome differs from its previous
/// one, prints `INDEX PROBE errno=N` (INDEX counts every probe run), then `runs=N` at the end.
/// Set by SIGUSR1: the caller has seen what it wanted traced (a slow machine needs longer
/// than a fast one, so the caller, not a fixed time, ends the trace).
static TRACE_ENOUGH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn end_trace_on_sigusr1() {
    extern "C" fn on_signal(_: libc::c_int) {
        TRACE_ENOUGH.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_signal as *const () as libc::sighandler_t);
    }
}

fn probe_trace(args: &[String]) -> Result<(), String> {
    let (deadline, probes) = parse_loop_args(args)?;
    end_trace_on_sigusr1();
    let mut last: Vec<Option<i32>> = vec![None; probes.len()];
    let mut index: u64 = 0;
    let mut changes = Vec::new();
    while std::time::Instant::now() < deadline
        && !TRACE_ENOUGH.load(std::sync::atomic::Ordering::Relaxed)
    {
        for (probe, last) in probes.iter().zip(&mut last) {
            let errno = probe.run()?;
            if *last != Some(errno) {
                *last = Some(errno);
                changes.push((index, &probe.name, errno));
            }
            index += 1;
        }
    }
    for (index, name, errno) in changes {
        println!("{index} {name} errno={errno}");
    }
    println!("runs={index}");
    Ok(())
}

fn connect_once(proto: &str, addr: IpAddr, port: u16) -> Result<i32, String> {
    let kind = if proto == "udp" {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(family_of(addr), kind, 0);
        if fd < 0 {
            return Err(format!("socket: errno {}", errno()));
        }
        let (storage, len) = sockaddr(addr, port);
        let rc = libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len);
        let result = if rc == 0 { 0 } else { errno() };
        libc::close(fd);
        Ok(result)
    }
}

fn print_result(errno: i32) {
    if errno == 0 {
        println!("ok");
    } else {
        println!("errno {errno}");
    }
}

fn raw() -> Result<(), String> {
    // SAFETY: a socket syscall; the descriptor is closed through File's drop.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        println!("errno {}", errno());
    } else {
        // SAFETY: we own fd.
        drop(unsafe { std::fs::File::from_raw_fd(fd) });
        println!("ok");
    }
    Ok(())
}

fn sleep(args: &[String]) -> Result<(), String> {
    let seconds: u64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .ok_or("sleep SECONDS")?;
    std::thread::sleep(Duration::from_secs(seconds));
    Ok(())
}

fn numbers<const N: usize>(args: &[String]) -> Result<[usize; N], String> {
    let mut values = [0; N];
    for (value, text) in values.iter_mut().zip(args) {
        *value = text.parse().map_err(|_| format!("not a number: {text}"))?;
    }
    Ok(values)
}

fn udp_burst(args: &[String]) -> Result<(), String> {
    let [local, local_port, peer, peer_port, count, size] = args else {
        return Err("usage: netprobe udpburst LADDR LPORT PADDR PPORT COUNT SIZE".into());
    };
    let (local, local_port) = parse_target(local, local_port)?;
    let peer = parse_target(peer, peer_port)?;
    let [count, size] = numbers(&[count.clone(), size.clone()])?;
    let socket = std::net::UdpSocket::bind((local, local_port)).map_err(|e| e.to_string())?;
    socket.connect(peer).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let payload = vec![7u8; size];
    for _ in 0..count {
        socket.send(&payload).map_err(|e| e.to_string())?;
    }
    let mut buffer = vec![0u8; size + 1];
    for _ in 0..count {
        socket.recv(&mut buffer).map_err(|e| format!("echo: {e}"))?;
    }
    println!("done");
    Ok(())
}

fn udp_send(args: &[String]) -> Result<(), String> {
    let [addr, port, count, size] = args else {
        return Err("usage: netprobe udpsend ADDR PORT COUNT SIZE".into());
    };
    let target = parse_target(addr, port)?;
    let [count, size] = numbers(&[count.clone(), size.clone()])?;
    let any: IpAddr = match target.0 {
        IpAddr::V4(_) => "0.0.0.0".parse().expect("address"),
        IpAddr::V6(_) => "::".parse().expect("address"),
    };
    // Unconnected: a connected socket would fail a send with the ICMP error of an earlier one.
    let socket = std::net::UdpSocket::bind((any, 0)).map_err(|e| e.to_string())?;
    let payload = vec![7u8; size];
    let sent = (0..count)
        .filter(|_| socket.send_to(&payload, target).is_ok())
        .count();
    println!("sent {sent}");
    Ok(())
}

fn tcp_client(args: &[String]) -> Result<(), String> {
    let [addr, port, send, recv] = args else {
        return Err("usage: netprobe tcpclient ADDR PORT SEND RECV".into());
    };
    let target = parse_target(addr, port)?;
    let [send, recv] = numbers(&[send.clone(), recv.clone()])?;
    let mut stream = std::net::TcpStream::connect(target).map_err(|e| e.to_string())?;
    write_bytes(&mut stream, send)?;
    let received = read_to_end(&mut stream)?;
    if received != recv {
        return Err(format!("received {received} bytes, expected {recv}"));
    }
    drop(stream);
    // The peer's last ACK answers our FIN: let it arrive while this process still runs.
    std::thread::sleep(Duration::from_millis(300));
    println!("done");
    Ok(())
}

fn tcp_server(args: &[String]) -> Result<(), String> {
    let [addr, port, recv, send] = args else {
        return Err("usage: netprobe tcpserver ADDR PORT RECV SEND".into());
    };
    let target = parse_target(addr, port)?;
    let [recv, send] = numbers(&[recv.clone(), send.clone()])?;
    let listener = TcpListener::bind(target).map_err(|e| e.to_string())?;
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0;
    while received < recv {
        match stream.read(&mut buffer).map_err(|e| e.to_string())? {
            0 => return Err(format!("peer closed after {received} bytes")),
            n => received += n,
        }
    }
    write_bytes(&mut stream, send)?;
    drop(stream);
    Ok(())
}

fn write_bytes(stream: &mut std::net::TcpStream, total: usize) -> Result<(), String> {
    let chunk = vec![42u8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        left -= n;
    }
    Ok(())
}

fn read_to_end(stream: &mut std::net::TcpStream) -> Result<usize, String> {
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match stream.read(&mut buffer).map_err(|e| e.to_string())? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

fn connect_from(args: &[String]) -> Result<(), String> {
    let [source, destination, port] = args else {
        return Err("usage: netprobe connectfrom SRC DST PORT".into());
    };
    let (source, _) = parse_target(source, "0")?;
    let (destination, port) = parse_target(destination, port)?;
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    let result = unsafe {
        let fd = libc::socket(family_of(destination), libc::SOCK_STREAM, 0);
        let (local, local_len) = sockaddr(source, 0);
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let (remote, remote_len) = sockaddr(destination, port);
        let bound = libc::bind(
            fd,
            (&local as *const libc::sockaddr_storage).cast(),
            local_len,
        ) == 0;
        let connected = bound
            && libc::connect(
                fd,
                (&remote as *const libc::sockaddr_storage).cast(),
                remote_len,
            ) == 0;
        let rc = if connected { 0 } else { errno() };
        libc::close(fd);
        rc
    };
    print_result(result);
    Ok(())
}

fn udp_echo(args: &[String]) -> Result<(), String> {
    let [addr, port, seconds] = args else {
        return Err("usage: netprobe udpecho ADDR PORT SECONDS".into());
    };
    let (addr, port) = parse_target(addr, port)?;
    let [seconds] = numbers(std::slice::from_ref(seconds))?;
    let socket = std::net::UdpSocket::bind((addr, port)).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds as u64);
    let mut buffer = [0u8; 2048];
    while std::time::Instant::now() < deadline {
        if let Ok((n, from)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(&buffer[..n], from);
        }
    }
    Ok(())
}

fn udp_from(args: &[String]) -> Result<(), String> {
    let [source, destination, port] = args else {
        return Err("usage: netprobe udpfrom SRC DST PORT".into());
    };
    let (source, _) = parse_target(source, "0")?;
    let destination = parse_target(destination, port)?;
    let socket = std::net::UdpSocket::bind((source, 0)).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    socket
        .send_to(b"ping", destination)
        .map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 16];
    match socket.recv_from(&mut buffer) {
        Ok(_) => print_result(0),
        Err(error) => print_result(error.raw_os_error().unwrap_or(libc::EAGAIN)),
    }
    Ok(())
}
