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

#[cfg(test)]
mod tests {
    use super::*;

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
