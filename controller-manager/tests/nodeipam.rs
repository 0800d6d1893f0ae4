//! Node IPAM against a real API server and etcd.

use std::collections::BTreeSet;

use atoll_controller_manager::Config;
use atoll_testkit::{Cluster, eventually};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

fn start(c: &Cluster) -> tokio::task::JoinHandle<Result<(), atoll_controller_manager::Error>> {
    let config = Config {
        // Four /24 subnets.
        cluster_cidr: Some("10.244.0.0/22".into()),
        node_cidr_mask_size: 24,
        ..Config::default()
    };
    tokio::spawn(atoll_controller_manager::run_until(
        c.kube_client(),
        config,
        std::future::pending(),
    ))
}

async fn add(nodes: &Api<Node>, name: &str, cidr: Option<&str>) {
    let mut node =
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
    if let Some(c) = cidr {
        node["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).expect("node"),
        )
        .await
        .expect("create node");
}

async fn cidr(nodes: &Api<Node>, name: &str) -> Option<String> {
    nodes.get(name).await.ok()?.spec?.pod_cidr
}

/// Waits until every named node has a pod CIDR; returns them in order.
async fn cidrs(nodes: &Api<Node>, names: &[&str]) -> Vec<String> {
    eventually("every node to get a pod CIDR", || async {
        let mut got = vec![];
        for n in names {
            got.push(cidr(nodes, n).await?);
        }
        Some(got)
    })
    .await
}

#[tokio::test]
async fn every_node_gets_its_own_pod_cidr_freed_on_delete_and_kept_across_restarts() {
    let c = Cluster::start().await;
    let nodes: Api<Node> = Api::all(c.kube_client());
    // A node that already has a CIDR keeps it, and nobody else gets it.
    add(&nodes, "old", Some("10.244.1.0/24")).await;
    let cm = start(&c);
    for n in ["a", "b", "c"] {
        add(&nodes, n, None).await;
    }
    let got = cidrs(&nodes, &["old", "a", "b", "c"]).await;
    assert_eq!(got[0], "10.244.1.0/24");
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 4, "{got:?}");
    assert!(
        got.iter()
            .all(|c| c.starts_with("10.244.") && c.ends_with("/24")),
        "{got:?}"
    );
    let node = nodes.get("a").await.expect("a");
    assert_eq!(
        node.spec.and_then(|s| s.pod_cidrs),
        Some(vec![got[1].clone()])
    );

    // The range is full: a fifth node waits, and gets the CIDR of a deleted node.
    add(&nodes, "late", None).await;
    // It is told so, as Kubernetes' CIDR allocator tells it.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(c.kube_client(), "default");
    let event = eventually("a CIDRNotAvailable event", || async {
        let fields = "involvedObject.name=late,reason=CIDRNotAvailable";
        let list = events
            .list(&ListParams::default().fields(fields))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    assert_eq!(
        event.message.as_deref(),
        Some("Node late status is now: CIDRNotAvailable")
    );
    let freed = got[2].clone();
    nodes
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    assert_eq!(cidrs(&nodes, &["late"]).await, vec![freed]);

    // A new controller manager rebuilds what is taken from the nodes: after "c" goes, a new node
    // gets exactly its CIDR, the only free one.
    cm.abort();
    let _ = cm.await;
    let _cm = start(&c);
    let c_cidr = cidr(&nodes, "c").await.expect("c has one");
    nodes
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    add(&nodes, "new", None).await;
    assert_eq!(cidrs(&nodes, &["new"]).await, vec![c_cidr]);
}
