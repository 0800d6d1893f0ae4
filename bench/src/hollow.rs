//! `hollow-bench`: a cluster of hollow nodes (kubemark-style) running an RC's pods end to end, against
//! the machine's raw etcd write rate measured in the same run.
//!
//! Starts a real etcd and the `atoll apiserver`, `atoll scheduler`, `atoll controller-manager` (node
//! IPAM on) and `atoll hollow-nodes` binaries (build them with `cargo build --release -p atoll`
//! first), then:
//! 1. the raw etcd write rate (puts of a pod's bytes, 64 concurrent, as sched-bench): the ceiling,
//!    since every pod costs at least a create, a bind and a status write (3 writes);
//! 2. N hollow nodes in one process: time until all are Ready and untainted; the process's RSS then,
//!    and the CPU the heartbeats alone cost (10 s without pods);
//! 3. an RC of M replicas of the benchmark pod (configMap and emptyDir volumes, probes): time from its
//!    create until a watch has seen every pod Running; the hollow process's RSS per node after;
//! 4. the RC scaled to 0: time until the watch has seen every pod deleted.
//!
//! Run: `cargo run --release -p atoll-bench --bin hollow-bench [-- --nodes 1000 --pods 3000 --clients 1 | --quick]`.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atoll_bench::{ComponentProcess, ControlPlane, NS, cpu_time, etcd_ceiling, pod, rss_mb};
use atoll_testkit::{ApiProcess, Http};
use serde_json::{Value, json};

/// `atoll hollow-nodes` as a child process; killed on drop.
struct HollowNodes(Child);

