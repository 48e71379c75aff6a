//! `hostnetd load`: docker-archive (`docker save`: manifest.json) and oci-archive (an OCI
//! image layout: oci-layout, index.json, blobs/) tarballs, plain or gzip-compressed.
use std::{
    collections::HashMap,
    fs,
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
};

use flate2::read::GzDecoder;
use serde::Deserialize;

use super::{
    config::ImageConfigFile,
    digest::Digest,
    error::ImageError,
    reference::normalize,
    store::{io_error, ImageRecord, ImageStore, LayerRecord, Staging},
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Loads every image in the archive at `path`; all of them are stored, or none.
pub fn load_archive(store: &ImageStore, path: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let mut staging = store.stage()?;
    let root = staging.download_path("archive");
    extract(path, &root)?;
    let mut loader = Loader {
        store,
        root: &root,
        staged: HashMap::new(),
    };
    let records = if root.join("oci-layout").is_file() && root.join("index.json").is_file() {
        loader.load_oci(&mut staging)?
    } else if root.join("manifest.json").is_file() {
        loader.load_docker(&mut staging)?
    } else {
        return Err(ImageError::Corrupt(format!(
            "{} is neither a docker-archive (no manifest.json) nor an oci-archive (no oci-layout and index.json)",
            path.display()
        )));
    };
    if records.is_empty() {
        return Err(ImageError::Corrupt(format!(
            "{} holds no image for linux on this architecture",
            path.display()
        )));
    }
    store.commit(staging, records)
}

fn extract(archive: &Path, dest: &Path) -> Result<(), ImageError> {
    let corrupt = |error: std::io::Error| {
        ImageError::Corrupt(format!(
            "{} is not a readable image archive: {error}",
            archive.display()
        ))
    };
    let file = fs::File::open(archive).map_err(io_error("open", archive))?;
    let mut reader = BufReader::new(file);
    let gzip = reader
        .fill_buf()
        .map_err(corrupt)?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    fs::create_dir_all(dest).map_err(io_error("create", dest))?;
    let mut tar = tar::Archive::new(stream);
    let mut members = 0;
    for entry in tar.entries().map_err(corrupt)? {
        entry.map_err(corrupt)?.unpack_in(dest).map_err(corrupt)?;
        members += 1;
    }
    if members == 0 {
        return Err(ImageError::Corrupt(format!(
            "{} is empty or not a tar archive",
            archive.display()
        )));
    }
    Ok(())
}

struct Loader<'a> {
    store: &'a ImageStore,
    root: &'a Path,
    /// Archive members already moved into staging, by path: images of one archive share layers.
    staged: HashMap<PathBuf, Digest>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Loader<'_> {
    fn load_oci(&mut self, staging: &mut Staging) -> Result<Vec<ImageRecord>, ImageError> {
        let index: Index = self.read_json(Path::new("index.json"))?;
        let mut records = Vec::new();
        for descriptor in index.manifests {
            let tags = oci_tags(&descriptor.annotations)?;
            let Some(manifest) = self.platform_manifest(descriptor)? else {
                continue;
            };
            records.push(self.load_oci_manifest(staging, &manifest, tags)?);
        }
        Ok(records)
    }

    /// The manifest for this host among an index's entries (or the descriptor itself when it
    /// is a manifest); `None` when the index has nothing for this platform.
    fn platform_manifest(&self, descriptor: Descriptor) -> Result<Option<Descriptor>, ImageError> {
        match descriptor.media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => {
                let digest = parse_digest(&descriptor.digest)?;
                let nested: Index = self.read_verified_json(&digest)?;
                Ok(nested.manifests.into_iter().find(|entry| {
                    entry.platform.as_ref().is_none_or(|platform| {
                        platform.os == "linux" && platform.architecture == host_architecture()
                    })
                }))
            }
            _ => Ok(Some(descriptor)),
        }
    }

    fn load_oci_manifest(
        &mut self,
        staging: &mut Staging,
        descriptor: &Descriptor,
        tags: Vec<String>,
    ) -> Result<ImageRecord, ImageError> {
        if !matches!(
            descriptor.media_type.as_str(),
            OCI_MANIFEST | DOCKER_MANIFEST | ""
        ) {
            return Err(ImageError::Corrupt(format!(
                "index.json lists a {:?}, not an image manifest",
                descriptor.media_type
            )));
        }
        let manifest_digest = parse_digest(&descriptor.digest)?;
        let manifest: Manifest = self.read_verified_json(&manifest_digest)?;
        let config_digest = parse_digest(&manifest.config.digest)?;
        let config_member = blob_member(&config_digest);
        self.stage(staging, &config_member, Some(&config_digest))?;
        let config = self.read_config(&config_member, &config_digest, staging)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Corrupt(format!(
                "manifest {manifest_digest} lists {} layers but its configuration {}",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let blob = parse_digest(&layer.digest)?;
            let member = blob_member(&blob);
            layers.push(self.stage_layer(staging, &member, Some(&blob), diff_id)?);
        }
        Ok(record(config_digest, tags, layers, config))
    }

    fn load_docker(&mut self, staging: &mut Staging) -> Result<Vec<ImageRecord>, ImageError> {
        let entries: Vec<DockerEntry> = self.read_json(Path::new("manifest.json"))?;
        let mut records = Vec::new();
        for entry in entries {
            let config_member = PathBuf::from(&entry.config);
            // `docker save` names the config after its digest; a name that says otherwise is
            // a corrupt (or tampered) archive.
            let named = config_member
                .file_stem()
                .and_then(|stem| format!("sha256:{}", stem.to_string_lossy()).parse().ok());
            let config_digest = self.stage(staging, &config_member, named.as_ref())?;
            let config = self.read_config(&config_member, &config_digest, staging)?;
            if config.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(ImageError::Corrupt(format!(
                    "manifest.json lists {} layers for {} but its configuration {}",
                    entry.layers.len(),
                    entry.config,
                    config.rootfs.diff_ids.len()
                )));
            }
            let mut layers = Vec::new();
            for (member, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
                layers.push(self.stage_layer(staging, Path::new(member), None, diff_id)?);
            }
            let tags = (entry.repo_tags.unwrap_or_default().iter())
                .map(|tag| normalize(tag))
                .collect::<Result<_, _>>()?;
            records.push(record(config_digest, tags, layers, config));
        }
        Ok(records)
    }

    fn stage_layer(
        &mut self,
        staging: &mut Staging,
        member: &Path,
        expected: Option<&Digest>,
        diff_id: &Digest,
    ) -> Result<LayerRecord, ImageError> {
        let blob = self.stage(staging, member, expected)?;
        let size = staging.add_layer(self.store, &blob, diff_id)?;
        Ok(LayerRecord {
            blob,
            diff_id: diff_id.clone(),
            size,
        })
    }

    /// Moves an archive member into staging as a verified blob (once, however many images
    /// share it).
    fn stage(
        &mut self,
        staging: &mut Staging,
        member: &Path,
        expected: Option<&Digest>,
    ) -> Result<Digest, ImageError> {
        let path = self.member_path(member)?;
        if let Some(digest) = self.staged.get(&path) {
            return Ok(digest.clone());
        }
        let what = format!("archive member {}", member.display());
        let digest = staging.add_blob(&path, expected, &what)?;
        self.staged.insert(path, digest.clone());
        Ok(digest)
    }

    fn read_config(
        &self,
        member: &Path,
        digest: &Digest,
        staging: &Staging,
    ) -> Result<ImageConfigFile, ImageError> {
        let path = staging.blob_path(digest);
        let bytes = fs::read(&path).map_err(io_error("read", &path))?;
        ImageConfigFile::parse(&bytes)
            .map_err(|reason| ImageError::Corrupt(format!("{}: {reason}", member.display())))
    }

    fn read_verified_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
    ) -> Result<T, ImageError> {
        let member = blob_member(digest);
        let path = self.member_path(&member)?;
        let bytes = fs::read(&path).map_err(io_error("read", &path))?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("archive member {}", member.display()),
                expected: digest.clone(),
                actual,
            });
        }
        parse_json(&member, &bytes)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, member: &Path) -> Result<T, ImageError> {
        let path = self.member_path(member)?;
        let bytes = fs::read(&path).map_err(io_error("read", &path))?;
        parse_json(member, &bytes)
    }

    /// The member's path in the extracted archive, symlinks (older `docker save` links shared
    /// layers) followed but never out of it.
    fn member_path(&self, member: &Path) -> Result<PathBuf, ImageError> {
        let missing = || {
            ImageError::Corrupt(format!(
                "the archive has no member {} (or it points outside the archive)",
                member.display()
            ))
        };
        let root = self
            .root
            .canonicalize()
            .map_err(io_error("open", self.root))?;
        let path = root.join(member).canonicalize().map_err(|_| missing())?;
        if path.starts_with(&root) && path.is_file() {
            Ok(path)
        } else {
            Err(missing())
        }
    }
}

