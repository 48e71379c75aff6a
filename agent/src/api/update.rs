//! The body of `POST /v1/containers/REF/update` and its validation into the change the Host
//! applies.
use serde::{Deserialize, Serialize};

use super::run::rate_flag;
use crate::{
    host::{update::PolicyChange, HostError},
    policy::{parse_declarations, rules::RuleSet},
};

/// The body of `POST /v1/containers/REF/update`: what replaces the container's policy. A field
/// left out keeps what the container has; give at least one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyUpdate {
    /// The new owned ports, in the `run --ports` grammar (each possibly comma-separated),
    /// replacing the old set as a whole; `[]` owns none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
    /// The new egress rules: given either list, both replace the old rules (a missing one is
    /// empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<String>>,
    /// The new ingress rules, replacing the old ones (`[]`: every source may reach the ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_allow: Option<Vec<String>>,
    /// The new output limit, `RATE[:BURST]`; [`NO_LIMIT`] removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<String>,
    /// The new limit on what reaches the owned ports, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<String>,
}

/// The rate that removes a limit in an update.
pub const NO_LIMIT: &str = "none";

impl PolicyUpdate {
    /// Checks the update before anything is touched: a bad port spec or rule changes nothing.
    pub fn validate(&self) -> Result<PolicyChange, HostError> {
        let egress = (self.egress_allow.is_some() || self.egress_deny.is_some()).then(|| {
            let allow = self.egress_allow.clone().unwrap_or_default();
            (allow, self.egress_deny.clone().unwrap_or_default())
        });
        let rates_given = self.egress_rate.is_some() || self.ingress_rate.is_some();
        if self.ports.is_none() && egress.is_none() && self.ingress_allow.is_none() && !rates_given
        {
            return Err(HostError::Invalid(
                "nothing to update: give the new ports, egress rules, ingress rules or rates"
                    .into(),
            ));
        }
        if let Some((allow, deny)) = &egress {
            RuleSet::parse(allow, deny).map_err(|e| HostError::Invalid(e.to_string()))?;
        }
        if let Some(allow) = &self.ingress_allow {
            RuleSet::parse_ingress(allow).map_err(HostError::Invalid)?;
        }
        let ports = (self.ports.as_deref())
            .map(parse_declarations)
            .transpose()
            .map_err(HostError::Invalid)?;
        Ok(PolicyChange {
            ports,
            egress,
            ingress: self.ingress_allow.clone(),
            egress_rate: new_rate("egress_rate", self.egress_rate.as_deref())?,
            ingress_rate: new_rate("ingress_rate", self.ingress_rate.as_deref())?,
        })
    }
}

/// A rate field of an update: None keeps the limit, Some(None) removes it, Some(Some) sets it
/// (in its canonical text).
fn new_rate(field: &str, text: Option<&str>) -> Result<Option<Option<String>>, HostError> {
    match text {
        None => Ok(None),
        Some(NO_LIMIT) => Ok(Some(None)),
        Some(text) => {
            let limit = rate_flag(field, Some(text))?;
            Ok(Some(limit.map(|limit| limit.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;

    fn update(
        ports: Option<&[&str]>,
        allow: Option<&[&str]>,
        deny: Option<&[&str]>,
    ) -> PolicyUpdate {
        let owned = |list: &[&str]| list.iter().map(ToString::to_string).collect();
        PolicyUpdate {
            ports: ports.map(owned),
            egress_allow: allow.map(owned),
            egress_deny: deny.map(owned),
            ingress_allow: None,
            egress_rate: None,
            ingress_rate: None,
        }
    }

    fn invalid(update: &PolicyUpdate) -> String {
        match update.validate() {
            Err(HostError::Invalid(message)) => message,
            other => panic!("{update:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn bad_updates_are_refused_naming_what_is_wrong() {
        assert!(invalid(&update(None, None, None)).starts_with("nothing to update"));
        let port_zero = invalid(&update(Some(&["80,0"]), None, None));
        assert!(port_zero.contains("port 0 cannot be owned"), "{port_zero}");
        let too_big = invalid(&update(Some(&["70000"]), None, None));
        assert!(too_big.contains("70000 is out of range"), "{too_big}");
        let rule = invalid(&update(None, Some(&["10.0.0.1/8"]), None));
        assert!(rule.contains("did you mean 10.0.0.0/8"), "{rule}");
    }

    #[test]
    fn ports_alone_keep_the_egress_rules() {
        let mut old = record("abc", "web");
        old.egress_deny = vec!["10.1.0.0/16".into()];
        let change = update(Some(&["26000,[::1]:26001/udp"]), None, None)
            .validate()
            .unwrap();
        let new = change.applied_to(&old);
        assert_eq!(new.port_specs, vec!["26000/tcp", "[::1]:26001/udp"]);
        let ports: Vec<String> = new.ports.iter().map(|c| c.port.to_string()).collect();
        assert_eq!(ports, vec!["26000/tcp", "26001/udp"]);
        assert_eq!(new.ports[1].addresses, Some(vec!["::1".parse().unwrap()]));
        assert_eq!(new.egress_deny, old.egress_deny);
    }

    #[test]
    fn egress_alone_keeps_the_ports_and_one_list_given_empties_the_other() {
        let mut old = record("abc", "web");
        old.egress_deny = vec!["10.1.0.0/16".into()];
        let change = update(None, Some(&["10.0.0.0/8"]), None)
            .validate()
            .unwrap();
        let new = change.applied_to(&old);
        assert_eq!(
            (new.ports.clone(), new.port_specs.clone()),
            (old.ports, old.port_specs)
        );
        assert_eq!(new.egress_allow, vec!["10.0.0.0/8"]);
        assert!(new.egress_deny.is_empty());
        let none = update(Some(&[]), None, None).validate().unwrap();
        assert!(none.applied_to(&new).ports.is_empty(), "[] owns no ports");
    }
}
