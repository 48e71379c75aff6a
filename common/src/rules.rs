//! The egress decision for connect and sendmsg (used by `connect4`, `connect6`, `sendmsg4` and
//! `sendmsg6`) and the ingress decision for packets to owned ports (`skb_ingress`,
//! `tc_ingress`): one rule matcher, tested on the host.
use crate::{
    ContainerPolicy, PrefixRules, ACTION_ALLOW, ACTION_DENY, EACCES, POLICY_EGRESS_DEFAULT_DENY,
    POLICY_EGRESS_RULES, POLICY_INGRESS_RULES, PROTO_ANY,
};

/// Deny rules win; then an allow rule allows; then the default: deny when the container has
/// allow rules, allow otherwise. `rules` is the longest-prefix match for the destination.
#[inline(always)]
pub fn decide(
    policy: Option<&ContainerPolicy>,
    rules: Option<&PrefixRules>,
    ipproto: u8,
    port: u16,
) -> Option<i32> {
    let policy = policy?;
    if policy.flags & POLICY_EGRESS_RULES == 0 {
        return None;
    }
    match strongest_match(rules, ipproto, port) {
        Some(ACTION_DENY) => Some(EACCES),
        Some(ACTION_ALLOW) => None,
        _ if policy.flags & POLICY_EGRESS_DEFAULT_DENY == 0 => None,
        _ => Some(EACCES),
    }
}

/// Whether a packet from a source whose longest-prefix match is `rules` may reach the owned
/// `port`: with ingress rules, only what an allow rule matches; without, everything.
#[inline(always)]
pub fn ingress_allowed(
    policy: &ContainerPolicy,
    rules: Option<&PrefixRules>,
    ipproto: u8,
    port: u16,
) -> bool {
    policy.flags & POLICY_INGRESS_RULES == 0
        || strongest_match(rules, ipproto, port) == Some(ACTION_ALLOW)
}

/// The action of the rules that match: deny if any deny rule does, else allow if an allow
/// rule does. A zeroed rule has no action and never matches.
#[inline(always)]
fn strongest_match(rules: Option<&PrefixRules>, ipproto: u8, port: u16) -> Option<u8> {
    let rules = rules?;
    let mut found = None;
    for (index, rule) in rules.rules.iter().enumerate() {
        // Read afresh each time (volatile), so that the compiler cannot turn the loop into
        // one counted down from `count`: verifiers before Linux 6.8 cannot bound that loop
        // (6.1 rejected it), but do bound one over the array's constant length.
        // SAFETY: a read of a plain field of a live reference.
        if index >= unsafe { core::ptr::read_volatile(&rules.count) } as usize {
            break;
        }
        let proto_matches = rule.proto == PROTO_ANY || rule.proto == ipproto;
        let port_matches = rule.port_lo <= port && port <= rule.port_hi;
        if proto_matches && port_matches {
            match rule.action {
                ACTION_DENY => return Some(ACTION_DENY),
                ACTION_ALLOW => found = Some(ACTION_ALLOW),
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortRule, IPPROTO_TCP, IPPROTO_UDP};

    fn rules(list: &[PortRule]) -> PrefixRules {
        let mut all = PrefixRules {
            count: list.len() as u32,
            ..Default::default()
        };
        all.rules[..list.len()].copy_from_slice(list);
        all
    }

    fn rule(lo: u16, hi: u16, proto: u8, action: u8) -> PortRule {
        PortRule {
            port_lo: lo,
            port_hi: hi,
            proto,
            action,
            _pad: [0; 2],
        }
    }

    const ALLOW_LIST: ContainerPolicy = ContainerPolicy {
        flags: POLICY_EGRESS_RULES | POLICY_EGRESS_DEFAULT_DENY,
        generation: 0,
    };
    const DENY_LIST: ContainerPolicy = ContainerPolicy {
        flags: POLICY_EGRESS_RULES,
        generation: 0,
    };

    #[test]
    fn no_policy_or_no_rules_allows() {
        assert_eq!(decide(None, None, IPPROTO_TCP as u8, 80), None);
        let none = ContainerPolicy::default();
        assert_eq!(decide(Some(&none), None, IPPROTO_TCP as u8, 80), None);
    }

    #[test]
    fn allow_rules_make_the_default_deny() {
        let db = rules(&[rule(5432, 5432, IPPROTO_TCP as u8, ACTION_ALLOW)]);
        assert_eq!(
            decide(Some(&ALLOW_LIST), Some(&db), IPPROTO_TCP as u8, 5432),
            None
        );
        assert_eq!(
            decide(Some(&ALLOW_LIST), Some(&db), IPPROTO_UDP as u8, 5432),
            Some(EACCES)
        );
        assert_eq!(
            decide(Some(&ALLOW_LIST), Some(&db), IPPROTO_TCP as u8, 80),
            Some(EACCES)
        );
        assert_eq!(
            decide(Some(&ALLOW_LIST), None, IPPROTO_TCP as u8, 5432),
            Some(EACCES)
        );
    }

    #[test]
    fn deny_wins_over_allow_and_deny_lists_default_to_allow() {
        let both = rules(&[
            rule(0, 65535, PROTO_ANY, ACTION_ALLOW),
            rule(22, 22, IPPROTO_TCP as u8, ACTION_DENY),
        ]);
        assert_eq!(
            decide(Some(&ALLOW_LIST), Some(&both), IPPROTO_TCP as u8, 22),
            Some(EACCES)
        );
        assert_eq!(
            decide(Some(&ALLOW_LIST), Some(&both), IPPROTO_TCP as u8, 23),
            None
        );
        let deny = rules(&[rule(53, 53, IPPROTO_UDP as u8, ACTION_DENY)]);
        assert_eq!(
            decide(Some(&DENY_LIST), Some(&deny), IPPROTO_UDP as u8, 53),
            Some(EACCES)
        );
        assert_eq!(decide(Some(&DENY_LIST), None, IPPROTO_UDP as u8, 53), None);
    }

    #[test]
    fn a_zeroed_rule_matches_nothing() {
        // systemd#30556: an empty rule must never mean "everything".
        let zeroed = PrefixRules {
            count: 1,
            ..Default::default()
        };
        assert_eq!(
            decide(Some(&ALLOW_LIST), Some(&zeroed), IPPROTO_TCP as u8, 0),
            Some(EACCES)
        );
        assert_eq!(
            decide(Some(&DENY_LIST), Some(&zeroed), IPPROTO_TCP as u8, 0),
            None
        );
    }

    #[test]
    fn ingress_rules_let_in_only_what_they_allow() {
        let open = ContainerPolicy::default();
        assert!(ingress_allowed(&open, None, IPPROTO_TCP as u8, 80));
        let guarded = ContainerPolicy {
            flags: POLICY_INGRESS_RULES,
            generation: 0,
        };
        let web = rules(&[rule(80, 80, IPPROTO_TCP as u8, ACTION_ALLOW)]);
        assert!(ingress_allowed(&guarded, Some(&web), IPPROTO_TCP as u8, 80));
        assert!(!ingress_allowed(
            &guarded,
            Some(&web),
            IPPROTO_TCP as u8,
            81
        ));
        assert!(!ingress_allowed(
            &guarded,
            Some(&web),
            IPPROTO_UDP as u8,
            80
        ));
        assert!(!ingress_allowed(&guarded, None, IPPROTO_TCP as u8, 80));
        let zeroed = PrefixRules {
            count: 1,
            ..Default::default()
        };
        assert!(!ingress_allowed(
            &guarded,
            Some(&zeroed),
            IPPROTO_TCP as u8,
            80
        ));
    }
}
