//! The Atoll service proxy (`atoll proxy`): watches Services and EndpointSlices through the `kube`
//! client and programs one nftables table of its own, `ip atoll`, so that ClusterIPs and NodePorts
//! reach the services' endpoints. Nothing outside that table is touched.
//!
//! Start at [`run_until`]. The pieces: [`model`] (what the proxy reads from the API objects),
//! [`rules`] (pure rule generation and the per-service update transactions), [`state`] (what is
//! known and programmed; the next transaction), [`run`] (the watches and the loop), [`nft`] (running
//! `nft` and `conntrack`), [`addrs`] (node addresses for NodePorts), [`metrics`] (`/metrics` and `/healthz`).

pub mod addrs;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod rules;
pub mod run;
pub mod state;

use std::net::SocketAddr;
use std::time::Duration;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name: endpoints with this `nodeName` are local (for the Local traffic policies).
    pub node_name: String,
    /// The cluster's pod network; ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: Option<String>,
    /// CIDRs whose local addresses NodePorts answer on (empty: every non-loopback IPv4 address of
    /// the node). A CIDR holding `127.0.0.1` turns on localhost NodePorts (and `route_localnet`).
    pub nodeport_addresses: Vec<String>,
    /// Where to serve `/metrics` and `/healthz` (None: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// `/healthz` fails when changes have waited this long without being programmed.
    pub healthz_timeout: Duration,
}

impl Config {
    /// The defaults for the node `node_name`.
    pub fn new(node_name: &str) -> Config {
        Config {
            node_name: node_name.into(),
            cluster_cidr: None,
            nodeport_addresses: Vec::new(),
            metrics_addr: None,
            healthz_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the proxy stopped or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metrics endpoint or another client facility failed.
    #[error(transparent)]
    Client(#[from] atoll_client::Error),
    /// `nft` could not be run or refused the rules.
    #[error("nft: {0}")]
    Nft(String),
    /// A flag had a value the proxy cannot use.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Runs the proxy until `shutdown` completes. The table stays in place when it stops, so services
/// keep working across a restart; `atoll proxy --cleanup` ([`cleanup`]) removes it.
pub async fn run_until(
    client: kube::Client,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::new(&mut registry, config.healthz_timeout);
    let component = atoll_client::Component {
        lease: None,
        health: Some(metrics.health_check()),
        metrics: config.metrics_addr.map(|a| (a, registry)),
    };
    let work = run::proxy(client.clone(), config, metrics);
    component.run(client, work, shutdown).await
}

/// Removes everything the proxy made: its nftables table (and with it every chain, map, set and
/// affinity entry in it).
pub async fn cleanup() -> Result<(), Error> {
    nft::apply(&rules::cleanup()).await
}
