//! `rc-bench`: how fast a ReplicationController of 1,000 replicas gets all its pods created and bound,
//! against the same 1,000 pods created directly by a client in the same run.
//!
//! Starts a real etcd and the `atoll apiserver`, `atoll scheduler` and `atoll controller-manager`
//! binaries (build them with `cargo build --release -p atoll` first), registers 5,000 Node objects
//! (no kubelets), then:
//! 1. baseline: 1,000 pods created by this client (64 concurrent) until the scheduler has bound them;
//! 2. an RC of 1,000 replicas of the same pod: time until the controller manager has created them all
//!    and until the scheduler has bound them all; the controller manager's CPU per pod is the
//!    reconcile cost;
//! 3. the RC scaled to 0: time until its status shows no replicas.
//!
//! Run: `cargo run --release -p atoll-bench --bin rc-bench [-- --quick]`.

use std::time::{Duration, Instant};

use atoll_bench::{ComponentProcess, ControlPlane, NS, cpu_time, create_all, node, pod, rss_mb};
use atoll_testkit::Http;
use serde_json::{Value, json};

/// The namespace of the RC (the baseline's pods are in [`NS`]).
const RC_NS: &str = "rc";

/// Waits until `done()` holds, polling every 50 ms for at most 10 minutes; returns the time taken.
async fn time_until<F, Fut>(start: Instant, what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = start + Duration::from_secs(600);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} took over 10 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// How many pods the namespace has (metadata only).
async fn pod_count(http: &Http, ns: &str) -> usize {
    let r = http
        .send(
            "GET",
            &format!("/api/v1/namespaces/{ns}/pods"),
            &[(
                "accept",
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )],
            "",
        )
        .await;
    r.json()["items"].as_array().map_or(0, Vec::len)
}

/// The RC: `replicas` copies of the benchmark pod.
fn rc(replicas: usize) -> Value {
    let p = pod("template", 0);
    json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "web", "namespace": RC_NS},
        "spec": {
            "replicas": replicas,
            "selector": {"app": "web"},
            "template": {
                "metadata": {"labels": p["metadata"]["labels"], "annotations": p["metadata"]["annotations"]},
                "spec": p["spec"],
            },
        },
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (nodes, replicas) = if quick { (500, 200) } else { (5000, 1000) };
    println!("# rc-bench: an RC's pods created and bound, against a client creating the same pods");
    let ControlPlane {
        api,
        http,
        dir,
        etcd,
    } = ControlPlane::start("rc-bench", &[NS, RC_NS]).await;
    let node_bodies = (0..nodes)
        .map(|i| serde_json::to_vec(&node(&format!("node-{i}"))).expect("json"))
        .collect();
    create_all(&http, "/api/v1/nodes", node_bodies).await;
    let scheduler = ComponentProcess::start(&api, dir.path(), "scheduler", &[]);
    let manager = ComponentProcess::start(&api, dir.path(), "controller-manager", &[]);

    // 1. The baseline: the client creates the pods itself.
    // Without the benchmark pod's owner reference: it names an RC that does not exist, so the garbage
    // collector would delete them.
    let bodies: Vec<Vec<u8>> = (0..replicas)
        .map(|i| {
            let mut p = pod(&format!("p{i}"), i);
            p["metadata"]
                .as_object_mut()
                .map(|m| m.remove("ownerReferences"));
            serde_json::to_vec(&p).expect("json")
        })
        .collect();
    let start = Instant::now();
    create_all(&http, "/api/v1/namespaces/bench/pods", bodies).await;
    let created_direct = start.elapsed();
    let direct = time_until(start, "binding the client's pods", || async {
        scheduler.bound().await >= replicas as u64
    })
    .await;

    // 2. The RC.
    let pids = [
        api.pid(),
        etcd.pid(),
        manager.child.id(),
        scheduler.child.id(),
    ];
    let cpu_before = pids.map(cpu_time);
    let bound_before = scheduler.bound().await;
    let start = Instant::now();
    let r = http
        .json(
            "POST",
            &format!("/api/v1/namespaces/{RC_NS}/replicationcontrollers"),
            &rc(replicas),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = time_until(start, "the RC's pods to be created", || async {
        pod_count(&http, RC_NS).await >= replicas
    })
    .await;
    let bound = time_until(start, "the RC's pods to be bound", || async {
        scheduler.bound().await >= bound_before + replicas as u64
    })
    .await;
    let cpu_per_pod = |i: usize| {
        let used = cpu_time(pids[i]).saturating_sub(cpu_before[i]);
        format!("{:.0} µs", used.as_secs_f64() * 1e6 / replicas as f64)
    };
    let cpu = format!(
        "cpu per pod: controller-manager {}, apiserver {}, etcd {}, scheduler {}",
        cpu_per_pod(2),
        cpu_per_pod(0),
        cpu_per_pod(1),
        cpu_per_pod(3)
    );
    let rss = rss_mb(manager.child.id());
    assert_eq!(
        pod_count(&http, RC_NS).await,
        replicas,
        "exactly the replicas asked for"
    );

    // 3. Scale to zero.
    let start = Instant::now();
    let r = http
        .patch(
            &format!("/api/v1/namespaces/{RC_NS}/replicationcontrollers/web"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 0}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let scaled_down = time_until(start, "scaling to zero", || async {
        let rc = http
            .get(&format!(
                "/api/v1/namespaces/{RC_NS}/replicationcontrollers/web"
            ))
            .await
            .json();
        rc["status"]["replicas"].as_i64() == Some(0)
            && rc["status"]["observedGeneration"] == rc["metadata"]["generation"]
    })
    .await;

    println!(
        "{nodes} nodes, {replicas} replicas: RC all created {:.2} s, all bound {:.2} s; \
         baseline (client creates, 64 concurrent): created {:.2} s, bound {:.2} s; \
         ratio baseline/RC {:.2}; {cpu}; controller-manager RSS {rss:.0} MiB; scale to 0: {:.2} s",
        created.as_secs_f64(),
        bound.as_secs_f64(),
        created_direct.as_secs_f64(),
        direct.as_secs_f64(),
        direct.as_secs_f64() / bound.as_secs_f64(),
        scaled_down.as_secs_f64(),
    );
}
