//! `tc_ingress` and `tc_egress` on the host's interfaces: as TCX links pinned under
//! `links/tc/` where the kernel has TCX (6.6), elsewhere as filters of a clsact qdisc, recorded
//! under `links/clsact/`. Every datapath open attaches them to interfaces that appeared since,
//! and drops the attachments of interfaces that are gone.
use std::{collections::BTreeSet, fs, path::Path};

use aya::programs::{
    links::{FdLink, Link as _, LinkOrder},
    tc::{
        qdisc_add_clsact, NlOptions, SchedClassifier, SchedClassifierLink, TcAttachOptions,
        TcAttachType, TcError,
    },
};

use super::{
    clsact,
    error::DatapathError,
    features::TcMode,
    interfaces::{ethernet_interfaces, Interface},
    pins::create_dir,
    programs::TC_PROGRAMS,
    Datapath,
};

impl Datapath {
    /// Attaches the TC programs to every Ethernet-framed interface in the mode given, dropping
    /// attachments of interfaces that are gone and of the other mode (a changed `--tc-attach`).
    pub(super) fn attach_devices(
        &self,
        sys_class_net: &Path,
        mode: TcMode,
    ) -> Result<(), DatapathError> {
        let interfaces = ethernet_interfaces(sys_class_net);
        let (tcx, netlink) = match mode {
            TcMode::Tcx => (interfaces.as_slice(), &[][..]),
            TcMode::Netlink => (&[][..], interfaces.as_slice()),
        };
        self.keep_tcx_links(tcx)?;
        self.keep_clsact_filters(netlink)?;
        for iface in &interfaces {
            for (program, attach) in TC_PROGRAMS {
                // An interface may vanish between the scan and the attach: not an error.
                let attached = match mode {
                    TcMode::Tcx => self.attach_tcx(iface, program, attach),
                    TcMode::Netlink => self.attach_clsact(iface, program, attach),
                };
                if let Err(error) = attached {
                    tracing::warn!("cannot attach {program} to {}: {error}", iface.name);
                }
            }
        }
        Ok(())
    }

    /// Detaches the TC programs from every interface, in either mode.
    pub(super) fn detach_devices(&self) -> Result<(), DatapathError> {
        self.keep_tcx_links(&[])?;
        self.keep_clsact_filters(&[])
    }

    /// Drops the TCX link pins of every interface not in `keep`: the last reference to a link
    /// gone, the kernel detaches it.
    fn keep_tcx_links(&self, keep: &[Interface]) -> Result<(), DatapathError> {
        let dir = self.root.join(TCX_LINKS);
        create_dir(&dir)?;
        let wanted: BTreeSet<String> = (keep.iter())
            .flat_map(|iface| TC_PROGRAMS.map(|(program, _)| pin_name(iface, program)))
            .collect();
        for stale in entry_names(&dir).difference(&wanted) {
            let _ = fs::remove_file(dir.join(stale));
        }
        Ok(())
    }

    fn attach_tcx(
        &self,
        iface: &Interface,
        name: &'static str,
        attach: TcAttachType,
    ) -> Result<(), DatapathError> {
        let pin = self.root.join(TCX_LINKS).join(pin_name(iface, name));
        if pin.exists() {
            return Ok(());
        }
        let program = |source| DatapathError::Program { name, source };
        let mut prog = self.tc_program(name)?;
        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
        let link_id = (prog.attach_with_options(&iface.name, attach, options)).map_err(program)?;
        let link =
            FdLink::try_from(prog.take_link(link_id).map_err(program)?).map_err(|source| {
                DatapathError::Link {
                    path: pin.clone(),
                    source,
                }
            })?;
        link.pin(&pin).map_err(|source| DatapathError::Pin {
            path: pin.clone(),
            source,
        })?;
        Ok(())
    }

    /// Detaches the clsact filters hostnetd added to interfaces not in `keep`, and removes a
    /// qdisc hostnetd added once no filter is left on it, its own or anyone else's.
    fn keep_clsact_filters(&self, keep: &[Interface]) -> Result<(), DatapathError> {
        let dir = self.root.join(CLSACT_FILTERS);
        create_dir(&dir)?;
        let wanted: BTreeSet<String> = (keep.iter())
            .flat_map(|iface| TC_PROGRAMS.map(|(program, _)| pin_name(iface, program)))
            .chain(keep.iter().map(qdisc_marker))
            .collect();
        let mut qdiscs = Vec::new();
        for stale in entry_names(&dir) {
            let Some(record) = ClsactRecord::parse(&stale) else {
                continue;
            };
            if wanted.contains(record.key()) {
                continue;
            }
            match record {
                ClsactRecord::Filter {
                    iface,
                    attach,
                    priority,
                    handle,
                    ..
                } => {
                    // Gone with its interface, or detached now.
                    if let Ok(link) =
                        SchedClassifierLink::attached(&iface, attach, priority, handle.into(), None)
                    {
                        let _ = link.detach();
                    }
                }
                ClsactRecord::Qdisc { ifindex, .. } => qdiscs.push(ifindex),
            }
            let _ = fs::remove_dir(dir.join(&stale));
        }
        for ifindex in qdiscs {
            if clsact::has_filters(ifindex).is_ok_and(|has| !has) {
                let _ = clsact::remove_qdisc(ifindex);
            }
        }
        Ok(())
    }

