//! Room in the kernel's shared tables. Every container takes entries in tables that all
//! containers share: its listed bind addresses, its egress and ingress rule prefixes, a policy
//! and a denial row, its traffic rows. A map update into a full table fails with a bare errno,
//! half-way through a write; so admission (`run`, `update`) counts what the container or the
//! update needs in each table against what the kernel holds, before anything is written, and
//! refuses with an error that names the table, how full it is, and what to do.
//!
//! An update needs room for two policies at once: it writes the next generation beside the one
//! in force and removes the old one only after the switch ([`crate::datapath::transition::StagedPolicy`]).
//!
//! The traffic tables get their rows from the programs, one per (container, owned port,
//! protocol) as traffic appears, plus one per protocol class for the rest. Rows of live
//! containers are never removed, and a port an update takes away keeps its row until the
//! container goes, so admission counts every row present plus every row a live container's
//! traffic could still create: then no live container's packet ever finds the table full.
use std::{collections::HashSet, fmt, sync::Arc};

use hostnetd_common::{
    traffic::{class_of, TrafficKey, CLASS_OTHER, CLASS_TCP, CLASS_UDP},
    Proto, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    datapath::{
        usage::{HostTables, RowFill, TableFill},
        KernelPolicy,
    },
    policy::{rules::RuleError, OwnedPort},
    store::{ContainerRecord, PortClaim},
};

/// A shared kernel table that admission takes room in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    BindAddresses,
    EgressRules,
    IngressRules,
    Containers,
    Traffic,
    DeviceTraffic,
}

impl Table {
    /// What the error calls it, with the map's own name for whoever inspects the kernel.
    fn name(self) -> &'static str {
        match self {
            Self::BindAddresses => "bind address table (BIND_ADDRS)",
            Self::EgressRules => "egress rule table (EGRESS_RULES)",
            Self::IngressRules => "ingress rule table (INGRESS_RULES)",
            Self::Containers => "container table (CONTAINER_POLICIES, DENIALS)",
            Self::Traffic => "traffic table (TRAFFIC)",
            Self::DeviceTraffic => "device traffic table (DEVICE_TRAFFIC)",
        }
    }

    /// What one entry is.
    fn unit(self) -> &'static str {
        match self {
            Self::BindAddresses => "entries (one per port and listed address)",
            Self::EgressRules | Self::IngressRules => "prefixes",
            Self::Containers => "containers",
            Self::Traffic | Self::DeviceTraffic => "rows",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            Self::BindAddresses => "remove containers or restrict fewer ports to listed addresses",
            Self::EgressRules | Self::IngressRules => {
                "remove containers or use fewer, wider prefixes"
            }
            Self::Containers => "remove containers",
            Self::Traffic | Self::DeviceTraffic => {
                "remove containers (a port an update took away keeps its counters until its container is removed)"
            }
        }
    }
}

/// Who asks for room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asker {
    NewContainer,
    Update,
}

/// A table without room for what a new container or an update needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TableFull {
    pub table: Table,
    pub asker: Asker,
    /// Entries in use now (traffic tables: present, or kept for live containers' traffic).
    pub used: u32,
    pub capacity: u32,
    /// Containers holding them.
    pub holders: usize,
    /// Entries needed beyond those in use.
    pub needed: u32,
}

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            table,
            used,
            capacity,
            holders,
            needed,
            ..
        } = *self;
        let (name, unit, advice) = (table.name(), table.unit(), table.advice());
        let asker = match self.asker {
            Asker::NewContainer => "container",
            Asker::Update => "update",
        };
        if table == Table::Containers {
            return write!(
                f,
                "the host's {name} has no room for this container: it holds {used} of at most \
                 {capacity} containers; {advice}"
            );
        }
        let in_use = match table {
            Table::Traffic | Table::DeviceTraffic => "in use or kept for owned ports",
            _ => "in use",
        };
        let containers = if holders == 1 {
            "container"
        } else {
            "containers"
        };
        let why = match (self.asker, table) {
            (Asker::Update, Table::BindAddresses | Table::EgressRules | Table::IngressRules) => {
                ", as an update writes the container's new entries beside those in force until \
                 the switch"
            }
            _ => "",
        };
        write!(
            f,
            "the host's {name} has no room for this {asker}: {used} of its {capacity} {unit} \
             are {in_use} by {holders} {containers}, and it needs {needed} more{why}; {advice}"
        )
    }
}

