//! The parts of an OCI image configuration that running a container uses.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// `application/vnd.oci.image.config.v1+json` (docker's config is the same shape).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

/// How the image wants to be run; every field may be absent (or null) in real images.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub working_dir: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: String,
    /// `"80/tcp": {}`; the values carry nothing.
    #[serde(default, deserialize_with = "null_as_default")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub stop_signal: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl ImageConfigFile {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let config: Self = serde_json::from_slice(bytes)
            .map_err(|e| format!("the image configuration is not valid: {e}"))?;
        if config.rootfs.kind != "layers" {
            return Err(format!(
                "the image configuration's rootfs type is {:?}, not \"layers\"",
                config.rootfs.kind
            ));
        }
        if !config.os.is_empty() && config.os != "linux" {
            return Err(format!(
                "the image is for {:?}, not linux: pick a linux image",
                config.os
            ));
        }
        Ok(config)
    }
}

impl RunConfig {
    /// The exposed ports as `--ports` specs (`80/tcp`); `80` alone means TCP, as in docker.
    pub fn exposed_port_specs(&self) -> Vec<String> {
        self.exposed_ports
            .keys()
            .map(|key| {
                if key.contains('/') {
                    key.clone()
                } else {
                    format!("{key}/tcp")
                }
            })
            .collect()
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_style_config_with_nulls_parses() {
        let json = br#"{"architecture":"amd64","os":"linux",
            "config":{"Env":["PATH=/bin"],"Cmd":null,"Entrypoint":["/init"],"WorkingDir":"",
                      "ExposedPorts":{"80/tcp":{},"53/udp":{},"8080":{}},"StopSignal":"SIGQUIT"},
            "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;
        let config = ImageConfigFile::parse(json).unwrap();
        assert_eq!(config.config.entrypoint, ["/init"]);
        assert!(config.config.cmd.is_empty());
        assert_eq!(config.config.stop_signal, "SIGQUIT");
        assert_eq!(
            config.config.exposed_port_specs(),
            ["53/udp", "80/tcp", "8080/tcp"]
        );
        assert_eq!(config.rootfs.diff_ids.len(), 1);
    }

    #[test]
    fn foreign_or_malformed_configs_are_refused() {
        let windows = br#"{"os":"windows","rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert!(ImageConfigFile::parse(windows)
            .unwrap_err()
            .contains("windows"));
        assert!(ImageConfigFile::parse(b"{}").is_err());
        let bad_digest = br#"{"rootfs":{"type":"layers","diff_ids":["md5:00"]}}"#;
        assert!(ImageConfigFile::parse(bad_digest).is_err());
    }
}
