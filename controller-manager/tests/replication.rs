//! The replication controller (RC and ReplicaSet) against a real API server and etcd. There is no
//! kubelet: the tests set pod status the way one would.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use atoll_controller_manager::{Config, Error};
use atoll_testkit::{Cluster, eventually, free_port};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod, ReplicationController};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

fn start(c: &Cluster, config: Config) -> JoinHandle<Result<(), Error>> {
    tokio::spawn(atoll_controller_manager::run_until(
        c.kube_client(),
        config,
        std::future::pending(),
    ))
}

fn rc(name: &str, replicas: i32) -> ReplicationController {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"app": name},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }))
    .expect("rc")
}

/// The active pods (not being deleted) in the namespace with label `app=<app>`.
async fn pods(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn wait_count(api: &Api<Pod>, app: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} pods of {app}"), || async {
        let p = pods(api, app).await;
        (p.len() == n).then_some(p)
    })
    .await
}

/// Checks for `period` that the count stays exactly `n`.
async fn stays(api: &Api<Pod>, app: &str, n: usize, period: Duration) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        assert_eq!(pods(api, app).await.len(), n, "{app} must keep {n} pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scale(api: &Api<ReplicationController>, name: &str, replicas: i32) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .expect("scale");
}

/// Sets a pod Running on `node` and Ready (as a kubelet would), binding it first if need be.
async fn run_ready(api: &Api<Pod>, pod: &Pod, node: &str) {
    let name = pod.name_any();
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
    {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"kind": "Node", "name": node}});
        api.create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
            .await
            .expect("bind");
    }
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.9", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}]}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("status");
}

fn controlled_by(pod: &Pod, owner_uid: &str) -> bool {
    pod.owner_references()
        .iter()
        .any(|r| r.uid == owner_uid && r.controller == Some(true))
}

#[tokio::test]
async fn scales_up_and_down_deleting_the_least_useful_pods_and_reports_status() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let rcs: Api<ReplicationController> = Api::default_namespaced(client.clone());
    let pod_api: Api<Pod> = Api::default_namespaced(client.clone());
    let port = free_port();
    let cm = start(
        &c,
        Config {
            metrics_addr: Some(format!("127.0.0.1:{port}").parse().expect("addr")),
            ..Config::default()
        },
    );
    let web = rcs
        .create(&PostParams::default(), &rc("web", 3))
        .await
        .expect("create");
    let uid = web.uid().expect("uid");
    let three = wait_count(&pod_api, "web", 3).await;
    for p in &three {
        assert!(controlled_by(p, &uid), "{p:?}");
        assert!(p.name_any().starts_with("web-"));
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("web"));
    }
    // Two of them run and are ready; scaling to 5 then to 2 keeps exactly those two.
    for p in &three[..2] {
        run_ready(&pod_api, p, "n1").await;
    }
    let kept: BTreeSet<String> = three[..2].iter().map(|p| p.name_any()).collect();
    scale(&rcs, "web", 5).await;
    wait_count(&pod_api, "web", 5).await;
    scale(&rcs, "web", 2).await;
    let two = wait_count(&pod_api, "web", 2).await;
    assert_eq!(
        two.iter().map(|p| p.name_any()).collect::<BTreeSet<_>>(),
        kept
    );
    eventually("status to show 2 ready replicas", || async {
        let s = rcs.get("web").await.ok()?.status?;
        (s.replicas == 2
            && s.ready_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.fully_labeled_replicas == Some(2)
            && s.observed_generation == Some(3))
        .then_some(())
    })
    .await;
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let reasons: BTreeSet<String> = eventually("create and delete events", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: BTreeSet<String> = list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("web"))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.contains("SuccessfulDelete")).then_some(reasons)
    })
    .await;
    assert!(reasons.contains("SuccessfulCreate"), "{reasons:?}");
    // Scaling to zero removes every pod.
    scale(&rcs, "web", 0).await;
    wait_count(&pod_api, "web", 0).await;
    let metrics = metrics_text(port).await;
    assert!(
        metrics.contains("workqueue_adds_total{name=\"replicationcontroller\"}"),
        "{metrics}"
    );
    cm.abort();
}

/// The metrics text.
async fn metrics_text(port: u16) -> String {
    let h = atoll_testkit::Http::new(&format!("http://127.0.0.1:{port}"));
    String::from_utf8_lossy(&h.get("/metrics").await.body).into_owned()
}

