//! `hostnetd pull`: the OCI distribution protocol through oci-client (basic and token auth
//! with the credentials of `hostnetd login`, image indexes resolved to this host's platform,
//! the registry's own CAs from certs.d). Every blob is verified by digest, and the image is
//! committed only once all of it is staged.
use std::{path::PathBuf, time::Duration};

use oci_client::{
    client::{
        current_platform_resolver, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
    },
    errors::{OciDistributionError, OciErrorCode},
    manifest::OciDescriptor,
    secrets::RegistryAuth,
    Client, Reference, RegistryOperation,
};

use super::{
    certs::{is_unknown_ca, registry_cas, unknown_ca_hint},
    config::ImageConfigFile,
    credentials::AuthFile,
    digest::Digest,
    error::ImageError,
    reference::{display_name, parse},
    refusal::said,
    store::{io_error, ImageRecord, ImageStore, LayerRecord, Staging},
};

/// How the daemon reaches registries.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Registries (`host[:port]`) reached over plain HTTP rather than HTTPS.
    pub insecure_registries: Vec<String>,
    /// docker's certs.d layout: `HOST:PORT/*.crt` are CAs trusted for that registry alone.
    pub certs_dir: PathBuf,
    /// The credentials of `hostnetd login`, in docker's config.json format; read at each pull.
    pub auth_file: PathBuf,
}

impl PullOptions {
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_registries.iter().any(|name| name == registry)
    }

    pub fn credentials(&self) -> AuthFile {
        AuthFile::new(&self.auth_file)
    }
}

/// Pulls `reference` into `store` and returns the stored image.
pub async fn pull(
    store: &ImageStore,
    reference: &str,
    options: &PullOptions,
) -> Result<ImageRecord, ImageError> {
    let parsed = parse(reference)?;
    let full = parsed.whole();
    let registry_error = |message: String| ImageError::Registry {
        reference: display_name(&full),
        message,
    };
    let registry = parsed.registry().to_string();
    let credentials = tokio::task::block_in_place(|| options.credentials().get(&registry))?;
    let auth = credentials.as_ref().map_or(RegistryAuth::Anonymous, |c| {
        RegistryAuth::Basic(c.username.clone(), c.secret.clone())
    });
    let client = client(&registry, options)?;
    let context = Context {
        reference: &parsed,
        options,
        logged_in: credentials.is_some(),
    };
    if credentials.is_some() {
        // Left to itself, oci-client drops a token server's refusal and goes on without a
        // token, so the registry's bare 401 would hide the token server's reason.
        (client.auth(&parsed, &auth, RegistryOperation::Pull).await)
            .map_err(|error| registry_error(context.explain(&error)))?;
    }
    let (manifest, manifest_digest, config_json) = client
        .pull_manifest_and_config(&parsed, &auth)
        .await
        .map_err(|error| registry_error(context.explain(&error)))?;
    let mut staging = store.stage()?;
    let config_digest = parse_digest(&manifest.config.digest, "the manifest's config")?;
    let config_path = staging.download_path("config");
    std::fs::write(&config_path, config_json.as_bytes())
        .map_err(io_error("write", &config_path))?;
    tokio::task::block_in_place(|| {
        staging.add_blob(
            &config_path,
            Some(&config_digest),
            "the image configuration",
        )
    })?;
    let config = ImageConfigFile::parse(config_json.as_bytes()).map_err(ImageError::Corrupt)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Corrupt(format!(
            "{}: the manifest lists {} layers but the configuration {}",
            display_name(&full),
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let size = pull_layer(store, &mut staging, &client, &parsed, descriptor, diff_id)
            .await
            .map_err(|error| match error {
                ImageError::Registry { message, .. } => registry_error(message),
                other => other,
            })?;
        layers.push(LayerRecord {
            blob: parse_digest(&descriptor.digest, "a layer")?,
            diff_id: diff_id.clone(),
            size,
        });
    }
    let record = ImageRecord {
        id: config_digest,
        tags: parsed.tag().map(|_| full.clone()).into_iter().collect(),
        repo_digests: vec![format!(
            "{}/{}@{manifest_digest}",
            parsed.registry(),
            parsed.repository()
        )],
        size: layers.iter().map(|layer| layer.size).sum(),
        layers,
        config,
        stored_at: crate::sys::time::now(),
    };
    let mut stored = tokio::task::block_in_place(|| store.commit(staging, vec![record]))?;
    Ok(stored.remove(0))
}

async fn pull_layer(
    store: &ImageStore,
    staging: &mut Staging,
    client: &Client,
    reference: &Reference,
    descriptor: &OciDescriptor,
    diff_id: &Digest,
) -> Result<u64, ImageError> {
    let blob = parse_digest(&descriptor.digest, "a layer")?;
    if store.has_layer(diff_id) {
        return staging.add_layer(store, &blob, diff_id);
    }
    check_layer_media_type(&descriptor.media_type)?;
    let path = staging.download_path(blob.hex());
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(io_error("create", &path))?;
    client
        .pull_blob(reference, descriptor, file)
        .await
        .map_err(|error| ImageError::Registry {
            reference: reference.whole(),
            message: format!("layer {blob}: {}", describe(&error)),
        })?;
    tokio::task::block_in_place(|| {
        staging.add_blob(&path, Some(&blob), &format!("layer {blob}"))?;
        staging.add_layer(store, &blob, diff_id)
    })
}

fn check_layer_media_type(media_type: &str) -> Result<(), ImageError> {
    const UNPACKABLE: [&str; 4] = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ];
    if UNPACKABLE.contains(&media_type) {
        Ok(())
    } else {
        Err(ImageError::Corrupt(format!(
            "a layer has media type {media_type:?}, which hostnetd cannot unpack (it takes tar and tar+gzip layers)"
        )))
    }
}

