//! What the benchmarks share: a realistic pod, a runner of concurrent operations with latency
//! percentiles, and per-process CPU and memory readings from /proc.

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
