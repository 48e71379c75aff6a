//! The CAs trusted for one registry, in docker's certs.d layout: every `*.crt` file (`ca.crt`
//! among them) in `<certs_dir>/<host[:port]>/`, added to the system's roots for connections to
//! that registry alone.
use std::path::{Path, PathBuf};

use rustls::pki_types::{pem::PemObject as _, CertificateDer};

use super::error::ImageError;

/// Where a registry's CA certificates go.
pub fn registry_dir(certs_dir: &Path, registry: &str) -> PathBuf {
    certs_dir.join(registry)
}

/// The PEM of each CA file for `registry`, in name order; none when its directory is
/// missing. A file that is not PEM certificates is refused, naming it.
pub fn registry_cas(certs_dir: &Path, registry: &str) -> Result<Vec<Vec<u8>>, ImageError> {
    // A registry name is a host and port (checked by the reference parser): never a path.
    if registry.contains('/') || registry.starts_with('.') || certs_dir.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let dir = registry_dir(certs_dir, registry);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io("read", &dir, source)),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "crt"))
        .collect();
    paths.sort();
    paths.into_iter().map(read_ca).collect()
}

fn read_ca(path: PathBuf) -> Result<Vec<u8>, ImageError> {
    let pem = std::fs::read(&path).map_err(|source| io("read", &path, source))?;
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certificates {
        Ok(found) if !found.is_empty() => Ok(pem),
        Ok(_) => Err(not_pem(&path, "it holds no certificate".into())),
        Err(error) => Err(not_pem(&path, error.to_string())),
    }
}

fn not_pem(path: &Path, reason: String) -> ImageError {
    ImageError::Corrupt(format!(
        "the CA file {} is not PEM certificates ({reason}): put the registry's CA certificate there in PEM",
        path.display()
    ))
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> ImageError {
    ImageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a TLS failure says the registry's certificate chains to no trusted root.
pub fn is_unknown_ca(message: &str) -> bool {
    message.contains("UnknownIssuer") || message.contains("unknown issuer")
}

/// What to do about a registry whose CA this host does not trust.
pub fn unknown_ca_hint(certs_dir: &Path, registry: &str) -> String {
    format!(
        "the registry's certificate is signed by an unknown authority: if you trust it, put its CA certificate in {}",
        registry_dir(certs_dir, registry).join("ca.crt").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crt_files_of_that_registry_count_and_bad_ones_are_named() {
        let certs = std::env::temp_dir().join(format!("hostnetd-certs-{}", std::process::id()));
        let dir = certs.join("registry.lan:5000");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(registry_cas(&certs, "other.lan:5000").unwrap().is_empty());
        std::fs::write(dir.join("README"), "not a certificate").unwrap();
        assert!(registry_cas(&certs, "registry.lan:5000")
            .unwrap()
            .is_empty());
        std::fs::write(dir.join("ca.crt"), "garbage").unwrap();
        let error = registry_cas(&certs, "registry.lan:5000")
            .unwrap_err()
            .to_string();
        assert!(error.contains("registry.lan:5000/ca.crt"), "{error}");
        assert!(registry_cas(&certs, "../etc").unwrap().is_empty());
        std::fs::remove_dir_all(certs).unwrap();
    }
}
