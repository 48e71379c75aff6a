//! A token server for a docker-registry with `auth: token`, as Docker Hub, GitLab or Harbor
//! run one: HTTPS (a certificate of the test's CA) on a loopback port. `GET
//! /token?service=S&scope=repository:NAME:pull,push` with the right Basic credentials gets a
//! JWT granting those scopes; without credentials, a token granting nothing (the registry then
//! answers 401); with wrong ones, a 401 and a reason in `details`. Tokens are RS256-signed by a
//! key whose self-signed certificate is the registry's `rootcertbundle` and rides in the JWT's
//! `x5c` header, which is how docker/distribution's `registry/auth/token` finds the signing key.
//! Stopped on drop.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{
    engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL},
    Engine as _,
};
use ring::{
    rand::SystemRandom,
    signature::{RsaKeyPair, RSA_PKCS1_SHA256},
};
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    ServerConfig, ServerConnection, StreamOwned,
};

use crate::tls::{self_signed, TestCa};

/// The registry's name for itself (`aud` of its tokens) and the token server's (`iss`).
pub const SERVICE: &str = "hostnetd-test-registry";
pub const ISSUER: &str = "hostnetd-test-token-server";
/// What the token server says to a wrong password, so that tests can tell it came from here.
pub const WRONG_PASSWORD: &str = "the test token server knows no such user and password";

pub struct TokenServer {
    /// Where the registry sends clients for tokens: `https://127.0.0.1:PORT/token`.
    pub realm: String,
    /// The certificate of the signing key: the registry's `rootcertbundle`.
    pub signing_cert: PathBuf,
    grants: Arc<Mutex<Vec<String>>>,
    address: String,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the server thread needs to answer.
struct Issuer {
    tls: Arc<ServerConfig>,
    key: RsaKeyPair,
    /// The signing certificate, DER in standard base64, as `x5c` wants it.
    x5c: String,
    username: String,
    password: String,
    grants: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    /// Serves tokens to `username` (with `password`) on `port`, its TLS certificate signed by
    /// `tls`'s CA; its signing key and certificate go in `dir`.
    pub fn start(dir: &Path, port: u16, tls: &TestCa, username: &str, password: &str) -> Self {
        std::fs::create_dir_all(dir).expect("token server dir");
        let signing_cert = dir.join("token-signer.crt");
        let signing_key = dir.join("token-signer.key");
        self_signed(
            "hostnetd test token signer",
            &signing_key,
            &signing_cert,
            &[],
        );
        let address = format!("127.0.0.1:{port}");
        let listener = TcpListener::bind(&address).expect("bind the token server");
        let grants = Arc::new(Mutex::new(Vec::new()));
        let issuer = Issuer {
            tls: tls_config(&tls.server_cert, &tls.server_key),
            key: rsa_key(&signing_key),
            x5c: BASE64.encode(CertificateDer::from_pem_file(&signing_cert).expect("signer PEM")),
            username: username.into(),
            password: password.into(),
            grants: grants.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    issuer.serve(stream);
                }
            }
        });
        Self {
            realm: format!("https://{address}/token"),
            signing_cert,
            grants,
            address,
            stop,
            thread: Some(thread),
        }
    }

    /// Each token handed out with credentials: `USER SCOPE...` (none for an anonymous one).
    pub fn grants(&self) -> Vec<String> {
        self.grants.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept so that the thread sees the flag.
        let _ = TcpStream::connect(&self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn tls_config(cert: &Path, key: &Path) -> Arc<ServerConfig> {
    let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
        .expect("server certificate")
        .map(|cert| cert.expect("server certificate PEM"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("server key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("token server TLS config");
    Arc::new(config)
}

fn rsa_key(path: &Path) -> RsaKeyPair {
    let der = PrivatePkcs8KeyDer::from_pem_file(path).expect("signing key is PKCS#8 PEM");
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("signing key is RSA")
}

/// One request, as far as the token server reads it.
struct Request {
    target: String,
    authorization: Option<String>,
}

impl Issuer {
    /// Answers one request on `stream` and closes it; a client that fails TLS or says nothing
    /// useful is dropped.
    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let connection = match ServerConnection::new(self.tls.clone()) {
            Ok(connection) => connection,
            Err(_) => return,
        };
        let mut tls = StreamOwned::new(connection, stream);
        let Some(request) = read_request(&mut tls) else {
            return;
        };
        let (status, body) = self.answer(&request);
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tls.write_all(response.as_bytes());
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }

    fn answer(&self, request: &Request) -> (&'static str, String) {
        let Some(query) = request.target.strip_prefix("/token") else {
            return ("404 Not Found", r#"{"details":"no such path"}"#.into());
        };
        let query = query.trim_start_matches('?');
        let scopes: Vec<String> = form_urlencoded::parse(query.as_bytes())
            .filter(|(key, _)| key == "scope")
            .map(|(_, value)| value.into_owned())
            .collect();
        let subject = match request.authorization.as_deref().map(basic_credentials) {
            None => String::new(),
            Some(Some((user, password))) if user == self.username && password == self.password => {
                self.grants
                    .lock()
                    .unwrap()
                    .push(format!("{user} {}", scopes.join(" ")).trim().to_string());
                user
            }
            Some(_) => {
                let body = serde_json::json!({ "details": WRONG_PASSWORD });
                return ("401 Unauthorized", body.to_string());
            }
        };
        let access = if subject.is_empty() {
            Vec::new()
        } else {
            scopes
                .iter()
                .filter_map(|scope| access_entry(scope))
                .collect()
        };
        let token = self.token(&subject, access);
        let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 });
        ("200 OK", body.to_string())
    }

    /// A JWT as docker/distribution's token auth checks it: issuer, audience (the service),
    /// lifetime, the access it grants, and a signature by a key certified in its bundle.
    fn token(&self, subject: &str, access: Vec<serde_json::Value>) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [self.x5c] });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now.as_secs() + 300,
            "nbf": now.as_secs() - 10,
            "iat": now.as_secs(),
            "jti": format!("{}-{}", std::process::id(), now.as_nanos()),
            "access": access,
        });
        let signed = format!(
            "{}.{}",
            BASE64URL.encode(header.to_string()),
            BASE64URL.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .expect("sign the token");
        format!("{signed}.{}", BASE64URL.encode(signature))
    }
}

/// The request line's target and the Authorization header; None when the client sent no
/// complete request head.
fn read_request(stream: &mut impl std::io::Read) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    let mut authorization = None;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            return Some(Request {
                target,
                authorization,
            });
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
}

/// `Basic base64(user:password)` into its parts; None for another scheme or a broken one.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `repository:NAME:pull,push` as a claim's access entry (only pull and push are granted).
fn access_entry(scope: &str) -> Option<serde_json::Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = (actions.split(','))
        .filter(|action| ["pull", "push"].contains(action))
        .collect();
    (kind == "repository")
        .then(|| serde_json::json!({ "type": kind, "name": name, "actions": actions }))
}
