//! TLS for the test registries: a CA made for one test with the openssl CLI, and the
//! certificates it signs.
use std::path::{Path, PathBuf};

use crate::run_ok;

/// A CA made for one test with the openssl CLI, and a certificate for 127.0.0.1 it signed.
#[derive(Clone, Debug)]
pub struct TestCa {
    pub dir: PathBuf,
    /// Holds only `ca.crt`: what goes in certs.d (and skopeo's --dest-cert-dir).
    pub ca_dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> Self {
        let ca_dir = dir.join("ca");
        std::fs::create_dir_all(&ca_dir).expect("CA dir");
        let ca = Self {
            dir: dir.to_path_buf(),
            ca_cert: ca_dir.join("ca.crt"),
            ca_dir,
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        let ca_key = dir.join("ca.key");
        let csr = dir.join("server.csr");
        let extensions = dir.join("server.ext");
        std::fs::write(
            &extensions,
            "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n",
        )
        .unwrap();
        let path = |path: &PathBuf| path.to_string_lossy().into_owned();
        self_signed(
            "hostnetd test CA",
            &ca_key,
            &ca.ca_cert,
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &path(&ca.server_key),
            "-out",
            &path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&ca.ca_cert),
            "-CAkey",
            &path(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path(&extensions),
            "-out",
            &path(&ca.server_cert),
        ]);
        ca
    }
}

/// A new RSA key (PKCS#8 PEM) in `key` and a certificate for it, signed by itself, in `cert`;
/// `extra` are more `openssl req` arguments (extensions).
pub fn self_signed(common_name: &str, key: &Path, cert: &Path, extra: &[&str]) {
    let subject = format!("/CN={common_name}");
    let (key, cert) = (key.to_string_lossy(), cert.to_string_lossy());
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ];
    args.extend(["-subj", &subject, "-keyout", &key, "-out", &cert]);
    args.extend(extra);
    openssl(&args);
}

pub(crate) fn openssl(args: &[&str]) {
    run_ok(&[&["openssl"], args].concat());
}
