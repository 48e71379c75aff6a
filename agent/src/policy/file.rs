//! `--policy FILE.toml`: a container's ports and policy in one file, for configuration kept in
//! git. docs/policy.md describes the grammar. Every value is checked here, and an error names
//! the file, the line and the reason.
//!
//! ```toml
//! ports = ["80/tcp", "443/tcp", "5000-5100/udp"]
//! raw_sockets = false
//!
//! [egress]
//! allow = ["10.0.0.0/8:5432/tcp", "[2001:db8::/32]:443"]
//! deny = ["10.1.0.0/16"]
//! rate = "200mbit:2mb"
//!
//! [ingress]
//! allow = ["10.0.0.0/8", "192.168.1.0/24:443/tcp"]
//! rate = "1gbit"
//! ```
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{
    parse_port_specs,
    rate::RateLimit,
    rules::{Action, Rule, RuleSet},
};

/// What a policy file declares, ready to merge into `hostnetd run`'s flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyFile {
    pub ports: Vec<String>,
    pub egress_allow: Vec<String>,
    pub egress_deny: Vec<String>,
    pub ingress_allow: Vec<String>,
    pub raw_sockets: bool,
    /// Bandwidth limits, as written.
    pub egress_rate: Option<String>,
    pub ingress_rate: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    #[serde(default)]
    raw_sockets: bool,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    ingress: RawIngress,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    rate: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    rate: Option<Spanned<String>>,
}

impl PolicyFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read policy file {}: {error}", path.display()))?;
        Self::parse(&text).map_err(|(line, reason)| match line {
            Some(line) => format!("policy file {}, line {line}: {reason}", path.display()),
            None => format!("policy file {}: {reason}", path.display()),
        })
    }

    /// The file's content, or the 1-based line of the first error and the reason.
    pub fn parse(text: &str) -> Result<Self, (Option<usize>, String)> {
        let raw: Raw = toml::from_str(text).map_err(|error| {
            let line = error.span().map(|span| line_of(text, span.start));
            (line, error.message().to_string())
        })?;
        let at = |value: &Spanned<String>| Some(line_of(text, value.span().start));
        for port in &raw.ports {
            parse_port_specs(port.get_ref()).map_err(|error| (at(port), error.to_string()))?;
        }
        for (rules, action) in [
            (&raw.egress.allow, Action::Allow),
            (&raw.egress.deny, Action::Deny),
        ] {
            for rule in rules {
                Rule::parse(rule.get_ref(), action)
                    .map_err(|error| (at(rule), error.to_string()))?;
            }
        }
        for rule in &raw.ingress.allow {
            RuleSet::parse_ingress(std::slice::from_ref(rule.get_ref()))
                .map_err(|error| (at(rule), error))?;
        }
        for rate in [&raw.egress.rate, &raw.ingress.rate].into_iter().flatten() {
            (rate.get_ref().parse::<RateLimit>()).map_err(|error| (at(rate), error.to_string()))?;
        }
        let file = Self {
            egress_rate: raw.egress.rate.map(Spanned::into_inner),
            ingress_rate: raw.ingress.rate.map(Spanned::into_inner),
            ports: raw.ports.into_iter().map(Spanned::into_inner).collect(),
            egress_allow: raw
                .egress
                .allow
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            egress_deny: raw
                .egress
                .deny
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            ingress_allow: raw
                .ingress
                .allow
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            raw_sockets: raw.raw_sockets,
        };
        // Limits hold for the whole set, so they are checked once it is complete.
        RuleSet::parse(&file.egress_allow, &file.egress_deny)
            .map_err(|error| (None, error.to_string()))?;
        Ok(file)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let file = PolicyFile::parse(
            "ports = [\"80/tcp\", \"5000-5100/udp\"]\nraw_sockets = true\n[egress]\nallow = [\"10.0.0.0/8:5432/tcp\"]\ndeny = [\"10.1.0.0/16\"]\n",
        )
        .unwrap();
        assert_eq!(file.ports, ["80/tcp", "5000-5100/udp"]);
        assert_eq!(file.egress_allow, ["10.0.0.0/8:5432/tcp"]);
        assert_eq!(file.egress_deny, ["10.1.0.0/16"]);
        assert!(file.raw_sockets);
        assert_eq!(PolicyFile::parse("").unwrap(), PolicyFile::default());
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        let cases = [
            (
                "ports = [\"80\"]\n\n[egress]\nallow = [\n  \"10.0.0.1/8\",\n]\n",
                5,
                "did you mean",
            ),
            ("ports = [\"80\",\n \"99999\"]\n", 2, "99999"),
            ("ports = [\"80\"]\nportz = []\n", 2, "unknown field"),
            ("[egress]\nallow = \"10.0.0.0/8\"\n", 2, "invalid type"),
            ("ports = [\n", 1, "unclosed array"),
        ];
        for (text, line, reason) in cases {
            let (got_line, got_reason) = PolicyFile::parse(text).unwrap_err();
            assert_eq!(got_line, Some(line), "{text:?}: {got_reason}");
            assert!(got_reason.contains(reason), "{text:?}: {got_reason}");
        }
    }
}