impl HollowNodes {
    fn start(api: &ApiProcess, dir: &std::path::Path, nodes: usize, clients: usize) -> HollowNodes {
        let kubeconfig = dir.join("hollow.kubeconfig");
        atoll_testkit::write_kubeconfig(&kubeconfig, &api.base);
        let child = Command::new(atoll_testkit::atoll_bin())
            .arg("hollow-nodes")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--count", &nodes.to_string()])
            .args(["--clients", &clients.to_string()])
            .arg("--root-dir")
            .arg(dir.join("hollow"))
            .env("ATOLL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start atoll hollow-nodes");
        HollowNodes(child)
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn flag(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
}

/// How many nodes are Ready and carry no taint.
async fn ready_nodes(http: &Http) -> usize {
    let list = http.get("/api/v1/nodes").await.json();
    list["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|n| n["spec"]["taints"].as_array().is_none_or(Vec::is_empty))
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count()
    })
}

/// Follows the watch until `done(running, seen)` holds: `running` are the pods last seen Running,
/// `seen` every pod seen and not deleted. Returns how many pod writes (watch events) it saw.
async fn follow(
    watch: &mut atoll_testkit::Lines,
    running: &mut HashSet<String>,
    seen: &mut HashSet<String>,
    what: &str,
    done: impl Fn(&HashSet<String>, &HashSet<String>) -> bool,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut writes = 0;
    while !done(running, seen) {
        assert!(Instant::now() < deadline, "{what} took over 15 minutes");
        let Some(event) = watch.next(Duration::from_secs(60)).await else {
            panic!("the pod watch ended or went quiet waiting for {what}");
        };
        let name = event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        writes += 1;
        match event["type"].as_str() {
            Some("DELETED") => {
                running.remove(&name);
                seen.remove(&name);
            }
            Some("ADDED" | "MODIFIED") => {
                seen.insert(name.clone());
                if event["object"]["status"]["phase"] == "Running" {
                    running.insert(name);
                } else {
                    running.remove(&name);
                }
            }
            _ => {}
        }
    }
    writes
}

fn rc(replicas: usize) -> Value {
    let p = pod("template", 0);
    let mut labels = p["metadata"]["labels"].clone();
    labels["app"] = json!("hollow");
    json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "hollow", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"app": "hollow"},
            "template": {"metadata": {"labels": labels}, "spec": p["spec"]},
        },
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let nodes = flag("--nodes").unwrap_or(if quick { 100 } else { 1000 });
    let pods = flag("--pods").unwrap_or(if quick { 500 } else { 3000 });
    let clients = flag("--clients").unwrap_or(1);
    println!(
        "# hollow-bench: hollow nodes run an RC's pods end to end, against the raw etcd write rate"
    );
    let ControlPlane {
        api,
        http,
        dir,
        etcd,
    } = ControlPlane::start("hollow-bench", &[NS]).await;
    // The benchmark pod mounts this configMap.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"},
        "data": {"web.conf": "listen 8080\n"}});
    assert_eq!(
        http.json("POST", &format!("/api/v1/namespaces/{NS}/configmaps"), &cm)
            .await
            .status,
        201
    );

    // 1. The baseline.
    let ceiling = etcd_ceiling(&etcd, 5000, 0).await;

    // 2. The nodes.
    let scheduler = ComponentProcess::start(&api, dir.path(), "scheduler", &[]);
    let manager = ComponentProcess::start(
        &api,
        dir.path(),
        "controller-manager",
        &["--cluster-cidr=10.128.0.0/9", "--node-cidr-mask-size=24"],
    );
    let start = Instant::now();
    let hollow = HollowNodes::start(&api, dir.path(), nodes, clients);
    let hollow_pid = hollow.0.id();
    let deadline = start + Duration::from_secs(600);
    while ready_nodes(&http).await < nodes {
        assert!(
            Instant::now() < deadline,
            "the hollow nodes were not all Ready within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let nodes_ready = start.elapsed();
    let rss_idle = rss_mb(hollow_pid);
    // The heartbeat load alone (Leases, node status), over 10 s without pods.
    let idle_pids = [api.pid(), etcd.pid(), hollow_pid];
    let idle_before = idle_pids.map(cpu_time);
    let idle_window = Duration::from_secs(10);
    tokio::time::sleep(idle_window).await;
    let idle_share = |i: usize| {
        let used = cpu_time(idle_pids[i]).saturating_sub(idle_before[i]);
        format!(
            "{:.0} %",
            100.0 * used.as_secs_f64() / idle_window.as_secs_f64()
        )
    };
    let idle = format!(
        "idle (heartbeats only) cpu: apiserver {}, etcd {}, hollow nodes {}",
        idle_share(0),
        idle_share(1),
        idle_share(2)
    );

    // 3. The RC, observed by a watch.
    let list = http
        .get(&format!("/api/v1/namespaces/{NS}/pods"))
        .await
        .json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut watch = http
        .stream(
            &format!("/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={rv}&labelSelector=app%3Dhollow"),
            "application/json",
        )
        .await;
    assert_eq!(watch.status, 200, "watch pods");
    let pids = [
        api.pid(),
        etcd.pid(),
        scheduler.child.id(),
        manager.child.id(),
        hollow_pid,
    ];
    let cpu_before = pids.map(cpu_time);
    let start = Instant::now();
    let r = http
        .json(
            "POST",
            &format!("/api/v1/namespaces/{NS}/replicationcontrollers"),
            &rc(pods),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let (mut running, mut seen) = (HashSet::new(), HashSet::new());
    let pod_writes = follow(
        &mut watch,
        &mut running,
        &mut seen,
        "every pod Running",
        |running, _| running.len() >= pods,
    )
    .await;
    let all_running = start.elapsed();
    let rss_busy = rss_mb(hollow_pid);
    let cpu_per_pod = |i: usize| {
        let used = cpu_time(pids[i]).saturating_sub(cpu_before[i]);
        format!("{:.0} µs", used.as_secs_f64() * 1e6 / pods as f64)
    };
    let cpu = format!(
        "cpu per pod: apiserver {}, etcd {}, scheduler {}, controller-manager {}, hollow nodes {}",
        cpu_per_pod(0),
        cpu_per_pod(1),
        cpu_per_pod(2),
        cpu_per_pod(3),
        cpu_per_pod(4)
    );

    // 4. Scaled to 0.
    let start = Instant::now();
    let r = http
        .patch(
            &format!("/api/v1/namespaces/{NS}/replicationcontrollers/hollow"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 0}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    follow(
        &mut watch,
        &mut running,
        &mut seen,
        "every pod deleted",
        |_, seen| seen.is_empty(),
    )
    .await;
    let all_gone = start.elapsed();
    let events = http
        .send(
            "GET",
            &format!("/api/v1/namespaces/{NS}/events"),
            &[(
                "accept",
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )],
            "",
        )
        .await
        .json()["items"]
        .as_array()
        .map_or(0, Vec::len);

    let rate = pods as f64 / all_running.as_secs_f64();
    let allowed = ceiling / 3.0;
    println!(
        "{nodes} hollow nodes ({clients} API client(s)): all Ready in {:.1} s; RSS {rss_idle:.0} MiB idle = {:.0} KiB per node; {idle}",
        nodes_ready.as_secs_f64(),
        rss_idle * 1024.0 / nodes as f64,
    );
    println!(
        "{pods} pods through an RC: all Running (watch) in {:.1} s = {rate:.0} pods/s; etcd ceiling {ceiling:.0} puts/s → {allowed:.0} pods/s at create+bind+status, ratio {:.2}; \
         hollow RSS with the pods {rss_busy:.0} MiB = {:.0} KiB per node; scaled to 0: all gone in {:.1} s; {cpu}; \
         per pod until Running: {:.1} pod writes (watch events), {:.1} Events (whole run)",
        all_running.as_secs_f64(),
        rate / allowed,
        rss_busy * 1024.0 / nodes as f64,
        all_gone.as_secs_f64(),
        pod_writes as f64 / pods as f64,
        events as f64 / pods as f64,
    );
}
