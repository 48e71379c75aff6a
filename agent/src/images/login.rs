//! `hostnetd login`: credentials are checked against the registry, as docker checks them,
//! before they are stored. `GET /v2/` says how the registry authenticates: `Basic` (the same
//! request again with the credentials) or `Bearer realm=...,service=...` (a token asked of the
//! realm with the credentials). A refusal carries the registry's own reason.
use std::time::Duration;

use reqwest::{header::WWW_AUTHENTICATE, Response};

use super::{
    certs::{is_unknown_ca, registry_cas, unknown_ca_hint},
    credentials::Credentials,
    error::ImageError,
    refusal::reason_of,
    registry::PullOptions,
};

/// Succeeds when `registry` accepts `credentials` (or asks for none).
pub async fn check(
    registry: &str,
    credentials: &Credentials,
    options: &PullOptions,
) -> Result<(), ImageError> {
    let http = http_client(registry, options)?;
    let scheme = if options.is_insecure(registry) {
        "http"
    } else {
        "https"
    };
    let base = format!("{scheme}://{registry}/v2/");
    let unreachable = |error: reqwest::Error| unreachable(registry, options, &error);
    let first = http.get(&base).send().await.map_err(unreachable)?;
    if first.status().is_success() {
        return Ok(());
    }
    let challenge = (first.headers().get(WWW_AUTHENTICATE))
        .and_then(|value| value.to_str().ok())
        .map(Challenge::parse);
    let answer = match challenge {
        Some(Challenge::Bearer { realm, service }) => {
            let mut query = vec![("account", credentials.username.as_str())];
            query.extend(service.as_deref().map(|service| ("service", service)));
            http.get(&realm).query(&query)
        }
        Some(Challenge::Basic) => http.get(&base),
        None => return Err(refused(registry, reason(first).await)),
    }
    .basic_auth(&credentials.username, Some(&credentials.secret))
    .send()
    .await
    .map_err(unreachable)?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(refused(registry, reason(answer).await))
    }
}

fn http_client(registry: &str, options: &PullOptions) -> Result<reqwest::Client, ImageError> {
    super::registry::install_crypto_provider();
    let cas = registry_cas(&options.certs_dir, registry)?;
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .tls_certs_merge(
            cas.iter()
                .filter_map(|pem| reqwest::Certificate::from_pem(pem).ok()),
        )
        .build()
        .map_err(|error| ImageError::Login {
            registry: registry.into(),
            message: format!("cannot set up the connection: {error}"),
        })
}

fn refused(registry: &str, reason: String) -> ImageError {
    ImageError::Unauthorized {
        registry: registry.into(),
        reason,
    }
}

fn unreachable(registry: &str, options: &PullOptions, error: &reqwest::Error) -> ImageError {
    let mut message = super::registry::with_causes(error);
    if is_unknown_ca(&message) {
        message = format!(
            "{message}; {}",
            unknown_ca_hint(&options.certs_dir, registry)
        );
    }
    ImageError::Login {
        registry: registry.into(),
        message,
    }
}

/// The registry's (or token server's) reason for a refusal, with the status.
async fn reason(response: Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    reason_of(status, &body)
}

/// A `WWW-Authenticate` challenge, as far as login needs it.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// `Bearer realm="https://auth/token",service="registry"`, or anything else as Basic (the
    /// registry answers a wrong guess with its reason).
    fn parse(header: &str) -> Self {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Self::Basic;
        }
        let param = |name: &str| {
            split_params(params)
                .into_iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value)
        };
        match param("realm") {
            Some(realm) => Self::Bearer {
                realm,
                service: param("service"),
            },
            None => Self::Basic,
        }
    }
}

/// `a="x,y",b=z` into its pairs, commas inside quotes kept.
fn split_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or_default())
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        pairs.push((key, value.to_string()));
        rest = remaining.trim_start_matches(',').trim();
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_the_token_realm_and_service() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.lan/token?a=1,b=2",service="registry.lan""#
            ),
            Challenge::Bearer {
                realm: "https://auth.lan/token?a=1,b=2".into(),
                service: Some("registry.lan".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Challenge::Basic
        );
        assert_eq!(
            Challenge::parse("Bearer realm=https://auth.lan/token"),
            Challenge::Bearer {
                realm: "https://auth.lan/token".into(),
                service: None,
            }
        );
    }
}
