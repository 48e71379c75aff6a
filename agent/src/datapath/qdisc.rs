//! The egress root qdisc of each network device, for per-container bandwidth limits.
//!
//! The egress program limits a container's bandwidth by pacing: it sets `skb->tstamp` to the
//! earliest departure time (EDT) of each packet. Only the `fq` qdisc holds a packet back until
//! its timestamp; every other qdisc sends it at once, and there the program must police
//! (drop above the rate) instead. So a device paces when its root is `fq`, or a multi-queue
//! root (`mq`, `multiq`, `mqprio`: one child qdisc per transmit queue, which decides alone
//! when its packets leave) whose children are all `fq`.
//!
//! With `--manage-qdisc` hostnetd puts `fq` at the root of a device and later restores what
//! was there, by deletion only: deleting a root makes the kernel attach the device's default
//! again (`pfifo_fast`, `fq_codel`, `mq` over those, or `noqueue` for veth and loopback, as
//! `net.core.default_qdisc` and the device decide). That is what was there exactly when the
//! root was the kernel's own, which its handle tells: the kernel gives its defaults handle 0,
//! and allocates a non-zero one (`8001:` on) to every qdisc added through netlink, even one
//! asked for as `handle 0:`. An administrator's root (handle non-zero) could only be put back
//! by copying its options, which hostnetd does not try: it leaves such a device alone. The
//! deletion names the kind `fq`, so that the kernel refuses it when an administrator has
//! replaced hostnetd's `fq` since (it compares kinds only: their own `fq` would still go).
use std::{collections::BTreeMap, io};

use super::netlink::{
    attribute_string, attributes, exchange, TcMsg, TcRequest, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST, RTM_DELQDISC, RTM_GETQDISC, RTM_NEWQDISC, TCA_KIND, TC_H_CLSACT,
    TC_H_ROOT,
};

/// How a device's egress is paced for a limited container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PacingMode {
    /// The program sets each packet's departure time and the root qdisc holds it till then.
    Edt,
    /// The program drops what exceeds the rate.
    Police,
}

/// A device's egress root qdisc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootQdisc {
    pub ifindex: u32,
    /// `fq`, `mq`, `noqueue`, `pfifo_fast`, `fq_codel`, ...
    pub kind: String,
    /// 0 for the kernel's own default root, which deleting a root of ours gives back.
    pub handle: u32,
    /// The kinds of the qdiscs right below it, in the kernel's order (for `mq`: one a queue).
    pub children: Vec<String>,
}

/// Multi-queue roots: each transmit queue's child qdisc alone decides when its packets leave.
const MULTI_QUEUE_KINDS: [&str; 3] = ["mq", "multiq", "mqprio"];

/// The kind of a device that reports no qdisc: a device down has none to report, and sends
/// nothing; up, a queueless one (veth, loopback) reports `noqueue`.
const NO_QDISC: &str = "noqueue";

impl RootQdisc {
    pub fn pacing(&self) -> PacingMode {
        let all_fq = !self.children.is_empty() && self.children.iter().all(|kind| kind == "fq");
        if self.kind == "fq" || (MULTI_QUEUE_KINDS.contains(&self.kind.as_str()) && all_fq) {
            PacingMode::Edt
        } else {
            PacingMode::Police
        }
    }

    fn of(qdisc: &Qdisc) -> Self {
        Self {
            ifindex: qdisc.ifindex,
            kind: qdisc.kind.clone(),
            handle: qdisc.handle,
            children: Vec::new(),
        }
    }

    fn none(ifindex: u32) -> Self {
        Self {
            ifindex,
            kind: NO_QDISC.to_string(),
            handle: 0,
            children: Vec::new(),
        }
    }
}

/// Every device's root qdisc, by ifindex, in the caller's network namespace.
pub fn root_qdiscs() -> io::Result<Vec<RootQdisc>> {
    let qdiscs = dump_qdiscs().map_err(|error| context(error, "cannot list the qdiscs"))?;
    let devices = device_indexes().map_err(|error| context(error, "cannot list the devices"))?;
    Ok(roots(&qdiscs, &devices))
}

/// Replaces the root qdisc of `ifindex` with `fq` and its default options. On a kernel built
/// without `fq` the error is of kind `Unsupported`.
pub fn replace_root_with_fq(ifindex: u32) -> io::Result<()> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let request = TcRequest::new(RTM_NEWQDISC, flags, root_of(ifindex)).string(TCA_KIND, "fq");
    exchange(&request, |_, _| {}).map_err(|error| fq_error(error, ifindex))
}

fn fq_error(error: io::Error, ifindex: u32) -> io::Error {
    let action = format!("cannot put fq at the root of device {ifindex}");
    // The kernel's answer to a kind it does not know, once it found no module for it either.
    if error.raw_os_error() != Some(libc::ENOENT) {
        return context(error, &action);
    }
    let text = format!(
        "{action}: this kernel has no fq qdisc (CONFIG_NET_SCH_FQ, module sch_fq): {error}"
    );
    io::Error::new(io::ErrorKind::Unsupported, text)
}

