//! `net.ipv4.ip_local_reserved_ports` (which covers IPv6 too): owned ports are kept out of the
//! ephemeral range so no client socket autobinds onto one while its owner restarts. hostnetd
//! remembers which entries it added, and never removes the administrator's.
use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum ReservedPortsError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("unexpected entry {entry:?} in {path}")]
    Garbage { path: PathBuf, entry: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationPlan {
    pub sysctl: BTreeSet<u16>,
    pub ours: BTreeSet<u16>,
}

/// What the sysctl and hostnetd's own entries become when `wanted` should be reserved.
pub fn plan(
    current: &BTreeSet<u16>,
    ours: &BTreeSet<u16>,
    wanted: &BTreeSet<u16>,
) -> ReservationPlan {
    let no_longer_wanted: BTreeSet<u16> = ours.difference(wanted).copied().collect();
    let added: BTreeSet<u16> = wanted.difference(current).copied().collect();
    let mut sysctl: BTreeSet<u16> = current.difference(&no_longer_wanted).copied().collect();
    sysctl.extend(&added);
    let mut kept: BTreeSet<u16> = ours.intersection(wanted).copied().collect();
    kept.extend(added);
    ReservationPlan { sysctl, ours: kept }
}

pub fn parse_port_list(text: &str) -> Result<BTreeSet<u16>, String> {
    let mut ports = BTreeSet::new();
    for entry in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let number = |s: &str| s.trim().parse::<u16>().map_err(|_| entry.to_string());
        match entry.split_once('-') {
            Some((first, last)) => ports.extend(number(first)?..=number(last)?),
            None => {
                ports.insert(number(entry)?);
            }
        }
    }
    Ok(ports)
}

/// `{1,2,3,5}` becomes `1-3,5`.
pub fn format_port_list(ports: &BTreeSet<u16>) -> String {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &port in ports {
        match runs.last_mut() {
            Some((_, last)) if *last as u32 + 1 == port as u32 => *last = port,
            _ => runs.push((port, port)),
        }
    }
    let items: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    items.join(",")
}

/// The longest the sysctl can print: every other port of 0-65535 as its own entry.
const MAX_LIST_LEN: usize = 32768 * "65535,".len() + 1;

