//! The machine the figures come from, and how busy it was with other work.
use std::{fs, process::Command, thread, time::Duration};

use serde_json::{json, Value};

pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub commit: String,
    pub tools: Vec<String>,
    /// Share of all CPUs busy in a 2-second window before the benchmark started (0-1).
    pub busy_before: f64,
}

pub fn describe() -> anyhow::Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo")?;
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(key)?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    };
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    let memory_kib: f64 = field(&meminfo, "MemTotal")
        .trim_end_matches(" kB")
        .parse()
        .unwrap_or(0.0);
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    Ok(Machine {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpu: field(&cpuinfo, "model name"),
        cpus: thread::available_parallelism().map_or(1, usize::from),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_string(),
        os: field(&os_release.replace('=', ":"), "PRETTY_NAME")
            .trim_matches('"')
            .to_string(),
        commit: commit(),
        tools: tool_versions(),
        busy_before: busy_fraction(Duration::from_secs(2)),
    })
}

impl Machine {
    pub fn to_json(&self) -> Value {
        json!({
            "date": self.date, "cpu": self.cpu, "cpus": self.cpus,
            "memory_gib": self.memory_gib, "kernel": self.kernel, "os": self.os,
            "commit": self.commit, "tools": self.tools, "busy_before": self.busy_before,
        })
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The commit measured, with `+changes` when the work tree differs from it.
fn commit() -> String {
    let root = crate::shell::workspace_root().display().to_string();
    let head = command_line("git", &["-C", &root, "rev-parse", "--short=12", "HEAD"]);
    let dirty = command_line("git", &["-C", &root, "status", "--porcelain"]);
    if dirty.is_empty() || dirty == "unknown" {
        head
    } else {
        format!("{head}+changes")
    }
}

fn tool_versions() -> Vec<String> {
    let listing = command_line(
        "dpkg-query",
        &[
            "-W",
            "-f=${Package} ${Version}\n",
            "sockperf",
            "iperf3",
            "wrk",
            "bpftool",
            "runc",
        ],
    );
    listing.lines().map(str::to_string).collect()
}

/// The 1-minute load average now.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// How busy every CPU together was over `window`, from /proc/stat (0 idle, 1 saturated).
pub fn busy_fraction(window: Duration) -> f64 {
    let sample = || -> Option<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not work.
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4)?;
        Some((total, idle))
    };
    let Some((total0, idle0)) = sample() else {
        return 0.0;
    };
    thread::sleep(window);
    let Some((total1, idle1)) = sample() else {
        return 0.0;
    };
    let total = total1.saturating_sub(total0).max(1) as f64;
    1.0 - idle1.saturating_sub(idle0) as f64 / total
}
