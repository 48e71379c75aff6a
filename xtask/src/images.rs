//! `cargo xtask images`: sample images built offline from Debian packages, as OCI archives
//! that `hostnetd load` (and skopeo) read. No registry is needed:
//! - busybox: Debian's busybox-static with its applet links;
//! - nginx: Debian's nginx (which bookworm's nginx-light depends on) and the libraries it
//!   links, on the busybox layer, serving a page and logging to stdout/stderr;
//! - hostnetd-test/web: the busybox layer plus a small one, with an image config that sets
//!   every field hostnetd honours (for the end-to-end tests);
//! - hostnetd-test/pause: the busybox layer sleeping for ever, a pod's sandbox for the CRI
//!   test (Kubernetes' pause image does the same).
//!
//! Layers are built deterministically, so the busybox layer is the same blob in all three.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::shell::{say, workspace_root};

const BUSYBOX_PACKAGES: [&str; 1] = ["busybox-static"];
/// nginx and what it links, by package; libc6's own dependency libgcc-s1 included.
const NGINX_PACKAGES: [&str; 8] = [
    "nginx",
    "nginx-common",
    "libc6",
    "libgcc-s1",
    "libcrypt1",
    "libpcre2-8-0",
    "libssl3",
    "zlib1g",
];
const NGINX_CONF: &str = include_str!("images/nginx.conf");
const NGINX_ENTRYPOINT: &str = include_str!("images/nginx-entrypoint.sh");
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the downloaded Debian packages are kept: outside the work tree, so a fresh clone or a
/// `cargo clean` builds the images again without fetching them again
/// (`HOSTNETD_XTASK_CACHE`, default /var/cache/hostnetd-xtask).
fn debs_cache() -> PathBuf {
    std::env::var_os("HOSTNETD_XTASK_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/hostnetd-xtask"), PathBuf::from)
        .join("debs")
}

pub fn images_dir() -> PathBuf {
    workspace_root().join("target/images")
}

/// Builds the sample images (skipping those already built) and returns their directory.
pub fn build_images() -> anyhow::Result<PathBuf> {
    let dir = images_dir();
    let debs = debs_cache();
    fs::create_dir_all(&debs)
        .with_context(|| format!("cannot create the package cache {}", debs.display()))?;
    let all = [
        dir.join("busybox.tar"),
        dir.join("nginx.tar"),
        dir.join("web.tar"),
        dir.join("pause.tar"),
    ];
    if all.iter().all(|archive| archive.is_file()) {
        say(&format!(
            "sample images: already built in {}",
            dir.display()
        ));
        return Ok(dir);
    }
    say("sample images: building busybox, nginx and hostnetd-test/web from Debian packages");
    let work = dir.join("work");
    let _ = fs::remove_dir_all(&work);
    let busybox = busybox_layer(&debs, &work.join("busybox"))?;
    write_oci_archive(
        &dir.join("busybox.tar"),
        "busybox:latest",
        &[&busybox],
        json!({ "Env": [PATH_ENV], "Cmd": ["sh"] }),
    )?;
    write_oci_archive(
        &dir.join("pause.tar"),
        "hostnetd-test/pause:latest",
        &[&busybox],
        json!({
            "Env": [PATH_ENV],
            "Entrypoint": ["/bin/busybox", "sleep", "2147483647"],
            "StopSignal": "SIGKILL",
        }),
    )?;
    let nginx = nginx_layer(&debs, &work.join("nginx"))?;
    write_oci_archive(
        &dir.join("nginx.tar"),
        "nginx:latest",
        &[&busybox, &nginx],
        json!({
            "Env": [PATH_ENV, "NGINX_PORT=80"],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "ExposedPorts": { "80/tcp": {} },
            "StopSignal": "SIGQUIT",
        }),
    )?;
    let web = web_layer(&work.join("web"))?;
    write_oci_archive(
        &dir.join("web.tar"),
        "hostnetd-test/web:latest",
        &[&busybox, &web],
        json!({
            "Env": [PATH_ENV, "GREETING=hello-from-image"],
            "Entrypoint": ["/bin/busybox"],
            "Cmd": ["httpd", "-f", "-v", "-p", "20480", "-h", "/www"],
            "WorkingDir": "/www",
            "User": "web",
            "ExposedPorts": { "20480/tcp": {}, "20481/udp": {} },
        }),
    )?;
    fs::remove_dir_all(&work)?;
    say(&format!("sample images: built in {}", dir.display()));
    Ok(dir)
}

/// A layer: its uncompressed tar's digest (the diff_id) and its gzip blob.
struct Layer {
    diff_id: String,
    blob: Vec<u8>,
}

fn busybox_layer(debs: &Path, root: &Path) -> anyhow::Result<Layer> {
    extract_packages(debs, &BUSYBOX_PACKAGES, root)?;
    let busybox = root.join("bin/busybox");
    let applets = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .context("cannot list busybox's applets")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let link = root.join(applet);
        if link.symlink_metadata().is_err() {
            fs::create_dir_all(link.parent().expect("applet paths have a directory"))?;
            symlink("/bin/busybox", &link)?;
        }
    }
    for dir in ["tmp", "root", "etc", "proc", "sys", "dev", "run", "var/tmp"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    layer_from_dir(root)
}