/// Reads the sysctl in one read(2). The kernel prints this bitmap afresh on each read and
/// answers a read at a non-zero offset with end-of-file, so reading in pieces (as
/// `read_to_string` does, starting with a 32-byte probe) silently cuts the list short: a
/// write-back would then drop entries, or reserve a cut-off number (`26` from `26005`).
fn read_in_one_call(mut source: impl io::Read) -> io::Result<String> {
    let mut buffer = vec![0u8; MAX_LIST_LEN];
    let length = source.read(&mut buffer)?;
    buffer.truncate(length);
    String::from_utf8(buffer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub struct ReservedPorts {
    path: PathBuf,
    /// Serialises the read-modify-write of the sysctl between every hostnetd on the host
    /// (instances with their own state directories included): each keeps its own entries and
    /// must not write back a list another changed meanwhile.
    lock: PathBuf,
}

impl ReservedPorts {
    pub fn new(root: &Path) -> Self {
        Self {
            path: root.join("proc/sys/net/ipv4/ip_local_reserved_ports"),
            lock: root.join("run/lock/hostnetd-reserved-ports.lock"),
        }
    }

    pub fn host() -> Self {
        Self::new(Path::new("/"))
    }

    pub fn read(&self) -> Result<BTreeSet<u16>, ReservedPortsError> {
        let file = fs::File::open(&self.path).map_err(|source| self.io("open", source))?;
        let text = read_in_one_call(file).map_err(|source| self.io("read", source))?;
        parse_port_list(&text).map_err(|entry| ReservedPortsError::Garbage {
            path: self.path.clone(),
            entry,
        })
    }

    pub fn write(&self, ports: &BTreeSet<u16>) -> Result<(), ReservedPortsError> {
        // The kernel ignores an empty write; a lone newline is what clears the list.
        let text = format_port_list(ports) + "\n";
        fs::write(&self.path, text).map_err(|source| self.io("write", source))
    }

    /// Brings the sysctl to `wanted` (plus the administrator's entries). `remember` persists
    /// which entries are hostnetd's; it is called before the sysctl changes (with every entry
    /// that may be ours afterwards) and again after, so a crash in between never leaves an
    /// entry that no one remembers adding.
    pub fn sync<E: From<ReservedPortsError>>(
        &self,
        ours: &BTreeSet<u16>,
        wanted: &BTreeSet<u16>,
        mut remember: impl FnMut(&BTreeSet<u16>) -> Result<(), E>,
    ) -> Result<BTreeSet<u16>, E> {
        let _held = self.lock_host_wide()?;
        let current = self.read()?;
        let plan = plan(&current, ours, wanted);
        if plan.sysctl != current {
            let before_and_after: BTreeSet<u16> = ours.union(&plan.ours).copied().collect();
            if before_and_after != *ours {
                remember(&before_and_after)?;
            }
            self.write(&plan.sysctl)?;
        }
        if plan.ours != *ours {
            remember(&plan.ours)?;
        }
        Ok(plan.ours)
    }

    fn lock_host_wide(&self) -> Result<fs::File, ReservedPortsError> {
        let io = |action, source| ReservedPortsError::Io {
            action,
            path: self.lock.clone(),
            source,
        };
        if let Some(dir) = self.lock.parent() {
            fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        crate::sys::files::lock_file(&self.lock, libc::LOCK_EX).map_err(|e| io("lock", e))
    }

    fn io(&self, action: &'static str, source: io::Error) -> ReservedPortsError {
        ReservedPortsError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> BTreeSet<u16> {
        ports.iter().copied().collect()
    }

    #[test]
    fn plan_adds_wanted_and_keeps_the_administrators_entries() {
        let result = plan(&set(&[22, 8080]), &set(&[]), &set(&[8080, 9000]));
        assert_eq!(result.sysctl, set(&[22, 8080, 9000]));
        assert_eq!(result.ours, set(&[9000]), "8080 was the administrator's");
        let released = plan(&result.sysctl, &result.ours, &set(&[]));
        assert_eq!(released.sysctl, set(&[22, 8080]));
        assert!(released.ours.is_empty());
    }

    #[test]
    fn plan_is_idempotent() {
        let first = plan(&set(&[]), &set(&[]), &set(&[1, 2]));
        let second = plan(&first.sysctl, &first.ours, &set(&[1, 2]));
        assert_eq!(first, second);
    }

    #[test]
    fn lists_parse_and_format_with_ranges() {
        assert_eq!(
            parse_port_list("8080,9000-9002\n").unwrap(),
            set(&[8080, 9000, 9001, 9002])
        );
        assert_eq!(parse_port_list("\n").unwrap(), set(&[]));
        assert_eq!(format_port_list(&set(&[1, 2, 3, 5, 65535])), "1-3,5,65535");
        assert_eq!(format_port_list(&set(&[])), "");
        assert!(parse_port_list("80,x").is_err());
    }

    #[test]
    fn sync_writes_through_a_fake_sysctl() {
        let root = std::env::temp_dir().join(format!("hostnetd-sysctl-{}", std::process::id()));
        let dir = root.join("proc/sys/net/ipv4");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ip_local_reserved_ports"), "22\n").unwrap();
        let reserved = ReservedPorts::new(&root);
        let remember = |_: &BTreeSet<u16>| Ok::<_, ReservedPortsError>(());
        let ours = reserved
            .sync(&set(&[]), &set(&[20000, 20001]), remember)
            .unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("ip_local_reserved_ports")).unwrap(),
            "22,20000-20001\n"
        );
        assert!(reserved
            .sync(&ours, &set(&[]), remember)
            .unwrap()
            .is_empty());
        assert_eq!(reserved.read().unwrap(), set(&[22]));
        reserved.write(&set(&[])).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("ip_local_reserved_ports")).unwrap(),
            "\n"
        );
        fs::remove_dir_all(root).unwrap();
    }

    /// Prints like the kernel's bitmap sysctl: everything that fits the first read, then
    /// end-of-file at any later offset.
    struct BitmapSysctl(&'static str, bool);

    impl io::Read for BitmapSysctl {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::replace(&mut self.1, true) {
                return Ok(0);
            }
            let length = self.0.len().min(buf.len());
            buf[..length].copy_from_slice(&self.0.as_bytes()[..length]);
            Ok(length)
        }
    }

    #[test]
    fn the_whole_list_is_read_although_the_kernel_prints_it_once() {
        let text = "26000-26002,26005,26010,26020,26030,26040\n";
        let mut piecewise = String::new();
        io::Read::read_to_string(&mut BitmapSysctl(text, false), &mut piecewise).unwrap();
        assert_ne!(
            piecewise, text,
            "the kernel's behaviour this guards against"
        );
        assert_eq!(read_in_one_call(BitmapSysctl(text, false)).unwrap(), text);
        let longest: BTreeSet<u16> = (0..=65535).step_by(2).collect();
        let text: &'static str = Box::leak((format_port_list(&longest) + "\n").into_boxed_str());
        assert!(text.len() <= MAX_LIST_LEN);
        assert_eq!(read_in_one_call(BitmapSysctl(text, false)).unwrap(), text);
    }

    #[test]
    fn the_real_sysctl_is_readable() {
        assert!(ReservedPorts::host().read().is_ok());
    }
}