fn record(
    id: Digest,
    tags: Vec<String>,
    layers: Vec<LayerRecord>,
    config: ImageConfigFile,
) -> ImageRecord {
    ImageRecord {
        id,
        tags,
        repo_digests: Vec::new(),
        size: layers.iter().map(|layer| layer.size).sum(),
        layers,
        config,
        stored_at: crate::sys::time::now(),
    }
}

/// An OCI layout's name for an image: containerd's full name, else `ref.name` when it is a
/// whole reference (skopeo writes `name:tag`); a bare tag names no repository and is skipped.
fn oci_tags(annotations: &HashMap<String, String>) -> Result<Vec<String>, ImageError> {
    let name = annotations
        .get("io.containerd.image.name")
        .or_else(|| annotations.get("org.opencontainers.image.ref.name"))
        .filter(|name| name.contains(':') || name.contains('/'));
    name.map(|name| normalize(name)).into_iter().collect()
}

fn blob_member(digest: &Digest) -> PathBuf {
    PathBuf::from("blobs/sha256").join(digest.hex())
}

fn parse_digest(text: &str) -> Result<Digest, ImageError> {
    text.parse().map_err(ImageError::Corrupt)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    member: &Path,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|error| {
        ImageError::Corrupt(format!(
            "archive member {} is not valid: {error}",
            member.display()
        ))
    })
}

/// This host's architecture as OCI names it (Go's GOARCH).
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
