//! The scheduler against a real API server and etcd: Node objects stand for nodes (no kubelets),
//! pods are created through the API, and the tests watch where they are bound.

use std::collections::BTreeMap;

use atoll_scheduler::Config;
use atoll_testkit::{Cluster, eventually};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

struct Env {
    cluster: Cluster,
    client: kube::Client,
    scheduler: tokio::task::JoinHandle<Result<(), atoll_scheduler::Error>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.scheduler.abort();
    }
}

async fn start() -> Env {
    start_with(Config::default()).await
}

async fn start_with(config: Config) -> Env {
    let cluster = Cluster::start().await;
    let client = cluster.kube_client();
    let scheduler = tokio::spawn(atoll_scheduler::run(client.clone(), config));
    Env {
        cluster,
        client,
        scheduler,
    }
}

impl Env {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn add_node(&self, node: Value) {
        let node: Node = serde_json::from_value(node).expect("node");
        self.nodes()
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }

    async fn add_pod(&self, pod: Value) {
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    /// The node each named pod is bound to, once all are bound.
    async fn bound(&self, names: &[&str]) -> BTreeMap<String, String> {
        eventually("pods bound", || async {
            let mut out = BTreeMap::new();
            for n in names {
                let pod = self.pods().get(n).await.ok()?;
                let node = pod.spec?.node_name?;
                out.insert(n.to_string(), node);
            }
            Some(out)
        })
        .await
    }
}

fn node(name: &str, cpu: &str, memory: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

fn pod(name: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
    })
}

#[tokio::test]
async fn pods_land_on_nodes_that_fit() {
    let env = start().await;
    env.add_node(node("small", "1", "1Gi")).await;
    env.add_node(node("big", "4", "8Gi")).await;
    env.add_pod(pod("large", "3")).await;
    env.add_pod(pod("tiny", "100m")).await;
    let placed = env.bound(&["large", "tiny"]).await;
    assert_eq!(placed["large"], "big");
    // Binding sets PodScheduled=True and the scheduler reports it.
    let large = env.pods().get("large").await.expect("pod");
    let conditions = large.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    eventually("Scheduled event", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=large,reason=Scheduled"))
            .await
            .ok()?;
        let e = list.items.into_iter().next()?;
        assert_eq!(
            e.message.as_deref(),
            Some("Successfully assigned default/large to big")
        );
        Some(())
    })
    .await;
    // Pods of another scheduler are left alone.
    let mut other = pod("other", "100m");
    other["spec"]["schedulerName"] = json!("someone-else");
    env.add_pod(other).await;
    env.add_pod(pod("after-other", "100m")).await;
    env.bound(&["after-other"]).await;
    let other = env.pods().get("other").await.expect("pod");
    assert_eq!(other.spec.and_then(|s| s.node_name), None);
}

#[tokio::test]
async fn cordoned_and_tainted_nodes_get_only_what_they_should() {
    let env = start().await;
    let mut cordoned = node("cordoned", "4", "8Gi");
    cordoned["spec"]["unschedulable"] = json!(true);
    let mut gpu = node("gpu", "4", "8Gi");
    gpu["spec"]["taints"] = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    env.add_node(cordoned).await;
    env.add_node(gpu).await;
    env.add_node(node("plain", "4", "8Gi")).await;
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for n in &names {
        env.add_pod(pod(n, "100m")).await;
    }
    let mut tolerant = pod("tolerant", "100m");
    tolerant["spec"]["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    tolerant["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "gpu"});
    env.add_pod(tolerant).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let placed = env.bound(&refs).await;
    assert!(placed.values().all(|n| n == "plain"), "{placed:?}");
    assert_eq!(env.bound(&["tolerant"]).await["tolerant"], "gpu");
}

