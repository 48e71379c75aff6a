//! Rules, whichever way they point: egress (`--egress-allow CIDR[:PORT[-PORT]][/PROTO]`,
//! `--egress-deny ...`) and ingress (`--ingress-allow ...`, sources allowed to reach the owned
//! ports), parsed and compiled into the per-prefix rule sets the kernel's LPM tries hold.
//!
//! Grammar: `10.0.0.0/8`, `10.1.2.3:5432`, `192.168.0.0/16:8000-8100/tcp`, `0.0.0.0/0:53/udp`,
//! `2001:db8::/32`, `[2001:db8::/32]:443/tcp`, `[::1]:6379`. An address without a prefix is one
//! host. Deny rules win over allow rules; with any allow rule, what no rule allows is denied.
use std::{fmt, net::IpAddr, str::FromStr};

use hostnetd_common::{
    PortRule, ACTION_ALLOW, ACTION_DENY, IPPROTO_TCP, IPPROTO_UDP, MAX_RULES_PER_PREFIX, PROTO_ANY,
};
use serde::{Deserialize, Serialize};

/// Rules one container may have, allow and deny together.
pub const MAX_RULES_PER_CONTAINER: usize = 256;

/// Which rules: egress (destinations) or ingress (sources of packets to the owned ports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Egress,
    Ingress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("invalid {direction} rule {rule:?}: {reason}; use CIDR[:PORT[-PORT]][/tcp|/udp], e.g. 10.0.0.0/8:5432/tcp or [2001:db8::/32]:443")]
    Syntax {
        direction: Direction,
        rule: String,
        reason: String,
    },
    #[error(
        "too many {direction} rules: {count} (at most {MAX_RULES_PER_CONTAINER} per container)"
    )]
    TooMany { direction: Direction, count: usize },
    #[error("too many {direction} rules apply to {net}: {count} (at most {MAX_RULES_PER_PREFIX} rules may cover one prefix, its own and those of wider prefixes)")]
    TooManyForPrefix {
        direction: Direction,
        net: Net,
        count: usize,
    },
}

impl RuleError {
    /// The same error, said of rules of `direction`.
    fn of(mut self, direction: Direction) -> Self {
        match &mut self {
            Self::Syntax { direction: d, .. }
            | Self::TooMany { direction: d, .. }
            | Self::TooManyForPrefix { direction: d, .. } => *d = direction,
        }
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// An address prefix: IPv4 in the first 4 bytes, or IPv6; host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    pub family: u8,
    pub addr: [u8; 16],
    pub prefix: u8,
}

impl Net {
    fn max_prefix(family: u8) -> u8 {
        if family == 4 {
            32
        } else {
            128
        }
    }

    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &Net) -> bool {
        self.family == other.family
            && self.prefix <= other.prefix
            && masked(&other.addr, self.prefix) == self.addr
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = if self.family == 4 {
            IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
        } else {
            IpAddr::from(self.addr)
        };
        write!(f, "{addr}/{}", self.prefix)
    }
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub net: Net,
    pub ports: (u16, u16),
    /// None: TCP and UDP (and any other protocol).
    pub proto: Option<u8>,
    /// As written, for display.
    pub text: String,
}

impl Rule {
    pub fn parse(text: &str, action: Action) -> Result<Self, RuleError> {
        let syntax = |reason: &str| RuleError::Syntax {
            direction: Direction::Egress,
            rule: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(syntax("it is empty"));
        }
        let (rest, proto) = split_proto(trimmed);
        let (cidr, ports) = split_ports(rest).map_err(|reason| syntax(&reason))?;
        let net = parse_cidr(cidr).map_err(|reason| syntax(&reason))?;
        let ports = match ports {
            None => (0, u16::MAX),
            Some(text) => parse_ports(text).map_err(|reason| syntax(&reason))?,
        };
        Ok(Self {
            action,
            net,
            ports,
            proto,
            text: text.to_string(),
        })
    }

    fn kernel_rule(&self) -> PortRule {
        PortRule {
            port_lo: self.ports.0,
            port_hi: self.ports.1,
            proto: self.proto.unwrap_or(PROTO_ANY),
            action: match self.action {
                Action::Allow => ACTION_ALLOW,
                Action::Deny => ACTION_DENY,
            },
            _pad: [0; 2],
        }
    }
}

