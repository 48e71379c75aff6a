//! TCX against clsact: what attaching hostnetd's TC programs costs each packet, either way.
//!
//! One thread pinned to the client CPU sends 18-byte UDP datagrams over loopback with
//! `sendmmsg` (64 a call) to a socket whose receive buffer is full at once, so each packet
//! makes the whole trip (the socket, IP, lo's egress and ingress hooks) and is then dropped.
//! Three ways, in an order that rotates each round: no hostnetd (no TC program at all), the
//! datapath loaded with `--tc-attach tcx`, and with `--tc-attach netlink` (a clsact qdisc and
//! its filters). The ports are nobody's, so hostnetd's programs take their common path: parse,
//! look the port up, pass. What TCX and clsact cost beyond "none" is then each attachment's
//! dispatch plus that path, twice (lo's egress and ingress); their difference is the dispatch
//! alone, the programs being the same.
use std::{
    collections::BTreeMap,
    net::UdpSocket,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{
    env::Env,
    plan::{check_interrupted, Plan},
    servers::CLIENT_CPU,
};
use crate::shell::say;

const BATCH: usize = 64;
const PAYLOAD: [u8; 18] = *b"hostnetd tc bench\n";

/// How lo's TC hooks are set up during one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attachment {
    None,
    Tcx,
    Clsact,
}

impl Attachment {
    pub const ALL: [Attachment; 3] = [Self::None, Self::Tcx, Self::Clsact];

    pub fn label(self) -> &'static str {
        match self {
            Self::None => "no TC program",
            Self::Tcx => "TCX links",
            Self::Clsact => "clsact filters (netlink)",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        }
    }

    /// `--tc-attach`'s value, and the pin directory that shows the mode took effect.
    fn setting(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::None => None,
            Self::Tcx => Some(("tcx", "links/tc")),
            Self::Clsact => Some(("netlink", "links/clsact")),
        }
    }
}

/// Nanoseconds per packet, one sample per round and attachment.
pub type TcAttachSamples = BTreeMap<Attachment, Vec<f64>>;

pub fn measure(env: &Env, plan: &Plan) -> anyhow::Result<TcAttachSamples> {
    let (sink_port, source_port) = env.ports.tc_blast();
    let sink = UdpSocket::bind(("127.0.0.1", sink_port))
        .with_context(|| format!("cannot bind 127.0.0.1:{sink_port}"))?;
    shrink_receive_buffer(&sink)?;
    let source = UdpSocket::bind(("127.0.0.1", source_port))
        .with_context(|| format!("cannot bind 127.0.0.1:{source_port}"))?;
    source.connect(("127.0.0.1", sink_port))?;
    // Whatever an earlier part left loaded goes first: "none" must mean none.
    env.host.down()?;
    let mut samples = TcAttachSamples::new();
    for round in 0..plan.tc_rounds {
        say(&format!(
            "TC attach modes: round {} of {}",
            round + 1,
            plan.tc_rounds
        ));
        let mut order = Attachment::ALL;
        order.rotate_left(round % Attachment::ALL.len());
        for attachment in order {
            check_interrupted()?;
            attach(env, attachment)?;
            let measured = blast(&source, plan.duration);
            if attachment != Attachment::None {
                env.host.down()?;
            }
            samples.entry(attachment).or_default().push(measured?);
        }
    }
    Ok(samples)
}

/// Loads hostnetd with `attachment` (nothing for [`Attachment::None`]) and checks that lo's
/// programs are attached the way asked.
fn attach(env: &Env, attachment: Attachment) -> anyhow::Result<()> {
    let Some((mode, pins)) = attachment.setting() else {
        return Ok(());
    };
    let output = (env.host.command())
        .env("HOSTNETD_TC_ATTACH", mode)
        .arg("ps")
        .output()?;
    if !output.status.success() {
        bail!(
            "hostnetd --tc-attach {mode} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let pin_root = std::fs::read_dir(env.host.bpf_dir())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .next()
        .context("no pins after the datapath loaded")?;
    let on_lo = std::fs::read_dir(pin_root.join(pins))
        .with_context(|| format!("--tc-attach {mode}: no {pins}"))?
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().contains("-lo-"));
    if !on_lo {
        bail!("--tc-attach {mode}: lo has no {pins} entry: the measurement would be of nothing");
    }
    Ok(())
}

/// Sends for `duration` (after a tenth of it to warm up) from a thread pinned to the client
/// CPU; nanoseconds per packet.
fn blast(source: &UdpSocket, duration: Duration) -> anyhow::Result<f64> {
    let fd = source.as_raw_fd();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                pin_to(CLIENT_CPU.parse().unwrap_or(0))?;
                send_for(fd, duration / 10)?;
                let (packets, elapsed) = send_for(fd, duration)?;
                Ok(elapsed.as_nanos() as f64 / packets as f64)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
    })
}

/// `sendmmsg` of [`BATCH`] datagrams until `duration` has passed: packets sent, time taken.
fn send_for(fd: i32, duration: Duration) -> anyhow::Result<(u64, Duration)> {
    let mut iov = libc::iovec {
        iov_base: PAYLOAD.as_ptr() as *mut libc::c_void,
        iov_len: PAYLOAD.len(),
    };
    // SAFETY: an all-zero mmsghdr is valid; each one points at the one iovec below.
    let mut messages: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for message in &mut messages {
        message.msg_hdr.msg_iov = &mut iov;
        message.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let mut packets = 0u64;
    while start.elapsed() < duration {
        // SAFETY: `messages` holds BATCH valid headers on a connected socket we own.
        let sent = unsafe { libc::sendmmsg(fd, messages.as_mut_ptr(), BATCH as u32, 0) };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            // The receiver's drops can come back as ECONNREFUSED or ENOBUFS: sending goes on.
            if !matches!(
                error.raw_os_error(),
                Some(libc::ENOBUFS | libc::ECONNREFUSED)
            ) {
                return Err(error).context("sendmmsg on loopback");
            }
            continue;
        }
        packets += sent as u64;
    }
    Ok((packets.max(1), start.elapsed()))
}

fn shrink_receive_buffer(socket: &UdpSocket) -> anyhow::Result<()> {
    let size: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVBUF");
    }
    Ok(())
}

fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the calling thread's affinity, from a valid set.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}
