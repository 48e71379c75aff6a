//! Registry credentials and TLS: a real docker-registry behind HTTPS (a CA the test makes) with
//! htpasswd users, or with bearer-token auth (a token server of the test's). Its CA is trusted
//! only once it is in certs.d; its images pull only after `hostnetd login`, which checks the
//! password first; the password shows nowhere. Ports 28100-28199 (htpasswd) and 28400-28449
//! (token auth).
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use hostnetd_tests::{
    describe,
    registry::{Registry, Secure, TestCa},
    sample_image, skip_unless_root, stderr, stdout,
    token_server::WRONG_PASSWORD,
    TestHost,
};

const PORT: u16 = 28100;
/// The token-auth registry and its token server.
const TOKEN_PORT: u16 = 28400;

/// A host whose certs.d is in its scratch directory (its auth file is there by default).
fn host_with_certs_dir() -> (TestHost, PathBuf) {
    let mut host = TestHost::new();
    let certs = host.scratch().join("certs.d");
    host.set_env("HOSTNETD_CERTS_DIR", &certs.to_string_lossy());
    (host, certs)
}

/// A user with a password of this run's (`PREFIX<pid>-Zq8`), and a CA made in the host's scratch
/// directory for the registry's certificate.
fn user_with_ca(host: &TestHost, username: &str, password_prefix: &str) -> Secure {
    Secure {
        tls: TestCa::new(&host.scratch().join("tls")),
        username: username.into(),
        password: format!("{password_prefix}{}-Zq8", std::process::id()),
    }
}

/// `hostnetd login -u USER --password-stdin REGISTRY` with `password` piped in.
fn login(host: &TestHost, registry: &str, username: &str, password: &str) -> Output {
    let mut child = host
        .hostnetd()
        .args(["login", "-u", username, "--password-stdin", registry])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hostnetd login");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

fn refused_with(output: &Output, expected: &str) {
    assert_eq!(output.status.code(), Some(125), "{}", describe(output));
    assert!(stderr(output).contains(expected), "{}", describe(output));
}

/// Every regular file under `dir` (but `skip`) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str, skip: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files_containing(&path, needle, skip));
        } else if kind.is_file() && path != skip {
            let bytes = fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(path);
            }
        }
    }
    found
}

/// Reads every process's command line until stopped; returns those that held `needle`.
struct CmdlineWatch {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<String>>,
}

impl CmdlineWatch {
    fn start(needle: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let needle = needle.to_string();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                    let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    if text.contains(&needle) {
                        seen.push(text);
                    }
                }
                thread::sleep(std::time::Duration::from_millis(2));
            }
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A pull of `image` without credentials is refused with the way to give them; a login with a
/// wrong password with `refusal`, storing nothing; then the right password is taken.
fn private_until_logged_in(
    host: &TestHost,
    image: &str,
    secure: &Secure,
    auth_file: &Path,
    refusal: &str,
) {
    let address = image.split('/').next().unwrap();
    refused_with(
        &host.exec(&["pull", image]),
        &format!("log in with `hostnetd login {address}`"),
    );
    let wrong = login(host, address, &secure.username, "not-the-password");
    refused_with(&wrong, &format!("login to {address} refused: {refusal}"));
    assert!(!auth_file.exists(), "a refused login stored credentials");
    let right = login(host, address, &secure.username, &secure.password);
    assert!(right.status.success(), "login: {}", describe(&right));
    assert_eq!(stdout(&right), "Login Succeeded\n");
}

/// pull and run (which pulls what is missing) with the stored credentials, no command line
/// showing the password; leaves the container `private` running for the checks after.
fn pull_and_run_with_stored_credentials(host: &TestHost, image: &str, password: &str) {
    let watch = CmdlineWatch::start(password);
    let pulled = host.exec(&["pull", image]);
    assert!(pulled.status.success(), "pull: {}", describe(&pulled));
    let removed = host.exec(&["rmi", image]);
    assert!(removed.status.success(), "rmi: {}", describe(&removed));
    let ran = host.exec(&["run", "--rm", image, "echo", "from the private registry"]);
    assert!(ran.status.success(), "run: {}", describe(&ran));
    assert_eq!(stdout(&ran), "from the private registry\n");
    let started = host.exec(&["run", "-d", "--name", "private", image, "sleep", "60"]);
    assert!(started.status.success(), "run -d: {}", describe(&started));
    let seen = watch.finish();
    assert!(
        seen.is_empty(),
        "the password was in a command line: {seen:?}"
    );
}

