//! `proxy-bench`: how fast the service proxy programs nftables, in a private network namespace.
//!
//! For 1,000 and 10,000 services of 10 endpoints each: the full resync (rules generated and the whole
//! `ip atoll` table replaced in one `nft -f`), then 200 EndpointSlice changes one after another (one
//! endpoint of a random service replaced), each timed from the change reaching the proxy's state to
//! the partial transaction being in the kernel. The ratio printed is the full resync against one
//! partial update: what the incremental updates save. The API server's watch delay is not in these
//! numbers (it is the same for any proxy).
//!
//! Run (as root): `cargo run --release -p atoll-bench --bin proxy-bench [-- 1000 10000]`. With
//! `PROXY_BENCH_DUMP=DIR` the full script and every update script are written to DIR, to time `nft`
//! on them by hand.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use atoll_bench::{ms, percentile};
use atoll_proxy::rules::Base;
use atoll_proxy::state::State;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rand::Rng;
use serde_json::json;

const ENDPOINTS: usize = 10;
const UPDATES: usize = 200;

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {"clusterIP": format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .expect("a valid service")
}

/// Service `i`'s slice; `generation` shifts the endpoint addresses so each change is a new one.
fn slice(i: usize, generation: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            let n = i * ENDPOINTS + e + generation;
            json!({"addresses": [format!("10.244.{}.{}", n / 250 % 250, n % 250 + 1)],
                   "conditions": {"ready": true}, "nodeName": "other"})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}-x"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }))
    .expect("a valid slice")
}

async fn measure(services: usize) {
    let base = Base {
        cluster_cidr: Some("10.244.0.0/16".into()),
        node_ips: BTreeSet::from(["10.200.0.1".parse().expect("an address")]),
    };
    let mut state = State::new("bench-node", base);
    for i in 0..services {
        state.service_applied(&service(i));
        state.slice_applied(&slice(i, 0));
    }
    let started = Instant::now();
    let plan = state.plan();
    let generated = started.elapsed();
    if let Some(dir) = std::env::var_os("PROXY_BENCH_DUMP") {
        let _ = std::fs::write(std::path::Path::new(&dir).join("full.nft"), &plan.script);
    }
    atoll_proxy::nft::apply(&plan.script)
        .await
        .expect("nft accepts the full ruleset");
    let full = started.elapsed();
    let script_mb = plan.script.len() as f64 / 1e6;
    state.done(plan);
    let rules = state.rules_programmed();

    let mut rng = rand::rng();
    let mut times: Vec<Duration> = Vec::with_capacity(UPDATES);
    for u in 1..=UPDATES {
        let i = rng.random_range(0..services);
        let started = Instant::now();
        state.slice_applied(&slice(i, u));
        let plan = state.plan();
        assert!(!plan.full);
        if let Some(dir) = std::env::var_os("PROXY_BENCH_DUMP") {
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("update-{u}.nft")),
                &plan.script,
            );
        }
        atoll_proxy::nft::apply(&plan.script)
            .await
            .expect("nft accepts the update");
        state.done(plan);
        times.push(started.elapsed());
    }
    times.sort();
    let p50 = percentile(&times, 0.5);
    let p99 = percentile(&times, 0.99);
    println!(
        "{services} services x {ENDPOINTS} endpoints ({rules} rules and elements, {script_mb:.1} MB of nft script):"
    );
    println!(
        "  full resync: {} (generation {}, nft {})",
        ms(full),
        ms(generated),
        ms(full - generated)
    );
    println!(
        "  slice change to kernel, {UPDATES} changes: p50 {}, p99 {}, max {}",
        ms(p50),
        ms(p99),
        ms(times[times.len() - 1])
    );
    println!(
        "  ratio full resync / p50 update: {:.0}",
        full.as_secs_f64() / p50.as_secs_f64().max(1e-9)
    );
    atoll_proxy::cleanup().await.expect("table removed");
}

fn main() {
    atoll_testkit::runtime::isolate_network();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for n in sizes {
        runtime.block_on(measure(n));
    }
}
