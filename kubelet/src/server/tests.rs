//! The server over temporary log files and a fake runtime.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::lookup::{Absent, Containers, Instance, Session};
use super::*;

#[derive(Default)]
struct Fake {
    instances: Mutex<Vec<Instance>>,
    absent: Mutex<Option<Absent>>,
    running: AtomicBool,
    sandbox: Mutex<Option<String>>,
    sessions: Mutex<Vec<Session>>,
    stream_url: Mutex<String>,
}

impl Containers for Fake {
    async fn instances(&self, ns: &str, pod: &str, c: &str) -> Result<Vec<Instance>, Error> {
        assert_eq!((ns, pod), ("default", "web"));
        Ok(self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.id.starts_with(c))
            .cloned()
            .collect())
    }
    async fn running(&self, _id: &str) -> Result<bool, Error> {
        Ok(self.running.load(Ordering::SeqCst))
    }
    async fn absent(&self, _ns: &str, _pod: &str, _c: &str) -> Result<Absent, Error> {
        Ok(self
            .absent
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Absent::Waiting("ContainerCreating".into())))
    }
    async fn sandbox(&self, _ns: &str, _pod: &str) -> Result<Option<String>, Error> {
        Ok(self.sandbox.lock().unwrap().clone())
    }
    async fn session(&self, session: Session) -> Result<String, Error> {
        self.sessions.lock().unwrap().push(session);
        Ok(self.stream_url.lock().unwrap().clone())
    }
}

