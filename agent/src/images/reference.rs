//! Image references as docker reads them: `nginx` is `docker.io/library/nginx:latest`.
use oci_client::Reference;

use super::error::ImageError;

/// The full form of `reference`: registry, repository, and tag (`latest` when none is given)
/// or digest.
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    parse(reference).map(|parsed| parsed.whole())
}

pub fn parse(reference: &str) -> Result<Reference, ImageError> {
    reference
        .parse::<Reference>()
        .map_err(|error| ImageError::InvalidReference {
            reference: reference.into(),
            reason: format!(
                "{error}; use [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST] in lowercase"
            ),
        })
}

/// How docker shows a normalised reference: `nginx:latest`, `team/app:v2`,
/// `registry:5000/app:v1`.
pub fn display_name(full: &str) -> String {
    let short = full
        .strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full);
    short.to_string()
}

/// A registry as `login` and `logout` take it: `host[:port]`, also written as docker writes
/// config.json keys (`https://index.docker.io/v1/`); Docker Hub's aliases are `docker.io`.
pub fn registry_name(text: &str) -> Result<String, ImageError> {
    let invalid = || ImageError::InvalidRegistry { name: text.into() };
    let bare = (text.strip_prefix("https://"))
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(text);
    let (host, path) = bare.split_once('/').unwrap_or((bare, ""));
    if !matches!(path.trim_end_matches('/'), "" | "v1" | "v2") {
        return Err(invalid());
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') => (name, Some(port)),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0));
    let ipv6 = (name.strip_prefix('['))
        .and_then(|inner| inner.strip_suffix(']'))
        .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok());
    let name_ok = ipv6
        || name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !port_ok || !name_ok {
        return Err(invalid());
    }
    let host = host.to_ascii_lowercase();
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_hosts_with_ports() {
        for (given, name) in [
            ("registry.lan:5000", "registry.lan:5000"),
            ("127.0.0.1:28100", "127.0.0.1:28100"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("http://Registry.LAN/", "registry.lan"),
            ("localhost", "localhost"),
            ("[::1]:5000", "[::1]:5000"),
        ] {
            assert_eq!(registry_name(given).unwrap(), name, "{given}");
        }
        for bad in [
            "",
            "a/b",
            "..",
            "-x.lan",
            "x.lan:0",
            "x.lan:99999",
            "x.lan:",
            "x_y.lan",
            "x.lan/v3",
        ] {
            assert!(registry_name(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn references_normalise_as_docker_does() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            ("team/app", "docker.io/team/app:latest"),
            ("127.0.0.1:20600/app:v2", "127.0.0.1:20600/app:v2"),
            ("localhost/app", "localhost/app:latest"),
        ];
        for (given, full) in cases {
            assert_eq!(normalize(given).unwrap(), full, "{given}");
        }
        assert_eq!(
            display_name("docker.io/library/nginx:latest"),
            "nginx:latest"
        );
        assert_eq!(display_name("docker.io/team/app:v1"), "team/app:v1");
        assert_eq!(
            display_name("127.0.0.1:20600/app:v2"),
            "127.0.0.1:20600/app:v2"
        );
    }

    #[test]
    fn malformed_references_are_refused_with_the_grammar() {
        for bad in ["", "NGINX", "nginx:", "a b", "nginx@sha256:xyz"] {
            let error = normalize(bad).unwrap_err().to_string();
            assert!(error.contains("REPOSITORY"), "{bad:?}: {error}");
        }
    }
}
