//! `sched-bench`: the scheduler in the manner of Kubernetes' scheduler_perf, measured in one run
//! against the machine's raw etcd write rate.
//!
//! Starts a real etcd, the `atoll apiserver` binary and the `atoll scheduler` binary (build them with
//! `cargo build --release -p atoll` first), then for each size (500 nodes / 5,000 pods and 5,000 nodes
//! / 30,000 pods):
//! 1. the raw etcd write rate (puts of a pod's bytes, 64 concurrent): the ceiling, since every pod
//!    costs at least a create and a bind;
//! 2. N Node objects (no kubelets), then M pods created through the API at 64 concurrent clients;
//!    throughput from the first create to the last binding written;
//! 3. the in-process decision rate: the scheduler's cache with N nodes deciding and assuming M pods
//!    on one core, without I/O.
//!
//! Run: `cargo run --release -p atoll-bench --bin sched-bench [-- --quick | --decisions-only | --size NODES/PODS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_bench::{
    ComponentProcess, ControlPlane, NS, cpu_time, create_all, etcd_ceiling, node, pod,
};
use serde_json::json;

/// Decisions per second of the scheduler's cache alone: `nodes` nodes, `pods` pods decided and
/// assumed one after another on this thread.
fn decision_rate(nodes: usize, pods: usize) -> f64 {
    use atoll_scheduler::cache::Cache;
    use atoll_scheduler::pod_info::PodInfo;
    use rand::SeedableRng;
    let mut cache = Cache::new();
    for i in 0..nodes {
        let n: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(node(&format!("node-{i}"))).expect("node");
        cache.upsert_node(Arc::new(n));
    }
    let infos: Vec<Arc<PodInfo>> = (0..pods)
        .map(|i| {
            let mut p = pod(&format!("p{i}"), i);
            p["metadata"]["uid"] = json!(format!("uid-{i}"));
            let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(p).expect("pod");
            Arc::new(PodInfo::new(Arc::new(p)))
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let start = Instant::now();
    for info in &infos {
        let node = cache.schedule(info, &mut rng).expect("fits");
        cache.assume(info.clone(), &node);
    }
    pods as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Only the in-process decision rate at 5,000 nodes, to attach a profiler.
    if std::env::args().any(|a| a == "--decisions-only") {
        for _ in 0..5 {
            println!(
                "5000 nodes / 30000 pods: in-process decisions {:.0} pods/s",
                decision_rate(5000, 30_000)
            );
        }
        return;
    }
    // `--size NODES/PODS` runs one size instead of the standard two.
    let args: Vec<String> = std::env::args().collect();
    let custom: Vec<(usize, usize)> = args
        .windows(2)
        .filter(|w| w[0] == "--size")
        .filter_map(|w| {
            let (n, p) = w[1].split_once('/')?;
            Some((n.parse().ok()?, p.parse().ok()?))
        })
        .collect();
    let sizes: &[(usize, usize)] = if !custom.is_empty() {
        &custom
    } else if quick {
        &[(100, 1000)]
    } else {
        &[(500, 5000), (5000, 30_000)]
    };
    println!(
        "# sched-bench: scheduler throughput vs the raw etcd write rate, same machine, same run"
    );
    for (round, &(nodes, pods)) in sizes.iter().enumerate() {
        let ControlPlane {
            api,
            http,
            dir,
            etcd,
        } = ControlPlane::start("sched-bench", &[NS]).await;

        let ceiling = etcd_ceiling(&etcd, 5000, round).await;
        let node_bodies = (0..nodes)
            .map(|i| serde_json::to_vec(&node(&format!("node-{i}"))).expect("json"))
            .collect();
        let node_rate = create_all(&http, "/api/v1/nodes", node_bodies).await;

        let scheduler = ComponentProcess::start(&api, dir.path(), "scheduler", &[]);
        // A first pod, bound, shows the scheduler has listed the nodes.
        let warm = serde_json::to_vec(&pod("warm-up", 0)).expect("json");
        create_all(&http, "/api/v1/namespaces/bench/pods", vec![warm]).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while scheduler.bound().await < 1 {
            assert!(
                Instant::now() < deadline,
                "the scheduler never bound the first pod"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let bodies: Vec<Vec<u8>> = (0..pods)
            .map(|i| serde_json::to_vec(&pod(&format!("p{i}"), i)).expect("json"))
            .collect();
        let pids = [
            api.pid(),
            etcd.pid(),
            scheduler.child.id(),
            std::process::id(),
        ];
        let cpu_before = pids.map(cpu_time);
        let start = Instant::now();
        let h = http.clone();
        let creating =
            tokio::spawn(
                async move { create_all(&h, "/api/v1/namespaces/bench/pods", bodies).await },
            );
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut created_at = None;
        // Bindings per 5 s, to see whether the rate holds as the store grows.
        let mut progress = (Instant::now(), 0u64, vec![]);
        loop {
            if created_at.is_none() && creating.is_finished() {
                created_at = Some(start.elapsed());
            }
            let bound = scheduler.bound().await;
            if progress.0.elapsed() >= Duration::from_secs(5) {
                let rate = (bound - progress.1) as f64 / progress.0.elapsed().as_secs_f64();
                progress.2.push(format!("{rate:.0}"));
                progress = (Instant::now(), bound, progress.2);
            }
            if bound >= (pods + 1) as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not all pods were bound within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = start.elapsed();
        let cpu_per_pod = |i: usize| {
            let used = cpu_time(pids[i]).saturating_sub(cpu_before[i]);
            format!("{:.0} µs", used.as_secs_f64() * 1e6 / pods as f64)
        };
        let cpu = format!(
            "cpu per pod: apiserver {}, etcd {}, scheduler {}, this client {}",
            cpu_per_pod(0),
            cpu_per_pod(1),
            cpu_per_pod(2),
            cpu_per_pod(3)
        );
        let create_rate = creating.await.expect("creates");
        let per_5s = progress.2.join(" ");
        let end_to_end = pods as f64 / elapsed.as_secs_f64();
        // Every pod is bound, once: the API agrees with the scheduler's count.
        let list = http.get("/api/v1/namespaces/bench/pods").await.json();
        let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let unbound = items
            .iter()
            .filter(|p| p["spec"]["nodeName"].as_str().unwrap_or("").is_empty())
            .count();
        assert_eq!(unbound, 0, "pods left unbound");
        drop(scheduler);

        let allowed = ceiling / 2.0;
        let target = allowed.min(1000.0) * if allowed < 1000.0 { 0.8 } else { 1.0 };
        println!(
            "{nodes} nodes / {pods} pods: end to end {end_to_end:.0} pods/s ({:.1} s; creates alone {create_rate:.0}/s, done after {:.1} s); \
             etcd ceiling {ceiling:.0} puts/s → {allowed:.0} pods/s at create+bind; target {target:.0} pods/s, ratio {:.2}; nodes created at {node_rate:.0}/s; {cpu}; pods/s per 5 s: {per_5s}",
            elapsed.as_secs_f64(),
            created_at.unwrap_or(elapsed).as_secs_f64(),
            end_to_end / target,
        );
        let decisions = tokio::task::spawn_blocking(move || decision_rate(nodes, pods))
            .await
            .expect("decisions");
        println!(
            "{nodes} nodes / {pods} pods: in-process decisions {decisions:.0} pods/s (target 20000 at 5000 nodes, ratio {:.2})",
            decisions / 20_000.0
        );
    }
}