/// What one generation of a container's policy takes in the rule and address tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub bind_addresses: u32,
    pub egress_prefixes: u32,
    pub ingress_prefixes: u32,
}

impl Footprint {
    /// One entry per listed address of each port, and per distinct prefix of each direction
    /// (what the datapath writes: [`crate::policy::rules::RuleSet::compile`]).
    pub fn of(policy: &KernelPolicy, claims: &[PortClaim]) -> Result<Self, RuleError> {
        let addresses = (claims.iter())
            .filter_map(|claim| claim.addresses.as_ref())
            .map(Vec::len)
            .sum::<usize>();
        Ok(Self {
            bind_addresses: count(addresses),
            egress_prefixes: count(policy.egress.compile()?.len()),
            ingress_prefixes: count(policy.ingress.compile()?.len()),
        })
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Refuses a new container that does not fit: `footprint` is its policy's, `ports` the ports
/// it will own, `records` every container's record (the live ones count).
pub fn check_new_container(
    tables: &HostTables,
    records: &[Arc<ContainerRecord>],
    footprint: Footprint,
    ports: &[OwnedPort],
) -> Result<(), TableFull> {
    let asker = Asker::NewContainer;
    for (fill, table, needed) in entry_tables(tables, footprint) {
        room(fill, table, asker, needed, 0)?;
    }
    container_room(tables)?;
    for rows in row_tables(tables) {
        rows.room(records, asker, NOT_YET_CREATED, ports)?;
    }
    Ok(())
}

/// Refuses an update of the container `cgroup_id` that does not fit: its next generation
/// (`footprint`) is written beside the one in force, after clearing whatever an earlier
/// attempt left under it; `ports` are the ports it will own, beside those it owns now.
pub fn check_update(
    tables: &HostTables,
    records: &[Arc<ContainerRecord>],
    cgroup_id: u64,
    footprint: Footprint,
    ports: &[OwnedPort],
) -> Result<(), TableFull> {
    let asker = Asker::Update;
    let next = 1 - tables.generations.get(&cgroup_id).copied().unwrap_or(1);
    for (fill, table, needed) in entry_tables(tables, footprint) {
        room(fill, table, asker, needed, fill.held(cgroup_id, next))?;
    }
    for rows in row_tables(tables) {
        rows.room(records, asker, cgroup_id, ports)?;
    }
    Ok(())
}

/// The tables whose entries belong to a policy generation, and what `footprint` needs in each.
fn entry_tables(tables: &HostTables, footprint: Footprint) -> [(&TableFill, Table, u32); 3] {
    [
        (
            &tables.bind_addresses,
            Table::BindAddresses,
            footprint.bind_addresses,
        ),
        (
            &tables.egress,
            Table::EgressRules,
            footprint.egress_prefixes,
        ),
        (
            &tables.ingress,
            Table::IngressRules,
            footprint.ingress_prefixes,
        ),
    ]
}

/// Room for `needed` entries once `freed` (cleared before the write) are gone.
fn room(
    fill: &TableFill,
    table: Table,
    asker: Asker,
    needed: u32,
    freed: u32,
) -> Result<(), TableFull> {
    let used = fill.used();
    let more = needed.saturating_sub(freed);
    if u64::from(used) + u64::from(more) <= u64::from(fill.capacity) {
        return Ok(());
    }
    Err(TableFull {
        table,
        asker,
        used,
        capacity: fill.capacity,
        holders: fill.holders(),
        needed: more,
    })
}

/// Each container has a policy entry and may get a denial row; the denial table also keeps
/// one for the host's own processes.
fn container_room(tables: &HostTables) -> Result<(), TableFull> {
    let capacity = (tables.policies.capacity).min(tables.denials_capacity.saturating_sub(1));
    let used = tables.policies.used();
    if used < capacity {
        return Ok(());
    }
    Err(TableFull {
        table: Table::Containers,
        asker: Asker::NewContainer,
        used,
        capacity,
        holders: tables.policies.holders(),
        needed: 1,
    })
}

/// The cgroup id of a container not created yet: cgroup ids are inode numbers, and none is
/// this one, so no row of it exists.
const NOT_YET_CREATED: u64 = u64::MAX;

const CLASSES: [u8; 3] = [CLASS_TCP, CLASS_UDP, CLASS_OTHER];

/// A traffic table, and the rows a container's traffic may create in it.
struct Rows<'a> {
    fill: &'a RowFill,
    table: Table,
    rows_of: fn(u64, &[OwnedPort]) -> Vec<TrafficKey>,
}

fn row_tables(tables: &HostTables) -> [Rows<'_>; 2] {
    [
        Rows {
            fill: &tables.traffic,
            table: Table::Traffic,
            rows_of: socket_rows,
        },
        Rows {
            fill: &tables.device_traffic,
            table: Table::DeviceTraffic,
            rows_of: device_rows,
        },
    ]
}

impl Rows<'_> {
    /// Room for the rows the container `cgroup_id` may create owning `ports`, beside every
    /// row present and every row a live container may still create.
    fn room(
        &self,
        records: &[Arc<ContainerRecord>],
        asker: Asker,
        cgroup_id: u64,
        ports: &[OwnedPort],
    ) -> Result<(), TableFull> {
        let mut kept = self.fill.rows.clone();
        for record in records.iter().filter(|record| record.state.is_live()) {
            let owned: Vec<OwnedPort> = record.ports.iter().map(|claim| claim.port).collect();
            kept.extend((self.rows_of)(record.cgroup.id, &owned));
        }
        let wanted: HashSet<TrafficKey> = (self.rows_of)(cgroup_id, ports).into_iter().collect();
        let needed = count(wanted.difference(&kept).count());
        let used = count(kept.len());
        if u64::from(used) + u64::from(needed) <= u64::from(self.fill.capacity) {
            return Ok(());
        }
        let holders: HashSet<u64> = kept.iter().map(|row| row.cgroup_id).collect();
        Err(TableFull {
            table: self.table,
            asker,
            used,
            capacity: self.fill.capacity,
            holders: holders.len(),
            needed,
        })
    }
}