#[tokio::test]
async fn replicas_of_one_controller_spread_over_nodes() {
    let env = start().await;
    for n in ["n1", "n2", "n3"] {
        env.add_node(node(n, "8", "16Gi")).await;
    }
    // Pods of one ReplicationController (created here the way its controller would).
    let rcs: Api<k8s_openapi::api::core::v1::ReplicationController> =
        Api::namespaced(env.client.clone(), "default");
    let rc = rcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ReplicationController",
                "metadata": {"name": "web"},
                "spec": {"replicas": 6, "selector": {"app": "web"}, "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            }))
            .expect("rc"),
        )
        .await
        .expect("create rc");
    let uid = rc.metadata.uid.expect("uid");
    let names: Vec<String> = (0..6).map(|i| format!("web-{i}")).collect();
    for n in &names {
        let mut p = pod(n, "100m");
        p["metadata"]["labels"] = json!({"app": "web"});
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ReplicationController",
            "name": "web", "uid": uid, "controller": true}]);
        env.add_pod(p).await;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let placed = env.bound(&refs).await;
    let mut per_node = BTreeMap::new();
    for n in placed.values() {
        *per_node.entry(n.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{placed:?}"
    );
}

#[tokio::test]
async fn an_unschedulable_pod_is_told_why_and_placed_when_a_node_comes() {
    let env = start().await;
    env.add_node(node("small-1", "1", "1Gi")).await;
    env.add_node(node("small-2", "1", "1Gi")).await;
    let mut tainted = node("tainted", "8", "16Gi");
    tainted["spec"]["taints"] =
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    env.add_node(tainted).await;
    env.add_pod(pod("huge", "2")).await;
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu.";
    eventually("PodScheduled=False", || async {
        let p = env.pods().get("huge").await.ok()?;
        let c = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        // The scheduler may have tried before it saw every node: wait for the message about all three.
        (c.status == "False" && c.message.as_deref() == Some(expected)).then_some(())?;
        assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
        Some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    eventually("FailedScheduling event", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=huge,reason=FailedScheduling"))
            .await
            .ok()?;
        let e = list
            .items
            .into_iter()
            .find(|e| e.message.as_deref() == Some(expected))?;
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        Some(())
    })
    .await;
    // A node that fits arrives: the pod is placed there without waiting out the long retry.
    env.add_node(node("big", "4", "8Gi")).await;
    assert_eq!(env.bound(&["huge"]).await["huge"], "big");
    // Uncordoning helps too: a change to a node is a reason to try again.
    env.add_pod(pod("huge-2", "3")).await;
    eventually("huge-2 unschedulable", || async {
        let p = env.pods().get("huge-2").await.ok()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|_| ())
    })
    .await;
    env.nodes()
        .patch(
            "tainted",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .expect("untaint");
    assert_eq!(env.bound(&["huge-2"]).await["huge-2"], "tainted");
    let _ = &env.cluster;
}

#[tokio::test]
async fn metrics_count_attempts_and_queue_depth() {
    let port = atoll_testkit::free_port();
    let env = start_with(Config {
        metrics_addr: Some(format!("127.0.0.1:{port}").parse().expect("addr")),
        ..Config::default()
    })
    .await;
    env.add_node(node("n", "1", "1Gi")).await;
    env.add_pod(pod("p", "100m")).await;
    env.add_pod(pod("too-big", "2")).await;
    env.bound(&["p"]).await;
    let http = atoll_testkit::Http::new(&format!("http://127.0.0.1:{port}"));
    eventually("metrics", || async {
        let text = String::from_utf8_lossy(&http.get("/metrics").await.body).into_owned();
        let has = |line: &str| text.lines().any(|l| l == line);
        (has("scheduler_schedule_attempts_total{result=\"scheduled\"} 1")
            && text.contains("scheduler_schedule_attempts_total{result=\"unschedulable\"}")
            && has("scheduler_pending_pods{queue=\"unschedulable\"} 1")
            && text.contains("scheduler_scheduling_attempt_duration_seconds_bucket"))
        .then_some(())
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&http.get("/healthz").await.body),
        "ok"
    );
}
