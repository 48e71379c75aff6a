//! Port declarations: the `--ports` grammar.
//!
//! One flag value is a comma-separated list of items, each `[ADDR:]PORT[-PORT][/PROTO]`:
//! `80`, `80/tcp`, `53/udp`, `8000-8099/udp`, `127.0.0.1:8080/tcp`, `[::1]:8080`. PROTO is
//! `tcp` (the default) or `udp`; ports are 1-65535 (0 is the kernel's "any ephemeral port",
//! which is always allowed and cannot be owned). IPv6 addresses go in brackets; a v4-mapped one
//! means its IPv4 address; an unspecified one (`0.0.0.0`, `[::]`) means any address.
pub mod file;
pub mod logs;
pub mod rate;
pub mod restart;
pub mod rules;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use hostnetd_common::Proto;

/// Addresses one port may be restricted to, at most.
pub const MAX_ADDRESSES_PER_PORT: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub addr: Option<IpAddr>,
    pub first: u16,
    pub last: u16,
    pub proto: Proto,
}

/// One owned (protocol, port) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnedPort {
    pub proto: Proto,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortSpecError {
    #[error("invalid port spec {0:?}: empty item; expected [ADDR:]PORT[-PORT][/tcp|udp]")]
    Empty(String),
    #[error("invalid port spec {0:?}: port 0 cannot be owned (ephemeral binds are always allowed); use 1-65535")]
    PortZero(String),
    #[error("invalid port spec {item:?}: port {port} is out of range (1-65535)")]
    OutOfRange { item: String, port: String },
    #[error("invalid port spec {item:?}: {port:?} is not a port number (1-65535)")]
    NotANumber { item: String, port: String },
    #[error("invalid port spec {0:?}: the range is reversed; write it low-high")]
    ReversedRange(String),
    #[error("invalid port spec {item:?}: unknown protocol {proto:?}; use tcp or udp")]
    UnknownProtocol { item: String, proto: String },
    #[error("invalid port spec {item:?}: {addr:?} is not an IP address; IPv6 goes in brackets, as [::1]:8080")]
    BadAddress { item: String, addr: String },
    #[error("invalid port spec {item:?}: port {port} is restricted to more than {MAX_ADDRESSES_PER_PORT} addresses")]
    TooManyAddresses { item: String, port: OwnedPort },
}

/// Parses one `--ports` value.
pub fn parse_port_specs(value: &str) -> Result<Vec<PortSpec>, PortSpecError> {
    value.split(',').map(str::parse).collect()
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(raw: &str) -> Result<Self, PortSpecError> {
        let item = raw.trim();
        if item.is_empty() {
            return Err(PortSpecError::Empty(raw.to_string()));
        }
        let (rest, proto) = match item.rsplit_once('/') {
            Some((rest, proto)) => (rest, parse_proto(item, proto)?),
            None => (item, Proto::Tcp),
        };
        let (addr, ports) = split_address(item, rest)?;
        let (first, last) = match ports.split_once('-') {
            Some((first, last)) => (parse_port(item, first)?, parse_port(item, last)?),
            None => {
                let port = parse_port(item, ports)?;
                (port, port)
            }
        };
        if first > last {
            return Err(PortSpecError::ReversedRange(item.to_string()));
        }
        Ok(Self {
            addr,
            first,
            last,
            proto,
        })
    }
}

fn parse_proto(item: &str, proto: &str) -> Result<Proto, PortSpecError> {
    match proto.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(PortSpecError::UnknownProtocol {
            item: item.into(),
            proto: proto.into(),
        }),
    }
}

/// Splits `ADDR:PORTS` into its normalised address and the port part.
fn split_address<'a>(
    item: &str,
    rest: &'a str,
) -> Result<(Option<IpAddr>, &'a str), PortSpecError> {
    let bad = |addr: &str| PortSpecError::BadAddress {
        item: item.into(),
        addr: addr.into(),
    };
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (addr, ports) = bracketed.split_once("]:").ok_or_else(|| bad(rest))?;
        let v6: Ipv6Addr = addr.parse().map_err(|_| bad(addr))?;
        let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        return Ok((normalise(addr), ports));
    }
    match rest.rsplit_once(':') {
        None => Ok((None, rest)),
        Some((addr, ports)) => {
            let v4: std::net::Ipv4Addr = addr.parse().map_err(|_| bad(addr))?;
            Ok((normalise(IpAddr::V4(v4)), ports))
        }
    }
}

fn normalise(addr: IpAddr) -> Option<IpAddr> {
    (!addr.is_unspecified()).then_some(addr)
}

