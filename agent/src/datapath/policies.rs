//! Each container's policy switches, egress rules and ingress rules, as the connect, sendmsg,
//! sock_create, skb_ingress and tc_ingress hooks read them.
use std::{collections::HashSet, path::Path};

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use hostnetd_common::{
    ContainerPolicy, DatapathSettings, MapName, PortRule, PrefixKey, PrefixRules,
    POLICY_ALLOW_RAW_SOCKETS, POLICY_EGRESS_DEFAULT_DENY, POLICY_EGRESS_RULES,
    POLICY_INGRESS_RULES, PREFIX_KEY_HEADER_BITS, SETTINGS_LIMITS, SETTINGS_PACED_DEVICES,
};

use super::{
    error::{map_error, DatapathError},
    limits::{Bandwidth, LimitTable},
    pins::open_map,
};
use crate::policy::rules::{Net, RuleSet};

/// What the kernel enforces for one container beyond port ownership.
#[derive(Clone, Debug, Default)]
pub struct KernelPolicy {
    pub egress: RuleSet,
    /// Sources allowed to reach the owned ports (allow rules only).
    pub ingress: RuleSet,
    pub allow_raw_sockets: bool,
    pub bandwidth: Bandwidth,
}

/// What putting a staged policy in force writes: the switches (with the generation) and the
/// bandwidth limits, which have no generations (a rate is one value, replaced in place).
#[derive(Clone, Copy, Debug)]
pub struct PolicyEntry {
    switches: ContainerPolicy,
    bandwidth: Bandwidth,
}