#[tokio::test]
async fn adopts_matching_orphans_and_releases_pods_that_stop_matching() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let rcs: Api<ReplicationController> = Api::default_namespaced(client.clone());
    let pod_api: Api<Pod> = Api::default_namespaced(client.clone());
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod");
    pod_api
        .create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    let cm = start(&c, Config::default());
    let api_rc = rcs
        .create(&PostParams::default(), &rc("api", 2))
        .await
        .expect("rc");
    let uid = api_rc.uid().expect("uid");
    let two = eventually("the orphan adopted and one pod made", || async {
        let p = pods(&pod_api, "api").await;
        (p.len() == 2 && p.iter().all(|p| controlled_by(p, &uid))).then_some(p)
    })
    .await;
    assert!(two.iter().any(|p| p.name_any() == "orphan"));
    stays(&pod_api, "api", 2, Duration::from_secs(1)).await;
    // The orphan's label changes: it is released and replaced.
    pod_api
        .patch(
            "orphan",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
        )
        .await
        .expect("relabel");
    eventually("the relabelled pod released", || async {
        let p = pod_api.get("orphan").await.ok()?;
        p.owner_references().is_empty().then_some(())
    })
    .await;
    let replaced = wait_count(&pod_api, "api", 2).await;
    assert!(replaced.iter().all(|p| p.name_any() != "orphan"));
    // A pod controlled by another owner is never taken.
    cm.abort();
}

#[tokio::test]
async fn a_slow_cache_never_causes_double_creates() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let rcs: Api<ReplicationController> = Api::default_namespaced(client.clone());
    let pod_api: Api<Pod> = Api::default_namespaced(client.clone());
    let cm = start(
        &c,
        Config {
            cache_delay: Some(Duration::from_millis(150)),
            ..Config::default()
        },
    );
    rcs.create(&PostParams::default(), &rc("slow", 8))
        .await
        .expect("rc");
    // Every status write and every pod event reaches the controller 150 ms late: without expectations it
    // would count the pods it just made as missing and make more.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let n = pods(&pod_api, "slow").await.len();
        assert!(n <= 8, "{n} pods for 8 replicas");
        if n == 8 {
            break;
        }
        assert!(Instant::now() < end, "8 pods were not made in time ({n})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stays(&pod_api, "slow", 8, Duration::from_secs(3)).await;
    scale(&rcs, "slow", 3).await;
    wait_count(&pod_api, "slow", 3).await;
    stays(&pod_api, "slow", 3, Duration::from_secs(3)).await;
    cm.abort();
}

#[tokio::test]
async fn a_restart_mid_scale_ends_with_exactly_the_asked_replicas() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let rcs: Api<ReplicationController> = Api::default_namespaced(client.clone());
    let pod_api: Api<Pod> = Api::default_namespaced(client.clone());
    rcs.create(&PostParams::default(), &rc("big", 60))
        .await
        .expect("rc");
    let cm = start(&c, Config::default());
    eventually("some pods made", || async {
        let n = pods(&pod_api, "big").await.len();
        (n >= 1).then_some(())
    })
    .await;
    cm.abort();
    let _ = cm.await;
    let before = pods(&pod_api, "big").await.len();
    let cm = start(&c, Config::default());
    wait_count(&pod_api, "big", 60).await;
    stays(&pod_api, "big", 60, Duration::from_secs(2)).await;
    // And down again, interrupted.
    scale(&rcs, "big", 10).await;
    eventually("some pods deleted", || async {
        (pods(&pod_api, "big").await.len() < 60).then_some(())
    })
    .await;
    cm.abort();
    let _ = cm.await;
    let cm = start(&c, Config::default());
    wait_count(&pod_api, "big", 10).await;
    stays(&pod_api, "big", 10, Duration::from_secs(2)).await;
    cm.abort();
    assert!(before <= 60);
}

#[tokio::test]
async fn replica_sets_with_expressions_and_min_ready_seconds() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pod_api: Api<Pod> = Api::default_namespaced(client.clone());
    let cm = start(&c, Config::default());
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "front"},
        "spec": {
            "replicas": 2,
            "minReadySeconds": 2,
            "selector": {"matchLabels": {"app": "front"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable"]}]},
            "template": {
                "metadata": {"labels": {"app": "front", "track": "stable"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }))
    .expect("rs");
    let rs = rss.create(&PostParams::default(), &rs).await.expect("rs");
    let two = wait_count(&pod_api, "front", 2).await;
    assert!(
        two.iter()
            .all(|p| controlled_by(p, &rs.uid().expect("uid")))
    );
    for p in &two {
        run_ready(&pod_api, p, "n1").await;
    }
    eventually("ready but not yet available", || async {
        let s = rss.get("front").await.ok()?.status?;
        (s.ready_replicas == Some(2)).then_some(())
    })
    .await;
    eventually("available after minReadySeconds", || async {
        let s = rss.get("front").await.ok()?.status?;
        (s.available_replicas == Some(2)).then_some(())
    })
    .await;
    cm.abort();
}
