//! `api-bench`: the API server against raw etcd, measured in one run on the same machine.
//!
//! Starts a real etcd and the `atoll apiserver` binary (build it with `cargo build --release -p atoll`
//! first), then measures:
//! 1. pod creates through the API at 1, 16 and 64 concurrent clients against raw etcd puts of the same
//!    bytes at the same concurrency (ratio; target ≥ 0.8 at 64), and the p99 create latency at 64;
//! 2. LIST of 10,000 pods (consistent read from etcd, and from the watch cache) against a raw etcd range;
//! 3. the delay from a write to its delivery to 1,000 concurrent watchers (p99);
//! 4. the API server's resident memory with 10,000 pods stored.
//!
//! Run: `cargo run --release -p atoll-bench --bin api-bench [-- --quick] [--lists N] [--creates-only]`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use atoll_bench::{NS, cpu_time, etcd_puts, ms, percentile, pod, rss_mb, run};

use atoll_testkit::{ApiProcess, Etcd, Http};
use bytes::Bytes;
use serde_json::json;

fn start_api(etcd: &Etcd, dir: &std::path::Path) -> ApiProcess {
    ApiProcess::start(etcd, dir, &[], "warn", Stdio::inherit())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Only a long run of creates at 64 clients, to attach a profiler to the API server.
    let creates_only = std::env::args().any(|a| a == "--creates-only");
    let target_pods = if quick { 2000 } else { 10_000 };
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .expect("etcd");
    let dir = tempfile_dir();
    let api = start_api(&etcd, &dir);
    let http = Http::new(&api.base);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    assert_eq!(
        http.json("POST", "/api/v1/namespaces", &ns).await.status,
        201
    );
    let client = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .expect("etcd client");

    println!("# api-bench: atoll apiserver vs raw etcd, same machine, same run");
    let mut created = 0usize;
    for (concurrency, total) in [
        (1usize, if quick { 300 } else { 1000 }),
        (16, if quick { 1000 } else { 3000 }),
        (64, if quick { 1000 } else { 4000 }),
    ] {
        // Raw etcd puts of the same bytes (what the API server stores), same concurrency.
        let body = Bytes::from(serde_json::to_vec(&pod("x", 0)).expect("json"));
        let etcd_before_raw = cpu_time(etcd.pid());
        let prefix = format!("/baseline/c{concurrency}");
        let raw = etcd_puts(&client, &prefix, body.clone(), total, concurrency).await;
        let etcd_per_put = cpu_time(etcd.pid()) - etcd_before_raw;
        let h = http.clone();
        let base = created;
        let (api_cpu, etcd_cpu) = (cpu_time(api.pid()), cpu_time(etcd.pid()));
        let api_run = run(total, concurrency, move |i| {
            let h = h.clone();
            let body = serde_json::to_vec(&pod(&format!("p{}", base + i), base + i)).expect("json");
            async move {
                let r = h
                    .send(
                        "POST",
                        &format!("/api/v1/namespaces/{NS}/pods"),
                        &[("content-type", "application/json")],
                        body,
                    )
                    .await;
                assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            }
        })
        .await;
        created += total;
        let per = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6 / total as f64);
        let cpu = format!(
            "cpu per create: apiserver {}, etcd {}; etcd cpu per raw put {}",
            per(cpu_time(api.pid()) - api_cpu),
            per(cpu_time(etcd.pid()) - etcd_cpu),
            per(etcd_per_put)
        );
        println!(
            "creates c={concurrency:<3} api {:>7.0}/s (p50 {}, p99 {})  etcd {:>7.0}/s (p50 {}, p99 {})  ratio {:.2}  ({cpu})",
            api_run.per_sec,
            ms(api_run.p50),
            ms(api_run.p99),
            raw.per_sec,
            ms(raw.p50),
            ms(raw.p99),
            api_run.per_sec / raw.per_sec
        );
    }

    if creates_only {
        return;
    }
    // Fill up to the target count for the list and memory measurements.
    if created < target_pods {
        let h = http.clone();
        let base = created;
        run(target_pods - created, 64, move |i| {
            let h = h.clone();
            let body = serde_json::to_vec(&pod(&format!("p{}", base + i), base + i)).expect("json");
            async move {
                let r = h
                    .send(
                        "POST",
                        &format!("/api/v1/namespaces/{NS}/pods"),
                        &[("content-type", "application/json")],
                        body,
                    )
                    .await;
                assert_eq!(r.status, 201);
            }
        })
        .await;
        created = target_pods;
    }

    let stored_rss = rss_mb(api.pid());
    // LIST of all pods: consistent (etcd) and from the watch cache, against a raw etcd range.
    let mut raw_times = vec![];
    let mut api_times = vec![];
    let mut cache_times = vec![];
    let lists: usize = std::env::args()
        .skip_while(|a| a != "--lists")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    for _ in 0..lists {
        let t = Instant::now();
        let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
        let resp = kv
            .get(
                format!("/registry/pods/{NS}/"),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await;
        let n = resp.map(|r| r.kvs().len()).unwrap_or(0);
        raw_times.push(t.elapsed());
        assert_eq!(n, created);
        let t = Instant::now();
        let r = http.get(&format!("/api/v1/namespaces/{NS}/pods")).await;
        api_times.push(t.elapsed());
        assert_eq!(r.status, 200);
        let t = Instant::now();
        let r = http
            .get(&format!("/api/v1/namespaces/{NS}/pods?resourceVersion=0"))
            .await;
        cache_times.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    for v in [&mut raw_times, &mut api_times, &mut cache_times] {
        v.sort();
    }
    let (raw_med, api_med, cache_med) = (
        percentile(&raw_times, 0.5),
        percentile(&api_times, 0.5),
        percentile(&cache_times, 0.5),
    );
    println!(
        "list {created} pods, median of {lists}: api {} (consistent: watch cache checked against etcd), api {} (resourceVersion=0: watch cache as is), raw etcd range {}  ratio etcd/api {:.2}",
        ms(api_med),
        ms(cache_med),
        ms(raw_med),
        raw_med.as_secs_f64() / api_med.as_secs_f64()
    );

    let rss = rss_mb(api.pid());
    println!(
        "apiserver RSS with {created} pods stored: {stored_rss:.0} MB; after the lists above: {rss:.0} MB"
    );

    // 1,000 watchers: delay from a write to its delivery to all of them.
    let watchers = if quick { 200 } else { 1000 };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let mut handles = vec![];
    let list_rv = http
        .get(&format!("/api/v1/namespaces/{NS}/pods?limit=1"))
        .await
        .json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    for w in 0..watchers {
        let h = http.clone();
        let tx = tx.clone();
        let path = format!(
            "/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={list_rv}&labelSelector=app%3Dwatched"
        );
        handles.push(tokio::spawn(async move {
            let mut lines = h.stream(&path, "application/json").await;
            while let Some(ev) = lines.next(Duration::from_secs(120)).await {
                let name = ev["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if tx.send((w, name, Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = if quick { 20 } else { 50 };
    let mut delays = vec![];
    for i in 0..writes {
        let mut p = pod(&format!("watched-{i}"), i);
        p["metadata"]["labels"]["app"] = json!("watched");
        let start = Instant::now();
        let r = http
            .json("POST", &format!("/api/v1/namespaces/{NS}/pods"), &p)
            .await;
        assert_eq!(r.status, 201);
        let want = format!("watched-{i}");
        let mut seen = std::collections::HashSet::new();
        let mut last = start;
        while seen.len() < watchers {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some((w, name, at))) if name == want => {
                    seen.insert(w);
                    last = at;
                }
                Ok(Some(_)) => {}
                _ => panic!("only {} of {watchers} watchers saw {want}", seen.len()),
            }
        }
        delays.push(last - start);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    delays.sort();
    println!(
        "{watchers} watchers: write-to-delivery-to-all p50 {}, p99 {} over {writes} writes (the write's own latency included)",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99))
    );
    println!(
        "apiserver RSS with {watchers} watchers open: {:.0} MB",
        rss_mb(api.pid())
    );
    for h in handles {
        h.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("atoll-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}
