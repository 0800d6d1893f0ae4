//! Container probes: one prober task per running container with probes, running its startup probe
//! until it succeeds, then its liveness and readiness probes, each on its own period with its
//! thresholds. Results go into a shared table the pod worker reads, and the worker is woken on every
//! change. exec probes run through the runtime (ExecSync); httpGet succeeds on 200–399; tcpSocket on
//! a connection (on a hollow runtime, network probes succeed: see [`run_once`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::cri::Runtime;

/// What the probes of one container say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// The readiness probe's current result (true when there is none, once started).
    pub ready: bool,
    /// The liveness or startup probe failed past its threshold: the container must be restarted.
    /// Holds the failure message.
    pub unhealthy: Option<String>,
}

/// The probe results of a pod's containers, by runtime container ID.
#[derive(Clone, Default)]
pub struct Table {
    verdicts: Arc<Mutex<HashMap<String, Verdict>>>,
}

impl Table {
    /// The verdict for a container (None: no prober runs for it).
    pub fn get(&self, id: &str) -> Option<Verdict> {
        self.verdicts.lock().ok()?.get(id).cloned()
    }

    fn set(&self, id: &str, f: impl FnOnce(&mut Verdict)) -> bool {
        let Ok(mut v) = self.verdicts.lock() else {
            return false;
        };
        let entry = v.entry(id.to_string()).or_default();
        let before = entry.clone();
        f(entry);
        *entry != before
    }

    /// Records the verdict a container starts with (not started while it has a startup probe, not
    /// ready while it has a readiness or startup probe), before its prober first runs.
    pub fn start(&self, id: &str, c: &Container) {
        self.set(id, |v| {
            v.started = c.startup_probe.is_none();
            v.ready = c.readiness_probe.is_none() && c.startup_probe.is_none();
        });
    }

    /// Forgets a container.
    pub fn remove(&self, id: &str) {
        if let Ok(mut v) = self.verdicts.lock() {
            v.remove(id);
        }
    }
}

/// Where a probe reaches the container.
#[derive(Clone)]
pub struct Target {
    /// The runtime, for exec probes.
    pub runtime: Runtime,
    /// The container's runtime ID.
    pub id: String,
    /// The pod's address (the node's for hostNetwork pods).
    pub ip: String,
    /// The container spec (for named ports).
    pub container: Container,
}

/// Whether a container has any probe.
pub fn has_probes(c: &Container) -> bool {
    c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not a named port of the container")),
    }
}

/// Runs one probe once: Ok on success, Err with the failure message.
///
/// On a hollow runtime the pod addresses are made up and nothing listens on them, so httpGet,
/// tcpSocket and gRPC probes succeed without a connection; exec probes still go to the runtime
/// (whose ExecSync succeeds in a running container).
pub async fn run_once(target: &Target, probe: &Probe) -> Result<(), String> {
    if target.runtime.is_hollow() && probe.exec.is_none() {
        return Ok(());
    }
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match target.runtime.exec_sync(&target.id, cmd, timeout).await {
            Ok(r) if r.exit_code == 0 => Ok(()),
            Ok(r) => Err(format!(
                "command {:?} exited with {}: {}",
                exec.command.clone().unwrap_or_default().join(" "),
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).trim()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().unwrap_or_else(|| target.ip.clone());
        let addr = format!("{host}:{}", port(&target.container, &tcp.port)?);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if let Some(http) = &probe.http_get {
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return Err("HTTPS probes are not supported by this kubelet".into());
        }
        let host = http.host.clone().unwrap_or_else(|| target.ip.clone());
        let port = port(&target.container, &http.port)?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|e| format!("address {host}:{port}: {e}"))?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for h in http.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        request.push_str("\r\n");
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut head = [0u8; 64];
            let mut n = 0;
            while n < head.len() {
                let read = stream.read(&mut head[n..]).await?;
                if read == 0 || head[..n + read].contains(&b'\n') {
                    n += read;
                    break;
                }
                n += read;
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
        };
        let line = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(format!("Get \"http://{host}:{port}{path}\": {e}")),
            Err(_) => {
                return Err(format!(
                    "Get \"http://{host}:{port}{path}\": context deadline exceeded"
                ));
            }
        };
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if probe.grpc.is_some() {
        return Err("gRPC probes are not supported by this kubelet".into());
    }
    Ok(())
}

