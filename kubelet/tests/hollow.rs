//! Hollow kubelets (the simulated runtime, nothing runs) against a real etcd and API server, with the
//! real scheduler and controller manager (node IPAM, replication, garbage collection) in this
//! process: 50 nodes run an RC of 500 pods, scaled up and down, a probed pod and a crash-looping pod.

#![allow(clippy::unwrap_used)] // a test: a failed step should fail it loudly

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use atoll_kubelet::hollow::nodes::{self, Settings};
use atoll_testkit::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod, ReplicationController};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NODES: usize = 50;
const REPLICAS: usize = 500;

/// The cluster and everything started on it; the components stop when it is dropped.
struct Env {
    cluster: Cluster,
    runtimes: nodes::Runtimes,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    root: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start() -> Env {
    let cluster = Cluster::start().await;
    let client = cluster.kube_client();
    let mut tasks = Vec::new();
    let cm = atoll_controller_manager::Config {
        cluster_cidr: Some("10.244.0.0/16".into()),
        node_cidr_mask_size: 24,
        ..Default::default()
    };
    let c = client.clone();
    tasks.push(tokio::spawn(async move {
        let r = atoll_controller_manager::run_until(c, cm, std::future::pending()).await;
        panic!("the controller manager stopped: {r:?}");
    }));
    let c = client.clone();
    tasks.push(tokio::spawn(async move {
        let r = atoll_scheduler::run(c, atoll_scheduler::Config::default()).await;
        panic!("the scheduler stopped: {r:?}");
    }));
    let root = tempfile::Builder::new()
        .prefix("atoll-hollow-")
        .tempdir()
        .unwrap();
    let mut settings = Settings::new(NODES);
    settings.root_dir = root.path().to_path_buf();
    settings.template.status_interval = Duration::from_secs(2);
    settings.template.crash_backoff = Duration::from_millis(200);
    let (stop, stop_rx) = watch::channel(false);
    let (runtimes, all) = nodes::start(&[client], &settings, stop_rx);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = all.await {
            panic!("a hollow kubelet failed: {e}");
        }
    }));
    Env {
        cluster,
        runtimes,
        stop,
        tasks,
        root,
    }
}

/// Polls `check` every second (listing 500 pods is not free) until it gives an answer, failing after `secs` seconds.
async fn within<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// Ready, and untainted (the node lifecycle controller taints a node while it is not Ready).
fn ready(n: &Node) -> bool {
    n.spec
        .as_ref()
        .is_none_or(|s| s.taints.as_ref().is_none_or(|t| t.is_empty()))
        && n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u32::MAX << (32 - len);
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| u32::from(ip) & mask == u32::from(net) & mask)
}

fn running_with_ip(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running") && s.pod_ip.as_ref().is_some_and(|ip| !ip.is_empty())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hollow_nodes_run_an_rc_of_500_and_a_crash_loop() {
    let env = start().await;
    let client = env.cluster.kube_client();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let rcs: Api<ReplicationController> = Api::default_namespaced(client.clone());

    // Every node registers, gets a pod CIDR from node IPAM and turns Ready.
    let cidrs: BTreeMap<String, String> =
        within(30, "50 Ready, untainted nodes with pod CIDRs", || async {
            let list = nodes.list(&ListParams::default()).await.ok()?.items;
            let ok: BTreeMap<String, String> = list
                .iter()
                .filter(|n| ready(n))
                .filter_map(|n| {
                    Some((n.metadata.name.clone()?, n.spec.as_ref()?.pod_cidr.clone()?))
                })
                .collect();
            (ok.len() == NODES).then_some(ok)
        })
        .await;
    let node = nodes.get("hollow-7").await.unwrap();
    let status = node.status.unwrap();
    assert_eq!(status.capacity.unwrap()["cpu"].0, "4");
    assert_eq!(
        status.node_info.unwrap().container_runtime_version,
        "hollow://0.1.0"
    );

    // An RC of 500: all Running, each with its own address inside its node's CIDR, on every node.
    let rc: ReplicationController = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "web"},
        "spec": {"replicas": REPLICAS, "selector": {"app": "web"}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 30, "containers": [{
                "name": "web", "image": "busybox:1.35", "command": ["httpd", "-f"],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
    }))
    .unwrap();
    rcs.create(&PostParams::default(), &rc).await.unwrap();
    let web = ListParams::default().labels("app=web");
    let running = within(120, "500 pods Running with pod IPs", || async {
        let list = pods.list(&web).await.ok()?.items;
        let n = list.iter().filter(|p| running_with_ip(p)).count();
        (list.len() == REPLICAS && n == REPLICAS).then_some(list)
    })
    .await;
    let mut ips = HashSet::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &running {
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        let status = p.status.as_ref().unwrap();
        let ip = status.pod_ip.clone().unwrap();
        assert!(
            in_cidr(&ip, &cidrs[&node]),
            "{ip} outside {node}'s {}",
            cidrs[&node]
        );
        assert!(ips.insert(ip.clone()), "{ip} given twice");
        assert!(status.host_ip.as_deref().unwrap().starts_with("198.18."));
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), NODES, "every node runs some: {per_node:?}");
    assert!(per_node.values().all(|n| *n <= 30), "spread: {per_node:?}");
    // Probes against made-up pod IPs pass on hollow (network ones without a connection, exec ones
    // through ExecSync), so the pod turns Ready and stays up.
    let probed: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.35", "command": ["httpd", "-f"],
            "startupProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1},
            "readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 1},
            "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 1}}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &probed).await.unwrap();
    within(30, "the probed pod to be Ready", || async {
        let s = pods.get("probed").await.ok()?.status?;
        let c = s.container_statuses?.into_iter().next()?;
        (c.ready && c.started == Some(true)).then_some(c.restart_count)
    })
    .await;

    // A container that exits with 1 under restartPolicy Always restarts again and again.
    let crash: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crash"},
        "spec": {"restartPolicy": "Always", "containers": [
            {"name": "c", "image": "busybox:1.35", "command": ["false"]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &crash).await.unwrap();
    let restarts = within(30, "restartCount to reach 3", || async {
        let s = pods.get("crash").await.ok()?.status?;
        let c = s.container_statuses?.into_iter().next()?;
        (c.restart_count >= 3).then_some(c)
    })
    .await;
    let last = restarts.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));

    // Scaled to 0, every pod goes: each kubelet stops it and confirms the graceful deletion.
    rcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    within(60, "every pod of the RC to be gone", || async {
        pods.list(&web).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    within(
        10,
        "the hollow runtimes to hold only the crash and probed pods",
        || async {
            let sandboxes: usize = env
                .runtimes
                .iter()
                .map(|(_, h)| h.list_sandboxes(&Default::default()).unwrap().len())
                .sum();
            (sandboxes == 2).then_some(())
        },
    )
    .await;
    let probed = pods.get("probed").await.unwrap().status.unwrap();
    assert_eq!(
        probed.container_statuses.unwrap()[0].restart_count,
        0,
        "liveness never failed"
    );
    assert!(
        std::fs::read_dir(env.root.path()).unwrap().next().is_none(),
        "no files for pods without volumes"
    );
}
