//! Each hostnetd program's cost from the kernel's own BPF statistics: run_time_ns / run_cnt.
//!
//! Statistics are switched on with BPF_ENABLE_STATS, which has the effect of
//! `sysctl kernel.bpf_stats_enabled=1` for as long as its file descriptor is open: they go off
//! again when the benchmark ends, however it ends, and a value an administrator set is left as
//! it was. They are on only during the profiling pass: counting costs two clock reads per
//! program run, which the timed runs must not pay.
use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    process::Command,
};

use anyhow::{bail, Context as _};
use serde_json::Value;

const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Run-time statistics on while this lives.
pub struct StatsEnabled(
    #[expect(dead_code, reason = "held for its Drop: closing ends the stats")] OwnedFd,
);

pub fn enable() -> anyhow::Result<StatsEnabled> {
    // union bpf_attr's enable_stats member: { __u32 type; }, the rest zero.
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
    let fd = bpf(BPF_ENABLE_STATS, &mut attr).context("cannot enable BPF run-time statistics")?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(StatsEnabled(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// bpf(2) with `attr` as its union bpf_attr (zero beyond the fields set); the result, which is
/// a new descriptor for the commands that make one.
fn bpf(command: libc::c_long, attr: &mut [u8]) -> std::io::Result<i32> {
    // SAFETY: bpf(2) reads and writes at most `attr.len()` bytes of a buffer we own; pointers
    // inside `attr` point to buffers the caller keeps alive across this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as i32)
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
/// TCX_NEXT: an empty TC program must leave the verdict to what follows.
const TCX_NEXT: i32 = -1;
/// A cgroup_skb program's "let it through".
const SKB_PASS: i32 = 1;

/// What the statistics report for a program that does nothing, in ns per run: the clock reads
/// around each run and the call itself. Every program's figure includes it, so a budget below
/// it cannot be met as measured here. Statistics must be on.
pub fn empty_program_ns(runs: u32) -> anyhow::Result<f64> {
    let program = load_empty_program(BPF_PROG_TYPE_SOCKET_FILTER, 0, 0)
        .context("cannot load an empty BPF program")?;
    let id = program_id(&program)?;
    let before = stats_of(id)?;
    test_run(&program, runs).context("cannot run the empty BPF program")?;
    let after = stats_of(id)?;
    let count = after.run_cnt.saturating_sub(before.run_cnt);
    if count == 0 {
        bail!("the empty BPF program's runs were not counted: are statistics on?");
    }
    Ok(after.run_time_ns.saturating_sub(before.run_time_ns) as f64 / count as f64)
}

/// Empty programs attached beside hostnetd's per-packet ones, seeing the same packets: TCX on
/// `lo` both ways, cgroup_skb on the containers' parent cgroup both ways. What the statistics
/// say they cost is the floor as measured in place (cold caches, the same clock reads), which
/// a tight BPF_PROG_TEST_RUN loop understates. Detached when dropped.
pub struct EmptyHooks {
    /// (program type as bpftool names it, program, link)
    attached: Vec<(&'static str, OwnedFd, OwnedFd)>,
}

impl EmptyHooks {
    pub fn attach(containers_cgroup: &Path) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let cgroup = std::fs::File::open(containers_cgroup)
            .with_context(|| format!("cannot open {}", containers_cgroup.display()))?;
        let lo = 1; // the loopback device is always ifindex 1
        let hooks = [
            (
                "sched_cls",
                BPF_PROG_TYPE_SCHED_CLS,
                BPF_TCX_INGRESS,
                TCX_NEXT,
                lo,
            ),
            (
                "sched_cls",
                BPF_PROG_TYPE_SCHED_CLS,
                BPF_TCX_EGRESS,
                TCX_NEXT,
                lo,
            ),
            (
                "cgroup_skb",
                BPF_PROG_TYPE_CGROUP_SKB,
                BPF_CGROUP_INET_INGRESS,
                SKB_PASS,
                cgroup.as_raw_fd() as u32,
            ),
            (
                "cgroup_skb",
                BPF_PROG_TYPE_CGROUP_SKB,
                BPF_CGROUP_INET_EGRESS,
                SKB_PASS,
                cgroup.as_raw_fd() as u32,
            ),
        ];
        let mut attached = Vec::new();
        for (kind, prog_type, attach_type, verdict, target) in hooks {
            let program = load_empty_program(prog_type, attach_type, verdict)
                .with_context(|| format!("cannot load an empty {kind} program"))?;
            let link = link_create(&program, target, attach_type)
                .with_context(|| format!("cannot attach an empty {kind} program"))?;
            attached.push((kind, program, link));
        }
        Ok(Self { attached })
    }

    /// Run counters of each empty program, with its program type.
    pub fn counters(&self) -> anyhow::Result<Vec<(&'static str, ProgramStats)>> {
        self.attached
            .iter()
            .map(|(kind, program, _)| Ok((*kind, stats_of(program_id(program)?)?)))
            .collect()
    }
}

/// ns per run by program type, from counters taken before and after a pass.
pub fn floors_by_kind(
    before: &[(&'static str, ProgramStats)],
    after: &[(&'static str, ProgramStats)],
) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((kind, old), (_, new)) in before.iter().zip(after) {
        let sum = sums.entry(kind.to_string()).or_default();
        sum.0 += new.run_time_ns.saturating_sub(old.run_time_ns);
        sum.1 += new.run_cnt.saturating_sub(old.run_cnt);
    }
    sums.into_iter()
        .filter(|(_, (_, runs))| *runs > 0)
        .map(|(kind, (ns, runs))| (kind, ns as f64 / runs as f64))
        .collect()
}

/// `r0 = verdict; exit`, named hnbench_empty.
fn load_empty_program(
    prog_type: u32,
    expected_attach_type: u32,
    verdict: i32,
) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut instructions = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0u8];
    instructions[4..8].copy_from_slice(&verdict.to_ne_bytes());
    // union bpf_attr's prog_load member: prog_type, insn_cnt, insns, license, ..., prog_name
    // at 48, expected_attach_type at 68; the rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(instructions.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..61].copy_from_slice(b"hnbench_empty"); // NUL-padded to 16
    attr[68..72].copy_from_slice(&expected_attach_type.to_ne_bytes());
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A link attaching `program` to `target` (a cgroup descriptor or an ifindex); closing the
/// link's descriptor detaches it.
fn link_create(program: &OwnedFd, target: u32, attach_type: u32) -> anyhow::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    // union bpf_attr's link_create member: prog_fd, target_fd or target_ifindex, attach_type,
    // flags; the rest zero.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&(program.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&target.to_ne_bytes());
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn program_id(program: &OwnedFd) -> anyhow::Result<u64> {
    use std::os::fd::AsRawFd as _;
    // struct bpf_prog_info starts with type and id (u32 each); the kernel fills info_len bytes.
    let mut info = [0u8; 8];
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(program.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("cannot read the program's id")?;
    Ok(u64::from(u32::from_ne_bytes([
        info[4], info[5], info[6], info[7],
    ])))
}

/// Runs `program` `runs` times on a zeroed 64-byte packet (BPF_PROG_TEST_RUN).
fn test_run(program: &OwnedFd, runs: u32) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let packet = [0u8; 64];
    // union bpf_attr's test member: prog_fd, retval, data_size_in, data_size_out, data_in,
    // data_out, repeat; the rest zero.
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(program.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(packet.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(packet.as_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&runs.to_ne_bytes());
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(())
}

fn stats_of(id: u64) -> anyhow::Result<ProgramStats> {
    let output = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "-j"])
        .output()
        .context("cannot run bpftool")?;
    Ok(parse_prog_show(&output.stdout)?.1)
}

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Programs attached to the root cgroup (every process on the host runs them) and TCX
/// programs on lo (all loopback traffic passes them), as `name`s: what would slow H0 down
/// when hostnetd is not even running. Others' tests on a shared machine attach such programs.
pub fn hooks_on_every_path(cgroup2: &Path) -> Vec<String> {
    let mut hooks = Vec::new();
    let listing = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup2)
        .arg("-j")
        .output();
    if let Ok(output) = listing {
        let programs: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        for program in programs.as_array().into_iter().flatten() {
            let name = program["name"].as_str().unwrap_or("?");
            hooks.push(format!("root cgroup: {name}"));
        }
    }
    for (attach_type, direction) in [(BPF_TCX_INGRESS, "ingress"), (BPF_TCX_EGRESS, "egress")] {
        match tcx_program_count(1, attach_type) {
            Some(0) | None => {}
            Some(n) => hooks.push(format!("lo tcx {direction}: {n} program(s)")),
        }
    }
    hooks
}

/// How many TCX programs are attached to `ifindex` in one direction (None: cannot ask, as on
/// kernels before 6.6).
fn tcx_program_count(ifindex: u32, attach_type: u32) -> Option<u32> {
    // union bpf_attr's query member: target_ifindex, attach_type, query_flags, attach_flags,
    // prog_ids (null: only count), prog_cnt at byte 24; the rest zero.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&ifindex.to_ne_bytes());
    attr[4..8].copy_from_slice(&attach_type.to_ne_bytes());
    bpf(BPF_PROG_QUERY, &mut attr).ok()?;
    Some(u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]]))
}

/// One program's counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramStats {
    pub name: String,
    /// The kernel's program type: cgroup_sock_addr, cgroup_sock, cgroup_skb, sched_cls...
    pub kind: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgramStats {
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// Counters of every program pinned under `<bpf_dir>/v*/progs/`, by program id.
pub fn snapshot(bpf_dir: &Path) -> anyhow::Result<BTreeMap<u64, ProgramStats>> {
    let mut programs = BTreeMap::new();
    for pin in pinned_programs(bpf_dir)? {
        let output = Command::new("bpftool")
            .args(["prog", "show", "pinned"])
            .arg(&pin)
            .arg("-j")
            .output()
            .context("cannot run bpftool (installed by `cargo xtask bench`)")?;
        if !output.status.success() {
            bail!(
                "bpftool prog show pinned {}: {}",
                pin.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let (id, stats) = parse_prog_show(&output.stdout)?;
        programs.insert(id, stats);
    }
    Ok(programs)
}

fn pinned_programs(bpf_dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut pins = Vec::new();
    let versions = std::fs::read_dir(bpf_dir)
        .with_context(|| format!("no hostnetd pins in {}", bpf_dir.display()))?;
    for version in versions.flatten() {
        let progs = version.path().join("progs");
        for pin in std::fs::read_dir(progs).into_iter().flatten().flatten() {
            pins.push(pin.path());
        }
    }
    pins.sort();
    Ok(pins)
}

/// `bpftool prog show -j` of one program: its id and counters (absent until stats were on).
pub fn parse_prog_show(json: &[u8]) -> anyhow::Result<(u64, ProgramStats)> {
    let value: Value = serde_json::from_slice(json).context("bpftool printed no JSON")?;
    let number = |key: &str| value[key].as_u64().unwrap_or(0);
    let id = value["id"]
        .as_u64()
        .context("bpftool's program has no id")?;
    Ok((
        id,
        ProgramStats {
            name: value["name"].as_str().unwrap_or("?").to_string(),
            kind: value["type"].as_str().unwrap_or("?").to_string(),
            run_time_ns: number("run_time_ns"),
            run_cnt: number("run_cnt"),
        },
    ))
}

/// What ran between two snapshots: the programs that ran, with the counters' differences.
pub fn delta(
    before: &BTreeMap<u64, ProgramStats>,
    after: &BTreeMap<u64, ProgramStats>,
) -> Vec<ProgramStats> {
    after
        .iter()
        .map(|(id, now)| {
            let (time, count) = before
                .get(id)
                .map_or((0, 0), |then| (then.run_time_ns, then.run_cnt));
            ProgramStats {
                run_time_ns: now.run_time_ns.saturating_sub(time),
                run_cnt: now.run_cnt.saturating_sub(count),
                ..now.clone()
            }
        })
        .filter(|stats| stats.run_cnt > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpftool_and_subtracts() {
        let json = br#"{"id":42,"type":"cgroup_sock_addr","name":"bind4","run_time_ns":9000,"run_cnt":100}"#;
        let (id, after) = parse_prog_show(json).unwrap();
        assert_eq!(
            (id, after.name.as_str(), after.ns_per_run()),
            (42, "bind4", Some(90.0))
        );
        let before = ProgramStats {
            run_time_ns: 4000,
            run_cnt: 50,
            ..after.clone()
        };
        let idle = ProgramStats {
            name: "bind6".into(),
            ..before.clone()
        };
        let got = delta(
            &BTreeMap::from([(42, before), (7, idle.clone())]),
            &BTreeMap::from([(42, after), (7, idle)]),
        );
        assert_eq!(got.len(), 1, "a program that did not run is left out");
        assert_eq!(got[0].ns_per_run(), Some(100.0));
    }

    #[test]
    fn counters_absent_before_stats_were_on() {
        let (_, stats) = parse_prog_show(br#"{"id":1,"type":"cgroup_skb","name":"x"}"#).unwrap();
        assert_eq!(stats.ns_per_run(), None);
    }
}
