//! `pods/log`: the API server picks the container, finds the node's kubelet and relays its answer,
//! checked against a fake kubelet on a loopback port.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const PODS: &str = "/api/v1/namespaces/default/pods";

/// What the fake kubelet was asked, and the stream it serves for container `stream`.
#[derive(Default)]
struct Kubelet {
    asked: Mutex<Vec<String>>,
    stream: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

async fn container_logs(
    State(k): State<Arc<Kubelet>>,
    Path((ns, pod, c)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    k.asked
        .lock()
        .expect("lock")
        .push(format!("{ns}/{pod}/{c}?{q}"));
    match c.as_str() {
        "stream" => {
            let Some(rx) = k.stream.lock().expect("lock").take() else {
                return StatusCode::CONFLICT.into_response();
            };
            let body = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
            });
            Body::from_stream(body).into_response()
        }
        "waiting" => (
            StatusCode::BAD_REQUEST,
            format!("container \"{c}\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
        )
            .into_response(),
        "gone" => (
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" does not exist"),
        )
            .into_response(),
        _ => format!("hello from {c}\n").into_response(),
    }
}

/// A fake kubelet on a free loopback port, stopped on drop.
struct FakeKubelet {
    state: Arc<Kubelet>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_kubelet() -> FakeKubelet {
    let state = Arc::new(Kubelet::default());
    let app = axum::Router::new()
        .route(
            "/containerLogs/{ns}/{pod}/{c}",
            axum::routing::get(container_logs),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeKubelet { state, port, task }
}

fn node(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {
        "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
}

fn pod_on(name: &str, node: Option<&str>, containers: &[&str], init: &[&str]) -> Value {
    let c = |n: &&str| json!({"name": n, "image": "busybox"});
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": containers.iter().map(c).collect::<Vec<_>>()}});
    if !init.is_empty() {
        p["spec"]["initContainers"] = init.iter().map(c).collect();
    }
    if let Some(n) = node {
        p["spec"]["nodeName"] = n.into();
    }
    p
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[track_caller]
fn failure(r: &Reply, code: u16) -> String {
    let status = expect(r, code);
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["code"], code, "{status}");
    status["message"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn relays_the_kubelets_answer() {
    let c = Cluster::start().await;
    let h = c.http();
    let kubelet = fake_kubelet().await;
    expect(
        &h.json("POST", "/api/v1/nodes", &node("node-1", kubelet.port))
            .await,
        201,
    );
    for p in [
        pod_on("web", Some("node-1"), &["web"], &[]),
        pod_on("multi", Some("node-1"), &["a", "b"], &["setup"]),
        pod_on("pending", None, &["web"], &[]),
    ] {
        expect(&h.json("POST", PODS, &p).await, 201);
    }

    // The only container, without naming it; text whatever the client accepts.
    let r = h.get(&format!("{PODS}/web/log")).await;
    assert_eq!((r.status, text(&r).as_str()), (200, "hello from web\n"));
    assert_eq!(r.content_type, "text/plain");
    // Every option reaches the kubelet, in Kubernetes' order.
    let r = h
        .get(&format!(
            "{PODS}/multi/log?container=setup&follow=true&tailLines=2&timestamps=true&previous=1&limitBytes=5&sinceTime=2024-01-02T03:04:05Z"
        ))
        .await;
    assert_eq!((r.status, text(&r).as_str()), (200, "hello from setup\n"));
    let r = h
        .get(&format!("{PODS}/multi/log?container=b&sinceSeconds=10"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        *kubelet.state.asked.lock().unwrap(),
        [
            "default/web/web?",
            "default/multi/setup?follow=true&limitBytes=5&previous=true&sinceTime=2024-01-02T03:04:05Z&tailLines=2&timestamps=true",
            "default/multi/b?sinceSeconds=10",
        ]
    );

    // What the API server refuses itself.
    assert_eq!(
        failure(&h.get(&format!("{PODS}/multi/log")).await, 400),
        "a container name must be specified for pod multi, choose one of: [a b] or one of the init containers: [setup]"
    );
    assert_eq!(
        failure(&h.get(&format!("{PODS}/multi/log?container=x")).await, 400),
        "container x is not valid for pod multi"
    );
    assert_eq!(
        failure(&h.get(&format!("{PODS}/pending/log")).await, 400),
        "pod pending does not have a host assigned"
    );
    assert_eq!(
        failure(&h.get(&format!("{PODS}/nope/log")).await, 404),
        "pods \"nope\" not found"
    );
    let invalid = failure(&h.get(&format!("{PODS}/web/log?tailLines=-1")).await, 422);
    assert!(
        invalid.contains("tailLines: Invalid value: -1"),
        "{invalid}"
    );
    assert_eq!(
        h.send("POST", &format!("{PODS}/web/log"), &[], "")
            .await
            .status,
        405
    );
    assert_eq!(kubelet.state.asked.lock().unwrap().len(), 3);

    // The kubelet's own errors become Statuses with its words.
    expect(
        &h.json(
            "POST",
            PODS,
            &pod_on("odd", Some("node-1"), &["waiting", "gone"], &[]),
        )
        .await,
        201,
    );
    assert_eq!(
        failure(
            &h.get(&format!("{PODS}/odd/log?container=waiting")).await,
            400
        ),
        "container \"waiting\" in pod \"odd\" is waiting to start: ContainerCreating"
    );
    assert_eq!(
        failure(&h.get(&format!("{PODS}/odd/log?container=gone")).await, 404),
        "pod \"odd\" does not exist"
    );

    // Discovery lists pods/log for GET.
    let v1 = expect(&h.get("/api/v1").await, 200);
    let log = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/log")
        .cloned()
        .unwrap();
    assert_eq!(
        (log["kind"].clone(), log["verbs"].clone()),
        (json!("Pod"), json!(["get"]))
    );
}

#[tokio::test]
async fn names_the_node_whose_kubelet_cannot_be_reached() {
    let c = Cluster::start().await;
    let h = c.http();
    let closed = atoll_testkit::free_port();
    expect(
        &h.json("POST", "/api/v1/nodes", &node("node-down", closed))
            .await,
        201,
    );
    expect(
        &h.json(
            "POST",
            PODS,
            &pod_on("web", Some("node-down"), &["web"], &[]),
        )
        .await,
        201,
    );
    expect(
        &h.json(
            "POST",
            PODS,
            &pod_on("lost", Some("node-gone"), &["web"], &[]),
        )
        .await,
        201,
    );
    let down = failure(&h.get(&format!("{PODS}/web/log")).await, 500);
    assert!(down.contains("node \"node-down\""), "{down}");
    assert!(down.contains(&format!("127.0.0.1:{closed}")), "{down}");
    assert_eq!(
        failure(&h.get(&format!("{PODS}/lost/log")).await, 404),
        "nodes \"node-gone\" not found"
    );
}

/// The next piece of a streamed body, or None at its end; panics after a deadline.
async fn next_piece(body: &mut hyper::body::Incoming) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a piece of the log within 10 s")?
            .expect("a body frame");
        if let Ok(data) = frame.into_data() {
            return Some(String::from_utf8(data.to_vec()).expect("UTF-8 text"));
        }
    }
}

#[tokio::test]
async fn streams_a_follow_as_it_comes() {
    let c = Cluster::start().await;
    let h = c.http();
    let kubelet = fake_kubelet().await;
    let (tx, rx) = mpsc::channel(4);
    *kubelet.state.stream.lock().unwrap() = Some(rx);
    expect(
        &h.json("POST", "/api/v1/nodes", &node("node-1", kubelet.port))
            .await,
        201,
    );
    expect(
        &h.json(
            "POST",
            PODS,
            &pod_on("web", Some("node-1"), &["stream"], &[]),
        )
        .await,
        201,
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = hyper::Request::get(format!("{}{PODS}/web/log?follow=true", c.base))
        .header("accept", "application/json, */*")
        .body(Empty::new())
        .unwrap();
    tx.send(Bytes::from("line 1\n")).await.unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    let mut body = resp.into_body();
    // Each line arrives while the kubelet still holds the next one back.
    assert_eq!(next_piece(&mut body).await.as_deref(), Some("line 1\n"));
    tx.send(Bytes::from("line 2\n")).await.unwrap();
    assert_eq!(next_piece(&mut body).await.as_deref(), Some("line 2\n"));
    drop(tx);
    assert_eq!(next_piece(&mut body).await, None);
    assert_eq!(
        *kubelet.state.asked.lock().unwrap(),
        ["default/web/stream?follow=true"]
    );
}
