//! Unpacking a sample image's layers into a plain directory, so that H0 and NAT run the very
//! nginx the H1 container runs. The sample images have no whiteouts: layers are unpacked in
//! order, each over the last.
use std::{collections::HashMap, fs, io::Read as _, path::Path};

use anyhow::Context as _;
use serde_json::Value;

pub fn unpack_oci_archive(archive: &Path, target: &Path) -> anyhow::Result<()> {
    let blobs = read_members(archive)?;
    let member = |name: &str| {
        blobs
            .get(name)
            .with_context(|| format!("{} has no {name}", archive.display()))
    };
    let json = |name: &str| -> anyhow::Result<Value> {
        serde_json::from_slice(member(name)?).with_context(|| format!("{name} is not JSON"))
    };
    let index = json("index.json")?;
    let manifest = json(&blob_name(&index["manifests"][0])?)?;
    let _ = fs::remove_dir_all(target);
    fs::create_dir_all(target)?;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let gzip = flate2::read::GzDecoder::new(member(&blob_name(layer)?)?.as_slice());
        let mut tar = tar::Archive::new(gzip);
        tar.set_preserve_permissions(true);
        tar.set_overwrite(true);
        tar.unpack(target)
            .with_context(|| format!("cannot unpack a layer into {}", target.display()))?;
    }
    Ok(())
}

/// `blobs/sha256/HEX` for an OCI descriptor.
fn blob_name(descriptor: &Value) -> anyhow::Result<String> {
    let digest = descriptor["digest"]
        .as_str()
        .context("an OCI descriptor without a digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {digest}"))?;
    Ok(format!("blobs/sha256/{hex}"))
}

fn read_members(archive: &Path) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let file =
        fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut members = HashMap::new();
    for entry in tar::Archive::new(file).entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        members.insert(name, bytes);
    }
    Ok(members)
}
