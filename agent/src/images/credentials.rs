//! Registry credentials, kept in docker's config.json format at the `auth_file` setting:
//! ```json
//! { "auths": { "registry.lan:5000": { "auth": "<base64 of user:password>" } },
//!   "credsStore": "pass",
//!   "credHelpers": { "registry.corp:443": "secretservice" } }
//! ```
//! A registry named in `credHelpers`, or every registry when `credsStore` is set, keeps its
//! secret in the helper `docker-credential-NAME` (run as docker runs it: `get`, `store` or
//! `erase`, with the server address or the JSON on standard input, never in its arguments);
//! the others sit in `auths`. The file is root's alone (0600), keeps the keys hostnetd does not
//! use, and is read at each pull, so a login counts at once.
use std::{
    fmt,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde_json::{json, Map, Value};

/// Docker Hub's key in config.json, as docker writes it.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and its password (or token). Its Debug form hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot {action} the credentials file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the credentials file {path} is not docker's config.json format: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the credential helper docker-credential-{helper} failed to {action} the credentials of {registry}: {reason}")]
    Helper {
        helper: String,
        action: &'static str,
        registry: String,
        reason: String,
    },
}

/// The credentials file at one path (it need not exist yet).
#[derive(Clone, Debug)]
pub struct AuthFile {
    path: PathBuf,
}

impl AuthFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The credentials stored for `registry` (`host[:port]`), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        let config = self.read()?;
        if let Some(helper) = helper_for(&config, registry) {
            return Helper::new(helper, registry).get();
        }
        let entry = auths(&config).and_then(|auths| {
            auths
                .iter()
                .find(|(key, _)| registry_of_key(key) == registry)
                .map(|(_, entry)| entry)
        });
        entry.map(|entry| self.decode(entry)).transpose()
    }

    /// Stores `credentials` for `registry`, in its helper or in `auths`.
    pub fn store(&self, registry: &str, credentials: &Credentials) -> Result<(), CredentialError> {
        let mut config = self.read()?;
        if let Some(helper) = helper_for(&config, registry) {
            return Helper::new(helper, registry).store(credentials);
        }
        let auths = auths_mut(&mut config);
        auths.retain(|key, _| registry_of_key(key) != registry);
        let joined = format!("{}:{}", credentials.username, credentials.secret);
        auths.insert(
            server_key(registry),
            json!({ "auth": BASE64.encode(joined) }),
        );
        self.write(&config)
    }

    /// Forgets `registry`'s credentials; false when there were none.
    pub fn erase(&self, registry: &str) -> Result<bool, CredentialError> {
        let mut config = self.read()?;
        if let Some(helper) = helper_for(&config, registry) {
            return Helper::new(helper, registry).erase();
        }
        let auths = auths_mut(&mut config);
        let before = auths.len();
        auths.retain(|key, _| registry_of_key(key) != registry);
        if auths.len() == before {
            return Ok(false);
        }
        self.write(&config)?;
        Ok(true)
    }

    /// The file's object; a missing file is an empty one.
    fn read(&self) -> Result<Map<String, Value>, CredentialError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => return Err(self.io("read", source)),
        };
        match serde_json::from_slice(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(self.invalid("it is not a JSON object".into())),
            Err(error) => Err(self.invalid(error.to_string())),
        }
    }

    /// Written to a 0600 temporary sibling, fsynced and renamed: never readable by others,
    /// never torn.
    fn write(&self, config: &Map<String, Value>) -> Result<(), CredentialError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io("create the directory of", e))?;
        }
        let text = serde_json::to_vec_pretty(config).expect("a JSON map serialises");
        let tmp = self.path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(&text)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        written.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            self.io("write", source)
        })
    }

    /// An `auths` entry: `auth` (base64 of user:password), or docker's older username and
    /// password fields.
    fn decode(&self, entry: &Value) -> Result<Credentials, CredentialError> {
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        if let (Some(username), Some(secret)) = (field("username"), field("password")) {
            return Ok(Credentials {
                username: username.into(),
                secret: secret.into(),
            });
        }
        let auth = field("auth").ok_or_else(|| {
            self.invalid("an entry of \"auths\" has no \"auth\" (nor username and password)".into())
        })?;
        let decoded = (BASE64.decode(auth.trim()).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| self.invalid("an \"auth\" is not base64 of USER:PASSWORD".into()))?;
        let (username, secret) = decoded
            .split_once(':')
            .ok_or_else(|| self.invalid("an \"auth\" is not base64 of USER:PASSWORD".into()))?;
        Ok(Credentials {
            username: username.into(),
            secret: secret.into(),
        })
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> CredentialError {
        CredentialError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }

    fn invalid(&self, reason: String) -> CredentialError {
        CredentialError::Invalid {
            path: self.path.clone(),
            reason,
        }
    }
}

fn auths(config: &Map<String, Value>) -> Option<&Map<String, Value>> {
    config.get("auths").and_then(Value::as_object)
}

fn auths_mut(config: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let auths = config.entry("auths").or_insert_with(|| json!({}));
    if !auths.is_object() {
        *auths = json!({});
    }
    auths.as_object_mut().expect("made an object above")
}

/// The helper that keeps `registry`'s secret: its own in `credHelpers`, else `credsStore`.
fn helper_for(config: &Map<String, Value>, registry: &str) -> Option<String> {
    let own = (config.get("credHelpers").and_then(Value::as_object))
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(key, _)| registry_of_key(key) == registry)
        })
        .and_then(|(_, name)| name.as_str());
    let store = config.get("credsStore").and_then(Value::as_str);
    own.or(store)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

