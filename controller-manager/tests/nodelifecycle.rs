//! The node lifecycle controller against a real API server and etcd. The tests stand in for kubelets:
//! a [`Kubelet`] renews its node's Lease and posts its Ready condition until it is dropped.

use std::time::{Duration, Instant};

use atoll_controller_manager::Config;
use atoll_controller_manager::nodelifecycle::Settings;
use atoll_testkit::{Cluster, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Taint};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Fast periods: a node is given up after 2 s of silence; tainting is not rate limited to speak of.
fn fast() -> Settings {
    Settings {
        node_monitor_period: Duration::from_millis(200),
        node_monitor_grace_period: Duration::from_secs(2),
        node_startup_grace_period: Duration::from_secs(2),
        node_eviction_rate: 100.0,
        ..Settings::default()
    }
}

fn start(
    c: &Cluster,
    settings: Settings,
) -> tokio::task::JoinHandle<Result<(), atoll_controller_manager::Error>> {
    let config = Config {
        node_lifecycle: settings,
        ..Config::default()
    };
    tokio::spawn(atoll_controller_manager::run_until(
        c.kube_client(),
        config,
        std::future::pending(),
    ))
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Registers a node, with the given status conditions (a kubelet that posted once), if any.
async fn add_node(client: &kube::Client, name: &str, conditions: Option<Value>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).expect("node"),
        )
        .await
        .expect("create node");
    if let Some(conditions) = conditions {
        let patch = json!({"status": {"conditions": conditions}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("post node status");
    }
}

/// The conditions a kubelet posts, Ready being `ready`.
fn kubelet_conditions(ready: &str) -> Value {
    let reason = if ready == "True" {
        "KubeletReady"
    } else {
        "KubeletNotReady"
    };
    json!([
        {"type": "Ready", "status": ready, "reason": reason, "lastHeartbeatTime": now(),
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
         "lastHeartbeatTime": now(), "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ])
}

/// A stand-in kubelet: renews `kube-node-lease/<node>` and posts the node's conditions every 250 ms
/// until dropped.
struct Kubelet(tokio::task::JoinHandle<()>);

impl Kubelet {
    fn start(client: &kube::Client, node: &str, ready: &'static str) -> Kubelet {
        let client = client.clone();
        let node = node.to_string();
        Kubelet(tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
            let nodes: Api<Node> = Api::all(client);
            loop {
                let renew = json!({"spec": {"renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
                let renewed = leases
                    .patch(&node, &PatchParams::default(), &Patch::Merge(&renew))
                    .await;
                if renewed.is_err() {
                    let lease = json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": node, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
                    });
                    let lease: Lease = serde_json::from_value(lease).expect("lease");
                    let _ = leases.create(&PostParams::default(), &lease).await;
                }
                let status = json!({"status": {"conditions": kubelet_conditions(ready)}});
                let _ = nodes
                    .patch_status(&node, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Creates a pod bound to `node` with these tolerations (the API server adds the default 300 s
/// not-ready/unreachable ones unless they are covered), and posts it Running and Ready.
async fn add_pod(client: &kube::Client, name: &str, node: &str, tolerations: Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                 "tolerations": tolerations},
    });
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).expect("pod"),
    )
    .await
    .expect("create pod");
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now()},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("post pod status");
}

/// A toleration of the unreachable NoExecute taint for `seconds` (None: forever).
fn tolerate_unreachable(seconds: Option<i64>) -> Value {
    let mut t = json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"});
    if let Some(s) = seconds {
        t["tolerationSeconds"] = s.into();
    }
    json!([t])
}

/// A toleration of both the not-ready and the unreachable NoExecute taints for `seconds`.
fn tolerate_both(seconds: i64) -> Value {
    json!([
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
        {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
    ])
}

async fn node(client: &kube::Client, name: &str) -> Node {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .expect("get node")
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    taints(node)
        .iter()
        .any(|t| t.key == key && t.effect == effect)
}

fn ready(node: &Node) -> Option<String> {
    condition(node, "Ready").map(|c| c.status)
}

fn condition(node: &Node, type_: &str) -> Option<k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// The pod, if it exists and is not being deleted.
async fn live_pod(client: &kube::Client, name: &str) -> Option<Pod> {
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await
        .expect("get pod")?;
    pod.metadata.deletion_timestamp.is_none().then_some(pod)
}

/// Waits until the pod is being deleted (or gone); returns it if it is still there.
async fn evicted(client: &kube::Client, name: &str) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(&format!("pod {name} to be evicted"), || async {
        match pods.get_opt(name).await.ok()? {
            None => Some(None),
            Some(p) if p.metadata.deletion_timestamp.is_some() => Some(Some(p)),
            Some(_) => None,
        }
    })
    .await
}

async fn event(client: &kube::Client, object: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually(&format!("a {reason} event on {object}"), || async {
        let fields = format!("involvedObject.name={object},reason={reason}");
        let list = events
            .list(&ListParams::default().fields(&fields))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await
}

#[tokio::test]
async fn a_silent_node_goes_unknown_is_tainted_evicted_and_restored_when_it_returns() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    add_node(&client, "alive", None).await;
    add_node(&client, "dead", None).await;
    add_node(&client, "never", None).await;
    let _alive = Kubelet::start(&client, "alive", "True");
    let dead = Kubelet::start(&client, "dead", "True");
    add_pod(&client, "now", "dead", tolerate_unreachable(Some(0))).await;
    add_pod(&client, "soon", "dead", tolerate_unreachable(Some(1))).await;
    add_pod(&client, "forever", "dead", tolerate_unreachable(None)).await;
    add_pod(&client, "default", "dead", json!([])).await;
    add_pod(&client, "elsewhere", "alive", tolerate_unreachable(Some(0))).await;
    let _cm = start(&c, fast());
    eventually("both kubelets to be up", || async {
        let ok = ready(&node(&client, "alive").await).as_deref() == Some("True")
            && ready(&node(&client, "dead").await).as_deref() == Some("True");
        ok.then_some(())
    })
    .await;

    // The kubelet of "dead" stops.
    drop(dead);
    let stopped = Instant::now();
    let gone = eventually("dead to be Unknown and tainted unreachable", || async {
        let n = node(&client, "dead").await;
        let done = ready(&n).as_deref() == Some("Unknown")
            && has_taint(&n, UNREACHABLE, "NoExecute")
            && has_taint(&n, UNREACHABLE, "NoSchedule");
        done.then_some(n)
    })
    .await;
    // Just tainted: the pod tolerating it for 1 s is still there.
    assert!(live_pod(&client, "soon").await.is_some());
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "given up after {:?}, before the grace period",
        stopped.elapsed()
    );
    let r = condition(&gone, "Ready").expect("Ready");
    assert_eq!(r.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        r.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let memory = condition(&gone, "MemoryPressure").expect("MemoryPressure");
    assert_eq!(memory.status, "Unknown");
    let disk = condition(&gone, "DiskPressure").expect("DiskPressure");
    assert_eq!(
        (disk.status.as_str(), disk.reason.as_deref()),
        ("Unknown", Some("NodeStatusNeverUpdated"))
    );
    let no_execute = taints(&gone)
        .into_iter()
        .find(|t| t.effect == "NoExecute")
        .expect("NoExecute taint");
    assert!(no_execute.time_added.is_some(), "{no_execute:?}");
    assert!(!has_taint(&gone, NOT_READY, "NoExecute"));
    let ev = event(&client, "alive", "RegisteredNode").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Registered Node alive in Controller")
    );
    let ev = event(&client, "dead", "NodeNotReady").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Node dead status is now: NodeNotReady")
    );

    // A node that never posted status is Unknown too, and says so.
    let never = eventually("never to be Unknown", || async {
        let n = node(&client, "never").await;
        (ready(&n).as_deref() == Some("Unknown")).then_some(n)
    })
    .await;
    let r = condition(&never, "Ready").expect("Ready");
    assert_eq!(r.reason.as_deref(), Some("NodeStatusNeverUpdated"));
    assert_eq!(
        r.message.as_deref(),
        Some("Kubelet never posted node status.")
    );
    assert_eq!(r.last_heartbeat_time, never.metadata.creation_timestamp);

    // Its intolerant pods go (at once, or after their 1 s), with the reason on them.
    if let Some(p) = evicted(&client, "now").await {
        let target = p
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "DisruptionTarget"))
            .expect("DisruptionTarget condition");
        assert_eq!(target.reason.as_deref(), Some("DeletionByTaintManager"));
    }
    let ev = event(&client, "now", "TaintManagerEviction").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Marking for deletion Pod default/now")
    );
    evicted(&client, "soon").await;
    // Those tolerating forever or for the default 300 s stay, no longer Ready.
    eventually("forever to be marked not Ready", || async {
        let pod = live_pod(&client, "forever").await?;
        let ready = pod
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "False").then_some(())
    })
    .await;
    assert!(live_pod(&client, "default").await.is_some());
    let ev = event(&client, "forever", "NodeNotReady").await;
    assert_eq!(ev.message.as_deref(), Some("Node is not ready"));

    // The node that kept renewing is untouched.
    let alive = node(&client, "alive").await;
    assert_eq!(ready(&alive).as_deref(), Some("True"));
    assert!(taints(&alive).is_empty(), "{:?}", taints(&alive));
    assert!(live_pod(&client, "elsewhere").await.is_some());

    // The kubelet comes back: the taints go, and the pending eviction of "default" is cancelled.
    let _back = Kubelet::start(&client, "dead", "True");
    eventually("dead to lose its taints", || async {
        let n = node(&client, "dead").await;
        let done = ready(&n).as_deref() == Some("True") && taints(&n).is_empty();
        done.then_some(())
    })
    .await;
    let ev = event(&client, "default", "TaintManagerEviction").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Cancelling deletion of Pod default/default")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(live_pod(&client, "default").await.is_some());
    assert!(live_pod(&client, "forever").await.is_some());
}

