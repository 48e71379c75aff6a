//! What a bundle says about its container: whether it shares the host's network namespace,
//! which engine made it and under what name, and what it declares (`io.hostnetd.*`
//! annotations; for Docker, which cannot set annotations before Engine 24, its labels too).
use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use hostnetd::api::engine::{
    EngineAdmission, EGRESS_ALLOW_KEY, EGRESS_DENY_KEY, EGRESS_RATE_KEY, INGRESS_ALLOW_KEY,
    INGRESS_RATE_KEY, PORTS_KEY,
};
use serde_json::Value;

/// The parts of a bundle's config.json hostnetd-runc reads.
pub struct Bundle {
    dir: PathBuf,
    spec: Value,
}

impl Bundle {
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join("config.json");
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the bundle's {}: {e}", path.display()))?;
        let spec = serde_json::from_str(&text)
            .map_err(|e| format!("the bundle's {} is not JSON: {e}", path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            spec,
        })
    }

    #[cfg(test)]
    pub fn from_value(spec: Value) -> Self {
        Self {
            dir: PathBuf::from("/bundle"),
            spec,
        }
    }

    /// Whether the container uses the network namespace `host_netns` is (this process's):
    /// no network namespace in the spec, or one whose path is that same namespace (Docker's
    /// `--network host` names a bind mount of it).
    pub fn shares_network(&self, host_netns: &Path) -> bool {
        // A pod's sandbox (its pause container) binds nothing: its app containers are admitted.
        if self
            .annotations()
            .get(CRI_CONTAINER_TYPE)
            .map(String::as_str)
            == Some("sandbox")
        {
            return false;
        }
        let namespaces = self.spec["linux"]["namespaces"].as_array();
        let network = namespaces
            .into_iter()
            .flatten()
            .find(|namespace| namespace["type"] == "network");
        let Some(network) = network else {
            return true;
        };
        match network["path"].as_str() {
            Some(path) if !path.is_empty() => same_file(Path::new(path), host_netns),
            _ => false,
        }
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        string_map(&self.spec["annotations"])
    }

    fn command(&self) -> Vec<String> {
        (self.spec["process"]["args"]
            .as_array()
            .into_iter()
            .flatten())
        .filter_map(|arg| arg.as_str().map(str::to_string))
        .collect()
    }

    /// Docker's record of the container: the directory holding `config.v2.json`, found from
    /// the source of the bundle's /etc/hostname mount (`<data-root>/containers/<id>/hostname`),
    /// so that any `--data-root` works.
    fn docker_container_dir(&self, id: &str) -> Option<PathBuf> {
        let mounts = self.spec["mounts"].as_array()?;
        let hostname = mounts
            .iter()
            .find(|mount| mount["destination"] == "/etc/hostname")?;
        let dir = Path::new(hostname["source"].as_str()?).parent()?;
        (dir.file_name()? == id && dir.join("config.v2.json").is_file()).then(|| dir.to_path_buf())
    }

    /// The admission for container `id`, whose init process is `init_pid` in `cgroup`.
    pub fn admission(
        &self,
        id: &str,
        init_pid: u32,
        cgroup: String,
    ) -> Result<EngineAdmission, String> {
        let annotations = self.annotations();
        let engine = match self.docker_container_dir(id) {
            Some(dir) => EngineView::docker(&dir)?,
            None => EngineView::from_annotations(&annotations, &self.dir, id),
        };
        // A pod's annotations reach each of its containers: `KEY.<container>` declares for
        // one of them. An annotation wins over a label of the same name.
        let container = annotations.get(CRI_CONTAINER_NAME);
        let declared = |key: &str| -> Option<Vec<String>> {
            let own = container.and_then(|name| annotations.get(&format!("{key}.{name}")));
            (own.or_else(|| annotations.get(key)))
                .or_else(|| engine.labels.get(key))
                .map(|value| vec![value.clone()])
        };
        Ok(EngineAdmission {
            id: id.to_string(),
            cgroup,
            init_pid,
            command: self.command(),
            image: engine.image.clone(),
            // Docker folds the image's EXPOSE, `--expose` and `-p`'s container ports (which it
            // otherwise discards in host mode) into ExposedPorts: declared unless told.
            ports: declared(PORTS_KEY).unwrap_or_else(|| engine.exposed.clone()),
            egress_allow: declared(EGRESS_ALLOW_KEY).unwrap_or_default(),
            egress_deny: declared(EGRESS_DENY_KEY).unwrap_or_default(),
            ingress_allow: declared(INGRESS_ALLOW_KEY).unwrap_or_default(),
            egress_rate: declared(EGRESS_RATE_KEY).and_then(|values| values.into_iter().next()),
            ingress_rate: declared(INGRESS_RATE_KEY).and_then(|values| values.into_iter().next()),
            engine: engine.engine,
            name: engine.name,
        })
    }
}

