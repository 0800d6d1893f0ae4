//! The proxy against a real etcd and API server, programming nftables in a private network
//! namespace the test makes (the host's tables are never touched): ClusterIPs reach both backends,
//! a removed endpoint leaves the rotation at once, a service without endpoints refuses at once,
//! session affinity pins a client, internalTrafficPolicy Local keeps to this node's endpoint,
//! NodePorts answer on the node address and 127.0.0.1, a UDP flow leaves a removed endpoint (its
//! conntrack entry flushed), `/metrics` and `/healthz` answer, and `atoll proxy --cleanup` leaves
//! nothing behind. Needs root (network namespaces, nftables, conntrack) and the built `atoll`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use atoll_testkit::{Cluster, runtime};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const NODE_IP: &str = "10.200.0.1";
const BACKEND_A: &str = "10.244.1.2";
const BACKEND_B: &str = "10.244.2.3";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair in the test's namespace with the node address and the backends' addresses, and a
/// route for the ClusterIP range (connect() needs one before NAT runs).
fn network() {
    runtime::isolate_network();
    sh(&[
        "ip", "link", "add", "atoll-v0", "type", "veth", "peer", "name", "atoll-v1",
    ]);
    sh(&["ip", "link", "set", "atoll-v0", "up"]);
    sh(&["ip", "link", "set", "atoll-v1", "up"]);
    for ip in [NODE_IP, BACKEND_A, BACKEND_B] {
        sh(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "atoll-v0"]);
    }
    sh(&["ip", "route", "add", "10.96.0.0/24", "dev", "atoll-v0"]);
}

/// A TCP server on `ip:8080` that answers every connection with `name` and closes it.
async fn backend(ip: &str, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:8080"))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(name.as_bytes()).await;
        }
    })
}

/// A UDP server on `ip:5353` that answers every datagram with `name`.
async fn udp_backend(ip: &str, name: &'static str) -> tokio::task::JoinHandle<()> {
    let socket = tokio::net::UdpSocket::bind(format!("{ip}:5353"))
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(name.as_bytes(), from).await;
        }
    })
}

/// Sends a datagram from `socket` to `addr` and returns the answer (None: none within 500 ms).
async fn ask(socket: &tokio::net::UdpSocket, addr: &str) -> Option<String> {
    socket.send_to(b"?", addr).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Connects to `addr` and reads what the backend says.
async fn hit(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut conn =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(2), conn.read_to_string(&mut text))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
    Ok(text)
}

/// The backends that answered `n` connections to `addr` (failures count as "error").
async fn answers(addr: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(hit(addr).await.unwrap_or_else(|e| format!("error: {e}")));
    }
    seen
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
    slice_with_port(
        service,
        ips,
        json!({"name": "http", "protocol": "TCP", "port": 8080}),
    )
}

fn slice_with_port(service: &str, ips: &[&str], port: serde_json::Value) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-1"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{service}-1"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [port],
    }))
    .unwrap()
}

async fn put_slice(api: &Api<EndpointSlice>, service: &str, ips: &[&str]) {
    put(api, slice(service, ips)).await;
}

async fn put(api: &Api<EndpointSlice>, mut s: EndpointSlice) {
    let name = s.metadata.name.clone().unwrap();
    match api.get_opt(&name).await.unwrap() {
        Some(old) => {
            s.metadata.resource_version = old.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &s)
                .await
                .unwrap();
        }
        None => {
            api.create(&PostParams::default(), &s).await.unwrap();
        }
    }
}

/// GETs `url` with curl, without blocking the runtime that serves it.
async fn curl(url: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "curl {url}: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ruleset() -> String {
    sh(&["nft", "list", "ruleset"])
}

