//! Each container's policy switches, egress rules and ingress rules, as the connect, sendmsg,
//! sock_create, skb_ingress and tc_ingress hooks read them.
use std::path::Path;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use hostnetd_common::{
    ContainerPolicy, MapName, PortRule, PrefixKey, PrefixRules, Settings, POLICY_ALLOW_RAW_SOCKETS,
    POLICY_EGRESS_DEFAULT_DENY, POLICY_EGRESS_RULES, POLICY_INGRESS_RULES, PREFIX_KEY_HEADER_BITS,
};

use super::{open_map, DatapathError};
use crate::policy::egress::{EgressPolicy, Net};

/// What the kernel enforces for one container beyond port ownership.
#[derive(Clone, Debug, Default)]
pub struct KernelPolicy {
    pub egress: EgressPolicy,
    /// Sources allowed to reach the owned ports (allow rules only).
    pub ingress: EgressPolicy,
    pub allow_raw_sockets: bool,
}

pub struct PolicyTable {
    settings: Array<MapData, Settings>,
    policies: HashMap<MapData, u64, ContainerPolicy>,
    egress: LpmTrie<MapData, PrefixKey, PrefixRules>,
    ingress: LpmTrie<MapData, PrefixKey, PrefixRules>,
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
            ingress: LpmTrie::try_from(open_map(maps, MapName::IngressRules.as_str())?)
                .map_err(error("INGRESS_RULES"))?,
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
        self.remove_rules(cgroup_id, Some(generation))?;
        write_rules(
            &mut self.egress,
            "EGRESS_RULES",
            cgroup_id,
            generation,
            &policy.egress,
        )?;
        write_rules(
            &mut self.ingress,
            "INGRESS_RULES",
            cgroup_id,
            generation,
            &policy.ingress,
        )?;
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
        if policy.ingress.has_rules() {
            flags |= POLICY_INGRESS_RULES;
        }
        self.policies
            .insert(cgroup_id, ContainerPolicy { flags, generation }, 0)
            .map_err(map_error("CONTAINER_POLICIES"))?;
        if current.is_some() {
            self.remove_rules(cgroup_id, Some(1 - generation))?;
        }
        Ok(())
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
        for trie in [&mut self.egress, &mut self.ingress] {
            let orphaned: Vec<Key<PrefixKey>> = (trie.keys().filter_map(Result::ok))
                .filter(|key| !live.contains(&key.data().cgroup_id))
                .collect();
            for key in orphaned {
                let _ = trie.remove(&key);
            }
        }
        Ok(())
    }

    fn remove_rules(
        &mut self,
        cgroup_id: u64,
        generation: Option<u32>,
    ) -> Result<(), DatapathError> {
        for trie in [&mut self.egress, &mut self.ingress] {
            let keys: Vec<Key<PrefixKey>> = (trie.keys().filter_map(Result::ok))
                .filter(|key| {
                    let data = key.data();
                    data.cgroup_id == cgroup_id && generation.is_none_or(|g| data.generation == g)
                })
                .collect();
            for key in keys {
                let _ = trie.remove(&key);
            }
        }
        Ok(())
    }
}

/// Writes one direction's compiled rules under `generation`.
fn write_rules(
    trie: &mut LpmTrie<MapData, PrefixKey, PrefixRules>,
    name: &'static str,
    cgroup_id: u64,
    generation: u32,
    policy: &EgressPolicy,
) -> Result<(), DatapathError> {
    let compiled = policy
        .compile()
        .map_err(|e| DatapathError::Bpffs(e.to_string()))?;
    for (net, rules) in &compiled {
        let (key, value) = entry(cgroup_id, generation, net, rules);
        trie.insert(&key, value, 0).map_err(map_error(name))?;
    }
    Ok(())
}

fn entry(
    cgroup_id: u64,
    generation: u32,
    net: &Net,
    rules: &[PortRule],
) -> (Key<PrefixKey>, PrefixRules) {
    let key = PrefixKey {
        cgroup_id,
        generation,
        family: u32::from(net.family),
        addr: net.addr,
    };
    let mut value = PrefixRules {
        count: rules.len() as u32,
        ..Default::default()
    };
    value.rules[..rules.len()].copy_from_slice(rules);
    (
        Key::new(PREFIX_KEY_HEADER_BITS + u32::from(net.prefix), key),
        value,
    )
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}