pub struct PolicyTable {
    settings: Array<MapData, DatapathSettings>,
    policies: HashMap<MapData, u64, ContainerPolicy>,
    egress: LpmTrie<MapData, PrefixKey, PrefixRules>,
    ingress: LpmTrie<MapData, PrefixKey, PrefixRules>,
    limits: LimitTable,
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
            limits: LimitTable::open(maps)?,
        })
    }

    /// Tells the hooks that hostnetd's own containers sit at cgroup depth `level`, keeping the
    /// depths engines' containers added; starts a new policy epoch, so no verdict cached
    /// before this open is trusted.
    pub(super) fn open_epoch(&mut self, level: u32) -> Result<(), DatapathError> {
        let current = self.settings().unwrap_or_default();
        let mut settings = with_level(current, level)?;
        settings.policy_epoch = current.policy_epoch.wrapping_add(1);
        self.write_settings(settings)
    }

    /// Tells the hooks that a container sits at cgroup depth `level` (an engine's container:
    /// Docker's at 2, a Kubernetes pod's deeper), beside the depths already in use.
    pub fn add_container_level(&mut self, level: u32) -> Result<(), DatapathError> {
        let current = self.settings()?;
        let mut settings = with_level(current, level)?;
        if settings != current {
            settings.policy_epoch = current.policy_epoch.wrapping_add(1);
            self.write_settings(settings)?;
        }
        Ok(())
    }

    /// Invalidates every verdict the ingress hooks cached. Called after a policy entry is
    /// written or removed: a hook that read the old epoch may still cache a verdict taken
    /// under the old policy, but only under the old epoch, which no hook trusts any more.
    fn start_policy_epoch(&mut self) -> Result<(), DatapathError> {
        let mut settings = self.settings()?;
        settings.policy_epoch = settings.policy_epoch.wrapping_add(1);
        self.write_settings(settings)
    }

    fn settings(&self) -> Result<DatapathSettings, DatapathError> {
        self.settings.get(&0, 0).map_err(map_error("SETTINGS"))
    }

    fn write_settings(&mut self, settings: DatapathSettings) -> Result<(), DatapathError> {
        self.settings
            .set(0, settings, 0)
            .map_err(map_error("SETTINGS"))
    }

    /// The generation in force for the container, if it has a policy.
    pub fn generation(&self, cgroup_id: u64) -> Option<u32> {
        let policy = self.policies.get(&cgroup_id, 0).ok()?;
        Some(policy.generation & 1)
    }

    /// Installs the policy of a container that runs nothing yet; returns the generation in
    /// force. A running container's policy is switched with `Datapath::stage_policy`.
    pub fn install(
        &mut self,
        cgroup_id: u64,
        history: CgroupHistory,
        policy: &KernelPolicy,
    ) -> Result<u32, DatapathError> {
        let current = self.generation(cgroup_id);
        let generation = current.map_or(0, |g| 1 - g);
        let entry = match history {
            // Clearing what an earlier attempt left walks every container's rules.
            CgroupHistory::New => self.write_staged(cgroup_id, generation, policy)?,
            CgroupHistory::MayHaveEntries => self.stage(cgroup_id, generation, policy)?,
        };
        self.put_in_force(cgroup_id, entry)?;
        if let Some(previous) = current {
            self.remove_generation(cgroup_id, previous)?;
        }
        Ok(generation)
    }

    /// Writes `policy`'s egress and ingress rules under `generation` (replacing whatever was
    /// left there); returns the policy entry that puts them in force.
    pub(super) fn stage(
        &mut self,
        cgroup_id: u64,
        generation: u32,
        policy: &KernelPolicy,
    ) -> Result<PolicyEntry, DatapathError> {
        self.remove_generation(cgroup_id, generation)?;
        self.write_staged(cgroup_id, generation, policy)
    }

    /// Writes `policy`'s rules under `generation`, where nothing is; returns the policy entry
    /// that puts them in force.
    fn write_staged(
        &mut self,
        cgroup_id: u64,
        generation: u32,
        policy: &KernelPolicy,
    ) -> Result<PolicyEntry, DatapathError> {
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
        Ok(PolicyEntry {
            switches: ContainerPolicy {
                flags: flags_of(policy),
                generation,
            },
            bandwidth: policy.bandwidth,
        })
    }

    /// One map update for the switches: the hooks read the whole entry at once, so they and
    /// the generation change together. Then the limits, in one update of their own.
    pub(super) fn put_in_force(
        &mut self,
        cgroup_id: u64,
        entry: PolicyEntry,
    ) -> Result<(), DatapathError> {
        self.policies
            .insert(cgroup_id, entry.switches, 0)
            .map_err(map_error("CONTAINER_POLICIES"))?;
        self.limits.write(cgroup_id, &entry.bandwidth)?;
        self.flag_limits()?;
        self.start_policy_epoch()
    }

    /// Tells the packet hooks whether any container has a limit, so that without one they
    /// never look.
    fn flag_limits(&mut self) -> Result<(), DatapathError> {
        let limited = self.limits.any();
        self.set_flag(SETTINGS_LIMITS, limited)
    }

    /// Sets or clears one `SETTINGS_*` flag, writing the settings only when that changes them.
    fn set_flag(&mut self, flag: u32, on: bool) -> Result<(), DatapathError> {
        let mut settings = self.settings()?;
        let flags = if on {
            settings.flags | flag
        } else {
            settings.flags & !flag
        };
        if flags != settings.flags {
            settings.flags = flags;
            self.write_settings(settings)?;
        }
        Ok(())
    }

    /// The container's limits and what they did so far.
    pub fn limits(&self) -> &LimitTable {
        &self.limits
    }

    /// Tells the hooks which devices fq paces now.
    pub fn sync_paced_devices(&mut self) -> Result<(), DatapathError> {
        let any_paced = self.limits.sync_paced_devices()?;
        self.set_flag(SETTINGS_PACED_DEVICES, any_paced)
    }

    /// Removes the container's egress and ingress rules of `generation`.
    pub(super) fn remove_generation(
        &mut self,
        cgroup_id: u64,
        generation: u32,
    ) -> Result<(), DatapathError> {
        self.remove_rules(cgroup_id, Some(generation))
    }

    /// Whether the kernel enforces exactly `policy` for the container: its switches, and the
    /// rules of the generation in force. A daemon killed between changing the kernel and
    /// saving the record leaves the two apart; this finds out.
    pub fn holds(&self, cgroup_id: u64, policy: &KernelPolicy) -> Result<bool, DatapathError> {
        let Ok(current) = self.policies.get(&cgroup_id, 0) else {
            return Ok(false);
        };
        if current.flags != flags_of(policy) || !self.limits.holds(cgroup_id, &policy.bandwidth) {
            return Ok(false);
        }
        let generation = current.generation;
        Ok(trie_holds(
            &self.egress,
            "EGRESS_RULES",
            cgroup_id,
            generation,
            &policy.egress,
        )? && trie_holds(
            &self.ingress,
            "INGRESS_RULES",
            cgroup_id,
            generation,
            &policy.ingress,
        )?)
    }

    /// Removes the container's policy and rules; already absent is fine.
    pub fn remove(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        if self.policies.remove(&cgroup_id).is_ok() {
            self.start_policy_epoch()?;
        }
        self.limits.remove(cgroup_id)?;
        self.flag_limits()?;
        self.remove_rules(cgroup_id, None)
    }

    /// Removes the policies and rules of every cgroup not in `live`: left by a crash.
    pub fn sweep(&mut self, live: &HashSet<u64>) -> Result<(), DatapathError> {
        let stale: Vec<u64> = (self.policies.keys().filter_map(Result::ok))
            .filter(|id| !live.contains(id))
            .collect();
        for id in stale {
            self.remove(id)?;
        }
        for id in self.limits.limited() {
            if !live.contains(&id) {
                self.remove(id)?;
            }
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

/// Whether a container's cgroup may have entries in the tables before its policy is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupHistory {
    /// Made just now: the kernel never gives a cgroup id twice while it runs, so no entry
    /// can name it.
    New,
    /// It was there before (an engine's cgroup, a container started again): an attempt that
    /// stopped half-way may have left rules under its id.
    MayHaveEntries,
}

/// Whether `trie` holds exactly `policy`'s compiled rules under `generation`.
fn trie_holds(
    trie: &LpmTrie<MapData, PrefixKey, PrefixRules>,
    name: &'static str,
    cgroup_id: u64,
    generation: u32,
    policy: &RuleSet,
) -> Result<bool, DatapathError> {
    let compiled = (policy.compile()).map_err(|e| DatapathError::Bpffs(e.to_string()))?;
    let mut wanted: Vec<_> = (compiled.iter())
        .map(|(net, rules)| comparable(&entry(cgroup_id, generation, net, rules)))
        .collect();
    let mut installed = Vec::new();
    for key in trie.keys().filter_map(Result::ok) {
        let data = key.data();
        if data.cgroup_id == cgroup_id && data.generation == generation {
            let rules = trie.get(&key, 0).map_err(map_error(name))?;
            installed.push(comparable(&(key, rules)));
        }
    }
    wanted.sort();
    installed.sort();
    Ok(wanted == installed)
}

/// Writes one direction's compiled rules under `generation`.
fn write_rules(
    trie: &mut LpmTrie<MapData, PrefixKey, PrefixRules>,
    name: &'static str,
    cgroup_id: u64,
    generation: u32,
    policy: &RuleSet,
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
    if policy.ingress.has_rules() {
        flags |= POLICY_INGRESS_RULES;
    }
    flags
}

/// A trie entry as plain, ordered data: (prefix length, family, address, the rules' bytes).
fn comparable((key, rules): &(Key<PrefixKey>, PrefixRules)) -> (u32, u32, [u8; 16], Vec<u64>) {
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

fn with_level(settings: DatapathSettings, level: u32) -> Result<DatapathSettings, DatapathError> {
    settings
        .with_container_level(level)
        .ok_or_else(|| DatapathError::ContainerDepth {
            level,
            in_use: (settings.container_levels.iter())
                .filter(|&&level| level != 0)
                .map(|&level| u32::from(level))
                .collect(),
        })
}