fn parse_port(item: &str, text: &str) -> Result<u16, PortSpecError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortSpecError::NotANumber {
            item: item.into(),
            port: text.into(),
        });
    }
    match text.parse::<u32>() {
        Ok(0) => Err(PortSpecError::PortZero(item.into())),
        Ok(port) if port <= u16::MAX as u32 => Ok(port as u16),
        _ => Err(PortSpecError::OutOfRange {
            item: item.into(),
            port: text.into(),
        }),
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(IpAddr::V4(v4)) => write!(f, "{v4}:")?,
            Some(IpAddr::V6(v6)) => write!(f, "[{v6}]:")?,
            None => {}
        }
        if self.first == self.last {
            write!(f, "{}/{}", self.first, proto_name(self.proto))
        } else {
            write!(f, "{}-{}/{}", self.first, self.last, proto_name(self.proto))
        }
    }
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

impl fmt::Display for OwnedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, proto_name(self.proto))
    }
}

impl FromStr for OwnedPort {
    type Err = PortSpecError;

    fn from_str(text: &str) -> Result<Self, PortSpecError> {
        let spec: PortSpec = text.parse()?;
        if spec.addr.is_some() || spec.first != spec.last {
            return Err(PortSpecError::NotANumber {
                item: text.into(),
                port: text.into(),
            });
        }
        Ok(Self {
            proto: spec.proto,
            port: spec.first,
        })
    }
}

impl serde::Serialize for OwnedPort {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OwnedPort {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The ports a container declares, all `--ports` values merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortDeclarations {
    specs: Vec<PortSpec>,
    /// `None`: any address; `Some`: only these.
    ports: BTreeMap<OwnedPort, Option<Vec<IpAddr>>>,
}

impl PortDeclarations {
    /// Merges specs: a port declared once without an address may be bound on any address;
    /// otherwise only on the union of the addresses given for it.
    pub fn from_specs(specs: Vec<PortSpec>) -> Result<Self, PortSpecError> {
        let mut ports: BTreeMap<OwnedPort, Option<Vec<IpAddr>>> = BTreeMap::new();
        for spec in &specs {
            for number in spec.first..=spec.last {
                let port = OwnedPort {
                    proto: spec.proto,
                    port: number,
                };
                merge(&mut ports, port, spec)?;
            }
        }
        Ok(Self { specs, ports })
    }

    pub fn ports(&self) -> impl Iterator<Item = OwnedPort> + '_ {
        self.ports.keys().copied()
    }