/// A server on a free loopback port with its fake runtime and a directory for log files.
struct Setup {
    fake: Arc<Fake>,
    view: NodeView,
    dir: tempfile::TempDir,
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Setup {
    async fn start() -> Setup {
        let fake = Arc::new(Fake::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut registry = Registry::default();
        crate::metrics::Metrics::new(&mut registry, "n1");
        let view = NodeView {
            pods: PodSet::default(),
            metrics: Arc::new(registry),
        };
        let app = router(fake.clone(), view.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Setup {
            fake,
            view,
            dir: tempfile::tempdir().unwrap(),
            base,
            task,
        }
    }

    /// Adds an instance `id` (its name starts with the container's) with a log file holding `text`.
    fn instance(&self, id: &str, attempt: u32, state: ContainerState, text: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{id}.log"));
        std::fs::write(&path, text).unwrap();
        self.fake.instances.lock().unwrap().push(Instance {
            id: id.into(),
            pod_uid: "uid".into(),
            attempt,
            created_at: attempt as i64,
            state,
            log_path: path.clone(),
        });
        path
    }

    async fn open(&self, path: &str) -> hyper::Response<hyper::body::Incoming> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri = format!("{}{path}", self.base);
        client
            .request(hyper::Request::get(uri).body(Empty::new()).unwrap())
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.open(path).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

const LOG: &str = "\
2024-01-02T03:04:05.000000001Z stdout F one
2024-01-02T03:04:06Z stderr F oops
2024-01-02T03:04:07Z stdout P tw
2024-01-02T03:04:08Z stdout F o
2024-01-02T03:04:09Z stdout F three
";

fn ok(s: &str) -> (u16, String) {
    (200, s.to_string())
}

#[tokio::test]
async fn serves_health_and_logs_with_their_options() {
    let s = Setup::start().await;
    assert_eq!(s.get("/healthz").await, ok("ok"));
    s.instance("c-1", 1, ContainerState::Exited, LOG);
    let logs = "/containerLogs/default/web/c";
    assert_eq!(s.get(logs).await, ok("one\noops\ntwo\nthree\n"));
    assert_eq!(
        s.get(&format!("{logs}?tailLines=2&timestamps=true")).await,
        ok("2024-01-02T03:04:07Z two\n2024-01-02T03:04:09Z three\n")
    );
    assert_eq!(s.get(&format!("{logs}?tail=1")).await, ok("three\n"));
    assert_eq!(
        s.get(&format!("{logs}?tail=all&tailLines=1")).await,
        ok("one\noops\ntwo\nthree\n")
    );
    assert_eq!(
        s.get(&format!("{logs}?sinceTime=2024-01-02T03:04:06Z"))
            .await,
        ok("oops\ntwo\nthree\n")
    );
    assert_eq!(s.get(&format!("{logs}?limitBytes=6")).await, ok("one\noo"));
    // Every line of this file is years old.
    assert_eq!(s.get(&format!("{logs}?sinceSeconds=60")).await, ok(""));
    let (code, text) = s.get(&format!("{logs}?tailLines=-1")).await;
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("tailLines: Invalid value: -1"), "{text}");
    assert_eq!(s.get(&format!("{logs}?limitBytes=x")).await.0, 400);
}

#[tokio::test]
async fn picks_the_current_or_previous_instance() {
    let s = Setup::start().await;
    let logs = "/containerLogs/default/web/c";
    s.instance(
        "c-0",
        0,
        ContainerState::Exited,
        "2024-01-02T03:04:05Z stdout F first run\n",
    );
    assert_eq!(s.get(logs).await, ok("first run\n"));
    assert_eq!(
        s.get(&format!("{logs}?previous=true")).await,
        (
            400,
            "previous terminated container \"c\" in pod \"web\" not found".into()
        )
    );
    s.instance(
        "c-1",
        1,
        ContainerState::Running,
        "2024-01-02T03:04:09Z stdout F second run\n",
    );
    assert_eq!(s.get(logs).await, ok("second run\n"));
    assert_eq!(
        s.get(&format!("{logs}?previous=1")).await,
        ok("first run\n")
    );
}

#[tokio::test]
async fn words_missing_containers_as_kubernetes() {
    let s = Setup::start().await;
    let logs = "/containerLogs/default/web/c";
    assert_eq!(
        s.get(logs).await,
        (
            400,
            "container \"c\" in pod \"web\" is waiting to start: ContainerCreating".into()
        )
    );
    *s.fake.absent.lock().unwrap() = Some(Absent::Waiting("ErrImagePull".into()));
    assert_eq!(
        s.get(logs).await.1,
        "container \"c\" in pod \"web\" is waiting to start: image can't be pulled"
    );
    *s.fake.absent.lock().unwrap() = Some(Absent::NoContainer);
    assert_eq!(
        s.get(logs).await,
        (404, "container \"c\" not found in pod \"web\"".into())
    );
    *s.fake.absent.lock().unwrap() = Some(Absent::NoPod);
    assert_eq!(
        s.get(logs).await,
        (404, "pod \"web\" does not exist".into())
    );
    // An instance whose log file is gone.
    let path = s.instance("c-0", 0, ContainerState::Exited, "");
    std::fs::remove_file(&path).unwrap();
    let (code, text) = s.get(logs).await;
    assert_eq!(code, 400);
    assert!(text.starts_with("failed to open log file"), "{text}");
}

/// The next piece of a streamed body, or None at its end; panics after a deadline.
async fn next_piece(body: &mut hyper::body::Incoming) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a piece of the log within 10 s")?
            .unwrap();
        if let Ok(data) = frame.into_data() {
            return Some(String::from_utf8(data.to_vec()).unwrap());
        }
    }
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn follows_a_running_container_until_it_stops() {
    let s = Setup::start().await;
    s.fake.running.store(true, Ordering::SeqCst);
    let path = s.instance("c-0", 0, ContainerState::Running, LOG);
    let resp = s
        .open("/containerLogs/default/web/c?follow=true&tailLines=1")
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(next_piece(&mut body).await.as_deref(), Some("three\n"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"2024-01-02T03:04:10Z stdout P fo").unwrap();
    f.write_all(b"ur\n2024-01-02T03:04:10Z stdout F !\n")
        .unwrap();
    assert_eq!(next_piece(&mut body).await.as_deref(), Some("four!\n"));
    // Output written just before the container stops still arrives, then the stream ends.
    f.write_all(b"2024-01-02T03:04:11Z stderr F bye\n").unwrap();
    s.fake.running.store(false, Ordering::SeqCst);
    let mut rest = String::new();
    while let Some(piece) = next_piece(&mut body).await {
        rest.push_str(&piece);
    }
    assert_eq!(rest, "bye\n");
}

#[tokio::test]
async fn stops_following_when_the_client_goes_away() {
    let s = Setup::start().await;
    s.fake.running.store(true, Ordering::SeqCst);
    s.instance("c-0", 0, ContainerState::Running, LOG);
    let idle = Arc::strong_count(&s.fake);
    let resp = s.open("/containerLogs/default/web/c?follow=true").await;
    let mut body = resp.into_body();
    assert!(next_piece(&mut body).await.is_some());
    assert!(
        Arc::strong_count(&s.fake) > idle,
        "the follower holds the runtime"
    );
    drop(body);
    wait_for("the follower to end", || Arc::strong_count(&s.fake) == idle).await;
}

/// A streaming server that upgrades anything and answers `streamed` on the new connection.
async fn stream_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/token", listener.local_addr().unwrap());
    let app = Router::new().fallback(|mut req: axum::extract::Request| async move {
        let on = req
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
            .unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut io = hyper_util::rt::TokioIo::new(on.await.unwrap());
            let _ = io.write_all(b"streamed").await;
            let _ = io.shutdown().await;
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::UPGRADE, "SPDY/3.1"),
                (header::CONNECTION, "Upgrade"),
                (
                    header::HeaderName::from_static("x-stream-protocol-version"),
                    "v4.channel.k8s.io",
                ),
            ],
        )
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// Sends `POST path` asking for SPDY/3.1 (or a plain POST); returns the answer as text.
async fn upgrade_request(base: &str, path: &str, upgrade: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let up = if upgrade {
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    } else {
        "Connection: close\r\n"
    };
    let req = format!("POST {path} HTTP/1.1\r\nHost: k\r\n{up}Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // Until the end of the body (Content-Length) or, once upgraded, of the connection.
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&out).to_lowercase();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if length.is_some_and(|n| out.len() >= head_end + 4 + n) {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn relays_exec_attach_and_port_forward_to_the_runtime() {
    let s = Setup::start().await;
    *s.fake.stream_url.lock().unwrap() = stream_server().await;
    s.instance("c-1", 0, ContainerState::Running, "");
    let out = upgrade_request(
        &s.base,
        "/exec/default/web/c?command=sh&command=-c&command=exit+3&input=1&output=1&error=1&tty=1",
        true,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 101"), "{out}");
    assert!(
        out.to_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{out}"
    );
    assert!(out.ends_with("streamed"), "{out}");
    let out = upgrade_request(&s.base, "/attach/default/web/c?stdout=true", true).await;
    assert!(out.starts_with("HTTP/1.1 101"), "{out}");
    *s.fake.sandbox.lock().unwrap() = Some("sandbox-1".into());
    let out = upgrade_request(&s.base, "/portForward/default/web?port=80", true).await;
    assert!(out.starts_with("HTTP/1.1 101"), "{out}");
    let sessions = s.fake.sessions.lock().unwrap().clone();
    assert_eq!(
        sessions,
        [
            Session::Exec(k8s_cri::v1::ExecRequest {
                container_id: "c-1".into(),
                cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
                tty: true,
                stdin: true,
                stdout: true,
                // A terminal has one output stream.
                stderr: false,
            }),
            Session::Attach(k8s_cri::v1::AttachRequest {
                container_id: "c-1".into(),
                stdout: true,
                ..Default::default()
            }),
            Session::PortForward(k8s_cri::v1::PortForwardRequest {
                pod_sandbox_id: "sandbox-1".into(),
                port: vec![80],
            }),
        ]
    );
}

#[test]
fn passes_the_query_on_to_the_runtime() {
    use super::session::with_query;
    assert_eq!(
        with_query("http://r/portforward/t", Some("port=80")),
        "http://r/portforward/t?port=80"
    );
    assert_eq!(
        with_query("http://r/x?a=1", Some("b=2")),
        "http://r/x?a=1&b=2"
    );
    assert_eq!(with_query("http://r/x", Some("")), "http://r/x");
    assert_eq!(with_query("http://r/x", None), "http://r/x");
}

#[tokio::test]
async fn refuses_sessions_it_cannot_start() {
    let s = Setup::start().await;
    *s.fake.stream_url.lock().unwrap() = stream_server().await;
    let exec = "/exec/default/web/c?command=ls&output=1";
    // No upgrade asked for.
    let out = upgrade_request(&s.base, exec, false).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.ends_with("Upgrade request required"), "{out}");
    // No command, no stream.
    let out = upgrade_request(&s.base, "/exec/default/web/c?output=1", true).await;
    assert!(
        out.ends_with("you must specify at least one command for the container"),
        "{out}"
    );
    let out = upgrade_request(&s.base, "/attach/default/web/c", true).await;
    assert!(
        out.ends_with("you must specify at least 1 of stdin, stdout, stderr"),
        "{out}"
    );
    // The container is not running.
    s.instance("c-1", 0, ContainerState::Exited, "");
    *s.fake.absent.lock().unwrap() = Some(Absent::Terminated);
    let out = upgrade_request(&s.base, exec, true).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.ends_with("container \"c\" in pod \"web\" is terminated"),
        "{out}"
    );
    // A bad port, no sandbox.
    let out = upgrade_request(&s.base, "/portForward/default/web?port=x", true).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = upgrade_request(&s.base, "/portForward/default/web", true).await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(s.fake.sessions.lock().unwrap().is_empty());
}

#[tokio::test]
async fn lists_the_pods_it_runs_and_its_metrics() {
    let s = Setup::start().await;
    let (status, body) = s.get("/pods").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"], serde_json::json!([]));
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    s.view.pods.put("u1", Arc::new(pod));
    let (_, body) = s.get("/pods").await;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    s.view.pods.remove("u1");
    let (_, body) = s.get("/pods").await;
    assert!(body.contains("\"items\":[]"), "{body}");
    let (status, body) = s.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("kubelet_node_name{node=\"n1\"} 1"), "{body}");
}