/// What the engine knows of the container.
struct EngineView {
    engine: String,
    name: String,
    labels: BTreeMap<String, String>,
    image: Option<String>,
    /// Ports as `80/tcp`.
    exposed: Vec<String>,
}

impl EngineView {
    /// Docker's record of the container: its config.v2.json.
    fn docker(dir: &Path) -> Result<Self, String> {
        let path = dir.join("config.v2.json");
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let id = dir.file_name().unwrap_or_default().to_string_lossy();
        let name = (config["Name"].as_str())
            .map(|name| name.trim_start_matches('/').to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| id.into_owned());
        Ok(Self {
            engine: "docker".into(),
            name,
            labels: string_map(&config["Config"]["Labels"]),
            image: config["Config"]["Image"].as_str().map(str::to_string),
            exposed: (config["Config"]["ExposedPorts"]
                .as_object()
                .into_iter()
                .flatten())
            .map(|(port, _)| port.clone())
            .collect(),
        })
    }

    fn from_annotations(annotations: &BTreeMap<String, String>, bundle: &Path, id: &str) -> Self {
        let (engine, name) = engine_of(annotations, bundle, id);
        Self {
            engine,
            name,
            labels: BTreeMap::new(),
            image: annotations.get("io.kubernetes.cri.image-name").cloned(),
            exposed: Vec::new(),
        }
    }
}

/// The engine and the container's name, from the annotations engines other than Docker set,
/// and for containerd's own clients (`ctr`, nerdctl) from where its shim keeps the bundle
/// (`.../io.containerd.runtime.v2.task/<namespace>/<id>`).
fn engine_of(annotations: &BTreeMap<String, String>, bundle: &Path, id: &str) -> (String, String) {
    let get = |key: &str| annotations.get(key).cloned();
    if let Some(container) = get(CRI_CONTAINER_NAME) {
        let pod = get("io.kubernetes.cri.sandbox-name").unwrap_or_default();
        let namespace = get("io.kubernetes.cri.sandbox-namespace").unwrap_or_default();
        return (
            "kubernetes".into(),
            format!("{namespace}/{pod}/{container}"),
        );
    }
    if get("io.container.manager").as_deref() == Some("libpod") {
        let name = conmon_name(&parent_command_line()).unwrap_or_else(|| id.to_string());
        return ("podman".into(), name);
    }
    let parent = bundle.parent();
    let grandparent = parent.and_then(Path::parent);
    if grandparent.and_then(Path::file_name) == Some(CONTAINERD_TASKS.as_ref()) {
        let namespace = parent.and_then(Path::file_name).unwrap_or_default();
        return (
            "containerd".into(),
            format!("{}/{id}", namespace.to_string_lossy()),
        );
    }
    ("oci".into(), id.to_string())
}

/// The command line of the process that called this runtime.
fn parent_command_line() -> Vec<String> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let raw = fs::read(format!("/proc/{parent}/cmdline")).unwrap_or_default();
    (raw.split(|&byte| byte == 0))
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The container's name from podman's conmon, which calls the runtime and is given the name
/// (`-n NAME`): podman puts it nowhere in the bundle.
fn conmon_name(command_line: &[String]) -> Option<String> {
    let program = command_line.first()?;
    if !program.ends_with("conmon") {
        return None;
    }
    let mut args = command_line.iter();
    args.find(|arg| *arg == "-n" || *arg == "--name")?;
    args.next().cloned()
}

/// The annotations containerd's CRI gives each container of a pod.
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The directory containerd's runc shim keeps its bundles in, by namespace.
const CONTAINERD_TASKS: &str = "io.containerd.runtime.v2.task";

