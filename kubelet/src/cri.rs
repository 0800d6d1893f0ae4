//! The container runtime as the kubelet sees it: [`Runtime`], one interface with two
//! implementations chosen by the endpoint. `unix:///…` (the default) is CRI (`runtime.v1`) over gRPC
//! on a unix socket, RuntimeService and ImageService on one channel; every call has a deadline, and
//! errors name the call that failed. `hollow://` is the in-memory [`Hollow`] runtime for scale tests,
//! which runs nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::Error;
use crate::hollow::Hollow;

/// How long an ordinary runtime call may take (image pulls and container stops have their own).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an image pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// The endpoint scheme that selects the hollow runtime.
pub const HOLLOW_SCHEME: &str = "hollow://";

/// The node's container runtime: a CRI endpoint or a hollow one. Cheap to clone (clones share one
/// connection, or one hollow runtime).
#[derive(Clone)]
pub struct Runtime {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// CRI over gRPC.
    Cri(Arc<Grpc>),
    /// The in-memory simulation.
    Hollow(Arc<Hollow>),
}

/// The CRI clients, sharing one channel.
#[derive(Clone)]
struct Grpc {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// The labels the kubelet puts on sandboxes and containers, so it can find them again after a restart.
pub mod labels {
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The pod's UID.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The container's name in the pod spec.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// A hash of the container's spec: a change means the container must be replaced.
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    /// Whether a container is an init container ("true") or not.
    pub const INIT_CONTAINER: &str = "io.atoll.container.init";
}

fn unix_path(endpoint: &str) -> Result<PathBuf, Error> {
    endpoint
        .strip_prefix("unix://")
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::Config(format!(
                "container runtime endpoint {endpoint:?}: only unix:///path is supported"
            ))
        })
}

