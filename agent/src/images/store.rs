//! The stored images: records, blobs and unpacked layers, and the staging of an import.
use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use super::{
    config::ImageConfigFile,
    digest::Digest,
    error::ImageError,
    layers,
    reference::{display_name, normalize},
};
use crate::sys::files::{lock_file, read_json, write_json};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The digest of the image's configuration, as docker's image ID.
    pub id: Digest,
    /// Normalised references (`docker.io/library/nginx:latest`) that name it.
    pub tags: Vec<String>,
    /// `registry/repository@sha256:...` of the manifests it was pulled by.
    pub repo_digests: Vec<String>,
    /// Bottom first.
    pub layers: Vec<LayerRecord>,
    pub config: ImageConfigFile,
    /// Unpacked bytes of all layers.
    pub size: u64,
    pub stored_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob as stored (compressed or not).
    pub blob: Digest,
    /// The digest of the uncompressed tar stream, from the image's configuration.
    pub diff_id: Digest,
    pub size: u64,
}

/// Who uses an image: container names, and whether any of them is live.
pub struct ImageUsers {
    pub live: Vec<String>,
    pub exited: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
}

/// Held while images are read for a container's creation (shared) or changed (exclusive).
pub struct ImageLock {
    _file: fs::File,
}

pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(state_dir: &Path) -> Result<Self, ImageError> {
        let root = state_dir.join("images");
        for sub in ["blobs/sha256", "layers", "records", "tmp"] {
            let path = root.join(sub);
            fs::create_dir_all(&path).map_err(io_error("create", &path))?;
        }
        Ok(Self { root })
    }

    pub fn lock_shared(&self) -> Result<ImageLock, ImageError> {
        self.lock(libc::LOCK_SH)
    }

    fn lock_exclusive(&self) -> Result<ImageLock, ImageError> {
        self.lock(libc::LOCK_EX)
    }

    fn lock(&self, operation: libc::c_int) -> Result<ImageLock, ImageError> {
        let path = self.root.join("lock");
        let file = lock_file(&path, operation).map_err(io_error("lock", &path))?;
        Ok(ImageLock { _file: file })
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("records");
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let path = entry.map_err(io_error("list", &dir))?.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                records.push(read_json::<ImageRecord>(&path)?);
            }
        }
        records.sort_by(|a, b| b.stored_at.cmp(&a.stored_at).then(a.id.cmp(&b.id)));
        Ok(records)
    }

    /// Finds an image by ID (`sha256:...` or a unique hex prefix of at least 4 digits), by
    /// tag (`nginx`, `nginx:1.25`, `registry:5000/team/app:v2`) or by repository digest.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let records = self.list()?;
        let by_id = id_prefix(reference).map(|prefix| {
            records
                .iter()
                .filter(|record| record.id.hex().starts_with(prefix))
                .collect::<Vec<_>>()
        });
        match by_id.as_deref() {
            Some([one]) => return Ok((*one).clone()),
            Some([_, _, ..]) => {
                return Err(ImageError::Ambiguous {
                    reference: reference.into(),
                    matches: (by_id.unwrap_or_default().iter())
                        .map(|record| record.id.short().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
            _ => {}
        }
        let normalized = normalize(reference)?;
        records
            .into_iter()
            .find(|record| {
                record.tags.contains(&normalized) || record.repo_digests.contains(&normalized)
            })
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// The unpacked size recorded for a layer some stored image already has.
    fn known_layer_size(&self, diff_id: &Digest) -> Option<u64> {
        let records = self.list().ok()?;
        (records.iter())
            .flat_map(|record| &record.layers)
            .find(|layer| &layer.diff_id == diff_id)
            .map(|layer| layer.size)
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// The image's layer directories, top first, as overlayfs's lowerdir lists them.
    pub fn lower_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        (image.layers.iter().rev())
            .map(|layer| self.layer_dir(&layer.diff_id))
            .collect()
    }

    /// A fresh staging directory, removed when dropped unless committed.
    pub fn stage(&self) -> Result<Staging, ImageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join("tmp").join(name);
        let _ = fs::remove_dir_all(&dir);
        for sub in ["blobs", "layers"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error("create", &path))?;
        }
        Ok(Staging {
            dir,
            blobs: Vec::new(),
            layers: Vec::new(),
        })
    }

    /// Moves the staged blobs and layers into place and records the images under their tags
    /// (which move off any image that held them before). Returns the records as imported:
    /// with this import's tags, not those the image already had.
    pub fn commit(
        &self,
        staging: Staging,
        records: Vec<ImageRecord>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.lock_exclusive()?;
        for digest in &staging.blobs {
            let target = self.blob_path(digest);
            let source = staging.blob_path(digest);
            if !target.exists() {
                fs::rename(&source, &target).map_err(io_error("store", &target))?;
            }
        }
        for diff_id in &staging.layers {
            let target = self.layer_dir(diff_id);
            let source = staging.layer_dir(diff_id);
            if !target.exists() {
                fs::rename(&source, &target).map_err(io_error("store", &target))?;
            }
        }
        for record in &records {
            self.record_image(record.clone())?;
        }
        self.collect_garbage()?;
        Ok(records)
    }

    fn record_image(&self, mut record: ImageRecord) -> Result<(), ImageError> {
        if let Some(existing) = self.get(&record.id)? {
            record.tags = union(&existing.tags, &record.tags);
            record.repo_digests = union(&existing.repo_digests, &record.repo_digests);
        }
        for mut other in self.list()? {
            let before = other.tags.len();
            if other.id != record.id {
                other.tags.retain(|tag| !record.tags.contains(tag));
                if other.tags.len() != before {
                    self.save(&other)?;
                }
            }
        }
        self.save(&record)
    }

    /// `rmi`: untags `reference` when the image has other tags, else deletes the image; refused
    /// while a live container uses it, and while an exited one does unless `force`.
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        users: impl FnOnce(&Digest) -> Result<ImageUsers, ImageError>,
    ) -> Result<Removed, ImageError> {
        let _lock = self.lock_exclusive()?;
        let mut image = self.resolve(reference)?;
        let tag = normalize(reference)
            .ok()
            .filter(|name| image.tags.contains(name));
        if let Some(tag) = tag.filter(|_| image.tags.len() > 1) {
            image.tags.retain(|t| t != &tag);
            self.save(&image)?;
            return Ok(Removed {
                untagged: vec![display_name(&tag)],
                deleted: Vec::new(),
            });
        }
        let users = users(&image.id)?;
        let blocking = if force {
            users.live
        } else {
            [users.live, users.exited].concat()
        };
        if !blocking.is_empty() {
            return Err(ImageError::InUse {
                image: reference.into(),
                them: if blocking.len() == 1 { "it" } else { "them" },
                containers: format!(
                    "container{} {}",
                    if blocking.len() == 1 { "" } else { "s" },
                    blocking.join(", ")
                ),
                force: match (force, blocking.len()) {
                    (true, _) => "",
                    (false, 1) => ", or give --force if it has exited",
                    (false, _) => ", or give --force if they have exited",
                },
            });
        }
        let path = self.record_path(&image.id);
        fs::remove_file(&path).map_err(io_error("remove", &path))?;
        self.collect_garbage()?;
        Ok(Removed {
            untagged: image.tags.iter().map(|t| display_name(t)).collect(),
            deleted: vec![image.id.to_string()],
        })
    }

    fn get(&self, id: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        let path = self.record_path(id);
        if path.exists() {
            Ok(Some(read_json(&path)?))
        } else {
            Ok(None)
        }
    }

    fn save(&self, record: &ImageRecord) -> Result<(), ImageError> {
        Ok(write_json(&self.record_path(&record.id), record)?)
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.root.join("records").join(format!("{}.json", id.hex()))
    }

    /// Removes blobs and layers no record references, and staging directories of processes
    /// that died mid-import. Called with the exclusive lock held.
    fn collect_garbage(&self) -> Result<(), ImageError> {
        let records = self.list()?;
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for record in &records {
            blobs.insert(record.id.hex().to_string());
            for layer in &record.layers {
                blobs.insert(layer.blob.hex().to_string());
                layers.insert(layer.diff_id.hex().to_string());
            }
        }
        self.remove_unlisted(&self.root.join("blobs/sha256"), &blobs)?;
        self.remove_unlisted(&self.root.join("layers"), &layers)?;
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp)
            .map_err(io_error("list", &tmp))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
            // SAFETY: kill with signal 0 only checks that the process exists.
            let alive = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
            if !alive {
                remove_path(&entry.path())?;
            }
        }
        Ok(())
    }

    fn remove_unlisted(&self, dir: &Path, keep: &BTreeSet<String>) -> Result<(), ImageError> {
        for entry in fs::read_dir(dir).map_err(io_error("list", dir))?.flatten() {
            if !keep.contains(&*entry.file_name().to_string_lossy()) {
                remove_path(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// An import in progress: verified blobs and unpacked layers waiting for [`ImageStore::commit`].
pub struct Staging {
    dir: PathBuf,
    blobs: Vec<Digest>,
    layers: Vec<Digest>,
}

impl Staging {
    /// Where a download or archive member goes before [`Self::add_blob`] verifies it.
    pub fn download_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("download-{name}"))
    }

    /// Verifies the file at `path` against `expected` (when known) and files it as a blob.
    pub fn add_blob(
        &mut self,
        path: &Path,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest, ImageError> {
        let actual = Digest::of_file(path).map_err(io_error("read", path))?;
        if let Some(expected) = expected.filter(|expected| *expected != &actual) {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.blob_path(&actual);
        fs::rename(path, &target).map_err(io_error("stage", &target))?;
        self.blobs.push(actual.clone());
        Ok(actual)
    }

    /// Unpacks a staged blob as the layer `diff_id`, unless the store already has it.
    pub fn add_layer(
        &mut self,
        store: &ImageStore,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<u64, ImageError> {
        if store.has_layer(diff_id) || self.layers.contains(diff_id) {
            return Ok(store.known_layer_size(diff_id).unwrap_or_default());
        }
        let dest = self.layer_dir(diff_id);
        fs::create_dir(&dest).map_err(io_error("create", &dest))?;
        let size = layers::unpack_layer(&self.blob_path(blob), diff_id, &dest)?;
        self.layers.push(diff_id.clone());
        Ok(size)
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join(digest.hex())
    }

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers").join(diff_id.hex())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_path(&self.dir);
    }
}

fn id_prefix(reference: &str) -> Option<&str> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let is_hex = hex.len() >= 4 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    is_hex.then_some(hex)
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut all = a.to_vec();
    all.extend(b.iter().filter(|item| !a.contains(item)).cloned());
    all
}

fn remove_path(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_error("remove", path))
}

pub(super) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}
