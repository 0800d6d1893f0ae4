//! Test harness shared by integration tests, e2e tests and benchmarks: a real etcd on free ports in a
//! private directory, an in-process API server on it, and a small HTTP client; and, in [`runtime`],
//! the node runtime (containerd over CRI with CNI, a local image registry, private network
//! namespaces). Everything started is stopped when its handle is dropped, also when a test fails.

pub mod runtime;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Polls `check` every 50 ms until it returns true or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` every 50 ms until it gives an answer, failing after 20 s (the async twin of
/// [`wait_until`], for checks that make requests).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a kubeconfig at `path` whose current context talks to the API server at `server`
/// (`http://127.0.0.1:<port>`) without credentials.
pub fn write_kubeconfig(path: &Path, server: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: atoll\n  cluster:\n    server: {server}\n\
         users:\n- name: admin\n  user: {{}}\ncontexts:\n- name: atoll\n  context:\n    cluster: atoll\n    user: admin\n\
         current-context: atoll\n"
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

/// A real etcd server, killed and its directory removed on drop.
pub struct Etcd {
    child: Child,
    /// Client URL, `http://127.0.0.1:<port>`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on free ports in a new temporary directory and waits until it answers.
    pub fn start() -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("atoll-etcd-")
            .tempdir()
            .expect("temp dir");
        Self::start_in(dir)
    }

    /// Starts etcd in `dir`. A port picked free can be taken by another test before etcd binds it;
    /// etcd then exits, and it is started again on other ports.
    fn start_in(dir: tempfile::TempDir) -> Etcd {
        for attempt in 0..5 {
            let (client, peer) = (free_port(), free_port());
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log_path = dir.path().join("etcd.log");
            let log = std::fs::File::create(&log_path).expect("etcd log file");
            let mut child = Command::new("etcd")
                .args(["--name", "test", "--data-dir"])
                .arg(dir.path().join(format!("data-{attempt}")))
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("test={peer_url}")])
                .args(["--quota-backend-bytes", "4294967296"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd must be installed (deploy/install-deps installs etcd-server)");
            let health = format!("{url}/health");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited (a port was taken): try other ports
                }
                let up = Command::new("curl")
                    .args(["-sf", "--max-time", "1", &health])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if up {
                    return Etcd { child, url, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!(
                        "etcd did not answer within 60 s; its log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
        panic!("etcd exited five times on fresh ports; its last log:\n{log}");
    }

    /// The etcd process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory etcd keeps its data and log in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `atoll apiserver` binary running as a process of its own on a free port; killed on drop.
pub struct ApiProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The port it listens on.
    pub port: u16,
}

impl ApiProcess {
    /// Starts `atoll apiserver` on `etcd` with its files in `data_dir`, plus `extra` flags, and waits
    /// until it is ready. Its log, at `log_level` (`info`, `warn`, …), goes to `stderr`.
    pub fn start(
        etcd: &Etcd,
        data_dir: &Path,
        extra: &[&str],
        log_level: &str,
        stderr: Stdio,
    ) -> ApiProcess {
        let port = free_port();
        let child = Command::new(atoll_bin())
            .args([
                "apiserver",
                "--etcd-servers",
                &etcd.url,
                "--bind-address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("ATOLL_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the atoll binary runs (cargo build -p atoll)");
        let api = ApiProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
        };
        let ready = format!("{}/readyz", api.base);
        wait_until(
            "the API server to be ready",
            Duration::from_secs(60),
            || {
                Command::new("curl")
                    .args(["-sf", "--max-time", "1", &ready])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
        api
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An etcd and an in-process API server on it.
pub struct Cluster {
    /// The API server.
    pub api: Option<atoll_apiserver::Handle>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The etcd it stores into.
    pub etcd: Etcd,
    /// Private directory for the server's files.
    pub dir: tempfile::TempDir,
}

/// The API server configuration tests use: loopback, free port, a small node port range.
pub fn api_config(etcd: &Etcd, dir: &Path) -> atoll_apiserver::Config {
    atoll_apiserver::Config {
        etcd_servers: vec![etcd.url.clone()],
        bind_address: "127.0.0.1".parse().expect("loopback"),
        port: 0,
        service_cluster_ip_range: "10.96.0.0/24".into(),
        service_node_port_range: "30000-30099".into(),
        data_dir: dir.to_path_buf(),
    }
}

impl Cluster {
    /// Starts etcd and an API server on it (in this process, on a free port).
    pub async fn start() -> Cluster {
        let etcd = tokio::task::spawn_blocking(Etcd::start)
            .await
            .expect("etcd start");
        let dir = tempfile::Builder::new()
            .prefix("atoll-api-")
            .tempdir()
            .expect("temp dir");
        Self::start_with(etcd, dir, |_| {}).await
    }

    /// Starts an API server on an existing etcd, with the config adjusted by `tweak`.
    pub async fn start_with(
        etcd: Etcd,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut atoll_apiserver::Config),
    ) -> Cluster {
        let mut config = api_config(&etcd, dir.path());
        tweak(&mut config);
        let api = atoll_apiserver::start(config)
            .await
            .expect("API server start");
        let base = format!("http://{}", api.addr);
        Cluster {
            api: Some(api),
            base,
            etcd,
            dir,
        }
    }

    /// Stops the API server and starts a new one on the same etcd (as after a restart).
    pub async fn restart(mut self) -> Cluster {
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
        let Cluster { etcd, dir, .. } = self;
        Self::start_with(etcd, dir, |_| {}).await
    }

    /// A Rust `kube` client for this server.
    pub fn kube_client(&self) -> kube::Client {
        let url = self.base.parse().expect("the server's URL");
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }

    /// A client for this server.
    pub fn http(&self) -> Http {
        Http::new(&self.base)
    }
}

/// A response: status, content type and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content-Type header.
    pub content_type: String,
    /// `Warning` headers.
    pub warnings: Vec<String>,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A small HTTP/1.1 client for tests.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str) -> Http {
        Http {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> hyper::Request<Full<Bytes>> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::new(body)).expect("valid request")
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let resp = self
            .client
            .request(self.build(method, path, headers, body.into()))
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body read")
            .to_bytes();
        Reply {
            status,
            content_type,
            warnings,
            body,
        }
    }

    /// GET with JSON accepted.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[("accept", "application/json")], Bytes::new())
            .await
    }

    /// Sends a JSON body with `method`.
    pub async fn json(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// PATCH with a content type.
    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Reply {
        self.send(
            "PATCH",
            path,
            &[("content-type", content_type)],
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// Opens a watch (or any streaming GET) and returns its lines as they come.
    pub async fn stream(&self, path: &str, accept: &str) -> Lines {
        let resp = self
            .client
            .request(self.build("GET", path, &[("accept", accept)], Bytes::new()))
            .await
            .expect("watch request sent");
        Lines {
            status: resp.status().as_u16(),
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }
}

/// The lines of a streaming response.
pub struct Lines {
    /// HTTP status.
    pub status: u16,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    /// The next line parsed as JSON, or None when the stream ends or `timeout` passes first.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return serde_json::from_slice(&line).ok();
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

/// The path of the built `atoll` binary: `ATOLL_BIN`, or `target/<profile>/atoll` in the workspace,
/// preferring the profile this code was built with (benchmarks are release builds, tests debug).
pub fn atoll_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ATOLL_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let profiles = if cfg!(debug_assertions) {
        ["debug", "release"]
    } else {
        ["release", "debug"]
    };
    for profile in profiles {
        let p = target.join(profile).join("atoll");
        if p.exists() {
            return p;
        }
    }
    panic!("the atoll binary is not built: run `cargo build -p atoll` first (deploy/test does)")
}