/// The password is in no answer, log or file but the auth file; removes `private` after.
fn assert_password_nowhere_but(host: &TestHost, password: &str, auth_file: &Path) {
    for args in [
        &["ps", "-a"][..],
        &["inspect", "private"],
        &["images", "--format", "json"],
        &["info"],
    ] {
        let output = host.exec(args);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
        let text = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!text.contains(password), "{args:?} shows the password");
    }
    let log = fs::read_to_string(host.scratch().join("run/hostnetd.log")).unwrap();
    assert!(log.contains("logged in"), "the daemon logs logins: {log}");
    assert!(!log.contains(password), "the daemon log holds the password");
    let leaks = files_containing(host.scratch(), password, auth_file);
    assert!(leaks.is_empty(), "the password is in {leaks:?}");
    let removed = host.exec(&["rm", "-f", "private"]);
    assert!(removed.status.success(), "rm: {}", describe(&removed));
}

/// logout: private again; a second logout says there was nothing.
fn logout_makes_it_private_again(host: &TestHost, address: &str, image: &str, auth_file: &Path) {
    let logout = host.exec(&["logout", address]);
    assert!(logout.status.success(), "logout: {}", describe(&logout));
    assert_eq!(
        stdout(&logout),
        format!("Removing login credentials for {address}\n")
    );
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(auth_file).unwrap()).unwrap();
    assert_eq!(stored["auths"], serde_json::json!({}));
    let removed = host.exec(&["rmi", image]);
    assert!(removed.status.success(), "rmi: {}", describe(&removed));
    refused_with(
        &host.exec(&["pull", image]),
        &format!("hostnetd login {address}"),
    );
    let again = host.exec(&["logout", address]);
    assert!(again.status.success(), "logout: {}", describe(&again));
    assert_eq!(stdout(&again), format!("Not logged in to {address}\n"));
}

#[test]
fn private_registry_over_tls_needs_its_ca_and_a_checked_login() {
    if skip_unless_root() {
        return;
    }
    let (host, certs) = host_with_certs_dir();
    let secure = user_with_ca(&host, "hostnetd-user", "pw-");
    let password = secure.password.clone();
    let registry = Registry::start_secure(host.scratch(), PORT, &secure);
    let image = registry.push(&sample_image("busybox.tar"), "private/busybox:v1");
    let address = registry.address.as_str();
    let auth_file = host.scratch().join("state/auth.json");
    let ca_home = certs.join(address).join("ca.crt");

    // An unknown CA: refused, naming where its certificate goes; nothing stored.
    let pull = host.exec(&["pull", &image]);
    refused_with(
        &pull,
        &format!("put its CA certificate in {}", ca_home.display()),
    );
    let unknown = login(&host, address, &secure.username, &password);
    refused_with(
        &unknown,
        &format!("put its CA certificate in {}", ca_home.display()),
    );
    assert!(!auth_file.exists(), "a failed login stored credentials");

    fs::create_dir_all(ca_home.parent().unwrap()).unwrap();
    fs::copy(&secure.tls.ca_cert, &ca_home).unwrap();

    // Trusted now, but private; a wrong password gets the registry's reason.
    private_until_logged_in(
        &host,
        &image,
        &secure,
        &auth_file,
        "unauthorized: authentication required",
    );
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&auth_file).unwrap()).unwrap();
    assert!(stored["auths"][address]["auth"].is_string(), "{stored}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&auth_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // A later wrong password leaves the stored credentials as they were.
    let stored_text = fs::read(&auth_file).unwrap();
    refused_with(&login(&host, address, &secure.username, "nope"), "refused");
    assert_eq!(fs::read(&auth_file).unwrap(), stored_text);

    pull_and_run_with_stored_credentials(&host, &image, &password);
    assert_password_nowhere_but(&host, &password, &auth_file);
    logout_makes_it_private_again(&host, address, &image, &auth_file);
    host.assert_no_container_left();
}

