//! A real OCI registry (Debian's docker-registry) on a loopback port, storing in a scratch
//! directory: plain HTTP, or HTTPS with a CA made for the test and one user, checked by
//! htpasswd or by a token server of the test's (bearer-token auth). Killed on drop.
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};

pub use crate::tls::TestCa;
use crate::{describe, token_server::TokenServer};

pub struct Registry {
    pub address: String,
    pub storage: PathBuf,
    /// How skopeo pushes to it: the CA's directory and the user, for a secure one.
    secure: Option<Secure>,
    /// Hands out the tokens of a registry with token auth; stops with the registry.
    pub token_server: Option<TokenServer>,
    child: Child,
}

/// What makes a registry secure: its TLS files and its one user.
#[derive(Clone, Debug)]
pub struct Secure {
    pub tls: TestCa,
    pub username: String,
    pub password: String,
}

impl Registry {
    /// A plain-HTTP registry without authentication.
    pub fn start(scratch: &Path, port: u16) -> Self {
        Self::start_with(scratch, port, None, None)
    }

    /// An HTTPS registry (its certificate signed by `secure.tls`'s CA) that lets only
    /// `secure.username` in, with htpasswd (bcrypt) authentication.
    pub fn start_secure(scratch: &Path, port: u16, secure: &Secure) -> Self {
        Self::start_with(scratch, port, Some(secure.clone()), None)
    }

    /// An HTTPS registry (its certificate signed by `secure.tls`'s CA) that takes only tokens
    /// of a token server on `token_port`, which gives them to `secure.username` alone.
    pub fn start_token_auth(scratch: &Path, port: u16, token_port: u16, secure: &Secure) -> Self {
        let dir = scratch.join(format!("token-server-{token_port}"));
        let token_server = TokenServer::start(
            &dir,
            token_port,
            &secure.tls,
            &secure.username,
            &secure.password,
        );
        Self::start_with(scratch, port, Some(secure.clone()), Some(token_server))
    }

    fn start_with(
        scratch: &Path,
        port: u16,
        secure: Option<Secure>,
        token_server: Option<TokenServer>,
    ) -> Self {
        let dir = scratch.join(format!("registry-{port}"));
        let storage = dir.join("data");
        std::fs::create_dir_all(&storage).expect("registry dir");
        let address = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
            storage.display()
        );
        if let Some(secure) = &secure {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                secure.tls.server_cert.display(),
                secure.tls.server_key.display(),
            ));
            config.push_str(&match &token_server {
                Some(tokens) => token_auth_config(tokens),
                None => htpasswd_config(&dir, secure),
            });
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (installed by `cargo xtask setup`)");
        let registry = Self {
            address,
            storage,
            secure,
            token_server,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.address).is_err() {
            assert!(Instant::now() < deadline, "the registry never listened");
            thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Pushes an oci-archive to `REGISTRY/repository` with skopeo; returns the reference. To
    /// a secure registry, skopeo trusts the test's CA and reads the user from an auth file
    /// (removed after), so the password is in no process's arguments.
    pub fn push(&self, archive: &Path, repository: &str) -> String {
        let reference = format!("{}/{repository}", self.address);
        let mut command = Command::new("skopeo");
        command.args(["copy", "--quiet"]);
        let auth_file = self.secure.as_ref().map(|secure| {
            let path = secure.tls.dir.join("skopeo-auth.json");
            let auth = BASE64.encode(format!("{}:{}", secure.username, secure.password));
            let json = serde_json::json!({ "auths": { &self.address: { "auth": auth } } });
            std::fs::write(&path, json.to_string()).unwrap();
            command
                .arg("--dest-cert-dir")
                .arg(&secure.tls.ca_dir)
                .arg("--dest-authfile")
                .arg(&path);
            path
        });
        if auth_file.is_none() {
            command.arg("--dest-tls-verify=false");
        }
        let output = command
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("run skopeo (installed by `cargo xtask setup`)");
        if let Some(path) = auth_file {
            let _ = std::fs::remove_file(path);
        }
        assert!(
            output.status.success(),
            "skopeo push: {}",
            describe(&output)
        );
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `auth: htpasswd` with `secure`'s user alone, its file in `dir`.
fn htpasswd_config(dir: &Path, secure: &Secure) -> String {
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash(&secure.password, 4).expect("bcrypt");
    std::fs::write(&htpasswd, format!("{}:{hash}\n", secure.username)).unwrap();
    format!(
        "auth:\n  htpasswd:\n    realm: hostnetd-test\n    path: {}\n",
        htpasswd.display()
    )
}

/// `auth: token`: clients get tokens at the token server's realm; the registry trusts those
/// signed by the key its certificate names.
fn token_auth_config(tokens: &TokenServer) -> String {
    format!(
        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        tokens.realm,
        crate::token_server::SERVICE,
        crate::token_server::ISSUER,
        tokens.signing_cert.display()
    )
}
