//! Image references as docker reads them: `nginx` is `docker.io/library/nginx:latest`.
//!
//! Parsed by hand, to the grammar of docker's distribution/reference (the regular expression
//! oci-client uses): compiling that expression took 70 ms of every `hostnetd run`, which checks
//! the reference before it asks the daemon anything. The tests hold the two to the same answers.
use oci_client::Reference;

use super::error::ImageError;

const NAME_TOTAL_LENGTH_MAX: usize = 255;
const DOCKER_HUB: &str = "docker.io";

/// The full form of `reference`: registry, repository, and tag (`latest` when none is given)
/// or digest.
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    parse(reference).map(|parsed| parsed.whole())
}

pub fn parse(reference: &str) -> Result<Reference, ImageError> {
    let parts = Parts::parse(reference).map_err(|reason| ImageError::InvalidReference {
        reference: reference.into(),
        reason: format!(
            "{reason}; use [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST] in lowercase"
        ),
    })?;
    Ok(parts.into_reference())
}

/// A reference taken apart, the registry split off as docker splits it.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Parts {
    fn parse(text: &str) -> Result<Self, &'static str> {
        const INVALID: &str = "invalid reference format";
        if text.is_empty() {
            return Err("repository name must have at least one component");
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (text, None),
        };
        // A tag follows the last ':' that no '/' follows; a registry's port is before a '/'.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        let valid = is_name(name) && tag.is_none_or(is_tag) && digest.is_none_or(is_digest);
        if !valid {
            return Err(INVALID);
        }
        let (registry, repository) = split_registry(name);
        if repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err("repository name must not be more than 255 characters");
        }
        if let Some(digest) = digest {
            check_digest_length(digest)?;
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    fn into_reference(self) -> Reference {
        match (self.tag, self.digest) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(self.registry, self.repository, tag, digest)
            }
            (None, Some(digest)) => Reference::with_digest(self.registry, self.repository, digest),
            (tag, None) => Reference::with_tag(
                self.registry,
                self.repository,
                tag.unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

/// `[DOMAIN/]PATH`: a domain can only end at the first '/'.
fn is_name(name: &str) -> bool {
    is_path(name)
        || name
            .split_once('/')
            .is_some_and(|(domain, path)| is_domain(domain) && is_path(path))
}

/// `COMPONENT(.COMPONENT)*[:PORT]`, each component alphanumeric with inner dashes.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let component = |part: &str| {
        let bytes = part.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    host.split('.').all(component)
        && port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// `COMPONENT(/COMPONENT)*`, each lowercase alphanumeric runs joined by one '.', one or two
/// '_', or any number of '-'.
fn is_path(path: &str) -> bool {
    path.split('/').all(is_path_component)
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        if alnum(&bytes[index]) {
            index += 1;
            continue;
        }
        let separator_end = (index..bytes.len())
            .find(|&at| alnum(&bytes[at]))
            .unwrap_or(bytes.len());
        let separator = &component[index..separator_end];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !allowed {
            return false;
        }
        index = separator_end;
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    bytes.first().is_some_and(word)
        && bytes.len() <= 128
        && bytes.iter().all(|b| word(b) || *b == b'.' || *b == b'-')
}

/// `ALGORITHM:HEX`, the algorithm letters and digits in parts joined by one of `-_+.`, the
/// hex at least 32 digits.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let part = |part: &str| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphabetic)
            && bytes.iter().all(u8::is_ascii_alphanumeric)
    };
    algorithm.split(['-', '_', '+', '.']).all(part)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_digest_length(digest: &str) -> Result<(), &'static str> {
    let (algorithm, hex) = digest.split_once(':').unwrap_or((digest, ""));
    let wanted = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() == wanted {
        Ok(())
    } else {
        Err("invalid checksum digest length")
    }
}

/// docker's split: the first component is a registry when it has a '.' or a ':' or is
/// `localhost`; Docker Hub's single names are under `library/`.
fn split_registry(name: &str) -> (String, String) {
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if registry == "index.docker.io" {
        registry = DOCKER_HUB.into();
    }
    if registry == DOCKER_HUB && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    (registry, repository)
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

    /// oci-client's own parser (its regular expression) and this one give the same answer:
    /// the same full form, or a refusal with the same reason.
    fn agrees_with_oci_client(text: &str) {
        let theirs = text
            .parse::<Reference>()
            .map(|r| r.whole())
            .map_err(|e| e.to_string());
        let ours = Parts::parse(text)
            .map(|parts| parts.into_reference().whole())
            .map_err(str::to_string);
        assert_eq!(ours, theirs, "{text:?}");
    }

    #[test]
    fn the_hand_parser_agrees_with_oci_clients_on_dockers_cases() {
        let hex64 = "f".repeat(64);
        let cases = [
            "busybox".to_string(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "test:5000/repo:tag".into(),
            format!("test:5000/repo@sha256:{hex64}"),
            format!("test:5000/repo:tag@sha256:{hex64}"),
            "lowercase:Uppercase".into(),
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
            "b.gcr.io/test.example.com/my-app:test.example.com".into(),
            "xn--n3h.com/myimage:xn--n3h.com".into(),
            format!(
                "xn--7o8h.com/myimage:xn--7o8h.com@sha512:{}",
                "f".repeat(128)
            ),
            "foo_bar.com:8080".into(),
            "foo/foo_bar.com:8080".into(),
            "opensuse/leap:15.3".into(),
            "a__b/c---d/e.f_g".into(),
            "index.docker.io/nginx".into(),
            "localhost:5000/x".into(),
            "".into(),
            ":justtag".into(),
            format!("@sha256:{hex64}"),
            format!("repo@sha256:{}", "f".repeat(34)),
            format!("validname@invaliddigest:{hex64}"),
            "Uppercase:tag".into(),
            "test:5000/Uppercase/lowercase:tag".into(),
            "a".repeat(256),
            "aa/asdf$$^/aa".into(),
            "a___b".into(),
            "a.-b".into(),
            "-a".into(),
            "a/".into(),
            "/a".into(),
            "a//b".into(),
            "host:/a".into(),
            "h-:1/a".into(),
            "a:b:c".into(),
            "a@b@c".into(),
            format!("a:{}", "t".repeat(128)),
            format!("a:{}", "t".repeat(129)),
        ];
        for case in &cases {
            agrees_with_oci_client(case);
        }
    }

    proptest::proptest! {
        #[test]
        fn the_hand_parser_agrees_with_oci_clients_on_any_text(text in "[a-cA-C0-9._:/@+-]{0,24}") {
            agrees_with_oci_client(&text);
        }

        #[test]
        fn and_on_digests(head in "[a-c]{1,3}(/[a-c]{1,3})?(:[a-c0-9]{1,4})?", algorithm in "(sha256|sha512|x)", hex in "[0-9a-f]{30,70}") {
            agrees_with_oci_client(&format!("{head}@{algorithm}:{hex}"));
        }
    }

    #[test]
    fn malformed_references_are_refused_with_the_grammar() {
        for bad in ["", "NGINX", "nginx:", "a b", "nginx@sha256:xyz"] {
            let error = normalize(bad).unwrap_err().to_string();
            assert!(error.contains("REPOSITORY"), "{bad:?}: {error}");
        }
    }
}