fn string_map(value: &Value) -> BTreeMap<String, String> {
    (value.as_object().into_iter().flatten())
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
        .collect()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: &str = "/proc/self/ns/net";

    #[test]
    fn the_host_network_is_no_namespace_or_the_hosts_own() {
        let none = Bundle::from_value(json!({"linux": {"namespaces": [{"type": "pid"}]}}));
        assert!(none.shares_network(Path::new(HOST)));
        let docker_host = json!({"linux": {"namespaces": [{"type": "network", "path": HOST}]}});
        assert!(Bundle::from_value(docker_host).shares_network(Path::new(HOST)));
        let own = json!({"linux": {"namespaces": [{"type": "network"}]}});
        assert!(!Bundle::from_value(own).shares_network(Path::new(HOST)));
        let other =
            json!({"linux": {"namespaces": [{"type": "network", "path": "/proc/self/ns/mnt"}]}});
        assert!(!Bundle::from_value(other).shares_network(Path::new(HOST)));
    }

    #[test]
    fn annotations_declare_and_name_the_engine() {
        let spec = json!({
            "process": {"args": ["nginx", "-g", "daemon off;"]},
            "annotations": {
                "io.hostnetd.ports": "80,443",
                "io.hostnetd.egress-allow": "10.0.0.0/8",
                "io.kubernetes.cri.container-name": "web",
                "io.kubernetes.cri.sandbox-name": "web-7d9",
                "io.kubernetes.cri.sandbox-namespace": "shop"
            }
        });
        let admission = Bundle::from_value(spec)
            .admission("c1", 42, "/kubepods/pod1/c1".into())
            .unwrap();
        assert_eq!(admission.engine, "kubernetes");
        assert_eq!(admission.name, "shop/web-7d9/web");
        assert_eq!(admission.ports, ["80,443"]);
        assert_eq!(admission.egress_allow, ["10.0.0.0/8"]);
        assert!(admission.egress_deny.is_empty());
        assert_eq!(admission.command, ["nginx", "-g", "daemon off;"]);
    }

    #[test]
    fn a_pods_containers_declare_each_their_own_and_its_sandbox_passes_through() {
        let pod = |container: &str, kind: &str| {
            json!({"annotations": {
                "io.hostnetd.ports": "9090",
                "io.hostnetd.ports.web": "80,443",
                "io.kubernetes.cri.container-name": container,
                "io.kubernetes.cri.container-type": kind
            }})
        };
        let host = Path::new(HOST);
        let web = Bundle::from_value(pod("web", "container"));
        assert!(web.shares_network(host));
        assert_eq!(
            web.admission("a", 1, "/k".into()).unwrap().ports,
            ["80,443"]
        );
        let metrics = Bundle::from_value(pod("metrics", "container"));
        assert_eq!(
            metrics.admission("b", 1, "/k".into()).unwrap().ports,
            ["9090"]
        );
        assert!(!Bundle::from_value(pod("", "sandbox")).shares_network(host));
    }

    #[test]
    fn podmans_name_is_read_from_conmon() {
        let line = |text: &str| text.split(' ').map(str::to_string).collect::<Vec<_>>();
        let conmon = line("/usr/bin/conmon --api-version 1 -c abc -u abc -r /x -n web -l f");
        assert_eq!(conmon_name(&conmon).as_deref(), Some("web"));
        assert_eq!(conmon_name(&line("/usr/bin/containerd-shim -n web")), None);
        assert_eq!(conmon_name(&line("/usr/bin/conmon -c abc")), None);
    }

    #[test]
    fn containerds_bundle_names_its_namespace() {
        let bundle = Path::new("/run/containerd/io.containerd.runtime.v2.task/shop/web1");
        let (engine, name) = engine_of(&BTreeMap::new(), bundle, "web1");
        assert_eq!(
            (engine.as_str(), name.as_str()),
            ("containerd", "shop/web1")
        );
        let elsewhere = engine_of(&BTreeMap::new(), Path::new("/srv/bundles/web1"), "web1");
        assert_eq!(elsewhere, ("oci".to_string(), "web1".to_string()));
    }

    #[test]
    fn docker_labels_declare_and_exposed_ports_are_the_default() {
        let root =
            std::env::temp_dir().join(format!("hostnetd-runc-bundle-{}", std::process::id()));
        let dir = root.join("containers").join("abc");
        fs::create_dir_all(&dir).unwrap();
        let config = |labels: Value| {
            json!({
                "Name": "/web",
                "Config": {"Labels": labels, "ExposedPorts": {"80/tcp": {}, "53/udp": {}}}
            })
        };
        let spec =
            json!({"mounts": [{"destination": "/etc/hostname", "source": dir.join("hostname")}]});
        let bundle = Bundle::from_value(spec);
        fs::write(
            dir.join("config.v2.json"),
            config(json!({"io.hostnetd.ports": "8080"})).to_string(),
        )
        .unwrap();
        let admission = bundle.admission("abc", 1, "/docker/abc".into()).unwrap();
        assert_eq!(
            (admission.engine.as_str(), admission.name.as_str()),
            ("docker", "web")
        );
        assert_eq!(admission.ports, ["8080"]);
        fs::write(dir.join("config.v2.json"), config(json!({})).to_string()).unwrap();
        let admission = bundle.admission("abc", 1, "/docker/abc".into()).unwrap();
        assert_eq!(admission.ports, ["53/udp", "80/tcp"]);
        // Another container's record is not this one's.
        let other = bundle.admission("xyz", 1, "/docker/xyz".into()).unwrap();
        assert_eq!(other.engine, "oci");
        fs::remove_dir_all(&root).unwrap();
    }
}
