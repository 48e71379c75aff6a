//! The egress decision for connect and sendmsg: written once, used by `connect4`, `connect6`,
//! `sendmsg4` and `sendmsg6`, and tested on the host.
use crate::{
    ContainerPolicy, EgressRules, ACTION_ALLOW, ACTION_DENY, EACCES, MAX_RULES_PER_PREFIX,
    POLICY_EGRESS_DEFAULT_DENY, POLICY_EGRESS_RULES, PROTO_ANY,
};

/// Deny rules win; then an allow rule allows; then the default: deny when the container has
/// allow rules, allow otherwise. `rules` is the longest-prefix match for the destination.
#[inline(always)]
pub fn decide(
    policy: Option<&ContainerPolicy>,
    rules: Option<&EgressRules>,
    ipproto: u8,
    port: u16,
) -> Option<i32> {
    let policy = policy?;
    if policy.flags & POLICY_EGRESS_RULES == 0 {
        return None;
    }
    let mut allowed = false;
    if let Some(rules) = rules {
        let count = (rules.count as usize).min(MAX_RULES_PER_PREFIX);
        for rule in rules.rules.iter().take(count) {
            let proto_matches = rule.proto == PROTO_ANY || rule.proto == ipproto;
            let port_matches = rule.port_lo <= port && port <= rule.port_hi;
            if proto_matches && port_matches {
                match rule.action {
                    ACTION_DENY => return Some(EACCES),
                    ACTION_ALLOW => allowed = true,
                    _ => {}
                }
            }
        }
    }
    if allowed || policy.flags & POLICY_EGRESS_DEFAULT_DENY == 0 {
        None
    } else {
        Some(EACCES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EgressRule, IPPROTO_TCP, IPPROTO_UDP};

    fn rules(list: &[EgressRule]) -> EgressRules {
        let mut all = EgressRules {
            count: list.len() as u32,
            ..Default::default()
        };
        all.rules[..list.len()].copy_from_slice(list);
        all
    }

    fn rule(lo: u16, hi: u16, proto: u8, action: u8) -> EgressRule {
        EgressRule {
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
        let zeroed = EgressRules {
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
}