/// credsStore: the secret goes to the helper on its standard input and comes back from it;
/// the auth file holds no password.
#[test]
fn a_credential_helper_keeps_the_secret() {
    if skip_unless_root() {
        return;
    }
    let (mut host, certs) = host_with_certs_dir();
    let secure = user_with_ca(&host, "helper-user", "helper-pw-");
    let password = secure.password.clone();
    let registry = Registry::start_secure(host.scratch(), PORT + 1, &secure);
    let image = registry.push(&sample_image("busybox.tar"), "private/helper:v1");
    let address = registry.address.as_str();
    let ca_home = certs.join(address);
    fs::create_dir_all(&ca_home).unwrap();
    fs::copy(&secure.tls.ca_cert, ca_home.join("registry-ca.crt")).unwrap();

    // A helper that keeps what it is given in a file of its own, as `pass` would.
    let bin = host.scratch().join("bin");
    let vault = host.scratch().join("vault");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-hntest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nvault={vault}\ncase \"$1\" in\n  store) cat > \"$vault\" ;;\n  get) read server; if [ -s \"$vault\" ]; then cat \"$vault\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n  erase) read server; if [ -s \"$vault\" ]; then rm \"$vault\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\nesac\n",
            vault = vault.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    host.set_env("PATH", &path);
    let auth_file = host.scratch().join("state/auth.json");
    fs::create_dir_all(auth_file.parent().unwrap()).unwrap();
    fs::write(&auth_file, r#"{"credsStore":"hntest"}"#).unwrap();

    refused_with(
        &host.exec(&["pull", &image]),
        &format!("hostnetd login {address}"),
    );
    let right = login(&host, address, &secure.username, &password);
    assert!(right.status.success(), "login: {}", describe(&right));
    let kept: serde_json::Value = serde_json::from_slice(&fs::read(&vault).unwrap()).unwrap();
    assert_eq!(kept["Secret"], password.as_str());
    assert_eq!(kept["ServerURL"], address);
    assert!(!fs::read_to_string(&auth_file).unwrap().contains(&password));
    let pulled = host.exec(&["pull", &image]);
    assert!(pulled.status.success(), "pull: {}", describe(&pulled));
    let logout = host.exec(&["logout", address]);
    assert_eq!(
        stdout(&logout),
        format!("Removing login credentials for {address}\n")
    );
    assert!(!vault.exists(), "the helper was not asked to erase");
}

/// Bearer-token auth, as Docker Hub, GitLab and Harbor do it: the registry takes only tokens
/// of a token server (its realm), which checks the credentials. login asks the realm; pull and
/// run get their tokens there with the stored credentials.
#[test]
fn a_token_auth_registry_hands_out_pulls_for_a_checked_login() {
    if skip_unless_root() {
        return;
    }
    let (host, certs) = host_with_certs_dir();
    let secure = user_with_ca(&host, "token-user", "token-pw-");
    let password = secure.password.clone();
    let registry = Registry::start_token_auth(host.scratch(), TOKEN_PORT, TOKEN_PORT + 1, &secure);
    let image = registry.push(&sample_image("busybox.tar"), "private/tokens:v1");
    let tokens = registry.token_server.as_ref().unwrap();
    assert_eq!(
        tokens.grants(),
        ["token-user repository:private/tokens:pull,push"],
        "skopeo pushed with a token of the user's"
    );
    let address = registry.address.as_str();
    let auth_file = host.scratch().join("state/auth.json");
    // The CA signs the registry's and the realm's certificates alike.
    let ca_home = certs.join(address);
    fs::create_dir_all(&ca_home).unwrap();
    fs::copy(&secure.tls.ca_cert, ca_home.join("ca.crt")).unwrap();

    // Anonymous, the realm gives a token that grants nothing and the registry says 401; a
    // wrong password gets the token server's reason.
    private_until_logged_in(
        &host,
        &image,
        &secure,
        &auth_file,
        &format!("{WRONG_PASSWORD} (401 Unauthorized)"),
    );
    let granted = tokens.grants().len();

    pull_and_run_with_stored_credentials(&host, &image, &password);
    let pulls: Vec<String> = tokens.grants().split_off(granted);
    assert!(
        !pulls.is_empty()
            && pulls
                .iter()
                .all(|grant| grant == "token-user repository:private/tokens:pull"),
        "pull and run asked the realm for pull tokens with the stored credentials: {pulls:?}"
    );
    assert_password_nowhere_but(&host, &password, &auth_file);
    logout_makes_it_private_again(&host, address, &image, &auth_file);

    // Stored credentials the token server no longer takes (a changed password): refused with
    // its reason, saying to log in again.
    let stale = format!("{}:an-old-password", secure.username);
    let auths = serde_json::json!({ "auths": { address: { "auth": BASE64.encode(stale) } } });
    fs::write(&auth_file, auths.to_string()).unwrap();
    refused_with(
        &host.exec(&["pull", &image]),
        &format!("the token server says: {WRONG_PASSWORD}; the registry refused the credentials stored for {address}: log in again"),
    );
    host.assert_no_container_left();
}
