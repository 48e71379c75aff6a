//! Each container's policy switches and egress rules, as the connect, sendmsg and sock_create
//! hooks read them.
use std::path::Path;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use hostnetd_common::{
    ContainerPolicy, EgressKey, EgressRule, EgressRules, MapName, Settings, EGRESS_KEY_HEADER_BITS,
    POLICY_ALLOW_RAW_SOCKETS, POLICY_EGRESS_DEFAULT_DENY, POLICY_EGRESS_RULES,
};

use super::{open_map, DatapathError};
use crate::policy::egress::{EgressPolicy, Net};

/// What the kernel enforces for one container beyond port ownership.
#[derive(Clone, Debug, Default)]
pub struct KernelPolicy {
    pub egress: EgressPolicy,
    pub allow_raw_sockets: bool,
}

pub struct PolicyTable {
    settings: Array<MapData, Settings>,
    policies: HashMap<MapData, u64, ContainerPolicy>,
    egress: LpmTrie<MapData, EgressKey, EgressRules>,
}

impl PolicyTable {
    pub(super) fn open(maps: &Path) -> Result<Self, DatapathError> {
        let error = |name: &'static str| move |source| DatapathError::Map { name, source };
        Ok(Self {
            settings: Array::try_from(open_map(maps, MapName::Settings.as_str())?)
                .map_err(error("SETTINGS"))?,
            policies: HashMap::try_from(open_map(maps, MapName::ContainerPolicies.as_str())?)
                .map_err(error("CONTAINER_POLICIES"))?,
            egress: LpmTrie::try_from(open_map(maps, MapName::EgressRules.as_str())?)
                .map_err(error("EGRESS_RULES"))?,
        })
    }

    /// Tells the hooks at which cgroup depth containers are.
    pub(super) fn set_container_level(&mut self, level: u32) -> Result<(), DatapathError> {
        let settings = Settings {
            container_level: level,
            _pad: 0,
        };
        self.settings
            .set(0, settings, 0)
            .map_err(|source| DatapathError::Map {
                name: "SETTINGS",
                source,
            })
    }

    /// Installs `policy` for the container, replacing any it had without a moment of neither
    /// or both: the new rules go in under the other generation, the switch flips in one map
    /// update, and only then are the old rules removed.
    pub fn install(&mut self, cgroup_id: u64, policy: &KernelPolicy) -> Result<(), DatapathError> {
        let current = self.policies.get(&cgroup_id, 0).ok();
        let generation = current.map_or(0, |p| 1 - p.generation.min(1));
        let compiled = policy
            .egress
            .compile()
            .map_err(|e| DatapathError::Bpffs(e.to_string()))?;
        self.remove_rules(cgroup_id, Some(generation))?;
        for (net, rules) in &compiled {
            let (key, value) = entry(cgroup_id, generation, net, rules);
            self.egress
                .insert(&key, value, 0)
                .map_err(map_error("EGRESS_RULES"))?;
        }
        let flags = flags_of(policy);
        self.policies
            .insert(cgroup_id, ContainerPolicy { flags, generation }, 0)
            .map_err(map_error("CONTAINER_POLICIES"))?;
        if current.is_some() {
            self.remove_rules(cgroup_id, Some(1 - generation))?;
        }
        Ok(())
    }

    /// Whether the kernel enforces exactly `policy` for the container: its switches, and the
    /// rules of the generation in force. A daemon killed between changing the kernel and
    /// saving the record leaves the two apart; this finds out.
    pub fn holds(&self, cgroup_id: u64, policy: &KernelPolicy) -> Result<bool, DatapathError> {
        let Ok(current) = self.policies.get(&cgroup_id, 0) else {
            return Ok(false);
        };
        if current.flags != flags_of(policy) {
            return Ok(false);
        }
        let compiled =
            (policy.egress.compile()).map_err(|e| DatapathError::Bpffs(e.to_string()))?;
        let mut wanted: Vec<_> = (compiled.iter())
            .map(|(net, rules)| comparable(&entry(cgroup_id, current.generation, net, rules)))
            .collect();
        let mut installed = Vec::new();
        for key in self.egress.keys().filter_map(Result::ok) {
            let data = key.data();
            if data.cgroup_id == cgroup_id && data.generation == current.generation {
                let rules = self
                    .egress
                    .get(&key, 0)
                    .map_err(map_error("EGRESS_RULES"))?;
                installed.push(comparable(&(key, rules)));
            }
        }
        wanted.sort();
        installed.sort();
        Ok(wanted == installed)
    }

    /// Removes the container's policy and rules; already absent is fine.
    pub fn remove(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        let _ = self.policies.remove(&cgroup_id);
        self.remove_rules(cgroup_id, None)
    }

    /// Removes the policies and rules of every cgroup not in `live`: left by a crash.
    pub fn sweep(&mut self, live: &[u64]) -> Result<(), DatapathError> {
        let stale: Vec<u64> = (self.policies.keys().filter_map(Result::ok))
            .filter(|id| !live.contains(id))
            .collect();
        for id in stale {
            self.remove(id)?;
        }
        let orphaned: Vec<Key<EgressKey>> = (self.egress.keys().filter_map(Result::ok))
            .filter(|key| !live.contains(&key.data().cgroup_id))
            .collect();
        for key in orphaned {
            let _ = self.egress.remove(&key);
        }
        Ok(())
    }

    fn remove_rules(
        &mut self,
        cgroup_id: u64,
        generation: Option<u32>,
    ) -> Result<(), DatapathError> {
        let keys: Vec<Key<EgressKey>> = (self.egress.keys().filter_map(Result::ok))
            .filter(|key| {
                let data = key.data();
                data.cgroup_id == cgroup_id && generation.is_none_or(|g| data.generation == g)
            })
            .collect();
        for key in keys {
            let _ = self.egress.remove(&key);
        }
        Ok(())
    }
}

fn flags_of(policy: &KernelPolicy) -> u32 {
    let mut flags = 0;
    if policy.egress.has_rules() {
        flags |= POLICY_EGRESS_RULES;
    }
    if policy.egress.default_deny() {
        flags |= POLICY_EGRESS_DEFAULT_DENY;
    }
    if policy.allow_raw_sockets {
        flags |= POLICY_ALLOW_RAW_SOCKETS;
    }
    flags
}

/// A trie entry as plain, ordered data: (prefix length, family, address, the rules' bytes).
fn comparable((key, rules): &(Key<EgressKey>, EgressRules)) -> (u32, u32, [u8; 16], Vec<u64>) {
    let data = key.data();
    let rules: Vec<u64> = (rules.rules[..rules.count as usize].iter())
        .map(|r| {
            u64::from(r.port_lo) << 32
                | u64::from(r.port_hi) << 16
                | u64::from(r.proto) << 8
                | u64::from(r.action)
        })
        .collect();
    (key.prefix_len(), data.family, data.addr, rules)
}

fn entry(
    cgroup_id: u64,
    generation: u32,
    net: &Net,
    rules: &[EgressRule],
) -> (Key<EgressKey>, EgressRules) {
    let key = EgressKey {
        cgroup_id,
        generation,
        family: u32::from(net.family),
        addr: net.addr,
    };
    let mut value = EgressRules {
        count: rules.len() as u32,
        ..Default::default()
    };
    value.rules[..rules.len()].copy_from_slice(rules);
    (
        Key::new(EGRESS_KEY_HEADER_BITS + u32::from(net.prefix), key),
        value,
    )
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}
