//! What the benchmarks share: a control plane to measure against ([`ControlPlane`]), a realistic
//! pod, a runner of concurrent operations with latency percentiles, and per-process CPU and memory
//! readings from /proc.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The namespace the benchmarks write into.
pub const NS: &str = "bench";

/// A pod as a controller would create it: labels, owner, probes, volumes, requests.
pub fn pod(name: &str, i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "7d4b9c8f6", "shard": (i % 16).to_string()},
            "annotations": {"kubernetes.io/config.seen": "2026-11-26T10:00:00Z", "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicationController", "name": "web", "uid": "6c5a7e5e-3d2b-4c1a-9a8e-2f1d0b9c8a7e", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "registry.example.com/team/web-frontend:v1.42.7",
                "command": ["/bin/web", "--listen=:8080", "--metrics=:9090"],
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, {"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}, {"name": "data", "mountPath": "/var/lib/web"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 10}
            }],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}, {"name": "data", "emptyDir": {}}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}]
        }
    })
}

/// The `p` quantile of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Throughput and latency of a [`run`].
pub struct Run {
    /// Operations per second.
    pub per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Runs `total` operations over `concurrency` tasks; `op(i)` performs operation i.
pub async fn run<F, Fut>(total: usize, concurrency: usize, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                op(i).await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.expect("bench task"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    Run {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

/// Raw etcd puts of `body` under `prefix` (`<prefix>/p<i>`), `total` of them over `concurrency`
/// tasks: the baseline the API server's writes are measured against.
pub async fn etcd_puts(
    client: &etcd_client::Client,
    prefix: &str,
    body: bytes::Bytes,
    total: usize,
    concurrency: usize,
) -> Run {
    let (client, prefix) = (client.clone(), prefix.to_string());
    run(total, concurrency, move |i| {
        let mut kv = client.kv_client();
        let key = format!("{prefix}/p{i}");
        let b = body.clone();
        async move {
            kv.put(key, b.to_vec(), None).await.expect("etcd put");
        }
    })
    .await
}

/// The raw etcd write rate at 64 concurrent puts of a pod's bytes (keys under `/baseline/r<round>`):
/// the ceiling for anything that writes pods, since every pod costs at least a create.
pub async fn etcd_ceiling(etcd: &atoll_testkit::Etcd, puts: usize, round: usize) -> f64 {
    let client = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .expect("etcd client");
    let body = bytes::Bytes::from(serde_json::to_vec(&pod("x", 0)).expect("json"));
    etcd_puts(&client, &format!("/baseline/r{round}"), body, puts, 64)
        .await
        .per_sec
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A duration in milliseconds, for printing.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A Node as a kubelet would register it: Ready, 32 CPUs, 128 GiB, 110 pods.
pub fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": format!("zone-{}", name.len() % 3)}},
        "spec": {},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// Creates `bodies` with POSTs to `path` from 64 concurrent clients; returns creates per second.
pub async fn create_all(
    http: &atoll_testkit::Http,
    path: &'static str,
    bodies: Vec<Vec<u8>>,
) -> f64 {
    let bodies = Arc::new(bodies);
    let h = http.clone();
    let total = bodies.len();
    run(total, 64, move |i| {
        let (h, bodies) = (h.clone(), bodies.clone());
        async move {
            let r = h
                .send(
                    "POST",
                    path,
                    &[("content-type", "application/json")],
                    bodies[i].clone(),
                )
                .await;
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        }
    })
    .await
    .per_sec
}

/// An `atoll <component>` binary (scheduler, controller-manager) as a child process talking to `api`,
/// without leader election, with its metrics on a free port; killed on drop.
pub struct ComponentProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its metrics endpoint.
    pub metrics: atoll_testkit::Http,
}

impl ComponentProcess {
    /// Starts `atoll <component> --kubeconfig … --leader-elect=false --metrics-bind-address … <args>`
    /// and waits for its metrics endpoint.
    pub fn start(
        api: &atoll_testkit::ApiProcess,
        dir: &std::path::Path,
        component: &str,
        args: &[&str],
    ) -> ComponentProcess {
        let kubeconfig = dir.join(format!("{component}.kubeconfig"));
        atoll_testkit::write_kubeconfig(&kubeconfig, &api.base);
        let port = atoll_testkit::free_port();
        let child = std::process::Command::new(atoll_testkit::atoll_bin())
            .args([component, "--leader-elect=false", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg(format!("--metrics-bind-address=127.0.0.1:{port}"))
            .args(args)
            .env("ATOLL_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start atoll {component}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the {component}'s metrics endpoint never opened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ComponentProcess {
            child,
            metrics: atoll_testkit::Http::new(&format!("http://127.0.0.1:{port}")),
        }
    }

    /// The sum of the samples of metric `name` (a counter's `name_total`, a histogram's
    /// `name_count`, …) over all its label sets.
    pub async fn metric(&self, name: &str) -> f64 {
        let r = self.metrics.get("/metrics").await;
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let bare = series.split('{').next()?;
                (bare == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .sum()
    }

    /// Bindings the scheduler has written so far (the count of its pod scheduling latency histogram).
    pub async fn bound(&self) -> u64 {
        self.metric("scheduler_pod_scheduling_duration_seconds_count")
            .await as u64
    }
}

impl Drop for ComponentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd and the `atoll apiserver` binary in a private directory, with namespaces made. Fields drop
/// in their order: the API server before its directory and etcd.
pub struct ControlPlane {
    /// The API server process.
    pub api: atoll_testkit::ApiProcess,
    /// A client of it.
    pub http: atoll_testkit::Http,
    /// The private directory (the API server's data, kubeconfigs, logs).
    pub dir: tempfile::TempDir,
    /// etcd.
    pub etcd: atoll_testkit::Etcd,
}

impl ControlPlane {
    /// Starts etcd and the API server for benchmark `name` and creates `namespaces`.
    pub async fn start(name: &str, namespaces: &[&str]) -> ControlPlane {
        let etcd = tokio::task::spawn_blocking(atoll_testkit::Etcd::start)
            .await
            .expect("etcd");
        let dir = tempfile::Builder::new()
            .prefix(&format!("atoll-{name}-"))
            .tempdir()
            .expect("temp dir");
        let api = atoll_testkit::ApiProcess::start(
            &etcd,
            dir.path(),
            &[],
            "warn",
            std::process::Stdio::inherit(),
        );
        let http = atoll_testkit::Http::new(&api.base);
        for ns in namespaces {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            assert_eq!(
                http.json("POST", "/api/v1/namespaces", &body).await.status,
                201
            );
        }
        ControlPlane {
            api,
            http,
            dir,
            etcd,
        }
    }
}