fn nginx_layer(debs: &Path, root: &Path) -> anyhow::Result<Layer> {
    extract_packages(debs, &NGINX_PACKAGES, root)?;
    // Only what serving needs: the package's default site and docs are left out.
    for unwanted in ["usr/share/doc", "usr/share/man", "etc/nginx/sites-enabled"] {
        let _ = fs::remove_dir_all(root.join(unwanted));
    }
    fs::write(root.join("etc/nginx/nginx.conf"), NGINX_CONF)?;
    let entrypoint = root.join("docker-entrypoint.sh");
    fs::write(&entrypoint, NGINX_ENTRYPOINT)?;
    fs::set_permissions(&entrypoint, fs::Permissions::from_mode(0o755))?;
    let html = root.join("usr/share/nginx/html");
    fs::create_dir_all(&html)?;
    fs::write(
        html.join("index.html"),
        "<!DOCTYPE html>\n<title>nginx on hostnetd</title>\n<h1>Welcome to nginx on hostnetd</h1>\n",
    )?;
    for dir in ["var/log/nginx", "var/lib/nginx", "run"] {
        fs::create_dir_all(root.join(dir))?;
    }
    // The busybox layer's passwd and group, plus nginx's worker user.
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n",
    )?;
    // The loader finds the packages' libraries through the cache, as on Debian itself.
    fs::write(
        root.join("etc/ld.so.conf"),
        "include /etc/ld.so.conf.d/*.conf\n",
    )?;
    crate::shell::run(Command::new("ldconfig").arg("-r").arg(root))
        .context("cannot build the nginx image's loader cache")?;
    check_nginx_config(root)?;
    layer_from_dir(root)
}

/// Runs the image's nginx against its own config in a chroot: the libraries resolve and
/// the config parses, or the build fails here rather than in a test.
fn check_nginx_config(root: &Path) -> anyhow::Result<()> {
    // runc gives the container a /dev; the chroot gets stand-ins, removed before packing.
    let dev = root.join("dev");
    fs::create_dir_all(&dev)?;
    for file in ["stdout", "stderr", "null"] {
        fs::write(dev.join(file), "")?;
    }
    let output = Command::new("chroot")
        .arg(root)
        .args(["/usr/sbin/nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"])
        .output()
        .context("cannot run chroot");
    fs::remove_dir_all(&dev)?;
    let output = output?;
    if !output.status.success() {
        bail!(
            "the nginx image does not work: nginx -t says: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn web_layer(root: &Path) -> anyhow::Result<Layer> {
    fs::create_dir_all(root.join("www"))?;
    fs::create_dir_all(root.join("etc"))?;
    fs::write(root.join("www/index.html"), "hostnetd web test page\n")?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000:web:/www:/bin/sh\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nweb:x:1000:\n")?;
    layer_from_dir(root)
}

fn extract_packages(debs: &Path, packages: &[&str], root: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(root)?;
    for package in packages {
        let deb = download_package(debs, package)?;
        crate::shell::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    }
    Ok(())
}

/// The package's .deb, downloaded once into `debs` (apt's lists refreshed when it is unknown).
fn download_package(debs: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let find = || -> anyhow::Result<Option<PathBuf>> {
        let prefix = format!("{package}_");
        Ok(fs::read_dir(debs)?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
            }))
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(debs)
            .status()
            .is_ok_and(|status| status.success())
    };
    if !download() {
        crate::shell::run(Command::new("apt-get").args(["update", "-q"]))?;
        if !download() {
            bail!("cannot download the Debian package {package} with apt-get");
        }
    }
    find()?.with_context(|| format!("apt-get download {package} left no .deb"))
}

/// A deterministic layer of `root`: sorted entries, owned by root, a fixed mtime.
fn layer_from_dir(root: &Path) -> anyhow::Result<Layer> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut paths = Vec::new();
    collect_paths(root, root, &mut paths)?;
    paths.sort();
    for relative in paths {
        builder.append_path_with_name(root.join(&relative), &relative)?;
    }
    let tar = builder.into_inner()?;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&tar)?;
    Ok(Layer {
        diff_id: digest(&tar),
        blob: gzip.finish()?,
    })
}

fn collect_paths(root: &Path, dir: &Path, paths: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        paths.push(path.strip_prefix(root)?.to_path_buf());
        if entry.file_type()?.is_dir() {
            collect_paths(root, &path, paths)?;
        }
    }
    Ok(())
}

/// An oci-archive: an OCI image layout (oci-layout, index.json, blobs/sha256/) as one tar.
fn write_oci_archive(
    path: &Path,
    name: &str,
    layers: &[&Layer],
    run_config: Value,
) -> anyhow::Result<()> {
    let config = serde_json::to_vec(&json!({
        "architecture": go_architecture(),
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": run_config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|layer| &layer.diff_id).collect::<Vec<_>>(),
        },
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers
            .iter()
            .map(|layer| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer.blob))
            .collect::<Vec<_>>(),
    }))?;
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["annotations"] = json!({
        "org.opencontainers.image.ref.name": name,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [manifest_descriptor],
    }))?;
    let mut archive = tar::Builder::new(fs::File::create(path)?);
    let mut add = |member: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        archive.append_data(&mut header, member, bytes)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    let mut blobs: Vec<&[u8]> = vec![&config, &manifest];
    blobs.extend(layers.iter().map(|layer| layer.blob.as_slice()));
    for blob in blobs {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        add(&format!("blobs/sha256/{hex}"), blob)?;
    }
    archive.into_inner()?.sync_all()?;
    Ok(())
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest(bytes), "size": bytes.len() })
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

fn go_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
