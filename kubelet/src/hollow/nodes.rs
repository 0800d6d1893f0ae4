//! Many hollow kubelets in one process (`atoll hollow-nodes`): each registers its Node, renews its
//! Lease and runs its pods on its own [`Hollow`] runtime, all on one tokio runtime and by default one
//! shared API client. Nothing of the host is touched; each node's root directory
//! (`<root>/<node name>`) is made only when a pod's volumes need it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tracing::Instrument;

use super::{Hollow, Resources};
use crate::cri::{HOLLOW_SCHEME, Runtime};
use crate::{Config, Error};

/// The first fake node address: hollow node `i` reports `198.18.0.0 + i + 1` (RFC 2544's
/// benchmarking range, which no real network uses) unless [`Settings::node_ip_base`] says otherwise.
pub const NODE_IP_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

/// How the hollow nodes are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How many.
    pub count: usize,
    /// Node `i` is named `<prefix><i>` (from 0).
    pub name_prefix: String,
    /// Each node's capacity.
    pub resources: Resources,
    /// Each node's pod limit.
    pub max_pods: u32,
    /// Parent of the nodes' root directories.
    pub root_dir: PathBuf,
    /// Node `i` reports `base + i + 1` as its InternalIP.
    pub node_ip_base: Ipv4Addr,
    /// Extra labels for every Node.
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// The template for every kubelet's timing (intervals, back-off); names and paths are replaced.
    pub template: Config,
}

impl Settings {
    /// `count` nodes named `hollow-0…`, 4 CPUs, 16 GiB, 110 pods each, with Kubernetes' timing.
    pub fn new(count: usize) -> Settings {
        Settings {
            count,
            name_prefix: "hollow-".into(),
            resources: Resources::default(),
            max_pods: 110,
            root_dir: std::env::temp_dir().join("atoll-hollow"),
            node_ip_base: NODE_IP_BASE,
            node_labels: Default::default(),
            template: Config::new("template"),
        }
    }

    /// The name of node `i`.
    pub fn name(&self, i: usize) -> String {
        format!("{}{i}", self.name_prefix)
    }

    /// The kubelet configuration of node `i`.
    pub fn config(&self, i: usize) -> Config {
        let name = self.name(i);
        let mut config = self.template.clone();
        config.root_dir = self.root_dir.join(&name);
        config.node_name = name;
        config.runtime_endpoint = HOLLOW_SCHEME.into();
        config.hollow = self.resources.clone();
        config.max_pods = self.max_pods;
        let offset = u32::try_from(i + 1).unwrap_or(u32::MAX);
        config.node_ip = Some(IpAddr::V4(Ipv4Addr::from(
            u32::from(self.node_ip_base).saturating_add(offset),
        )));
        config.node_labels.extend(self.node_labels.clone());
        config.healthz_addr = None;
        config.server_addr = None;
        config
    }
}

/// The hollow nodes' runtimes, by node name: what a test looks into.
pub type Runtimes = Vec<(String, Arc<Hollow>)>;

/// Starts the hollow kubelets as tasks on the current tokio runtime, node `i` talking through
/// `clients[i % clients.len()]`; they run until `shutdown` is set to true (or dropped). Returns
/// their runtimes and a future that ends when every kubelet has stopped, with the first error.
pub fn start(
    clients: &[kube::Client],
    settings: &Settings,
    shutdown: watch::Receiver<bool>,
) -> (Runtimes, impl Future<Output = Result<(), Error>> + use<>) {
    let mut runtimes = Vec::with_capacity(settings.count);
    let clients = clients.to_vec();
    // Without a client nothing starts, and the returned future says why.
    let count = if clients.is_empty() {
        0
    } else {
        settings.count
    };
    let tasks: FuturesUnordered<_> = (0..count)
        .map(|i| {
            let config = settings.config(i);
            let hollow = Arc::new(Hollow::new());
            runtimes.push((config.node_name.clone(), hollow.clone()));
            let mut stop = shutdown.clone();
            let span = tracing::info_span!("kubelet", node = %config.node_name);
            let client = clients[i % clients.len()].clone();
            let kubelet = crate::run_on(client, config, Runtime::hollow(hollow), async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            tokio::spawn(kubelet.instrument(span))
        })
        .collect();
    let all = async move {
        let mut tasks = tasks;
        let mut first = if clients.is_empty() {
            Err(Error::Config(
                "hollow nodes need at least one API client".into(),
            ))
        } else {
            Ok(())
        };
        while let Some(done) = tasks.next().await {
            let result = done
                .unwrap_or_else(|e| Err(Error::Config(format!("a hollow kubelet panicked: {e}"))));
            if let (Err(e), true) = (result, first.is_ok()) {
                first = Err(e);
            }
        }
        first
    };
    (runtimes, all)
}

/// Runs the hollow nodes (spread over `clients`) until `shutdown` completes.
pub async fn run_until(
    clients: Vec<kube::Client>,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_runtimes, all) = start(&clients, &settings, stop_rx);
    tracing::info!(count = settings.count, prefix = %settings.name_prefix, "hollow nodes started");
    let mut all = std::pin::pin!(all);
    tokio::select! {
        r = &mut all => r,
        _ = shutdown => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(Duration::from_secs(10), all).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_gets_its_name_address_and_directory() {
        let mut s = Settings::new(3);
        s.root_dir = PathBuf::from("/tmp/h");
        s.resources.cpu = 8;
        let c = s.config(2);
        assert_eq!(c.node_name, "hollow-2");
        assert_eq!(c.runtime_endpoint, "hollow://");
        assert_eq!(c.root_dir, PathBuf::from("/tmp/h/hollow-2"));
        assert_eq!(c.node_ip, Some("198.18.0.3".parse().unwrap()));
        assert_eq!(c.hollow.cpu, 8);
        assert!(c.server_addr.is_none() && c.healthz_addr.is_none());
    }
}
