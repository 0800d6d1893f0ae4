//! The Atoll controller manager: level-triggered controllers, each rebuilding its view from the API
//! with list+watch, so any of them can restart at any moment. Start reading at [`run_until`].
//!
//! Controllers so far: node IPAM ([`nodeipam`], over [`cidr::CidrSet`]). The replication,
//! endpoints, node lifecycle, namespace and garbage collection controllers come with their steps of
//! the controller-manager issue.

pub mod cidr;
pub mod nodeipam;

use std::future::Future;
use std::net::SocketAddr;

use atoll_client::Component;
use atoll_client::leader::LeaseConfig;
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
    let ipam_client = client.clone();
    let controllers = async move {
        match ipam {
            Some(set) => nodeipam::run(ipam_client, set).await,
            None => {
                tracing::info!("node IPAM is off (no --cluster-cidr)");
                std::future::pending().await
            }
        }
    };
    let component = Component {
        lease: config.leader_election.clone(),
        metrics: config.metrics_addr.map(|addr| (addr, Registry::default())),
    };
    component.run(client, controllers, shutdown).await
}