/// A container's egress policy, compiled for the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, RuleError> {
        let mut rules = Vec::new();
        for (texts, action) in [(allow, Action::Allow), (deny, Action::Deny)] {
            for text in texts {
                // An empty item (`--egress-allow ''`, `a,,b`) is a mistake, never "no rule".
                for part in text.split(',') {
                    rules.push(Rule::parse(part, action)?);
                }
            }
        }
        if rules.len() > MAX_RULES_PER_CONTAINER {
            return Err(RuleError::TooMany {
                direction: Direction::Egress,
                count: rules.len(),
            });
        }
        let policy = Self { rules };
        policy.compile()?;
        Ok(policy)
    }

    /// `--ingress-allow` rules: the sources (and owned ports) allowed to reach a container's
    /// owned ports. The grammar is the egress rules'; a port names an owned port.
    pub fn parse_ingress(allow: &[String]) -> Result<Self, String> {
        Self::parse(allow, &[]).map_err(|e| e.of(Direction::Ingress).to_string())
    }

    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// With any allow rule, what no rule allows is denied.
    pub fn default_deny(&self) -> bool {
        self.rules.iter().any(|rule| rule.action == Action::Allow)
    }

    /// One entry per distinct prefix, holding every rule whose prefix contains it: the kernel's
    /// longest-prefix match then finds all the rules that apply to a destination.
    pub fn compile(&self) -> Result<Vec<(Net, Vec<PortRule>)>, RuleError> {
        let mut nets: Vec<Net> = self.rules.iter().map(|rule| rule.net).collect();
        nets.sort();
        nets.dedup();
        nets.into_iter()
            .map(|net| {
                let rules: Vec<PortRule> = (self.rules.iter())
                    .filter(|rule| rule.net.contains(&net))
                    .map(Rule::kernel_rule)
                    .collect();
                if rules.len() > MAX_RULES_PER_PREFIX {
                    return Err(RuleError::TooManyForPrefix {
                        direction: Direction::Egress,
                        net,
                        count: rules.len(),
                    });
                }
                Ok((net, rules))
            })
            .collect()
    }

    pub fn texts(&self, action: Action) -> Vec<String> {
        (self.rules.iter())
            .filter(|rule| rule.action == action)
            .map(|rule| rule.text.clone())
            .collect()
    }
}

fn split_proto(text: &str) -> (&str, Option<u8>) {
    for (suffix, proto) in [("/tcp", IPPROTO_TCP), ("/udp", IPPROTO_UDP)] {
        // `get`, not indexing: the cut may fall inside a multi-byte character (found by
        // fuzzing); then the text does not end in the ASCII suffix.
        let at = text.len().saturating_sub(suffix.len());
        if at > 0
            && text
                .get(at..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        {
            return (&text[..at], Some(proto as u8));
        }
    }
    (text, None)
}

/// `[v6cidr]:ports`, `v6cidr`, `v4cidr:ports` or `v4cidr`.
fn split_ports(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (cidr, after) = rest.split_once(']').ok_or("a '[' without its ']'")?;
        return match after {
            "" => Ok((cidr, None)),
            _ => after
                .strip_prefix(':')
                .map(|ports| (cidr, Some(ports)))
                .ok_or_else(|| format!("unexpected {after:?} after ']'")),
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (cidr, ports) = text.split_once(':').expect("one colon");
            Ok((cidr, Some(ports)))
        }
        // Several colons and no brackets: an IPv6 prefix without a port.
        _ => Ok((text, None)),
    }
}

fn parse_cidr(text: &str) -> Result<Net, String> {
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr =
        IpAddr::from_str(addr_text).map_err(|_| format!("{addr_text:?} is not an IP address"))?;
    let (family, bytes) = match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (4, bytes)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // ::ffff:a.b.c.d/N is the IPv4 rule a.b.c.d/(N-96).
            Some(v4) => {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&v4.octets());
                (4, bytes)
            }
            None => (6, v6.octets()),
        },
    };
    let mapped_offset = if family == 4 && addr.is_ipv6() { 96 } else { 0 };
    let max = Net::max_prefix(family) + mapped_offset;
    let prefix = match prefix_text {
        None => max,
        Some(text) => text
            .parse::<u8>()
            .ok()
            .filter(|prefix| *prefix <= max)
            .ok_or_else(|| format!("prefix /{text} is not a number from 0 to {max}"))?,
    };
    let prefix = prefix
        .checked_sub(mapped_offset)
        .ok_or_else(|| format!("prefix /{prefix} of a v4-mapped address must be at least /96"))?;
    let net = Net {
        family,
        addr: masked(&bytes, prefix),
        prefix,
    };
    if net.addr != bytes {
        return Err(format!("{text} has host bits set: did you mean {net}?"));
    }
    Ok(net)
}

fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    let port = |part: &str| {
        part.parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("port {part:?} is not a number from 1 to 65535"))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(text)?, port(text)?),
    };
    if lo > hi {
        return Err(format!("port range {lo}-{hi} is reversed"));
    }
    Ok((lo, hi))
}

fn masked(addr: &[u8; 16], prefix: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (index, byte) in addr.iter().enumerate() {
        let bits = (prefix as usize).saturating_sub(index * 8).min(8);
        let mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        out[index] = byte & mask;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(text: &str) -> Rule {
        Rule::parse(text, Action::Allow).unwrap()
    }

    #[test]
    fn rules_parse_in_every_form() {
        let db = allow("10.1.2.3:5432/tcp");
        assert_eq!(db.net.to_string(), "10.1.2.3/32");
        assert_eq!(db.ports, (5432, 5432));
        assert_eq!(db.proto, Some(IPPROTO_TCP as u8));
        let range = allow("192.168.0.0/16:8000-8100");
        assert_eq!(
            (range.net.prefix, range.ports, range.proto),
            (16, (8000, 8100), None)
        );
        let v6 = allow("[2001:db8::/32]:443/TCP");
        assert_eq!((v6.net.family, v6.net.prefix, v6.ports.0), (6, 32, 443));
        assert_eq!(allow("2001:db8::/32").ports, (0, 65535));
        assert_eq!(allow("[::1]:6379").net.to_string(), "::1/128");
        assert_eq!(allow("0.0.0.0/0:53/udp").net.prefix, 0);
        let mapped = allow("::ffff:10.0.0.0/104");
        assert_eq!((mapped.net.family, mapped.net.prefix), (4, 8));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "prefix /33"),
            ("10.0.0.0/8:0", "port \"0\""),
            ("10.0.0.0/8:90-80", "reversed"),
            ("example.com", "not an IP address"),
            ("[2001:db8::/32", "without its ']'"),
            ("[::1]x", "after ']'"),
            // A multi-byte character where a protocol suffix would start: no panic.
            ("[::1]:\u{fffd}379", "port \"\u{fffd}379\""),
            ("0.0.0.0/0:53/\u{fffd}dp", "not a number from 1 to 65535"),
        ];
        for (text, expected) in cases {
            let error = Rule::parse(text, Action::Deny).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn wider_prefixes_fold_into_narrower_ones() {
        let policy = RuleSet::parse(
            &["10.0.0.0/8:5432".into(), "0.0.0.0/0:53/udp".into()],
            &["10.1.0.0/16".into()],
        )
        .unwrap();
        assert!(policy.default_deny());
        let compiled = policy.compile().unwrap();
        let rules_for = |net: &str| {
            compiled
                .iter()
                .find(|(n, _)| n.to_string() == net)
                .map(|(_, rules)| rules.len())
        };
        assert_eq!(rules_for("0.0.0.0/0"), Some(1));
        assert_eq!(rules_for("10.0.0.0/8"), Some(2));
        assert_eq!(rules_for("10.1.0.0/16"), Some(3));
    }

    #[test]
    fn v6_rules_never_cover_ipv4() {
        let any_v6 = allow("::/0");
        let v4 = allow("10.0.0.1");
        assert!(!any_v6.net.contains(&v4.net));
    }

    #[test]
    fn limits_are_errors_not_truncation() {
        let many: Vec<String> = (1..=17).map(|i| format!("10.0.0.0/8:{i}")).collect();
        let error = RuleSet::parse(&many, &[]).unwrap_err();
        assert!(
            matches!(error, RuleError::TooManyForPrefix { count: 17, .. }),
            "{error}"
        );
        let too_many: Vec<String> = (0..=MAX_RULES_PER_CONTAINER)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        assert!(matches!(
            RuleSet::parse(&too_many, &[]),
            Err(RuleError::TooMany { .. })
        ));
    }
}
