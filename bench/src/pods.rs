//! `pod-bench`: pod start-up latency on one real node — a pod created through the API server until a
//! watch sees it Running — beside `ctr run` and `podman run` of the same image, measured in the same
//! run on the same machine.
//!
//! Everything runs in a private network namespace: a local registry with busybox:1.35, containerd
//! (its own root and socket, CNI bridge), etcd, and the `atoll apiserver` and `atoll kubelet`
//! binaries (build them with `cargo build --release -p atoll` first). Pods name their node (no
//! scheduler), as Kubernetes' pod start-up SLO measures from creation to Running with images already
//! pulled: one warm-up pod pulls the image first. Pods are started one after another.
//!
//! Run (as root): `cargo run --release -p atoll-bench --bin pod-bench [-- --pods 50]`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atoll_bench::{ms, percentile};
use atoll_testkit::runtime::{Containerd, Registry, add_node_address, isolate_network};
use atoll_testkit::{ApiProcess, Etcd, Http, atoll_bin, free_port, write_kubeconfig};
use serde_json::{Value, json};

const NODE: &str = "bench-node";
const NODE_IP: &str = "10.200.0.1";
const NS: &str = "default";

fn pod(name: &str, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}})
}

/// Creates the pod and returns the time until a watch sees it Running.
async fn start_pod(http: &Http, name: &str, image: &str) -> Duration {
    let mut watch = http
        .stream(
            &format!(
                "/api/v1/namespaces/{NS}/pods?watch=true&fieldSelector=metadata.name%3D{name}"
            ),
            "application/json",
        )
        .await;
    let started = Instant::now();
    let r = http
        .json(
            "POST",
            &format!("/api/v1/namespaces/{NS}/pods"),
            &pod(name, image),
        )
        .await;
    assert_eq!(
        r.status,
        201,
        "create {name}: {}",
        String::from_utf8_lossy(&r.body)
    );
    loop {
        let event = watch
            .next(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("{name} never ran"));
        if event["object"]["status"]["phase"] == "Running" {
            return started.elapsed();
        }
    }
}

/// Runs `cmd` `n` times and returns the sorted wall times; panics when a run fails.
fn time_command(n: usize, cmd: &[&str]) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new(cmd[0])
                .args(&cmd[1..])
                .stdout(Stdio::null())
                .output()
                .expect("run the baseline");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            started.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pods: usize = args
        .iter()
        .position(|a| a == "--pods")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    isolate_network();
    add_node_address(&format!("{NODE_IP}/32"));
    let registry = Registry::start();
    let containerd = Containerd::start(&registry);
    let image = registry.image("busybox:1.35");
    let etcd = Etcd::start();
    let dir = tempfile::Builder::new()
        .prefix("atoll-pod-bench-")
        .tempdir()
        .expect("temp dir");
    let api = ApiProcess::start(
        &etcd,
        &dir.path().join("api"),
        &[],
        "warn",
        Stdio::inherit(),
    );
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, &api.base);
    let healthz = free_port();
    let mut kubelet = Command::new(atoll_bin())
        .arg("kubelet")
        .args(containerd.kubelet_flags(NODE, NODE_IP))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg(format!("--healthz-bind-address=127.0.0.1:{healthz}"))
        .env("ATOLL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start atoll kubelet");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let atoll = runtime.block_on(async {
        let http = Http::new(&api.base);
        let warm = start_pod(&http, "warm-up", &image).await;
        println!("warm-up pod (image pull included): {}", ms(warm));
        let mut times = Vec::with_capacity(pods);
        for i in 0..pods {
            times.push(start_pod(&http, &format!("p{i}"), &image).await);
        }
        times.sort();
        times
    });
    let _ = kubelet.kill();
    let _ = kubelet.wait();

    // Baselines on the same containerd (ctr) and on podman with its own storage, same image.
    let sock = containerd.socket().display().to_string();
    // ctr's FIFOs go where containerd (in its private mount namespace) can see them.
    let fifo = containerd.dir().join("ctr-fifo").display().to_string();
    let ctr = time_command(
        pods,
        &[
            "ctr",
            "--address",
            &sock,
            "-n",
            "k8s.io",
            "run",
            "--rm",
            "--fifo-dir",
            &fifo,
            &image,
            "bench-ctr",
            "true",
        ],
    );
    let podman_root = dir.path().join("podman");
    let root = podman_root.join("root").display().to_string();
    let run = podman_root.join("run").display().to_string();
    let tmp = podman_root.join("tmp").display().to_string();
    let podman = |extra: &[&str]| {
        let mut cmd = vec![
            "podman",
            "--root",
            &root,
            "--runroot",
            &run,
            "--tmpdir",
            &tmp,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ];
        cmd.extend_from_slice(extra);
        cmd.into_iter().map(str::to_string).collect::<Vec<String>>()
    };
    let pull = podman(&["pull", "--tls-verify=false", "-q", &image]);
    let out = Command::new(&pull[0])
        .args(&pull[1..])
        .output()
        .expect("podman pull");
    assert!(
        out.status.success(),
        "podman pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_args = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=32768:32768",
        &image,
        "true",
    ]);
    let run_refs: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let podman_times = time_command(pods, &run_refs);

    let row = |what: &str, t: &[Duration]| {
        println!(
            "{what:<44} p50 {:>8}  p99 {:>8}",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.99))
        )
    };
    println!(
        "pod start-up latency over {pods} pods (create → Running seen by a watch), one at a time:"
    );
    row("atoll (API server + kubelet + containerd/CRI)", &atoll);
    row("ctr run --rm (same containerd, no CNI)", &ctr);
    row("podman run --rm --network none", &podman_times);
    let ratio =
        percentile(&atoll, 0.5).as_secs_f64() / percentile(&podman_times, 0.5).as_secs_f64();
    println!(
        "atoll p50 / podman p50 = {ratio:.2} (target ≤ 1.5); atoll p99 = {} (target ≤ 1 s)",
        ms(percentile(&atoll, 0.99))
    );
    drop(containerd);
    drop(registry);
}