/// The rows a container's traffic may create at its sockets: one per protocol class for what
/// is not an owned port, one per owned port.
fn socket_rows(cgroup_id: u64, ports: &[OwnedPort]) -> Vec<TrafficKey> {
    let classes = CLASSES.map(|class| TrafficKey::new(cgroup_id, 0, class));
    classes
        .into_iter()
        .chain(device_rows(cgroup_id, ports))
        .collect()
}

/// The rows a container's traffic may create at the host's interfaces: its owned ports'.
/// The programs key a port's row by the protocol the port is owned for.
fn device_rows(cgroup_id: u64, ports: &[OwnedPort]) -> Vec<TrafficKey> {
    let row = |port: &OwnedPort| {
        let ipproto = match port.proto {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        };
        TrafficKey::new(cgroup_id, port.port, class_of(ipproto as u8))
    };
    ports.iter().map(row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{policy::rules::RuleSet, store::tests::record};

    const TCP_80: OwnedPort = OwnedPort {
        proto: Proto::Tcp,
        port: 80,
    };

    fn port(number: u16) -> OwnedPort {
        OwnedPort {
            proto: Proto::Udp,
            port: number,
        }
    }

    /// Tables of the given capacities, `used` entries of each held by container 7 under
    /// generation 0 (its generation in force).
    fn tables(capacity: u32, used: u32) -> HostTables {
        let mut fill = TableFill::new(capacity);
        (0..used).for_each(|_| fill.add(7, 0));
        let mut policies = TableFill::new(capacity);
        policies.add(7, 0);
        HostTables {
            bind_addresses: fill.clone(),
            egress: fill.clone(),
            ingress: fill,
            policies,
            generations: [(7, 0)].into(),
            denials_capacity: capacity,
            traffic: RowFill {
                capacity,
                rows: HashSet::new(),
            },
            device_traffic: RowFill {
                capacity,
                rows: HashSet::new(),
            },
        }
    }

    fn footprint(addresses: u32, egress: u32, ingress: u32) -> Footprint {
        Footprint {
            bind_addresses: addresses,
            egress_prefixes: egress,
            ingress_prefixes: ingress,
        }
    }

    #[test]
    fn a_footprint_counts_listed_addresses_and_distinct_prefixes() {
        let rules = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        let policy = KernelPolicy {
            // Three rules on two prefixes: two trie entries.
            egress: RuleSet::parse(
                &rules(&["10.0.0.0/8:80", "10.0.0.0/8:443"]),
                &rules(&["10.1.0.0/16"]),
            )
            .unwrap(),
            ingress: RuleSet::parse_ingress(&rules(&["192.168.0.0/16"])).unwrap(),
            allow_raw_sockets: false,
            bandwidth: Default::default(),
        };
        let claims = [
            PortClaim {
                port: TCP_80,
                addresses: Some(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]),
            },
            PortClaim {
                port: port(53),
                addresses: None,
            },
        ];
        assert_eq!(Footprint::of(&policy, &claims).unwrap(), footprint(2, 2, 1));
    }

    #[test]
    fn a_new_container_fits_exactly_up_to_the_capacity() {
        let tables = tables(100, 90);
        let live = [Arc::new(record("a", "a"))];
        assert_eq!(
            check_new_container(&tables, &live, footprint(10, 10, 10), &[]),
            Ok(())
        );
        let full = check_new_container(&tables, &live, footprint(0, 11, 0), &[]).unwrap_err();
        assert_eq!(
            full,
            TableFull {
                table: Table::EgressRules,
                asker: Asker::NewContainer,
                used: 90,
                capacity: 100,
                holders: 1,
                needed: 11,
            }
        );
        assert_eq!(
            full.to_string(),
            "the host's egress rule table (EGRESS_RULES) has no room for this container: 90 of \
             its 100 prefixes are in use by 1 container, and it needs 11 more; remove containers \
             or use fewer, wider prefixes"
        );
        let addresses = check_new_container(&tables, &live, footprint(11, 0, 0), &[]);
        assert_eq!(addresses.unwrap_err().table, Table::BindAddresses);
        let ingress = check_new_container(&tables, &live, footprint(0, 0, 11), &[]);
        assert_eq!(ingress.unwrap_err().table, Table::IngressRules);
    }

    #[test]
    fn an_update_needs_room_for_both_generations_less_what_it_clears_first() {
        let mut tables = tables(100, 60);
        let live = [Arc::new(record("a", "a"))];
        // 60 in force; the next generation's 60 would make 120.
        let refused = check_update(&tables, &live, 7, footprint(0, 60, 0), &[]).unwrap_err();
        assert_eq!((refused.used, refused.needed), (60, 60));
        assert_eq!(
            refused.to_string(),
            "the host's egress rule table (EGRESS_RULES) has no room for this update: 60 of its \
             100 prefixes are in use by 1 container, and it needs 60 more, as an update writes \
             the container's new entries beside those in force until the switch; remove \
             containers or use fewer, wider prefixes"
        );
        assert_eq!(
            check_update(&tables, &live, 7, footprint(40, 40, 40), &[]),
            Ok(())
        );
        // Twenty entries an interrupted update left under generation 1 are cleared first.
        (0..20).for_each(|_| tables.egress.add(7, 1));
        assert_eq!(
            check_update(&tables, &live, 7, footprint(0, 40, 0), &[]),
            Ok(())
        );
        let refused = check_update(&tables, &live, 7, footprint(0, 41, 0), &[]).unwrap_err();
        assert_eq!((refused.used, refused.needed), (80, 21));
        // With generation 1 in force, its 20 stay and the 60 under generation 0 are cleared.
        tables.generations.insert(7, 1);
        assert_eq!(
            check_update(&tables, &live, 7, footprint(0, 80, 0), &[]),
            Ok(())
        );
        let refused = check_update(&tables, &live, 7, footprint(0, 81, 0), &[]).unwrap_err();
        assert_eq!((refused.used, refused.needed), (80, 21));
    }

    #[test]
    fn containers_are_bounded_by_the_policy_and_denial_tables() {
        let mut tables = tables(3, 0);
        tables.traffic.capacity = 100;
        let live = [Arc::new(record("a", "a"))];
        tables.policies.add(8, 0);
        // Three denial rows: the host's and two containers'.
        let full = check_new_container(&tables, &live, footprint(0, 0, 0), &[]).unwrap_err();
        assert_eq!(
            full.to_string(),
            "the host's container table (CONTAINER_POLICIES, DENIALS) has no room for this \
             container: it holds 2 of at most 2 containers; remove containers"
        );
        tables.denials_capacity = 4;
        assert_eq!(
            check_new_container(&tables, &live, footprint(0, 0, 0), &[]),
            Ok(())
        );
    }

    #[test]
    fn traffic_rows_count_what_live_containers_may_still_create() {
        let mut tables = tables(10, 0);
        // Container 7 owns 20080/tcp: three class rows and one port row kept, none present.
        let live = [Arc::new(record("a", "a"))];
        // A stale row of a port it no longer owns, and one of its kept rows.
        tables
            .traffic
            .rows
            .insert(TrafficKey::new(7, 9999, CLASS_UDP));
        tables.traffic.rows.insert(TrafficKey::new(7, 0, CLASS_TCP));
        // 5 kept, and a new container with two ports needs 3 + 2.
        let two_ports = [TCP_80, port(53)];
        assert_eq!(
            check_new_container(&tables, &live, footprint(0, 0, 0), &two_ports),
            Ok(())
        );
        let three_ports = [TCP_80, port(53), port(54)];
        let full = check_new_container(&tables, &live, footprint(0, 0, 0), &three_ports);
        assert_eq!(
            full.unwrap_err().to_string(),
            "the host's traffic table (TRAFFIC) has no room for this container: 5 of its 10 rows \
             are in use or kept for owned ports by 1 container, and it needs 6 more; remove \
             containers (a port an update took away keeps its counters until its container is \
             removed)"
        );
        // An update needs rows only for the ports it adds: 20080/tcp's is kept already, and
        // 9999/udp's is present.
        let kept = [record("a", "a").ports[0].port, port(9999)];
        assert_eq!(
            check_update(&tables, &live, 7, footprint(0, 0, 0), &kept),
            Ok(())
        );
        let added: Vec<OwnedPort> = (1..=6).map(port).collect();
        let refused = check_update(&tables, &live, 7, footprint(0, 0, 0), &added).unwrap_err();
        assert_eq!(
            (refused.table, refused.used, refused.needed),
            (Table::Traffic, 5, 6)
        );
        assert_eq!(
            check_update(&tables, &live, 7, footprint(0, 0, 0), &added[..5]),
            Ok(())
        );
    }

    #[test]
    fn device_rows_are_kept_for_owned_ports_only() {
        let mut tables = tables(10, 0);
        tables.traffic.capacity = 1000;
        tables.device_traffic.capacity = 2;
        let live = [Arc::new(record("a", "a"))];
        assert_eq!(
            check_new_container(&tables, &live, footprint(0, 0, 0), &[TCP_80]),
            Ok(())
        );
        let full = check_new_container(&tables, &live, footprint(0, 0, 0), &[TCP_80, port(53)]);
        let full = full.unwrap_err();
        assert_eq!(
            (full.table, full.used, full.needed),
            (Table::DeviceTraffic, 1, 2)
        );
    }
}
