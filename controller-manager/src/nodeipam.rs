//! Node IPAM: gives every node a `spec.podCIDR` from the cluster CIDR, never the same to two nodes,
//! and frees it when the node goes. What is taken is rebuilt from the nodes themselves whenever the
//! watch (re)lists, so a restart or a missed event loses nothing.

use std::collections::BTreeMap;

use atoll_client::events::{EventType, Recorder};
use atoll_client::lean::Lean;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::cidr::CidrSet;

/// The pod CIDR a node has, if any.
fn pod_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
}

/// The controller's state: the subnets and which node has (or is being given) which.
struct Ipam {
    api: Api<Node>,
    empty: CidrSet,
    set: CidrSet,
    /// Node name → its pod CIDR (as the node says, or as just assigned).
    assigned: BTreeMap<String, String>,
    /// Nodes seen during a relist.
    listing: Vec<Node>,
    /// Nodes that got no CIDR because none was free, as last seen: served when one is freed.
    waiting: BTreeMap<String, Node>,
    recorder: Recorder,
}

/// Runs node IPAM until its watch ends.
pub async fn run(client: kube::Client, set: CidrSet) -> Result<(), Error> {
    let mut ipam = Ipam {
        api: Api::all(client.clone()),
        recorder: Recorder::new(client.clone(), "cidrAllocator", None),
        empty: set.clone(),
        set,
        assigned: BTreeMap::new(),
        listing: vec![],
        waiting: BTreeMap::new(),
    };
    let nodes: Api<Lean<Node>> = Api::all(client);
    let mut events = std::pin::pin!(watcher(nodes, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => ipam.listing.clear(),
            Ok(watcher::Event::InitApply(n)) => ipam.listing.push(n.0),
            Ok(watcher::Event::InitDone) => ipam.relisted().await,
            Ok(watcher::Event::Apply(n)) => ipam.seen(n.0).await,
            Ok(watcher::Event::Delete(n)) => ipam.gone(&n.0).await,
            Err(e) => tracing::warn!("node watch: {e}"),
        }
    }
    Err(Error::WatchEnded("nodes"))
}

impl Ipam {
    /// A full list: start over from what the nodes say, then give CIDRs to those without.
    async fn relisted(&mut self) {
        self.set = self.empty.clone();
        self.assigned.clear();
        self.waiting.clear();
        let nodes = std::mem::take(&mut self.listing);
        for node in &nodes {
            if let Some(c) = pod_cidr(node) {
                self.set.occupy(&c);
                self.assigned.insert(node.name_any(), c);
            }
        }
        for node in nodes {
            if pod_cidr(&node).is_none() {
                self.assign(&node).await;
            }
        }
    }

    /// A node was added or changed.
    async fn seen(&mut self, node: Node) {
        let name = node.name_any();
        self.waiting.remove(&name);
        match pod_cidr(&node) {
            Some(c) => {
                if let Some(mine) = self.assigned.get(&name)
                    && *mine != c
                {
                    // Someone else gave it another CIDR: the node's word wins.
                    let mine = mine.clone();
                    self.set.release(&mine);
                }
                self.set.occupy(&c);
                self.assigned.insert(name, c);
            }
            None if !self.assigned.contains_key(&name) => self.assign(&node).await,
            None => {}
        }
    }

    /// A node was deleted: its CIDR is free again, for a node waiting for one.
    async fn gone(&mut self, node: &Node) {
        let name = node.name_any();
        self.waiting.remove(&name);
        if let Some(c) = self.assigned.remove(&name) {
            self.set.release(&c);
            if let Some(next) = self.waiting.keys().next().cloned()
                && let Some(waiting) = self.waiting.remove(&next)
            {
                self.assign(&waiting).await;
            }
        }
    }

    /// Gives `node` a free CIDR, written with the node's resourceVersion as precondition. If the
    /// write fails, the CIDR is freed again and the node's next event (a changed node, or the
    /// relist after an API outage) retries.
    async fn assign(&mut self, node: &Node) {
        let name = node.name_any();
        let Some(cidr) = self.set.allocate() else {
            tracing::warn!(node = %name, "no pod CIDR left in the cluster CIDR");
            let message = format!("Node {name} status is now: CIDRNotAvailable");
            self.recorder
                .record(
                    &node.object_ref(&()),
                    EventType::Normal,
                    "CIDRNotAvailable",
                    &message,
                )
                .await;
            self.waiting.insert(name, node.clone());
            return;
        };
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        let params = PatchParams::default();
        match self.api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "assigned pod CIDR");
                self.assigned.insert(name, cidr);
            }
            Err(e) => {
                tracing::info!(node = %name, "assigning pod CIDR {cidr}: {e}");
                self.set.release(&cidr);
            }
        }
    }
}
