//! The Atoll controller manager: level-triggered controllers, each rebuilding its view from the API
//! with list+watch, so any of them can restart at any moment. Start reading at [`run_until`].
//!
//! Every controller but node IPAM has the same shape ([`controller`]): shared informers
//! ([`informer`]) feed keys to a work queue ([`queue`]) that workers reconcile from the informers'
//! stores. Node IPAM ([`nodeipam`], over [`cidr::CidrSet`]) keeps its own watch.

pub mod cidr;
pub mod controller;
pub mod discovery;
pub mod endpoints;
pub mod endpointslices;
pub mod gc;
pub mod informer;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podutil;
pub mod queue;
pub mod replication;
pub mod service_pods;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use atoll_client::Component;
use atoll_client::leader::LeaseConfig;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use prometheus_client::registry::Registry;

/// How the controller manager runs.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The cluster's pod network, e.g. `10.244.0.0/16`; node IPAM is off without it.
    pub cluster_cidr: Option<String>,
    /// The prefix length of each node's pod CIDR (Kubernetes' default: 24).
    pub node_cidr_mask_size: u8,
    /// Run only while holding this Lease (None: always run).
    pub leader_election: Option<LeaseConfig>,
    /// Where to serve `/metrics` and `/healthz` (None: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// Delay every watch event by this much: a deliberately slow cache, for tests only.
    pub cache_delay: Option<Duration>,
    /// The node lifecycle controller's periods, grace periods and eviction rates (Kubernetes' defaults).
    pub node_lifecycle: nodelifecycle::Settings,
}

/// What every controller is built from: the client, the shared informers, the metrics, the flags.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// One shared informer per kind.
    pub informers: controller::Informers,
    /// Work-queue and reconcile metrics.
    pub metrics: Arc<controller::Metrics>,
    /// The flags.
    pub config: Config,
}

/// A running controller.
type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builds every controller (each registers its informer handlers) and runs them with the informers.
async fn run_controllers(ctx: Context) -> Result<(), Error> {
    let controllers: Vec<Running> = vec![
        Box::pin(replication::start::<ReplicationController>(&ctx)),
        Box::pin(replication::start::<ReplicaSet>(&ctx)),
        Box::pin(endpoints::start(&ctx)),
        Box::pin(endpointslices::start(&ctx)),
        Box::pin(nodelifecycle::start(&ctx)),
        Box::pin(namespace::start(&ctx)),
        Box::pin(gc::start(&ctx)),
    ];
    tokio::select! {
        _ = futures::future::join_all(controllers) => Ok(()),
        _ = ctx.informers.run() => Err(Error::WatchEnded("informer")),
    }
}

/// Why the controller manager stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Leader election or the metrics endpoint failed.
    #[error(transparent)]
    Client(#[from] atoll_client::Error),
    /// A flag is unusable.
    #[error("{0}")]
    Config(#[from] cidr::CidrError),
    /// A watch stream ended.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// Runs the controllers until an error or until `shutdown` completes (then the Lease is given up).
pub async fn run_until(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let ipam = match &config.cluster_cidr {
        Some(c) => Some(cidr::CidrSet::new(c, config.node_cidr_mask_size)?),
        None => None,
    };
    let mut registry = Registry::default();
    let ctx = Context {
        client: client.clone(),
        informers: controller::Informers::new(client.clone(), config.cache_delay),
        metrics: controller::Metrics::register(&mut registry),
        config: config.clone(),
    };
    let ipam_client = client.clone();
    let controllers = async move {
        let ipam = async move {
            match ipam {
                Some(set) => nodeipam::run(ipam_client, set).await,
                None => {
                    tracing::info!("node IPAM is off (no --cluster-cidr)");
                    std::future::pending().await
                }
            }
        };
        tokio::select! {
            r = ipam => r,
            r = run_controllers(ctx) => r,
        }
    };
    let component = Component {
        lease: config.leader_election.clone(),
        metrics: config.metrics_addr.map(|addr| (addr, registry)),
        health: None,
    };
    component.run(client, controllers, shutdown).await
}
