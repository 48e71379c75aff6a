//! A client of the Kubernetes Container Runtime Interface (runtime.v1), as the kubelet speaks
//! it to containerd: the few calls a host-network pod's life takes, over gRPC on containerd's
//! socket. The messages carry only the fields those calls need, with the CRI's field numbers
//! (protobuf skips the rest), so no code is generated.
use std::{collections::HashMap, path::Path};

use prost::Message;
use tonic::{codec::ProstCodec, transport::Channel, Request};

/// CRI's `NamespaceMode::NODE`: the host's namespace.
pub const NODE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamespaceOption {
    #[prost(int32, tag = "1")]
    pub network: i32,
    #[prost(int32, tag = "2")]
    pub pid: i32,
    #[prost(int32, tag = "3")]
    pub ipc: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// The request of StopPodSandbox and RemovePodSandbox alike.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct LinuxContainerSecurityContext {
    #[prost(message, optional, tag = "3")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LinuxContainerConfig {
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxContainerSecurityContext>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(map = "string, string", tag = "10")]
    pub annotations: HashMap<String, String>,
    #[prost(string, tag = "11")]
    pub log_path: String,
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// The request of StartContainer and RemoveContainer; StopContainer adds its timeout.
#[derive(Clone, PartialEq, Message)]
pub struct ContainerRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

/// A host-network pod's sandbox configuration: the kubelet's for `hostNetwork: true`.
pub fn host_network_pod(name: &str, annotations: &[(&str, &str)]) -> PodSandboxConfig {
    let node = NamespaceOption {
        network: NODE,
        pid: 0,
        ipc: 0,
    };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: String::new(),
        labels: HashMap::new(),
        annotations: (annotations.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(node),
            }),
        }),
    }
}

/// A container of that pod: `name`, running `command` of `image` on the node's network.
pub fn host_network_container(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: Vec::new(),
        annotations: HashMap::new(),
        log_path: String::new(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NODE,
                    pid: 1,
                    ipc: 0,
                }),
            }),
        }),
    }
}

/// The RuntimeService over containerd's socket.
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl CriClient {
    pub fn connect(socket: &Path) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let socket = socket.to_path_buf();
        let channel = runtime.block_on(async move {
            tonic::transport::Endpoint::from_static("http://[::1]:1")
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(socket).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(|e| format!("cannot reach containerd's CRI: {e}"))
        })?;
        Ok(Self { runtime, channel })
    }

    /// One unary call of `runtime.v1.RuntimeService/METHOD`; the error is the gRPC status's
    /// message (what the kubelet would show).
    fn call<Q, A>(&self, method: &'static str, request: Q) -> Result<A, String>
    where
        Q: Message + Send + Sync + 'static,
        A: Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let path = format!("/runtime.v1.RuntimeService/{method}");
        self.runtime.block_on(async move {
            grpc.ready().await.map_err(|e| e.to_string())?;
            let path = path.parse().expect("a gRPC path");
            let codec: ProstCodec<Q, A> = ProstCodec::default();
            (grpc.unary(Request::new(request), path, codec).await)
                .map(tonic::Response::into_inner)
                .map_err(|status| status.message().to_string())
        })
    }

    pub fn run_pod_sandbox(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, String> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let answer: RunPodSandboxResponse = self.call("RunPodSandbox", request)?;
        Ok(answer.pod_sandbox_id)
    }

    pub fn create_container(
        &self,
        pod: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox.clone()),
        };
        let answer: CreateContainerResponse = self.call("CreateContainer", request)?;
        Ok(answer.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), String> {
        self.call::<_, Empty>("StartContainer", container(id, 0))
            .map(drop)
    }

    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<(), String> {
        self.call::<_, Empty>("StopContainer", container(id, timeout))
            .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), String> {
        self.call::<_, Empty>("RemoveContainer", container(id, 0))
            .map(drop)
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), String> {
        let request = PodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call::<_, Empty>("StopPodSandbox", request).map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), String> {
        let request = PodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call::<_, Empty>("RemovePodSandbox", request).map(drop)
    }
}

fn container(id: &str, timeout: i64) -> ContainerRequest {
    ContainerRequest {
        container_id: id.into(),
        timeout,
    }
}
