//! `tc_ingress` and `tc_egress` on the host's interfaces, as TCX links pinned under
//! `links/tc/`. Every datapath open attaches them to interfaces that appeared since, and drops
//! the pins of interfaces that are gone.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use aya::programs::{
    links::{FdLink, LinkOrder},
    tc::{SchedClassifier, TcAttachOptions, TcAttachType},
};

use super::{create_dir, Datapath, DatapathError};

pub(super) const PROGRAMS: [(&str, TcAttachType); 2] = [
    ("tc_ingress", TcAttachType::Ingress),
    ("tc_egress", TcAttachType::Egress),
];
pub(super) const LAST_PROGRAM: &str = PROGRAMS[1].0;
pub(super) const SYS_CLASS_NET: &str = "/sys/class/net";

/// ARPHRD_ETHER and ARPHRD_LOOPBACK: devices whose packets carry a 14-byte Ethernet header,
/// which the TC programs skip to count from the IP header on, as the socket view does.
const ETHERNET_TYPES: [&str; 2] = ["1", "772"];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

/// The Ethernet-framed interfaces (loopback included) of the host's network namespace.
pub fn ethernet_interfaces(sys_class_net: &Path) -> Vec<Interface> {
    let Ok(entries) = fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    let mut interfaces: Vec<Interface> = entries
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let kind = fs::read_to_string(dir.join("type")).ok()?;
            if !ETHERNET_TYPES.contains(&kind.trim()) {
                return None;
            }
            Some(Interface {
                name: dir.file_name()?.to_str()?.to_string(),
                index: fs::read_to_string(dir.join("ifindex"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?,
            })
        })
        .collect();
    interfaces.sort();
    interfaces
}

impl Datapath {
    pub(super) fn attach_devices(&self, sys_class_net: &Path) -> Result<(), DatapathError> {
        let dir = self.root.join("links/tc");
        create_dir(&dir)?;
        let interfaces = ethernet_interfaces(sys_class_net);
        let wanted: BTreeSet<String> = (interfaces.iter())
            .flat_map(|iface| PROGRAMS.map(|(program, _)| pin_name(iface, program)))
            .collect();
        for stale in pinned_names(&dir).difference(&wanted) {
            let _ = fs::remove_file(dir.join(stale));
        }
        for iface in &interfaces {
            for (program, attach) in PROGRAMS {
                let pin = dir.join(pin_name(iface, program));
                if !pin.exists() {
                    // An interface may vanish between the scan and the attach: not an error.
                    if let Err(error) = self.attach_tc(iface, program, attach, &pin) {
                        tracing::warn!("cannot attach {program} to {}: {error}", iface.name);
                    }
                }
            }
        }
        Ok(())
    }

    fn attach_tc(
        &self,
        iface: &Interface,
        name: &'static str,
        attach: TcAttachType,
        pin: &PathBuf,
    ) -> Result<(), DatapathError> {
        let program = |source| DatapathError::Program { name, source };
        let mut prog =
            SchedClassifier::from_pin(self.root.join("progs").join(name)).map_err(program)?;
        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
        let link_id = (prog.attach_with_options(&iface.name, attach, options)).map_err(program)?;
        let link =
            FdLink::try_from(prog.take_link(link_id).map_err(program)?).map_err(|source| {
                DatapathError::Link {
                    path: pin.clone(),
                    source,
                }
            })?;
        link.pin(pin).map_err(|source| DatapathError::Pin {
            path: pin.clone(),
            source,
        })?;
        Ok(())
    }
}

/// Index and name together, so a new interface that reuses a name or an index gets its own.
fn pin_name(iface: &Interface, program: &str) -> String {
    format!("{}-{}-{program}", iface.index, iface.name)
}

fn pinned_names(dir: &Path) -> BTreeSet<String> {
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
    fn only_ethernet_framed_interfaces_are_listed() {
        let dir = std::env::temp_dir().join(format!("hostnetd-ifaces-{}", std::process::id()));
        for (name, kind, index) in [("lo", "772", 1), ("eth0", "1", 2), ("wg0", "65534", 3)] {
            fs::create_dir_all(dir.join(name)).unwrap();
            fs::write(dir.join(name).join("type"), format!("{kind}\n")).unwrap();
            fs::write(dir.join(name).join("ifindex"), format!("{index}\n")).unwrap();
        }
        let found = ethernet_interfaces(&dir);
        fs::remove_dir_all(&dir).unwrap();
        let names: Vec<&str> = found.iter().map(|iface| iface.name.as_str()).collect();
        assert_eq!(names, ["eth0", "lo"]);
        assert_eq!(pin_name(&found[0], "tc_ingress"), "2-eth0-tc_ingress");
    }
}
