//! The Atoll kubelet: the node agent. [`run_until`] registers the node ([`node::NodeAgent`]: Node
//! object, status, Lease heartbeat), writes the node's CNI configuration once it has a pod CIDR
//! ([`cni`]), and runs the pods bound to the node on a CRI runtime ([`pods::PodManager`], one
//! [`pods::worker::Worker`] per pod, talking to containerd through [`cri::Runtime`], or for scale
//! tests to the simulated [`hollow`] runtime), and serves
//! container logs to the API server ([`server`], decoding the CRI log files with [`logs`]).

pub mod cgroups;
pub mod cni;
pub mod cri;
pub mod hollow;
pub mod host;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The version the kubelet reports in `nodeInfo.kubeletVersion` (the API version it implements).
pub const KUBELET_VERSION: &str = concat!("v1.33.0-atoll.", env!("CARGO_PKG_VERSION"));

/// Why the kubelet failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// A runtime (CRI) call failed.
    #[error("CRI {call}: {code:?}: {message}")]
    Runtime {
        /// The call.
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kubelet server cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A client facility (metrics endpoint, kubeconfig) failed.
    #[error(transparent)]
    Client(#[from] atoll_client::Error),
}

impl Error {
    /// Whether the runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Runtime {
                code: tonic::Code::NotFound,
                ..
            }
        ) || matches!(self, Error::Runtime { message, .. } if message.contains("not found"))
    }
}

/// How the kubelet runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's name.
    pub node_name: String,
    /// The CRI endpoint, `unix:///run/containerd/containerd.sock`; `hollow://` for the simulated
    /// runtime of scale tests ([`hollow`]), which touches nothing of the host.
    pub runtime_endpoint: String,
    /// The kubelet's state directory (pod volumes, logs, CNI address leases).
    pub root_dir: PathBuf,
    /// Where the runtime reads CNI configurations.
    pub cni_conf_dir: PathBuf,
    /// The cgroup under which pod cgroups are made (`/` for the host's root).
    pub cgroup_root: String,
    /// The address to report (default: the first global address of an interface that is up).
    pub node_ip: Option<IpAddr>,
    /// The pod CIDR to use when the controller manager does not assign one.
    pub pod_cidr: Option<String>,
    /// Extra labels for the Node.
    pub node_labels: BTreeMap<String, String>,
    /// The most pods this node runs.
    pub max_pods: u32,
    /// The port the node reports for its kubelet server.
    pub kubelet_port: u16,
    /// Where `/healthz` and `/metrics` are served (None: nowhere).
    pub healthz_addr: Option<SocketAddr>,
    /// Where the kubelet server (`/containerLogs`, exec, attach, port-forward, `/pods`, `/metrics`,
    /// `/healthz`) listens (None: nowhere).
    pub server_addr: Option<SocketAddr>,
    /// How often the node status is checked for changes.
    pub status_interval: Duration,
    /// How often the node status is posted even without a change.
    pub status_report_interval: Duration,
    /// How often the node Lease is renewed.
    pub lease_renew_interval: Duration,
    /// The first crash-loop and image-pull back-off (Kubernetes: 10 s).
    pub crash_backoff: Duration,
    /// The capacity a hollow node reports (ignored on a real runtime, which reports the host's).
    pub hollow: hollow::Resources,
}

impl Config {
    /// A configuration with Kubernetes' defaults for node `node_name`.
    pub fn new(node_name: &str) -> Config {
        Config {
            node_name: node_name.into(),
            runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
            root_dir: PathBuf::from("/var/lib/atoll/kubelet"),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cgroup_root: "/".into(),
            node_ip: None,
            pod_cidr: None,
            node_labels: BTreeMap::new(),
            max_pods: 110,
            kubelet_port: 10250,
            healthz_addr: None,
            server_addr: None,
            status_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(60),
            lease_renew_interval: Duration::from_secs(10),
            crash_backoff: pods::backoff::INITIAL,
            hollow: hollow::Resources::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests(node_name: &str) -> Config {
        Config::new(node_name)
    }
}

/// Waits until the runtime answers, logging while it does not.
async fn wait_for_runtime(runtime: &cri::Runtime) -> k8s_cri::v1::VersionResponse {
    let mut delay = Duration::from_millis(100);
    loop {
        match runtime.version().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!("container runtime not answering: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the kubelet until `shutdown` completes. Pods keep running when the kubelet stops; the next
/// kubelet adopts them.
pub async fn run_until(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let runtime = cri::Runtime::connect(&config.runtime_endpoint)?;
    run_on(client, config, runtime, shutdown).await
}

/// Runs the kubelet on a runtime the caller made (a test keeps a handle on a hollow one) until
/// `shutdown` completes.
pub async fn run_on(
    client: kube::Client,
    config: Config,
    runtime: cri::Runtime,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let version = wait_for_runtime(&runtime).await;
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version, "connected to the container runtime");
    // A hollow node makes its directories only when a pod's volumes need them.
    if !runtime.is_hollow() {
        for dir in [
            config.root_dir.clone(),
            config.root_dir.join("pods"),
            config.root_dir.join("logs"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        }
    }
    let (facts_tx, mut facts) = watch::channel(node::NodeFacts::default());
    let agent = node::NodeAgent::new(client.clone(), config.clone(), runtime.clone(), facts_tx);
    let node_ip = agent.node_ip();
    agent.register().await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&mut registry, &config.node_name));
    let view = server::NodeView {
        pods: pods::PodSet::default(),
        metrics: Arc::new(registry),
    };
    let _server = match config.server_addr {
        Some(addr) => {
            let containers =
                server::lookup::Cri::new(runtime.clone(), client.clone(), &config.node_name);
            Some(server::serve(addr, containers, view.clone()).await?)
        }
        None => None,
    };
    let _metrics_server = match config.healthz_addr {
        Some(addr) => Some(atoll_client::metrics::serve(addr, view.metrics.clone()).await?),
        None => None,
    };
    let host = host::Host::of(&config, &runtime);
    let hollow = runtime.as_hollow().cloned();
    let ctx = Arc::new(pods::Context {
        client: client.clone(),
        runtime,
        config: config.clone(),
        recorder: atoll_client::events::Recorder::new(
            client.clone(),
            "kubelet",
            Some(&config.node_name),
        ),
        node_ip: node_ip.to_string(),
        host_dns: if hollow.is_some() {
            Default::default()
        } else {
            pods::host_dns()
        },
        node_memory: host.memory.saturating_sub(host::MEMORY_RESERVE),
        node_cpu: host.cpus as f64,
        metrics,
        pods: view.pods.clone(),
    });
    // The pod network: the CNI configuration for a real runtime, the address range for a hollow one.
    let cni_config = {
        let config = config.clone();
        async move {
            loop {
                let cidr = facts.borrow_and_update().pod_cidr.clone();
                if let Some(cidr) = cidr {
                    let written = match &hollow {
                        Some(h) => h.set_pod_cidr(&cidr),
                        None => {
                            cni::write(&config.cni_conf_dir, &cidr, &config.root_dir.join("cni"))
                        }
                    };
                    match written {
                        Ok(true) => tracing::info!(pod_cidr = %cidr, "configured the pod network"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!("configuring the pod network: {e}"),
                    }
                }
                if facts.changed().await.is_err() {
                    return;
                }
            }
        }
    };
    let component = atoll_client::Component {
        lease: None,
        metrics: None,
        health: None,
    };
    let work = async move {
        tokio::join!(agent.run(), cni_config, pods::PodManager::new(ctx).run());
        Ok::<(), Error>(())
    };
    component.run(client, work, shutdown).await
}