/// Deletes the root qdisc of `ifindex` if it is an `fq`, for the kernel to attach the device's
/// default again. Any other root is left alone: the kernel's default (nothing to restore), and
/// one an administrator put in place of hostnetd's `fq` since.
pub fn remove_fq_root(ifindex: u32) -> io::Result<()> {
    remove_root(ifindex, "fq")
}

/// The kernel compares `kind` with the root's before it deletes it.
fn remove_root(ifindex: u32, kind: &str) -> io::Result<()> {
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let request = TcRequest::new(RTM_DELQDISC, flags, root_of(ifindex)).string(TCA_KIND, kind);
    match exchange(&request, |_, _| {}) {
        Err(error) if not_there(&error) => Ok(()),
        result => {
            let action = format!("cannot remove the {kind} root qdisc of device {ifindex}");
            result.map_err(|error| context(error, &action))
        }
    }
}

/// EINVAL: the root is of another kind; ENOENT: it has handle 0, the kernel's own (which
/// deletion would restore anyway); ENODEV: the device is gone, and its qdiscs with it.
fn not_there(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
    )
}

/// One qdisc of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Qdisc {
    ifindex: u32,
    kind: String,
    handle: u32,
    parent: u32,
}

impl Qdisc {
    /// An RTM_NEWQDISC's payload: a tcmsg, then attributes, TCA_KIND among them.
    fn parse(payload: &[u8]) -> Option<Self> {
        let (tc, attrs) = TcMsg::parse(payload)?;
        let kind = attributes(attrs).find(|&(kind, _)| kind == TCA_KIND)?.1;
        Some(Self {
            ifindex: tc.ifindex,
            kind: attribute_string(kind),
            handle: tc.handle,
            parent: tc.parent,
        })
    }
}

fn dump_qdiscs() -> io::Result<Vec<Qdisc>> {
    // ifindex 0: every device's qdiscs.
    let request = TcRequest::new(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, TcMsg::default());
    let mut qdiscs = Vec::new();
    exchange(&request, |kind, payload| {
        collect(&mut qdiscs, kind, payload)
    })?;
    Ok(qdiscs)
}

fn collect(qdiscs: &mut Vec<Qdisc>, kind: u16, payload: &[u8]) {
    if kind == RTM_NEWQDISC {
        qdiscs.extend(Qdisc::parse(payload));
    }
}

/// Each device's root with its children; `devices` that reported no qdisc get [`NO_QDISC`].
fn roots(qdiscs: &[Qdisc], devices: &[u32]) -> Vec<RootQdisc> {
    let mut roots: BTreeMap<u32, RootQdisc> = (qdiscs.iter())
        .filter(|qdisc| qdisc.parent == TC_H_ROOT)
        .map(|qdisc| (qdisc.ifindex, RootQdisc::of(qdisc)))
        .collect();
    // clsact and ingress hang off the ingress side: their parent's major (ffff:) is no root's.
    for qdisc in qdiscs
        .iter()
        .filter(|qdisc| ![TC_H_ROOT, TC_H_CLSACT].contains(&qdisc.parent))
    {
        match roots.get_mut(&qdisc.ifindex) {
            Some(root) if major(qdisc.parent) == major(root.handle) => {
                root.children.push(qdisc.kind.clone())
            }
            _ => {}
        }
    }
    for &ifindex in devices {
        roots
            .entry(ifindex)
            .or_insert_with(|| RootQdisc::none(ifindex));
    }
    roots.into_values().collect()
}

fn major(handle: u32) -> u32 {
    handle & 0xffff_0000
}

fn root_of(ifindex: u32) -> TcMsg {
    TcMsg {
        ifindex,
        parent: TC_H_ROOT,
        handle: 0,
    }
}