/// What a failed pull is explained with.
struct Context<'a> {
    reference: &'a Reference,
    options: &'a PullOptions,
    logged_in: bool,
}

impl Context<'_> {
    /// Adds what to do to the errors users meet most.
    fn explain(&self, error: &OciDistributionError) -> String {
        let message = match error {
            OciDistributionError::AuthenticationFailure(body) => token_refusal(body),
            _ => describe(error),
        };
        let registry = self.reference.registry();
        if is_unauthorized(error) {
            return if self.logged_in {
                format!("{message}; the registry refused the credentials stored for {registry}: log in again with `hostnetd login {registry}`")
            } else {
                format!("{message}; the registry wants credentials: log in with `hostnetd login {registry}`")
            };
        }
        if message.contains("manifest unknown") || message.contains("NAME_UNKNOWN") {
            return format!("not found in the registry {registry} ({message})");
        }
        if is_unknown_ca(&message) {
            let hint = unknown_ca_hint(&self.options.certs_dir, registry);
            return format!("{message}; {hint}");
        }
        let tls_to_plain_http = message.contains("InvalidContentType")
            || message.contains("corrupt message")
            || message.contains("wrong version number");
        if tls_to_plain_http && !self.options.is_insecure(registry) {
            return format!(
                "{message}; the registry seems to speak plain HTTP: if you trust it, give --insecure-registry {registry}"
            );
        }
        message
    }
}

/// A token server's refusal in its own words (oci-client gives its body, not its status).
fn token_refusal(body: &str) -> String {
    let reason = said(body);
    if reason.is_empty() {
        "the token server gave no reason".into()
    } else {
        format!("the token server says: {reason}")
    }
}

/// A 401 from the registry, or a token server that refused.
fn is_unauthorized(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => {
            (envelope.errors.iter()).any(|error| error.code == OciErrorCode::Unauthorized)
        }
        _ => false,
    }
}

/// reqwest is built without a default crypto provider so that only ring is compiled in;
/// installing it twice is harmless (the second attempt reports the first).
pub(super) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for `registry`: plain HTTP when it is named insecure, else HTTPS trusting its
/// certs.d CAs besides the system's.
fn client(registry: &str, options: &PullOptions) -> Result<Client, ImageError> {
    install_crypto_provider();
    let cas = registry_cas(&options.certs_dir, registry)?;
    let config = ClientConfig {
        protocol: if options.is_insecure(registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        platform_resolver: Some(Box::new(current_platform_resolver)),
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(60)),
        extra_root_certificates: (cas.into_iter())
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            })
            .collect(),
        ..Default::default()
    };
    Client::try_from(config).map_err(|error| ImageError::Registry {
        reference: registry.into(),
        message: format!(
            "cannot set up the connection with the CAs of {}: {}",
            super::certs::registry_dir(&options.certs_dir, registry).display(),
            describe(&error)
        ),
    })
}

fn parse_digest(text: &str, what: &str) -> Result<Digest, ImageError> {
    text.parse()
        .map_err(|reason| ImageError::Corrupt(format!("{what} has an unusable digest: {reason}")))
}

/// The error with its causes, which is where reqwest puts the useful part ("Connection
/// refused").
fn describe(error: &OciDistributionError) -> String {
    with_causes(error)
}

/// An error and its causes on one line, each said once.
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_servers_refusal_keeps_its_reason_and_says_to_log_in_again() {
        let reference: Reference = "registry.lan:5000/team/app:v1".parse().unwrap();
        let options = PullOptions::default();
        let context = Context {
            reference: &reference,
            options: &options,
            logged_in: true,
        };
        let hint = "the registry refused the credentials stored for registry.lan:5000: log in again with `hostnetd login registry.lan:5000`";
        let refused = OciDistributionError::AuthenticationFailure(
            r#"{"details":"incorrect username or password"}"#.into(),
        );
        assert_eq!(
            context.explain(&refused),
            format!("the token server says: incorrect username or password; {hint}")
        );
        let silent = OciDistributionError::AuthenticationFailure(String::new());
        assert_eq!(
            context.explain(&silent),
            format!("the token server gave no reason; {hint}")
        );
    }
}