    pub fn addresses(&self, port: OwnedPort) -> Option<&[IpAddr]> {
        self.ports.get(&port)?.as_deref()
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    pub fn specs(&self) -> &[PortSpec] {
        &self.specs
    }
}

fn merge(
    ports: &mut BTreeMap<OwnedPort, Option<Vec<IpAddr>>>,
    port: OwnedPort,
    spec: &PortSpec,
) -> Result<(), PortSpecError> {
    let Some(addr) = spec.addr else {
        ports.insert(port, None);
        return Ok(());
    };
    let entry = ports.entry(port).or_insert_with(|| Some(Vec::new()));
    if let Some(list) = entry {
        if !list.contains(&addr) {
            list.push(addr);
        }
        if list.len() > MAX_ADDRESSES_PER_PORT {
            return Err(PortSpecError::TooManyAddresses {
                item: spec.to_string(),
                port,
            });
        }
    }
    Ok(())
}

/// `--ports` values (each possibly comma-separated) as one set of declarations.
pub fn parse_declarations(values: &[String]) -> Result<PortDeclarations, String> {
    let mut specs = Vec::new();
    for value in values {
        specs.extend(parse_port_specs(value).map_err(|e| e.to_string())?);
    }
    PortDeclarations::from_specs(specs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(addr: Option<&str>, first: u16, last: u16, proto: Proto) -> PortSpec {
        PortSpec {
            addr: addr.map(|a| a.parse().unwrap()),
            first,
            last,
            proto,
        }
    }

    #[test]
    fn valid_specs_parse() {
        let cases = [
            ("80", spec(None, 80, 80, Proto::Tcp)),
            ("80/tcp", spec(None, 80, 80, Proto::Tcp)),
            ("53/udp", spec(None, 53, 53, Proto::Udp)),
            ("53/UDP", spec(None, 53, 53, Proto::Udp)),
            ("8000-8099/udp", spec(None, 8000, 8099, Proto::Udp)),
            (
                "127.0.0.1:8080/tcp",
                spec(Some("127.0.0.1"), 8080, 8080, Proto::Tcp),
            ),
            ("[::1]:8080", spec(Some("::1"), 8080, 8080, Proto::Tcp)),
            (
                "[::ffff:127.0.0.1]:80",
                spec(Some("127.0.0.1"), 80, 80, Proto::Tcp),
            ),
            ("0.0.0.0:80", spec(None, 80, 80, Proto::Tcp)),
            ("[::]:80/udp", spec(None, 80, 80, Proto::Udp)),
            (" 81/udp ", spec(None, 81, 81, Proto::Udp)),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<PortSpec>(), Ok(expected), "{text}");
        }
        assert_eq!(parse_port_specs("80, 81/udp").unwrap().len(), 2);
    }

    #[test]
    fn invalid_specs_say_what_is_wrong() {
        let cases = [
            ("0", "invalid port spec \"0\": port 0 cannot be owned (ephemeral binds are always allowed); use 1-65535"),
            ("65536", "invalid port spec \"65536\": port 65536 is out of range (1-65535)"),
            ("70000/tcp", "invalid port spec \"70000/tcp\": port 70000 is out of range (1-65535)"),
            ("90-80", "invalid port spec \"90-80\": the range is reversed; write it low-high"),
            ("80/sctp", "invalid port spec \"80/sctp\": unknown protocol \"sctp\"; use tcp or udp"),
            ("abc", "invalid port spec \"abc\": \"abc\" is not a port number (1-65535)"),
            ("", "invalid port spec \"\": empty item; expected [ADDR:]PORT[-PORT][/tcp|udp]"),
            ("::1:80", "invalid port spec \"::1:80\": \"::1\" is not an IP address; IPv6 goes in brackets, as [::1]:8080"),
            ("[::1]", "invalid port spec \"[::1]\": \"[::1]\" is not an IP address; IPv6 goes in brackets, as [::1]:8080"),
            ("1.2.3:80", "invalid port spec \"1.2.3:80\": \"1.2.3\" is not an IP address; IPv6 goes in brackets, as [::1]:8080"),
            ("-5", "invalid port spec \"-5\": \"\" is not a port number (1-65535)"),
            ("80-", "invalid port spec \"80-\": \"\" is not a port number (1-65535)"),
            ("80/", "invalid port spec \"80/\": unknown protocol \"\"; use tcp or udp"),
            ("+80", "invalid port spec \"+80\": \"+80\" is not a port number (1-65535)"),
        ];
        for (text, message) in cases {
            assert_eq!(
                text.parse::<PortSpec>().unwrap_err().to_string(),
                message,
                "{text}"
            );
        }
        let empty_item = parse_port_specs("80,,81").unwrap_err();
        assert!(matches!(empty_item, PortSpecError::Empty(_)));
    }

    #[test]
    fn declarations_merge_addresses_and_any_address_wins() {
        let specs = parse_port_specs("127.0.0.1:8080,[::1]:8080,9000,127.0.0.1:9000").unwrap();
        let decl = PortDeclarations::from_specs(specs).unwrap();
        let port = |port| OwnedPort {
            proto: Proto::Tcp,
            port,
        };
        let loopbacks: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(decl.addresses(port(8080)), Some(loopbacks.as_slice()));
        assert_eq!(decl.addresses(port(9000)), None);
        assert_eq!(decl.len(), 2);
    }

    #[test]
    fn too_many_addresses_for_one_port_is_an_error() {
        let specs =
            parse_port_specs("127.0.0.1:80,127.0.0.2:80,127.0.0.3:80,127.0.0.4:80,127.0.0.5:80");
        let error = PortDeclarations::from_specs(specs.unwrap()).unwrap_err();
        assert!(
            error.to_string().contains("more than 4 addresses"),
            "{error}"
        );
    }

    #[test]
    fn the_whole_port_range_expands_quickly() {
        let decl = PortDeclarations::from_specs(parse_port_specs("1-65535/udp").unwrap()).unwrap();
        assert_eq!(decl.len(), 65535);
    }

    fn any_proto() -> impl Strategy<Value = Proto> {
        prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]
    }

    proptest! {
        #[test]
        fn single_ports_roundtrip(port in 1u16.., proto in any_proto()) {
            let spec = PortSpec { addr: None, first: port, last: port, proto };
            prop_assert_eq!(spec.to_string().parse::<PortSpec>(), Ok(spec));
        }

        #[test]
        fn ranges_roundtrip_and_expand(a in 1u16.., b in 1u16.., proto in any_proto()) {
            let (first, last) = (a.min(b), a.max(b));
            let spec = PortSpec { addr: None, first, last, proto };
            prop_assert_eq!(spec.to_string().parse::<PortSpec>(), Ok(spec.clone()));
            let decl = PortDeclarations::from_specs(vec![spec]).unwrap();
            prop_assert_eq!(decl.len(), (last - first) as usize + 1);
        }

        #[test]
        fn parsing_never_panics(text in ".*") {
            let _ = parse_port_specs(&text);
        }

        #[test]
        fn parsing_spec_like_text_never_panics(text in "[0-9a-z:/\\[\\]., -]{0,30}") {
            let _ = parse_port_specs(&text);
        }

        #[test]
        fn owned_ports_roundtrip_as_text_and_json(port in 1u16.., proto in any_proto()) {
            let owned = OwnedPort { proto, port };
            prop_assert_eq!(owned.to_string().parse::<OwnedPort>(), Ok(owned));
            let json = serde_json::to_string(&owned).unwrap();
            prop_assert_eq!(serde_json::from_str::<OwnedPort>(&json).unwrap(), owned);
        }
    }
}