/// A probe's schedule and thresholds.
struct Schedule {
    initial_delay: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn schedule(p: &Probe) -> Schedule {
    Schedule {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

/// Runs a container's probes until the task is aborted (each probe's future boxed while it runs,
/// so that a waiting prober stays small), writing verdicts into `table` and waking
/// `wake` on every change.
pub async fn run(target: Target, table: Table, wake: Arc<Notify>) {
    let c = target.container.clone();
    let id = target.id.clone();
    let changed = |f: &dyn Fn(&mut Verdict)| {
        if table.set(&id, f) {
            wake.notify_one();
        }
    };
    table.start(&id, &c);
    if let Some(p) = &c.startup_probe {
        let s = schedule(p);
        tokio::time::sleep(s.initial_delay).await;
        let mut failures = 0;
        loop {
            match Box::pin(run_once(&target, p)).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    if failures >= s.failure_threshold {
                        let message = format!("Startup probe failed: {e}");
                        changed(&|v| v.unhealthy = Some(message.clone()));
                        return;
                    }
                }
            }
            tokio::time::sleep(s.period).await;
        }
        changed(&|v| {
            v.started = true;
            v.ready = c.readiness_probe.is_none();
        });
    }
    let liveness = c.liveness_probe.clone().map(|p| (schedule(&p), p));
    let readiness = c.readiness_probe.clone().map(|p| (schedule(&p), p));
    let live = async {
        let Some((s, p)) = &liveness else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(s.initial_delay).await;
        let mut failures = 0;
        loop {
            match Box::pin(run_once(&target, p)).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= s.failure_threshold {
                        let message = format!("Liveness probe failed: {e}");
                        changed(&|v| v.unhealthy = Some(message.clone()));
                        return;
                    }
                }
            }
            tokio::time::sleep(s.period).await;
        }
    };
    let ready = async {
        let Some((s, p)) = &readiness else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(s.initial_delay).await;
        let (mut successes, mut failures) = (0, 0);
        loop {
            match Box::pin(run_once(&target, p)).await {
                Ok(()) => {
                    failures = 0;
                    successes += 1;
                    if successes >= s.success_threshold {
                        changed(&|v| v.ready = true);
                    }
                }
                Err(e) => {
                    successes = 0;
                    failures += 1;
                    if failures >= s.failure_threshold {
                        tracing::debug!(container = %c.name, "readiness probe failed: {e}");
                        changed(&|v| v.ready = false);
                    }
                }
            }
            tokio::time::sleep(s.period).await;
        }
    };
    tokio::select! {
        _ = live => {}
        _ = ready => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(container: serde_json::Value) -> Target {
        Target {
            runtime: Runtime::connect("unix:///nonexistent.sock").unwrap(),
            id: "c1".into(),
            ip: "127.0.0.1".into(),
            container: serde_json::from_value(container).unwrap(),
        }
    }

    async fn http_server(status: u16) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_and_tcp_probes() {
        let ok = http_server(200).await;
        let bad = http_server(500).await;
        let t = target(json!({"name": "c", "ports": [{"name": "web", "containerPort": ok}]}));
        let probe: Probe =
            serde_json::from_value(json!({"httpGet": {"path": "/healthz", "port": "web"}}))
                .unwrap();
        assert_eq!(run_once(&t, &probe).await, Ok(()));
        let probe: Probe =
            serde_json::from_value(json!({"httpGet": {"path": "/", "port": bad}})).unwrap();
        assert_eq!(
            run_once(&t, &probe).await,
            Err("HTTP probe failed with statuscode: 500".into())
        );
        let probe: Probe = serde_json::from_value(json!({"tcpSocket": {"port": ok}})).unwrap();
        assert_eq!(run_once(&t, &probe).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let probe: Probe = serde_json::from_value(json!({"tcpSocket": {"port": closed}})).unwrap();
        assert!(run_once(&t, &probe).await.is_err());
        let probe: Probe = serde_json::from_value(json!({"tcpSocket": {"port": "nope"}})).unwrap();
        assert!(
            run_once(&t, &probe)
                .await
                .unwrap_err()
                .contains("not a named port")
        );
    }

    #[tokio::test]
    async fn on_a_hollow_runtime_network_probes_pass_and_exec_probes_ask_the_runtime() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut t = target(json!({"name": "c"}));
        t.runtime = Runtime::hollow(Arc::new(crate::hollow::Hollow::new()));
        for p in [
            json!({"httpGet": {"port": closed}}),
            json!({"tcpSocket": {"port": closed}}),
        ] {
            let probe: Probe = serde_json::from_value(p).unwrap();
            assert_eq!(run_once(&t, &probe).await, Ok(()));
        }
        let probe: Probe =
            serde_json::from_value(json!({"exec": {"command": ["cat", "/ready"]}})).unwrap();
        let err = run_once(&t, &probe).await.unwrap_err();
        assert!(err.contains("not found"), "no container c1: {err}");
    }

    #[tokio::test]
    async fn liveness_fails_after_the_threshold() {
        let bad = http_server(503).await;
        let t = target(
            json!({"name": "c", "livenessProbe": {"httpGet": {"port": bad}, "periodSeconds": 1, "failureThreshold": 2}}),
        );
        let table = Table::default();
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(t, table.clone(), wake.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while table.get("c1").and_then(|v| v.unhealthy).is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "liveness never failed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v = table.get("c1").unwrap();
        assert!(
            v.started && v.ready,
            "no startup or readiness probe: started and ready"
        );
        assert!(v.unhealthy.unwrap().contains("503"));
        task.abort();
    }
}
