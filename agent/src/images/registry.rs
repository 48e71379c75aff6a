//! `hostnetd pull`: the OCI distribution protocol through oci-client (token auth, image
//! indexes resolved to this host's platform). Every blob is verified by digest, and the image
//! is committed only once all of it is staged.
use std::{error::Error as _, time::Duration};

use oci_client::{
    client::{current_platform_resolver, ClientConfig, ClientProtocol},
    manifest::OciDescriptor,
    secrets::RegistryAuth,
    Client, Reference,
};

use super::{
    config::ImageConfigFile,
    digest::Digest,
    error::ImageError,
    reference::{display_name, parse},
    store::{io_error, ImageRecord, ImageStore, LayerRecord, Staging},
};

/// Registries (`host[:port]`) reached over plain HTTP rather than HTTPS.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    pub insecure_registries: Vec<String>,
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
    let insecure = options
        .insecure_registries
        .iter()
        .any(|registry| registry == parsed.registry());
    let client = client(insecure);
    let (manifest, manifest_digest, config_json) = client
        .pull_manifest_and_config(&parsed, &RegistryAuth::Anonymous)
        .await
        .map_err(|error| registry_error(explain(describe(&error), &parsed, insecure)))?;
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

/// Adds what to do to the errors users meet most.
fn explain(message: String, reference: &Reference, insecure: bool) -> String {
    if message.contains("manifest unknown") || message.contains("NAME_UNKNOWN") {
        return format!(
            "not found in the registry {} ({message})",
            reference.registry()
        );
    }
    let tls_to_plain_http = message.contains("InvalidContentType")
        || message.contains("corrupt message")
        || message.contains("wrong version number");
    if tls_to_plain_http && !insecure {
        return format!(
            "{message}; the registry seems to speak plain HTTP: if you trust it, give --insecure-registry {}",
            reference.registry()
        );
    }
    message
}

fn client(insecure: bool) -> Client {
    // reqwest is built without a default crypto provider so that only ring is compiled in;
    // installing it twice is harmless (the second attempt reports the first).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        platform_resolver: Some(Box::new(current_platform_resolver)),
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    })
}

fn parse_digest(text: &str, what: &str) -> Result<Digest, ImageError> {
    text.parse()
        .map_err(|reason| ImageError::Corrupt(format!("{what} has an unusable digest: {reason}")))
}

/// The error with its causes, which is where reqwest puts the useful part ("Connection
/// refused").
fn describe(error: &oci_client::errors::OciDistributionError) -> String {
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
