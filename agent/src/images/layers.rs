//! Unpacking a layer tarball into a directory that overlayfs can stack: OCI whiteouts become
//! overlay whiteouts (0/0 character devices), opaque markers become the `trusted.overlay.opaque`
//! xattr. The uncompressed stream is hashed while it is unpacked and checked against the
//! image's diff_id.
use std::{
    ffi::CString,
    fs,
    io::{self, BufReader, Read},
    os::unix::ffi::OsStrExt as _,
    path::{Component, Path, PathBuf},
};

use flate2::read::GzDecoder;
use tar::EntryType;

use super::digest::{Digest, HashingReader};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {diff_id} is corrupt: its content hashes to {actual}")]
    DiffIdMismatch { diff_id: Digest, actual: Digest },
    #[error("layer {diff_id} is compressed with zstd, which hostnetd does not unpack yet: re-push the image with gzip layers")]
    Zstd { diff_id: Digest },
    #[error("layer {diff_id} is not a valid tar stream: {message}")]
    Tar { diff_id: Digest, message: String },
    #[error("layer {diff_id} has an unsafe path {path:?}: {reason}")]
    UnsafePath {
        diff_id: Digest,
        path: PathBuf,
        reason: &'static str,
    },
}

/// Unpacks the layer blob at `blob` (gzip or plain tar, told apart by content) into `dest`,
/// which must be an empty directory, and returns the unpacked byte count. Fails, leaving `dest`
/// for the caller to delete, when the uncompressed content does not hash to `diff_id`.
pub fn unpack_layer(blob: &Path, diff_id: &Digest, dest: &Path) -> Result<u64, LayerError> {
    let tar_error = |error: io::Error| LayerError::Tar {
        diff_id: diff_id.clone(),
        message: with_causes(&error),
    };
    let mut file = BufReader::new(fs::File::open(blob).map_err(tar_error)?);
    let magic = peek(&mut file).map_err(tar_error)?;
    let stream: Box<dyn Read> = match magic {
        [0x1f, 0x8b, ..] => Box::new(GzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            return Err(LayerError::Zstd {
                diff_id: diff_id.clone(),
            })
        }
        _ => Box::new(file),
    };
    let mut hashing = HashingReader::new(stream);
    unpack_entries(&mut hashing, diff_id, dest)?;
    let (actual, bytes) = hashing.finish_reading().map_err(tar_error)?;
    if &actual != diff_id {
        return Err(LayerError::DiffIdMismatch {
            diff_id: diff_id.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// The tar crate puts the reason ("No space left on device") in the error's source.
fn with_causes(error: &io::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn peek(reader: &mut BufReader<fs::File>) -> io::Result<[u8; 4]> {
    use io::BufRead as _;
    let buffered = reader.fill_buf()?;
    let mut magic = [0u8; 4];
    let len = buffered.len().min(4);
    magic[..len].copy_from_slice(&buffered[..len]);
    Ok(magic)
}

fn unpack_entries(stream: &mut dyn Read, diff_id: &Digest, dest: &Path) -> Result<(), LayerError> {
    let tar_error = |error: io::Error| LayerError::Tar {
        diff_id: diff_id.clone(),
        message: with_causes(&error),
    };
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let path = entry.path().map_err(tar_error)?.into_owned();
        let unsafe_path = |reason| LayerError::UnsafePath {
            diff_id: diff_id.clone(),
            path: path.clone(),
            reason,
        };
        let relative = relative_path(&path).ok_or_else(|| unsafe_path("it leaves the layer"))?;
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let parent = relative.parent().unwrap_or(Path::new(""));
        match name.as_deref() {
            Some(OPAQUE_MARKER) => {
                let dir = create_dirs_inside(dest, parent)
                    .map_err(|_| unsafe_path("its directory is a symlink or not a directory"))?;
                set_opaque(&dir).map_err(tar_error)?;
            }
            Some(whiteout) if whiteout.starts_with(WHITEOUT_PREFIX) => {
                let dir = create_dirs_inside(dest, parent)
                    .map_err(|_| unsafe_path("its directory is a symlink or not a directory"))?;
                let hidden = dir.join(&whiteout[WHITEOUT_PREFIX.len()..]);
                make_node(&hidden, libc::S_IFCHR, 0).map_err(tar_error)?;
            }
            _ => match entry.header().entry_type() {
                kind @ (EntryType::Char | EntryType::Block | EntryType::Fifo) => {
                    let dir = create_dirs_inside(dest, parent).map_err(|_| {
                        unsafe_path("its directory is a symlink or not a directory")
                    })?;
                    let Some(file_name) = relative.file_name() else {
                        continue;
                    };
                    unpack_special(&entry, kind, &dir.join(file_name)).map_err(tar_error)?;
                }
                _ => {
                    entry.unpack_in(dest).map_err(tar_error)?;
                }
            },
        }
    }
    Ok(())
}

/// The path with `./` and a leading `/` dropped; `None` when it climbs out with `..`.
fn relative_path(path: &Path) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(relative)
}

/// Creates `relative`'s directories under `root` one by one, refusing to pass through a
/// symlink: an earlier entry of a hostile layer could point one at the host's /etc.
fn create_dirs_inside(root: &Path, relative: &Path) -> io::Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for part in relative.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(io::Error::other("not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

fn set_opaque(dir: &Path) -> io::Result<()> {
    let path = c_path(dir)?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: NUL-terminated path and name, and a 1-byte value.
    let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn unpack_special<R: Read>(entry: &tar::Entry<R>, kind: EntryType, path: &Path) -> io::Result<()> {
    let header = entry.header();
    let mode = header.mode()? & 0o7777;
    let (file_type, device) = match kind {
        EntryType::Char | EntryType::Block => {
            let major = header.device_major()?.unwrap_or(0);
            let minor = header.device_minor()?.unwrap_or(0);
            let file_type = if kind == EntryType::Char {
                libc::S_IFCHR
            } else {
                libc::S_IFBLK
            };
            (file_type, libc::makedev(major, minor))
        }
        _ => (libc::S_IFIFO, 0),
    };
    make_node(path, file_type | mode, device)?;
    let (uid, gid) = (header.uid()?, header.gid()?);
    std::os::unix::fs::lchown(path, Some(uid as u32), Some(gid as u32))
}

fn make_node(path: &Path, mode: libc::mode_t, device: libc::dev_t) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(_) => {}
    }
    let c_path = c_path(path)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mknod(c_path.as_ptr(), mode, device) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt as _;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(EntryType::Regular);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            builder.append_data(&mut header, path, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// A scratch directory with an empty `out/`, removed when dropped (a failing test too).
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hostnetd-layer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("out")).unwrap();
        Scratch(dir)
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlay_markers() {
        let dir = scratch("whiteouts");
        let tar = layer(&[
            ("etc/hostname", b"box"),
            ("etc/.wh.motd", b""),
            ("var/cache/.wh..wh..opq", b""),
        ]);
        let blob = dir.join("blob");
        fs::write(&blob, &tar).unwrap();
        let out = dir.join("out");
        let size = unpack_layer(&blob, &Digest::of_bytes(&tar), &out).unwrap();
        assert_eq!(size, tar.len() as u64);
        assert_eq!(fs::read(out.join("etc/hostname")).unwrap(), b"box");
        let whiteout = fs::symlink_metadata(out.join("etc/motd")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(std::os::unix::fs::MetadataExt::rdev(&whiteout), 0);
        assert!(!out.join("var/cache/.wh..wh..opq").exists());
    }

    #[test]
    fn a_wrong_diff_id_is_refused() {
        let dir = scratch("mismatch");
        let tar = layer(&[("a", b"1")]);
        let blob = dir.join("blob");
        fs::write(&blob, &tar).unwrap();
        let wrong = Digest::of_bytes(b"something else");
        let error = unpack_layer(&blob, &wrong, &dir.join("out")).unwrap_err();
        assert!(
            matches!(error, LayerError::DiffIdMismatch { .. }),
            "{error}"
        );
    }

    #[test]
    fn gzip_layers_are_hashed_uncompressed() {
        use std::io::Write as _;
        let dir = scratch("gzip");
        let tar = layer(&[("bin/sh", b"#!")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = dir.join("blob");
        fs::write(&blob, gz.finish().unwrap()).unwrap();
        unpack_layer(&blob, &Digest::of_bytes(&tar), &dir.join("out")).unwrap();
        assert_eq!(fs::read(dir.join("out/bin/sh")).unwrap(), b"#!");
    }

    #[test]
    fn whiteouts_never_pass_through_symlinks_or_climb_out() {
        assert_eq!(
            relative_path(Path::new("./a/b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(relative_path(Path::new("/a")), Some(PathBuf::from("a")));
        assert_eq!(relative_path(Path::new("a/../../b")), None);
        let dir = scratch("symlink");
        std::os::unix::fs::symlink("/etc", dir.join("out/etc")).unwrap();
        assert!(create_dirs_inside(&dir.join("out"), Path::new("etc/x")).is_err());
    }
}