/// The key docker gives `registry` in config.json (and hands its helpers).
fn server_key(registry: &str) -> String {
    if registry == "docker.io" {
        DOCKER_HUB_KEY.into()
    } else {
        registry.into()
    }
}

/// The registry (`host[:port]`) a config.json key names: keys may carry a scheme and a path
/// (`https://index.docker.io/v1/`).
pub fn registry_of_key(key: &str) -> String {
    let bare = (key.strip_prefix("https://"))
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = bare.split('/').next().unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

/// A `docker-credential-NAME` program and the registry it is asked about.
struct Helper {
    name: String,
    registry: String,
}

impl Helper {
    fn new(name: String, registry: &str) -> Self {
        Self {
            name,
            registry: registry.to_string(),
        }
    }

    fn get(&self) -> Result<Option<Credentials>, CredentialError> {
        let output = self.run("get", &server_key(&self.registry))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stdout);
            if said.contains("credentials not found") {
                return Ok(None);
            }
            return Err(self.failed("get", describe(&output)));
        }
        let answer: Value = serde_json::from_slice(&output.stdout)
            .map_err(|error| self.failed("get", format!("its answer is not JSON: {error}")))?;
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_string);
        match (field("Username"), field("Secret")) {
            (Some(username), Some(secret)) => Ok(Some(Credentials { username, secret })),
            _ => Err(self.failed("get", "its answer lacks Username or Secret".into())),
        }
    }

    fn store(&self, credentials: &Credentials) -> Result<(), CredentialError> {
        let request = json!({
            "ServerURL": server_key(&self.registry),
            "Username": credentials.username,
            "Secret": credentials.secret,
        });
        let output = self.run("store", &request.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(self.failed("store", describe(&output)))
        }
    }

    fn erase(&self) -> Result<bool, CredentialError> {
        let output = self.run("erase", &server_key(&self.registry))?;
        if output.status.success() {
            return Ok(true);
        }
        let said = String::from_utf8_lossy(&output.stdout);
        if said.contains("credentials not found") {
            return Ok(false);
        }
        Err(self.failed("erase", describe(&output)))
    }

    /// `docker-credential-NAME ACTION` with `input` on its standard input: the one argument
    /// is the action, so no secret shows in the process list.
    fn run(
        &self,
        action: &'static str,
        input: &str,
    ) -> Result<std::process::Output, CredentialError> {
        let program = format!("docker-credential-{}", self.name);
        let mut child = Command::new(&program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| self.failed(action, format!("cannot run {program}: {error}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is judged by its exit status below.
            let _ = stdin.write_all(input.as_bytes());
        }
        child
            .wait_with_output()
            .map_err(|error| self.failed(action, error.to_string()))
    }

    fn failed(&self, action: &'static str, reason: String) -> CredentialError {
        CredentialError::Helper {
            helper: self.name.clone(),
            action,
            registry: self.registry.clone(),
            reason,
        }
    }
}

/// What a failed helper said (its output never holds the secret we sent: that went to its
/// standard input, which it does not echo).
fn describe(output: &std::process::Output) -> String {
    let said = [&output.stdout, &output.stderr]
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_string())
        .into_iter()
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    format!("{} ({})", said, output.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hostnetd-credentials-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn alice() -> Credentials {
        Credentials {
            username: "alice".into(),
            secret: "s3cret:with:colons".into(),
        }
    }

    #[test]
    fn stored_credentials_read_back_in_docker_format_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("store");
        let path = dir.join("auth.json");
        std::fs::write(&path, r#"{"auths":{},"HttpHeaders":{"X-Kept":"yes"}}"#).unwrap();
        let file = AuthFile::new(&path);
        assert_eq!(file.get("registry.lan:5000").unwrap(), None);
        file.store("registry.lan:5000", &alice()).unwrap();
        assert_eq!(file.get("registry.lan:5000").unwrap(), Some(alice()));
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            written["auths"]["registry.lan:5000"]["auth"],
            BASE64.encode("alice:s3cret:with:colons")
        );
        assert_eq!(
            written["HttpHeaders"]["X-Kept"], "yes",
            "foreign keys are kept"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(file.erase("registry.lan:5000").unwrap());
        assert!(!file.erase("registry.lan:5000").unwrap());
        assert_eq!(file.get("registry.lan:5000").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn docker_written_keys_match_their_registry() {
        let dir = scratch("keys");
        let path = dir.join("config.json");
        let auth = BASE64.encode("bob:pw");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"http://old.lan:5000/v2/":{{"username":"carol","password":"pw2"}}}}}}"#
            ),
        )
        .unwrap();
        let file = AuthFile::new(&path);
        assert_eq!(file.get("docker.io").unwrap().unwrap().username, "bob");
        assert_eq!(file.get("old.lan:5000").unwrap().unwrap().username, "carol");
        assert_eq!(file.get("old.lan").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_broken_file_is_named_and_the_secret_never_debug_printed() {
        let dir = scratch("broken");
        let path = dir.join("auth.json");
        std::fs::write(&path, r#"{"auths":{"r:1":{"auth":"%%%"}}}"#).unwrap();
        let error = AuthFile::new(&path).get("r:1").unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("not base64"), "{error}");
        assert!(!format!("{:?}", alice()).contains("s3cret"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_helper_takes_precedence_over_auths() {
        let config: Map<String, Value> = serde_json::from_str(
            r#"{"credsStore":"pass","credHelpers":{"gcr.io":"gcloud"},"auths":{}}"#,
        )
        .unwrap();
        assert_eq!(helper_for(&config, "gcr.io").as_deref(), Some("gcloud"));
        assert_eq!(helper_for(&config, "other.io").as_deref(), Some("pass"));
        assert_eq!(helper_for(&Map::new(), "other.io"), None);
    }
}