    /// Adds the filter (and the clsact qdisc, if the interface has none) and records both in
    /// bpffs, as directories: a netlink filter has no descriptor to pin, and lives on in the
    /// kernel until it is detached.
    fn attach_clsact(
        &self,
        iface: &Interface,
        name: &'static str,
        attach: TcAttachType,
    ) -> Result<(), DatapathError> {
        let dir = self.root.join(CLSACT_FILTERS);
        let filter = pin_name(iface, name);
        if entry_names(&dir)
            .iter()
            .any(|entry| ClsactRecord::parse(entry).is_some_and(|record| record.key() == filter))
        {
            return Ok(());
        }
        let program = |source| DatapathError::Program { name, source };
        match qdisc_add_clsact(&iface.name) {
            Ok(()) => create_dir(&dir.join(qdisc_marker(iface)))?,
            // The administrator's (or another hostnetd's) clsact: used, never removed.
            Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(error) => return Err(program(error.into())),
        }
        let mut prog = self.tc_program(name)?;
        let options = TcAttachOptions::Netlink(NlOptions::default());
        let link_id = (prog.attach_with_options(&iface.name, attach, options)).map_err(program)?;
        let link = prog.take_link(link_id).map_err(program)?;
        let record = format!(
            "{filter}@{}_{}",
            link.priority().map_err(program)?,
            u32::from(link.handle().map_err(program)?)
        );
        // Dropping the link would detach the filter; the record detaches it later.
        std::mem::forget(link);
        create_dir(&dir.join(record))
    }

    fn tc_program(&self, name: &'static str) -> Result<SchedClassifier, DatapathError> {
        SchedClassifier::from_pin(self.root.join("progs").join(name))
            .map_err(|source| DatapathError::Program { name, source })
    }
}

/// Where the TCX link pins are, and the records of clsact filters and qdiscs.
const TCX_LINKS: &str = "links/tc";
const CLSACT_FILTERS: &str = "links/clsact";

/// A record in `links/clsact`: `<ifindex>-<ifname>-<program>@<priority>_<handle>` for a filter
/// (bpffs refuses dots in names),
/// `<ifindex>-<ifname>-qdisc` for a qdisc hostnetd added.
#[derive(Debug, PartialEq, Eq)]
enum ClsactRecord<'a> {
    Filter {
        key: &'a str,
        iface: String,
        attach: TcAttachType,
        priority: u16,
        handle: u32,
    },
    Qdisc {
        key: &'a str,
        ifindex: u32,
    },
}

impl<'a> ClsactRecord<'a> {
    fn parse(entry: &'a str) -> Option<Self> {
        if let Some((key, numbers)) = entry.rsplit_once('@') {
            let (priority, handle) = numbers.split_once('_')?;
            let (ifindex_and_name, program) = key.rsplit_once('-')?;
            let program = program.strip_prefix("tc_")?;
            let (_, iface) = ifindex_and_name.split_once('-')?;
            let attach = match program {
                "ingress" => TcAttachType::Ingress,
                "egress" => TcAttachType::Egress,
                _ => return None,
            };
            return Some(Self::Filter {
                key,
                iface: iface.to_string(),
                attach,
                priority: priority.parse().ok()?,
                handle: handle.parse().ok()?,
            });
        }
        let (ifindex, _) = entry.strip_suffix("-qdisc")?.split_once('-')?;
        Some(Self::Qdisc {
            key: entry,
            ifindex: ifindex.parse().ok()?,
        })
    }

    fn key(&self) -> &str {
        match self {
            Self::Filter { key, .. } | Self::Qdisc { key, .. } => key,
        }
    }
}

fn qdisc_marker(iface: &Interface) -> String {
    format!("{}-{}-qdisc", iface.index, iface.name)
}

/// Index and name together, so a new interface that reuses a name or an index gets its own.
fn pin_name(iface: &Interface, program: &str) -> String {
    format!("{}-{}-{program}", iface.index, iface.name)
}

fn entry_names(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_named_by_index_interface_and_program() {
        let eth0 = Interface {
            name: "eth0".into(),
            index: 2,
        };
        assert_eq!(pin_name(&eth0, "tc_ingress"), "2-eth0-tc_ingress");
    }

    #[test]
    fn clsact_records_name_the_filter_or_the_qdisc() {
        assert_eq!(
            ClsactRecord::parse("7-br-lan-tc_egress@49152_1"),
            Some(ClsactRecord::Filter {
                key: "7-br-lan-tc_egress",
                iface: "br-lan".into(),
                attach: TcAttachType::Egress,
                priority: 49152,
                handle: 1,
            })
        );
        assert_eq!(
            ClsactRecord::parse("7-br-lan-qdisc"),
            Some(ClsactRecord::Qdisc {
                key: "7-br-lan-qdisc",
                ifindex: 7
            })
        );
        assert_eq!(ClsactRecord::parse("7-br-lan-tc_other@1_1"), None);
        assert_eq!(ClsactRecord::parse("junk"), None);
    }
}
