//! `up-bench`: how long `atoll up` takes to a cluster whose nodes are all Ready, with 1 and 3 hosts,
//! and how much memory the control plane (API server + scheduler + controller manager) holds idle
//! and with 1,000 pods, each beside a baseline measured in the same run.
//!
//! - Start-up: `atoll up --nodes N` (network, etcd, the control plane, the image build and registry,
//!   per node containerd + kubelet + proxy, until every node is Ready and untainted), against the
//!   time the parts Atoll does not make take to start on this machine: etcd, and one containerd per
//!   node (their start-up to ready, measured with the test harness).
//! - Memory: the resident memory of the three control-plane processes of a 1-node cluster after
//!   10 s idle, then with 1,000 pods Running (an RC placed on 10 hollow nodes from `atoll
//!   hollow-nodes`, so that the pods exist as objects, are scheduled, watched and reported as on
//!   real nodes), against etcd's resident memory at the same moments (it holds the same objects).
//!   Target: the three together under 200 MB at 1,000 pods.
//!
//! Everything runs in a private network namespace. Build first: `cargo build --release -p atoll
//! -p atoll-bench`; run as root: `./target/release/up-bench [--pods 1000]`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atoll_bench::rss_mb;
use atoll_cluster::layout::Layout;
use atoll_cluster::process::live_pid;
use atoll_testkit::runtime::{Containerd, Registry, isolate_network};
use atoll_testkit::{Etcd, Http};
use serde_json::{Value, json};

/// Runs `atoll ARGS` to completion; panics with its output when it fails.
fn atoll(args: &[&str], data_dir: &Path) {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let out = Command::new(atoll_testkit::atoll_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(if args[0] == "up" {
            vec!["--deploy-dir", deploy]
        } else {
            vec![]
        })
        .output()
        .expect("atoll runs");
    assert!(
        out.status.success(),
        "atoll {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cluster from `atoll up`, removed with `atoll down` when dropped.
struct Cluster(tempfile::TempDir);

impl Cluster {
    fn up(nodes: u32) -> (Cluster, Duration) {
        let dir = tempfile::Builder::new()
            .prefix("atoll-up-bench-")
            .tempdir()
            .expect("temp dir");
        let started = Instant::now();
        let cluster = Cluster(dir);
        atoll(&["up", "--nodes", &nodes.to_string()], cluster.0.path());
        (cluster, started.elapsed())
    }

    /// Its layout, as `atoll up` saved it.
    fn layout(&self) -> Layout {
        Layout::load(self.0.path())
            .ok()
            .flatten()
            .expect("the cluster's layout (cluster.json)")
    }

    /// The resident memory of a component, by its pid file.
    fn rss(&self, name: &str) -> f64 {
        let pid = live_pid(&self.layout().pid_file(name)).unwrap_or(0);
        rss_mb(pid as u32)
    }

    /// API server, scheduler and controller manager, and etcd.
    fn memory(&self) -> ([f64; 3], f64) {
        let each = ["apiserver", "scheduler", "controller-manager"].map(|c| self.rss(c));
        (each, self.rss("etcd"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(atoll_testkit::atoll_bin())
            .arg("down")
            .arg("--data-dir")
            .arg(self.0.path())
            .output();
    }
}

/// `atoll hollow-nodes` as a child process; killed on drop.
struct HollowNodes(Child);

impl Drop for HollowNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many pods are Running.
async fn running(http: &Http) -> usize {
    let reply = http
        .get("/api/v1/namespaces/default/pods?fieldSelector=status.phase%3DRunning")
        .await;
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["items"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn print_memory(what: &str, (each, etcd): ([f64; 3], f64)) {
    let control: f64 = each.iter().sum();
    println!(
        "{what}: API server + scheduler + controller manager {control:.1} MB ({:.1} + {:.1} + {:.1}; \
         target < 200 MB at 1,000 pods); etcd {etcd:.1} MB; ratio control plane / etcd {:.2}",
        each[0],
        each[1],
        each[2],
        control / etcd.max(0.1)
    );
}

fn main() {
    let pods: usize = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "--pods")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(1000);
    isolate_network();

    // Baseline: what the external parts take to start here.
    let started = Instant::now();
    let etcd = Etcd::start();
    let etcd_start = started.elapsed();
    drop(etcd);
    let registry = Registry::start();
    let started = Instant::now();
    let containerd = Containerd::start(&registry);
    let containerd_start = started.elapsed();
    drop(containerd);
    drop(registry);

    for nodes in [3u32, 1] {
        let (cluster, took) = Cluster::up(nodes);
        let baseline = etcd_start + containerd_start * nodes;
        println!(
            "atoll up --nodes {nodes}: every node Ready in {:.2} s; baseline (etcd {:.2} s + {nodes} × containerd {:.2} s) {:.2} s; ratio {:.1}",
            took.as_secs_f64(),
            etcd_start.as_secs_f64(),
            containerd_start.as_secs_f64(),
            baseline.as_secs_f64(),
            took.as_secs_f64() / baseline.as_secs_f64()
        );
        if nodes != 1 {
            continue;
        }
        std::thread::sleep(Duration::from_secs(10));
        print_memory("idle, 1 node", cluster.memory());

        let kubeconfig = cluster.layout().kubeconfig();
        let hollow = HollowNodes(
            Command::new(atoll_testkit::atoll_bin())
                .arg("hollow-nodes")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--count", "10", "--node-labels", "bench=hollow"])
                .arg("--root-dir")
                .arg(cluster.0.path().join("hollow"))
                .env("ATOLL_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("atoll hollow-nodes"),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let http = Http::new(&cluster.layout().api_url());
            let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
                "metadata": {"name": "bench"},
                "spec": {"replicas": pods, "selector": {"app": "bench"},
                    "template": {"metadata": {"labels": {"app": "bench"}},
                        "spec": {"nodeSelector": {"bench": "hollow"},
                            "containers": [{"name": "c", "image": "localhost:5000/busybox:1.35",
                                "command": ["sleep", "3600"],
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
            // The hollow nodes register, get a pod CIDR and lose their not-ready taint first.
            let deadline = Instant::now() + Duration::from_secs(120);
            let started = Instant::now();
            let reply = loop {
                let reply = http
                    .json(
                        "POST",
                        "/api/v1/namespaces/default/replicationcontrollers",
                        &rc,
                    )
                    .await;
                if reply.status == 201 || Instant::now() > deadline {
                    break reply;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            assert_eq!(
                reply.status,
                201,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            while running(&http).await < pods {
                assert!(
                    Instant::now() < deadline + Duration::from_secs(300),
                    "the RC's pods never all ran"
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            println!(
                "{pods} pods Running on 10 hollow nodes in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        });
        std::thread::sleep(Duration::from_secs(5));
        print_memory(
            &format!("{pods} pods, 1 node + 10 hollow"),
            cluster.memory(),
        );
        drop(hollow);
    }
}
