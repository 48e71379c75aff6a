//! The host's interfaces that the TC programs and the bandwidth limits work through.
use std::{fs, path::Path};

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
        assert_eq!(found[0].index, 2);
    }
}
