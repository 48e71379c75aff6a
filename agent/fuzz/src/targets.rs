//! The fuzz targets: one function per input surface, each taking arbitrary bytes.
use hostnetd::{
    api::{LoadRequest, PolicyUpdate, PullRequest},
    policy::{
        rules::{Action, Rule, RuleSet},
        file::PolicyFile,
        parse_port_specs, OwnedPort, PortDeclarations, PortSpec,
    },
    RunSpec,
};
use serde::{de::DeserializeOwned, Serialize};

/// `--ports` values: whatever parses prints back to itself and merges into declarations.
pub fn port_specs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<OwnedPort>();
    let Ok(specs) = parse_port_specs(&text) else {
        return;
    };
    for spec in &specs {
        let printed = spec.to_string();
        assert_eq!(printed.parse::<PortSpec>().as_ref(), Ok(spec), "{printed}");
    }
    if let Ok(declarations) = PortDeclarations::from_specs(specs) {
        assert!(declarations.len() <= 2 * usize::from(u16::MAX));
    }
}

/// Egress and ingress rules, one per line; a line starting with `!` is a deny rule.
pub fn rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (deny, allow): (Vec<String>, Vec<String>) =
        (text.lines().map(str::to_string)).partition(|line| line.starts_with('!'));
    let deny: Vec<String> = deny.iter().map(|line| line[1..].to_string()).collect();
    for line in allow.iter().chain(&deny) {
        if let Ok(rule) = Rule::parse(line, Action::Allow) {
            assert!(rule.ports.0 <= rule.ports.1, "{line}");
            let again = Rule::parse(&rule.net.to_string(), Action::Allow).expect("net reparses");
            assert_eq!(again.net, rule.net, "{line}");
        }
    }
    if let Ok(policy) = RuleSet::parse(&allow, &deny) {
        policy.compile().expect("a parsed policy compiles");
    }
    let _ = RuleSet::parse_ingress(&allow);
}

/// `--policy` files: an accepted file's values pass the flags' own checks.
pub fn policy_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match PolicyFile::parse(&text) {
        Ok(file) => {
            for ports in &file.ports {
                parse_port_specs(ports).expect("accepted ports parse");
            }
            RuleSet::parse(&file.egress_allow, &file.egress_deny).expect("egress parses");
            RuleSet::parse_ingress(&file.ingress_allow).expect("ingress parses");
        }
        Err((Some(line), _)) => assert!(line <= text.lines().count() + 1, "line {line}"),
        Err((None, _)) => {}
    }
}

/// The API's request bodies; the first byte picks the endpoint, the rest is the JSON body.
pub fn api_bodies(data: &[u8]) {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Some(spec) = roundtrip::<RunSpec>(body) {
                let _ = spec.validate();
            }
        }
        1 => {
            if let Some(update) = roundtrip::<PolicyUpdate>(body) {
                let _ = update.validate();
            }
        }
        2 => drop(roundtrip::<PullRequest>(body)),
        _ => drop(roundtrip::<LoadRequest>(body)),
    }
}

/// The body as `T`, when it is one; what the client would send for it reads back the same.
fn roundtrip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    let json = serde_json::to_vec(&value).expect("serialises");
    let again: T = serde_json::from_slice(&json).expect("reads back");
    assert_eq!(again, value);
    Some(value)
}