/// The indexes of the caller's network namespace's devices, as the qdisc dump sees them.
fn device_indexes() -> io::Result<Vec<u32>> {
    // SAFETY: no arguments; the list it returns is freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut indexes = Vec::new();
    // SAFETY: the entries up to the one of index 0 that ends the list are valid.
    unsafe {
        let mut entry = list;
        while (*entry).if_index != 0 {
            indexes.push((*entry).if_index);
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(indexes)
}

/// `error` with what hostnetd was doing, keeping its kind.
fn context(error: io::Error, action: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{action}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::{super::netlink::read_messages, *};

    fn root(kind: &str, children: &[&str]) -> RootQdisc {
        RootQdisc {
            ifindex: 2,
            kind: kind.into(),
            handle: 0,
            children: children.iter().map(|&kind| kind.into()).collect(),
        }
    }

    #[test]
    fn fq_paces_and_so_does_a_multi_queue_root_over_fq_only() {
        assert_eq!(root("fq", &[]).pacing(), PacingMode::Edt);
        assert_eq!(root("mq", &["fq", "fq"]).pacing(), PacingMode::Edt);
        assert_eq!(root("multiq", &["fq"]).pacing(), PacingMode::Edt);
        assert_eq!(
            root("mq", &["fq", "pfifo_fast"]).pacing(),
            PacingMode::Police
        );
        assert_eq!(root("mq", &[]).pacing(), PacingMode::Police);
        for kind in ["noqueue", "pfifo_fast", "fq_codel", "tbf"] {
            assert_eq!(root(kind, &["fq"]).pacing(), PacingMode::Police, "{kind}");
        }
    }

    #[test]
    fn pacing_modes_serialise_in_lower_case() {
        let modes = serde_json::to_string(&[PacingMode::Edt, PacingMode::Police]).unwrap();
        assert_eq!(modes, r#"["edt","police"]"#);
    }

    #[test]
    fn a_kernel_without_fq_is_unsupported_and_other_errors_keep_their_kind() {
        let missing = fq_error(io::Error::from_raw_os_error(libc::ENOENT), 7);
        assert_eq!(missing.kind(), io::ErrorKind::Unsupported);
        assert!(missing.to_string().contains("7: this kernel has no fq"));
        let busy = fq_error(io::Error::from_raw_os_error(libc::EBUSY), 7);
        assert_eq!(busy.kind(), io::ErrorKind::ResourceBusy);
    }

    /// An RTM_NEWQDISC as the kernel sends it: the kind, then options it skips.
    fn new_qdisc(ifindex: u32, kind: &str, handle: u32, parent: u32) -> Vec<u8> {
        let tc = TcMsg {
            ifindex,
            handle,
            parent,
        };
        let reply = TcRequest::new(RTM_NEWQDISC, 2, tc)
            .string(TCA_KIND, kind)
            .string(2, "options");
        reply.bytes().to_vec()
    }

    fn done() -> Vec<u8> {
        [20u32, 3, 1, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect()
    }

    /// `tc qdisc show` of the dump below, devices 1 to 5 (5 down):
    /// ```text
    /// qdisc noqueue 0: dev lo root
    /// qdisc mq 0: dev eth0 root
    /// qdisc fq 0: dev eth0 parent :2
    /// qdisc fq 0: dev eth0 parent :1
    /// qdisc clsact ffff: dev eth0 parent ffff:fff1
    /// qdisc mq 8003: dev eth1 root
    /// qdisc pfifo_fast 0: dev eth1 parent 8003:1
    /// qdisc tbf 8004: dev eth1 parent 8003:2
    /// qdisc fq 8001: dev eth2 root
    /// ```
    fn dump() -> Vec<u8> {
        [
            new_qdisc(1, "noqueue", 0, TC_H_ROOT),
            new_qdisc(2, "mq", 0, TC_H_ROOT),
            new_qdisc(2, "fq", 0, 2),
            new_qdisc(2, "fq", 0, 1),
            new_qdisc(2, "clsact", 0xffff_0000, TC_H_CLSACT),
            new_qdisc(3, "mq", 0x8003_0000, TC_H_ROOT),
            new_qdisc(3, "pfifo_fast", 0, 0x8003_0001),
            new_qdisc(3, "tbf", 0x8004_0000, 0x8003_0002),
            new_qdisc(4, "fq", 0x8001_0000, TC_H_ROOT),
            done(),
        ]
        .concat()
    }

    fn parse(datagram: &[u8]) -> Vec<Qdisc> {
        let mut qdiscs = Vec::new();
        let done = read_messages(datagram, &mut |kind, payload| {
            collect(&mut qdiscs, kind, payload)
        });
        assert!(done.unwrap());
        qdiscs
    }

    #[test]
    fn a_dump_gives_each_device_its_root_and_children() {
        let qdiscs = parse(&dump());
        assert_eq!(qdiscs.len(), 9);
        let found = roots(&qdiscs, &[1, 2, 3, 4, 5]);
        let summary: Vec<_> = (found.iter())
            .map(|r| (r.ifindex, r.kind.as_str(), r.handle, r.pacing()))
            .collect();
        use PacingMode::*;
        assert_eq!(
            summary,
            [
                (1, "noqueue", 0, Police),
                (2, "mq", 0, Edt),
                (3, "mq", 0x8003_0000, Police),
                (4, "fq", 0x8001_0000, Edt),
                (5, "noqueue", 0, Police),
            ]
        );
        assert_eq!(found[1].children, ["fq", "fq"]);
        assert_eq!(found[2].children, ["pfifo_fast", "tbf"]);
        assert!(found[3].children.is_empty());
    }

    #[test]
    fn a_qdisc_without_a_kind_is_skipped() {
        let tc = TcMsg {
            ifindex: 1,
            handle: 0,
            parent: TC_H_ROOT,
        };
        let reply = TcRequest::new(RTM_NEWQDISC, 2, tc).string(2, "options");
        assert!(parse(&[reply.bytes(), &done()].concat()).is_empty());
    }
}