fn call<T>(timeout: Duration, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn failed(what: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Runtime {
        call: what,
        code: status.code(),
        message: status.message().to_string(),
    }
}

impl Runtime {
    /// Connects to the runtime at `endpoint` (`unix:///run/containerd/containerd.sock`). The connection
    /// is made lazily and remade when the runtime restarts. `hollow://` makes a new hollow runtime.
    pub fn connect(endpoint: &str) -> Result<Runtime, Error> {
        if endpoint.starts_with(HOLLOW_SCHEME) {
            return Ok(Runtime::hollow(Arc::new(Hollow::new())));
        }
        let path = unix_path(endpoint)?;
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Runtime {
            backend: Backend::Cri(Arc::new(Grpc {
                runtime: RuntimeServiceClient::new(channel.clone()),
                images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
            })),
        })
    }

    /// A runtime that is the hollow runtime `hollow`.
    pub fn hollow(hollow: Arc<Hollow>) -> Runtime {
        Runtime {
            backend: Backend::Hollow(hollow),
        }
    }

    /// The hollow runtime behind this one (None: a real CRI runtime).
    pub fn as_hollow(&self) -> Option<&Arc<Hollow>> {
        match &self.backend {
            Backend::Hollow(h) => Some(h),
            Backend::Cri(_) => None,
        }
    }

    /// Whether this is the hollow runtime: nothing runs, pod addresses are fake, the host is not
    /// touched.
    pub fn is_hollow(&self) -> bool {
        self.as_hollow().is_some()
    }

    fn grpc(&self) -> Result<&Grpc, &Hollow> {
        match &self.backend {
            Backend::Cri(g) => Ok(g),
            Backend::Hollow(h) => Err(h),
        }
    }

    /// The runtime's name and version (e.g. `containerd`, `1.6.20`).
    pub async fn version(&self) -> Result<cri::VersionResponse, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.version(),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::VersionRequest {
                version: "v1".into(),
            },
        );
        Ok(c.runtime
            .clone()
            .version(req)
            .await
            .map_err(failed("Version"))?
            .into_inner())
    }

    /// The runtime's conditions (RuntimeReady, NetworkReady).
    pub async fn status(&self) -> Result<Vec<cri::RuntimeCondition>, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.status(),
        };
        let req = call(CALL_TIMEOUT, cri::StatusRequest { verbose: false });
        let reply = c
            .runtime
            .clone()
            .status(req)
            .await
            .map_err(failed("Status"))?;
        Ok(reply
            .into_inner()
            .status
            .map(|s| s.conditions)
            .unwrap_or_default())
    }

    /// Every sandbox the runtime has (ready or not).
    pub async fn list_sandboxes(&self) -> Result<Vec<cri::PodSandbox>, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.list_sandboxes(&Default::default()),
        };
        let req = call(CALL_TIMEOUT, cri::ListPodSandboxRequest { filter: None });
        let reply = c
            .runtime
            .clone()
            .list_pod_sandbox(req)
            .await
            .map_err(failed("ListPodSandbox"))?;
        Ok(reply.into_inner().items)
    }

    /// The sandboxes carrying all of `labels`.
    pub async fn list_sandboxes_matching(
        &self,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<Vec<cri::PodSandbox>, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.list_sandboxes(&labels),
        };
        let filter = cri::PodSandboxFilter {
            label_selector: labels,
            ..Default::default()
        };
        let req = call(
            CALL_TIMEOUT,
            cri::ListPodSandboxRequest {
                filter: Some(filter),
            },
        );
        let reply = c
            .runtime
            .clone()
            .list_pod_sandbox(req)
            .await
            .map_err(failed("ListPodSandbox"))?;
        Ok(reply.into_inner().items)
    }

    /// The containers carrying all of `labels`.
    pub async fn list_containers_matching(
        &self,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<Vec<cri::Container>, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.list_containers(&labels),
        };
        let filter = cri::ContainerFilter {
            label_selector: labels,
            ..Default::default()
        };
        let req = call(
            CALL_TIMEOUT,
            cri::ListContainersRequest {
                filter: Some(filter),
            },
        );
        let reply = c
            .runtime
            .clone()
            .list_containers(req)
            .await
            .map_err(failed("ListContainers"))?;
        Ok(reply.into_inner().containers)
    }

    /// Every container the runtime has (in any state).
    pub async fn list_containers(&self) -> Result<Vec<cri::Container>, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.list_containers(&Default::default()),
        };
        let req = call(CALL_TIMEOUT, cri::ListContainersRequest { filter: None });
        let reply = c
            .runtime
            .clone()
            .list_containers(req)
            .await
            .map_err(failed("ListContainers"))?;
        Ok(reply.into_inner().containers)
    }

    /// Starts a sandbox (pause container and network) and returns its ID.
    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.run_sandbox(config),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            },
        );
        let reply = c
            .runtime
            .clone()
            .run_pod_sandbox(req)
            .await
            .map_err(failed("RunPodSandbox"))?;
        Ok(reply.into_inner().pod_sandbox_id)
    }

    /// A sandbox's status (state and IP addresses).
    pub async fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.sandbox_status(id),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            },
        );
        let reply = c
            .runtime
            .clone()
            .pod_sandbox_status(req)
            .await
            .map_err(failed("PodSandboxStatus"))?;
        reply.into_inner().status.ok_or(Error::Runtime {
            call: "PodSandboxStatus",
            code: tonic::Code::Internal,
            message: "no status in the reply".into(),
        })
    }

    /// Stops a sandbox: its containers are killed and its network torn down.
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.stop_sandbox(id),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        );
        c.runtime
            .clone()
            .stop_pod_sandbox(req)
            .await
            .map_err(failed("StopPodSandbox"))?;
        Ok(())
    }

    /// Removes a stopped sandbox and its containers.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.remove_sandbox(id),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        );
        c.runtime
            .clone()
            .remove_pod_sandbox(req)
            .await
            .map_err(failed("RemovePodSandbox"))?;
        Ok(())
    }

    /// Creates a container in a sandbox and returns its ID.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.create_container(sandbox_id, config),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            },
        );
        let reply = c
            .runtime
            .clone()
            .create_container(req)
            .await
            .map_err(failed("CreateContainer"))?;
        Ok(reply.into_inner().container_id)
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str) -> Result<(), Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.start_container(id),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::StartContainerRequest {
                container_id: id.into(),
            },
        );
        c.runtime
            .clone()
            .start_container(req)
            .await
            .map_err(failed("StartContainer"))?;
        Ok(())
    }

    /// Stops a container: SIGTERM (or the image's stop signal), then SIGKILL after `grace`.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.stop_container(id),
        };
        let req = call(
            grace + CALL_TIMEOUT,
            cri::StopContainerRequest {
                container_id: id.into(),
                timeout: grace.as_secs() as i64,
            },
        );
        c.runtime
            .clone()
            .stop_container(req)
            .await
            .map_err(failed("StopContainer"))?;
        Ok(())
    }

    /// Removes a container.
    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.remove_container(id),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::RemoveContainerRequest {
                container_id: id.into(),
            },
        );
        c.runtime
            .clone()
            .remove_container(req)
            .await
            .map_err(failed("RemoveContainer"))?;
        Ok(())
    }

    /// A container's status: state, exit code, reason, times, image reference.
    pub async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.container_status(id),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            },
        );
        let reply = c
            .runtime
            .clone()
            .container_status(req)
            .await
            .map_err(failed("ContainerStatus"))?;
        reply.into_inner().status.ok_or(Error::Runtime {
            call: "ContainerStatus",
            code: tonic::Code::Internal,
            message: "no status in the reply".into(),
        })
    }

    /// Runs a command in a container and waits for it (hooks and exec probes).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.exec_sync(id),
        };
        let req = call(
            timeout + Duration::from_secs(5),
            cri::ExecSyncRequest {
                container_id: id.into(),
                cmd,
                timeout: timeout.as_secs() as i64,
            },
        );
        Ok(c.runtime
            .clone()
            .exec_sync(req)
            .await
            .map_err(failed("ExecSync"))?
            .into_inner())
    }

    /// A URL on the runtime's streaming server where a client runs `request`'s command (once).
    pub async fn exec(&self, request: cri::ExecRequest) -> Result<String, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.stream("Exec"),
        };
        let req = call(CALL_TIMEOUT, request);
        Ok(c.runtime
            .clone()
            .exec(req)
            .await
            .map_err(failed("Exec"))?
            .into_inner()
            .url)
    }

    /// A URL on the runtime's streaming server where a client attaches to a container's streams.
    pub async fn attach(&self, request: cri::AttachRequest) -> Result<String, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.stream("Attach"),
        };
        let req = call(CALL_TIMEOUT, request);
        Ok(c.runtime
            .clone()
            .attach(req)
            .await
            .map_err(failed("Attach"))?
            .into_inner()
            .url)
    }

    /// A URL on the runtime's streaming server that forwards connections into a sandbox.
    pub async fn port_forward(&self, request: cri::PortForwardRequest) -> Result<String, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.stream("PortForward"),
        };
        let req = call(CALL_TIMEOUT, request);
        Ok(c.runtime
            .clone()
            .port_forward(req)
            .await
            .map_err(failed("PortForward"))?
            .into_inner()
            .url)
    }

    /// The image's ID when the runtime has it (None when it does not).
    pub async fn image_status(&self, image: &str) -> Result<Option<cri::Image>, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.image_status(image),
        };
        let req = call(
            CALL_TIMEOUT,
            cri::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            },
        );
        let reply = c
            .images
            .clone()
            .image_status(req)
            .await
            .map_err(failed("ImageStatus"))?;
        Ok(reply.into_inner().image)
    }

    /// Pulls an image and returns its reference (digest).
    pub async fn pull_image(
        &self,
        image: &str,
        sandbox: Option<cri::PodSandboxConfig>,
    ) -> Result<String, Error> {
        let c = match self.grpc() {
            Ok(c) => c,
            Err(h) => return h.pull_image(image),
        };
        let req = call(
            PULL_TIMEOUT,
            cri::PullImageRequest {
                image: Some(image_spec(image)),
                auth: None,
                sandbox_config: sandbox,
            },
        );
        let reply = c
            .images
            .clone()
            .pull_image(req)
            .await
            .map_err(failed("PullImage"))?;
        Ok(reply.into_inner().image_ref)
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        user_specified_image: image.into(),
        ..Default::default()
    }
}