#[tokio::test]
async fn a_node_reporting_not_ready_is_tainted_not_ready_then_unreachable_then_clean() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    add_node(&client, "ok", None).await;
    add_node(&client, "sick", None).await;
    let _ok = Kubelet::start(&client, "ok", "True");
    let sick = Kubelet::start(&client, "sick", "False");
    add_pod(
        &client,
        "intolerant",
        "sick",
        json!([
            {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}
        ]),
    )
    .await;
    add_pod(&client, "patient", "sick", tolerate_both(3600)).await;
    let _cm = start(&c, fast());

    let n = eventually("sick to be tainted not-ready", || async {
        let n = node(&client, "sick").await;
        let done = has_taint(&n, NOT_READY, "NoExecute") && has_taint(&n, NOT_READY, "NoSchedule");
        done.then_some(n)
    })
    .await;
    // The kubelet's word stands: still False, not Unknown.
    assert_eq!(ready(&n).as_deref(), Some("False"));
    assert!(!has_taint(&n, UNREACHABLE, "NoExecute"));
    evicted(&client, "intolerant").await;
    assert!(live_pod(&client, "patient").await.is_some());

    // It goes silent: unreachable replaces not-ready.
    drop(sick);
    eventually("sick to be tainted unreachable instead", || async {
        let n = node(&client, "sick").await;
        let done = ready(&n).as_deref() == Some("Unknown")
            && has_taint(&n, UNREACHABLE, "NoExecute")
            && has_taint(&n, UNREACHABLE, "NoSchedule")
            && !has_taint(&n, NOT_READY, "NoExecute")
            && !has_taint(&n, NOT_READY, "NoSchedule");
        done.then_some(())
    })
    .await;

    // It comes back Ready: clean.
    let _healthy = Kubelet::start(&client, "sick", "True");
    eventually("sick to lose its taints", || async {
        taints(&node(&client, "sick").await)
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(live_pod(&client, "patient").await.is_some());
    let ok = node(&client, "ok").await;
    assert!(taints(&ok).is_empty());
}

/// Whether any of the nodes has a NoExecute taint.
async fn any_no_execute(client: &kube::Client, names: &[&str]) -> bool {
    for name in names {
        if taints(&node(client, name).await)
            .iter()
            .any(|t| t.effect == "NoExecute")
        {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn with_every_node_down_nothing_is_evicted_nor_while_most_of_a_small_cluster_is() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let names = ["a", "b", "c", "d"];
    // Four nodes whose kubelets posted once and then went (or the control plane lost them all): the
    // controller starts and hears from none.
    for n in names {
        add_node(&client, n, Some(kubelet_conditions("True"))).await;
        add_pod(
            &client,
            &format!("pod-{n}"),
            n,
            tolerate_unreachable(Some(0)),
        )
        .await;
    }
    let _cm = start(&c, fast());
    eventually("every node to be Unknown", || async {
        for n in names {
            let node = node(&client, n).await;
            if ready(&node).as_deref() != Some("Unknown")
                || !has_taint(&node, UNREACHABLE, "NoSchedule")
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Full disruption: no NoExecute taint, no eviction.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!any_no_execute(&client, &names).await);
    for n in names {
        assert!(live_pod(&client, &format!("pod-{n}")).await.is_some());
    }

    // One node back: 3 of 4 down in a small cluster is a partial disruption, tainting stays off.
    let _a = Kubelet::start(&client, "a", "True");
    eventually("a to be Ready", || async {
        (ready(&node(&client, "a").await).as_deref() == Some("True")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!any_no_execute(&client, &names).await);
    for n in names {
        assert!(live_pod(&client, &format!("pod-{n}")).await.is_some());
    }

    // A second back: 2 of 4 down is normal, and those two are tainted and their pods evicted.
    let _b = Kubelet::start(&client, "b", "True");
    for n in ["c", "d"] {
        eventually(&format!("{n} to be tainted NoExecute"), || async {
            has_taint(&node(&client, n).await, UNREACHABLE, "NoExecute").then_some(())
        })
        .await;
        evicted(&client, &format!("pod-{n}")).await;
    }
    assert!(live_pod(&client, "pod-a").await.is_some());
    assert!(live_pod(&client, "pod-b").await.is_some());
    assert!(!any_no_execute(&client, &["a", "b"]).await);
}

#[tokio::test]
async fn unhealthy_nodes_are_tainted_at_the_eviction_rate() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let mut kubelets = vec![];
    for n in ["up1", "up2", "up3", "down1", "down2"] {
        add_node(&client, n, None).await;
        kubelets.push(Kubelet::start(&client, n, "True"));
    }
    let settings = Settings {
        node_eviction_rate: 0.5,
        ..fast()
    };
    let _cm = start(&c, settings);
    eventually("every kubelet to be up", || async {
        for n in ["up1", "up2", "up3", "down1", "down2"] {
            if ready(&node(&client, n).await).as_deref() != Some("True") {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Both "down" kubelets stop at once: 2 of 5 is a normal zone, one node every 2 s.
    kubelets.truncate(3);
    let first = eventually("a first node to be tainted", || async {
        for n in ["down1", "down2"] {
            if has_taint(&node(&client, n).await, UNREACHABLE, "NoExecute") {
                return Some(n);
            }
        }
        None
    })
    .await;
    let at = Instant::now();
    let second = if first == "down1" { "down2" } else { "down1" };
    eventually("the second node to be tainted", || async {
        has_taint(&node(&client, second).await, UNREACHABLE, "NoExecute").then_some(())
    })
    .await;
    let gap = at.elapsed();
    assert!(
        gap >= Duration::from_millis(1500),
        "the second node was tainted {gap:?} after the first"
    );
    assert!(!any_no_execute(&client, &["up1", "up2", "up3"]).await);
}

#[tokio::test]
async fn pending_evictions_stop_when_every_node_goes_down() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    add_node(&client, "first", None).await;
    add_node(&client, "last", None).await;
    let first = Kubelet::start(&client, "first", "True");
    let last = Kubelet::start(&client, "last", "True");
    add_pod(&client, "waiting", "first", tolerate_unreachable(Some(4))).await;
    let _cm = start(&c, fast());
    eventually("both kubelets to be up", || async {
        let ok = ready(&node(&client, "first").await).as_deref() == Some("True")
            && ready(&node(&client, "last").await).as_deref() == Some("True");
        ok.then_some(())
    })
    .await;
    // One node goes: tainted, its pod due for eviction in 4 s.
    drop(first);
    eventually("first to be tainted NoExecute", || async {
        has_taint(&node(&client, "first").await, UNREACHABLE, "NoExecute").then_some(())
    })
    .await;
    // Then the other: every node is down, so the taint comes off and the eviction is cancelled.
    drop(last);
    eventually("first to lose its NoExecute taint", || async {
        let n = node(&client, "first").await;
        let down = ready(&node(&client, "last").await).as_deref() == Some("Unknown");
        (down && !has_taint(&n, UNREACHABLE, "NoExecute")).then_some(())
    })
    .await;
    let ev = event(&client, "waiting", "TaintManagerEviction").await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Cancelling deletion of Pod default/waiting")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(live_pod(&client, "waiting").await.is_some());
    assert!(!any_no_execute(&client, &["first", "last"]).await);
    // The NoSchedule taints stay: nothing new is placed on them.
    assert!(has_taint(
        &node(&client, "last").await,
        UNREACHABLE,
        "NoSchedule"
    ));
}

/// The pods of RC `web` that are not being deleted, with the node each is bound to ("" if none).
async fn rc_pods(client: &kube::Client) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            (p.metadata.name.unwrap_or_default(), node)
        })
        .collect()
}

#[tokio::test]
async fn pods_of_a_lost_node_are_evicted_and_their_controller_recreates_them() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    add_node(&client, "kept", None).await;
    add_node(&client, "lost", None).await;
    let _kept = Kubelet::start(&client, "kept", "True");
    let lost = Kubelet::start(&client, "lost", "True");
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"app": "web"}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "tolerations": tolerate_both(1)}}},
    });
    let rcs: Api<k8s_openapi::api::core::v1::ReplicationController> =
        Api::namespaced(client.clone(), "default");
    rcs.create(
        &PostParams::default(),
        &serde_json::from_value(rc).expect("rc"),
    )
    .await
    .expect("create rc");
    let _cm = start(&c, fast());
    let first = eventually("two pods", || async {
        let p = rc_pods(&client).await;
        (p.len() == 2).then_some(p)
    })
    .await;
    // Standing in for the scheduler: both go to "lost".
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, _) in &first {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"kind": "Node", "name": "lost"}});
        pods.create_subresource::<Value, Value>("binding", name, &PostParams::default(), &binding)
            .await
            .expect("bind");
    }
    drop(lost);
    // Tainted after 2 s of silence, evicted 1 s later; the RC makes two new pods, none on "lost"
    // (which the scheduler now avoids: it carries the unreachable NoSchedule taint).
    let replaced = eventually("the evicted pods replaced", || async {
        let p = rc_pods(&client).await;
        let fresh = p.len() == 2 && p.iter().all(|(n, _)| first.iter().all(|(f, _)| f != n));
        fresh.then_some(p)
    })
    .await;
    assert!(
        replaced.iter().all(|(_, node)| node != "lost"),
        "{replaced:?}"
    );
    assert!(has_taint(
        &node(&client, "lost").await,
        UNREACHABLE,
        "NoSchedule"
    ));
    event(&client, &first[0].0, "TaintManagerEviction").await;
}