#[tokio::test]
async fn proxy_programs_services_in_a_private_netns() {
    network();
    let cluster = Cluster::start().await;
    let client = cluster.kube_client();
    let _a = backend(BACKEND_A, "A").await;
    let _b = backend(BACKEND_B, "B").await;
    let _ua = udp_backend(BACKEND_A, "A").await;
    let _ub = udp_backend(BACKEND_B, "B").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let http = json!([{"name": "http", "port": 80, "targetPort": "web"}]);
    services
        .create(
            &pp,
            &service("web", json!({"clusterIP": "10.96.0.10", "ports": http})),
        )
        .await
        .unwrap();
    services
        .create(
            &pp,
            &service("empty", json!({"clusterIP": "10.96.0.11", "ports": http})),
        )
        .await
        .unwrap();
    services
        .create(
            &pp,
            &service(
                "sticky",
                json!({"clusterIP": "10.96.0.12", "ports": http, "sessionAffinity": "ClientIP"}),
            ),
        )
        .await
        .unwrap();
    services
        .create(
            &pp,
            &service(
                "np",
                json!({"clusterIP": "10.96.0.13", "type": "NodePort",
                       "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
            ),
        )
        .await
        .unwrap();
    services
        .create(
            &pp,
            &service(
                "dns",
                json!({"clusterIP": "10.96.0.20",
                       "ports": [{"name": "dns", "protocol": "UDP", "port": 53}]}),
            ),
        )
        .await
        .unwrap();
    let dns_port = json!({"name": "dns", "protocol": "UDP", "port": 5353});
    put(
        &slices,
        slice_with_port("dns", &[BACKEND_A, BACKEND_B], dns_port.clone()),
    )
    .await;
    put_slice(&slices, "web", &[BACKEND_A, BACKEND_B]).await;
    // internalTrafficPolicy Local: only this node's endpoint (A) takes ClusterIP traffic.
    services
        .create(
            &pp,
            &service(
                "local",
                json!({"clusterIP": "10.96.0.14", "ports": http, "internalTrafficPolicy": "Local"}),
            ),
        )
        .await
        .unwrap();
    let mut local = slice("local", &[BACKEND_A, BACKEND_B]);
    local.endpoints[1].node_name = Some("node-2".into());
    put(&slices, local).await;
    put_slice(&slices, "sticky", &[BACKEND_A, BACKEND_B]).await;
    put_slice(&slices, "np", &[BACKEND_A, BACKEND_B]).await;

    let metrics_port = atoll_testkit::free_port();
    let mut config = atoll_proxy::Config::new("node-1");
    config.cluster_cidr = Some("10.244.0.0/16".into());
    config.nodeport_addresses = vec!["10.200.0.0/24".into(), "127.0.0.1/32".into()];
    config.metrics_addr = Some(format!("127.0.0.1:{metrics_port}").parse().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(atoll_proxy::run_until(client.clone(), config, async {
        let _ = stopped.await;
    }));

    // Both backends answer through the ClusterIP.
    atoll_testkit::eventually("both backends behind 10.96.0.10:80", || async {
        let seen = answers("10.96.0.10:80", 50).await;
        (seen == BTreeSet::from(["A".to_string(), "B".to_string()])).then_some(())
    })
    .await;

    // Metrics and health.
    let base = format!("http://127.0.0.1:{metrics_port}");
    let metrics = curl(&format!("{base}/metrics")).await;
    for name in [
        "atoll_proxy_sync_proxy_rules_duration_seconds_count{mode=\"full\"} 1",
        "atoll_proxy_sync_proxy_rules_last_timestamp_seconds",
        "atoll_proxy_rules_programmed",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains("atoll_proxy_rules_programmed 0\n"),
        "{metrics}"
    );
    assert_eq!(curl(&format!("{base}/healthz")).await, "ok");

    assert_eq!(
        answers("10.96.0.14:80", 30).await,
        BTreeSet::from(["A".to_string()])
    );

    // No endpoints: refused at once, not a silent drop.
    let started = Instant::now();
    let err = hit("10.96.0.11:80").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Session affinity: one client, one backend.
    let pinned = answers("10.96.0.12:80", 30).await;
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    let affinity_sets = |r: &str| r.matches("aff-default/sticky").count();
    assert!(affinity_sets(&ruleset()) > 0);

    // NodePort on the node address and on 127.0.0.1.
    let seen = answers(&format!("{NODE_IP}:30080"), 40).await;
    assert_eq!(seen, BTreeSet::from(["A".into(), "B".into()]));
    let seen = answers("127.0.0.1:30080", 40).await;
    assert_eq!(seen, BTreeSet::from(["A".into(), "B".into()]));

    // A removed endpoint leaves the rotation within a second of the API write.
    put_slice(&slices, "web", &[BACKEND_A]).await;
    let written = Instant::now();
    loop {
        if answers("10.96.0.10:80", 20).await == BTreeSet::from(["A".to_string()]) {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "B still answers 1 s after it was removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // That change was made in place: the sticky client's affinity entry is still there.
    let sticky = sh(&["nft", "list", "table", "ip", "atoll"]);
    assert!(
        sticky.contains("elements = { 10.200.0.1") || sticky.contains("elements = { 127.0.0.1"),
        "the affinity set lost its entry:\n{sticky}"
    );
    assert_eq!(answers("10.96.0.12:80", 10).await, pinned);
    let metrics = curl(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("atoll_proxy_sync_proxy_rules_duration_seconds_count{mode=\"full\"} 1\n"),
        "only the first sync replaces the table:\n{metrics}"
    );

    // UDP: a client's flow stays on one endpoint (conntrack) until that endpoint is removed; then
    // its conntrack entry is flushed and the next datagram goes to the other one.
    let client = tokio::net::UdpSocket::bind(format!("{NODE_IP}:0"))
        .await
        .unwrap();
    let first = atoll_testkit::eventually("a UDP answer through 10.96.0.20:53", || async {
        ask(&client, "10.96.0.20:53").await
    })
    .await;
    assert_eq!(
        ask(&client, "10.96.0.20:53").await.as_deref(),
        Some(first.as_str())
    );
    let other = if first == "A" { BACKEND_B } else { BACKEND_A };
    put(&slices, slice_with_port("dns", &[other], dns_port)).await;
    atoll_testkit::eventually("the UDP flow to move off the removed endpoint", || async {
        ask(&client, "10.96.0.20:53").await.filter(|a| *a != first)
    })
    .await;

    // A deleted service's rules go; its ClusterIP is then nobody's.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    atoll_testkit::eventually("web's chains to go", || async {
        (!ruleset().contains("default/web/")).then_some(())
    })
    .await;

    stop.send(()).unwrap();
    proxy.await.unwrap().unwrap();
    // The table stays after the proxy stops; `--cleanup` removes it.
    assert!(ruleset().contains("table ip atoll"));
    let out = Command::new(atoll_testkit::atoll_bin())
        .args(["proxy", "--cleanup"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ruleset().contains("atoll"), "{}", ruleset());
}

/// The golden rulesets (`tests/golden/*.nft`) are what the kernel accepts: each full one loads, and
/// the update scripts apply in sequence on top of the ones they were made from.
#[test]
fn golden_rulesets_load_into_the_kernel() {
    runtime::isolate_network();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let load = |name: &str| sh(&["nft", "-f", &format!("{dir}/{name}.nft")]);
    for name in [
        "empty",
        "cluster_ip",
        "no_endpoints",
        "terminating",
        "node_port",
        "affinity",
        "local_policies",
        "udp",
    ] {
        load(name);
        assert!(ruleset().contains("table ip atoll"), "{name}");
    }
    for sequence in [
        &[
            "empty",
            "update_new_service",
            "update_remove_endpoint",
            "update_to_no_endpoints",
        ][..],
        &["empty", "update_new_service", "update_delete_service"][..],
    ] {
        for name in sequence {
            load(name);
        }
    }
    assert!(!ruleset().contains("default/web/"));
    sh(&["nft", "delete", "table", "ip", "atoll"]);
}
