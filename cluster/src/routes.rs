//! Pod CIDR routes between the hosts of a local cluster, as a host-gateway network plugin would set
//! them: every node's `spec.podCIDR` is routed via its InternalIP in the control plane's network
//! namespace and in every other node's, so pods reach pods on other nodes (and the machine reaches
//! every pod) without NAT.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

use crate::layout::Layout;
use crate::{net, progress};

/// How often the nodes are listed.
const PERIOD: Duration = Duration::from_secs(1);

/// The routes the nodes ask for: (namespace or None for the current one, pod CIDR, via).
pub fn wanted(layout: &Layout, nodes: &[Node]) -> Vec<(Option<String>, String, String)> {
    let mut out = vec![];
    for node in nodes {
        let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone()) else {
            continue;
        };
        let Some(ip) = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
        else {
            continue;
        };
        let name = node.metadata.name.as_deref().unwrap_or_default();
        // Only this cluster's hosts (a Node left from an earlier cluster in the same data directory,
        // or added by hand, is not on the bridge).
        if !layout.all_nodes().iter().any(|n| n.name == name) {
            continue;
        }
        out.push((None, cidr.clone(), ip.clone()));
        for other in layout.all_nodes().into_iter().filter(|n| n.name != name) {
            out.push((Some(other.netns), cidr.clone(), ip.clone()));
        }
    }
    out
}

/// The route keeper; dropping it stops it (also when start-up fails or is interrupted, so it
/// does not route through a bridge being removed).
pub struct Keeper(tokio::task::JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts keeping the routes of `layout`'s nodes in place.
pub fn keep(client: kube::Client, layout: Layout) -> Keeper {
    Keeper(tokio::spawn(sync(client, layout)))
}

/// Keeps the routes in place until the task is aborted.
async fn sync(client: kube::Client, layout: Layout) {
    let nodes: Api<Node> = Api::all(client);
    let mut done: HashSet<(Option<String>, String, String)> = HashSet::new();
    loop {
        match nodes.list(&ListParams::default()).await {
            Ok(list) => {
                for route in wanted(&layout, &list.items) {
                    if done.contains(&route) {
                        continue;
                    }
                    let (ns, cidr, via) = &route;
                    match net::route(ns.as_deref(), cidr, via) {
                        Ok(()) => {
                            done.insert(route);
                        }
                        Err(e) => progress::note(&format!("routing {cidr} via {via}: {e:#}")),
                    }
                }
            }
            Err(e) => progress::note(&format!("listing nodes for their pod CIDR routes: {e}")),
        }
        tokio::time::sleep(PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Ports;

    #[test]
    fn routes_each_cidr_everywhere_but_its_own_node() {
        let ports = Ports {
            api: 1,
            etcd: 2,
            registry: 3,
            scheduler: 4,
            controller_manager: 5,
        };
        let layout = Layout::new(
            &std::env::temp_dir(),
            3,
            "10.99.0.0/24",
            "10.244.0.0/16",
            ports,
            "d".into(),
        )
        .unwrap();
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-2"},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.99.0.3"}]},
        }))
        .unwrap();
        let pending: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "node-3"}})).unwrap();
        let stranger: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vm"},
            "spec": {"podCIDR": "10.244.9.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.2"}]},
        }))
        .unwrap();
        let got = wanted(&layout, &[node, pending, stranger]);
        let netns: Vec<Option<String>> = got.iter().map(|r| r.0.clone()).collect();
        assert_eq!(
            netns,
            vec![None, Some(layout.node(1).netns), Some(layout.node(3).netns)]
        );
        assert!(
            got.iter()
                .all(|r| r.1 == "10.244.1.0/24" && r.2 == "10.99.0.3")
        );
    }
}
