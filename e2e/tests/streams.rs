//! `kubectl exec`, `attach` and `port-forward` through the `atoll apiserver` and `atoll kubelet`
//! binaries to a real containerd, with kubectl 1.33 (WebSocket: `v5.channel.k8s.io`, bridged to
//! SPDY at the API server, and port forwarding tunnelled in WebSocket) and kubectl 1.27 (SPDY,
//! relayed as it is), each session on its first try (no fallback): exit codes reach kubectl, stdin reaches the process and its
//! end closes it, a terminal is a terminal, attach shows a container's output, and a forwarded port
//! serves the pod's HTTP page. The official Python client does the same over WebSocket (v5, and
//! v4 straight to containerd). Runs in a private network namespace with its own registry and
//! containerd, like `kubelet.rs`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use atoll_e2e::{Env, kubectl_dir};
use atoll_testkit::runtime::{Containerd, Registry, add_node_address, isolate_network};

const NODE: &str = "e2e-streams";
const NODE_IP: &str = "10.200.0.1";

/// A child process killed (and reaped) on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` with `input` on its stdin (then closed) for at most `secs` seconds; kills it and
/// panics when it takes longer.
fn run_timed(mut cmd: Command, input: &[u8], secs: u64) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Running(cmd.spawn().expect("kubectl starts"));
    let mut stdin = child.0.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            out
        })
    };
    let stdout = reader(Box::new(child.0.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.0.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not end within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = writer.join();
    let out = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    eprintln!(
        "$ {cmd:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn http_get(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n").ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

/// A shell command line for `script`, each argument single-quoted.
fn shell_line(binary: &Path, args: &[&str]) -> String {
    std::iter::once(binary.to_string_lossy().as_ref())
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The official Python client (`kubernetes` from PyPI): exec over WebSocket v5 (bridged at the
/// API server) with an exit code and with stdin closed by the v5 signal, exec over plain
/// `v4.channel.k8s.io` (which containerd's streaming server speaks itself), and a WebSocket port
/// forward (the port named in the query).
const PYTHON: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream, portforward
from kubernetes.stream.ws_client import WSClient, get_websocket_url

config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()

r = stream(v1.connect_get_namespaced_pod_exec, "web", "default",
           command=["sh", "-c", "echo out; echo err >&2; exit 3"],
           stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
r.run_forever(timeout=30)
assert r.subprotocol == "v5.channel.k8s.io", r.subprotocol
assert r.returncode == 3, r.returncode
assert r.read_stdout() == "out\n"
assert r.read_stderr() == "err\n"

r = stream(v1.connect_get_namespaced_pod_exec, "web", "default", command=["cat"],
           stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
r.write_stdin("hi\n")
r.close_channel(0)
r.run_forever(timeout=30)
assert r.returncode == 0, r.returncode
assert r.read_stdout() == "hi\n"

cfg = client.Configuration.get_default_copy()
url = get_websocket_url(cfg.host + "/api/v1/namespaces/default/pods/web/exec"
                        "?command=sh&command=-c&command=exit%205&stdout=true&stderr=true")
w = WSClient(cfg, url, headers={"sec-websocket-protocol": "v4.channel.k8s.io"}, capture_all=True)
w.run_forever(timeout=30)
assert w.subprotocol == "v4.channel.k8s.io", w.subprotocol
assert w.returncode == 5, w.returncode

pf = portforward(v1.connect_get_namespaced_pod_portforward, "web", "default", ports="80")
s = pf.socket(80)
s.setblocking(True)
s.settimeout(30)
s.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
page = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    page += chunk
assert b"atoll busybox" in page, page
s.close()
print("python streams ok")
"#;

/// A venv with the `kubernetes` package, made before the test leaves the host's network (pip needs
/// the package index); removed on drop.
fn python_venv() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("atoll-e2e-venv-")
        .tempdir()
        .expect("temp dir");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir.path())
        .status()
        .expect("python3 runs");
    assert!(made.success(), "python3 -m venv failed");
    let pip = Command::new(dir.path().join("bin/pip"))
        .args(["install", "-q", "kubernetes"])
        .output()
        .expect("pip runs");
    assert!(
        pip.status.success(),
        "pip install kubernetes failed: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    dir
}

/// Runs [`PYTHON`] with the venv's Python.
fn python_client(env: &Env, venv: &Path) {
    let script = env.write("streams.py", PYTHON);
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(&script).arg(env.path("kubeconfig"));
    let out = run_timed(cmd, b"", 120);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("python streams ok"),
        "the Python client's streams failed"
    );
}

/// The API server's log lines about streaming sessions (how each reached the kubelet, or that the
/// kubelet refused it).
fn sessions(env: &Env) -> Vec<String> {
    std::fs::read_to_string(env.path("apiserver.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("streaming session"))
        .map(str::to_string)
        .collect()
}

/// Every stream workflow with the kubectl at `kubectl`.
fn streams(env: &Env, kubectl: &Path) {
    let version = kubectl.display();
    // Exit codes reach kubectl.
    let out = run_timed(
        env.command(kubectl, &["exec", "web", "--", "sh", "-c", "exit 3"]),
        b"",
        60,
    );
    assert_eq!(out.status.code(), Some(3), "{version}: exec exit code");
    let out = run_timed(
        env.command(
            kubectl,
            &["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"],
        ),
        b"",
        60,
    );
    assert!(out.status.success(), "{version}: exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));

    // Standard input reaches the process, and its end ends it.
    let out = run_timed(
        env.command(kubectl, &["exec", "-i", "web", "--", "cat"]),
        b"hi\n",
        60,
    );
    assert!(out.status.success(), "{version}: exec -i");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{version}");

    // A terminal (kubectl wants one on its own stdin: `script` gives it a pseudo-terminal).
    let line = shell_line(
        kubectl,
        &[
            "exec",
            "-it",
            "web",
            "--",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo on-a-tty",
        ],
    );
    let mut script = env.command(Path::new("script"), &["-qec", &line, "/dev/null"]);
    script.env("TERM", "dumb");
    let out = run_timed(script, b"", 60);
    assert!(out.status.success(), "{version}: exec -it");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("on-a-tty"),
        "{version}: exec -it"
    );

    // Attach shows what the container prints.
    let mut attach = env.command(kubectl, &["attach", "talk"]);
    attach.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = Running(attach.spawn().expect("kubectl attach"));
    let mut stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("tick") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => panic!(
                "{version}: attach showed no output: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    drop(child);

    // A forwarded port serves the pod's page.
    let port = atoll_testkit::free_port();
    let mut forward = env.command(kubectl, &["port-forward", "pod/web", &format!("{port}:80")]);
    forward.stdout(Stdio::null()).stderr(Stdio::null());
    let _forward = Running(forward.spawn().expect("kubectl port-forward"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = http_get(&format!("127.0.0.1:{port}")).unwrap_or_default();
        if page.contains("atoll busybox") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{version}: port-forward never served the page; last: {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A second connection over the same forward.
    let page = http_get(&format!("127.0.0.1:{port}")).unwrap_or_default();
    assert!(page.contains("atoll busybox"), "{version}: {page}");
}

#[test]
fn kubectl_execs_attaches_and_forwards_ports() {
    let venv = python_venv();
    isolate_network();
    add_node_address(&format!("{NODE_IP}/32"));
    let registry = Registry::start();
    let containerd = Containerd::start(&registry);
    let env = Env::start();
    let _kubelet = env.kubelet(&containerd, NODE, NODE_IP);
    let _scheduler = env.scheduler();
    env.wait_for(&["get", "node", NODE], 30, |out| out.contains(" Ready "));

    let image = registry.image("busybox:1.35");
    env.ok(&[
        "run",
        "web",
        &format!("--image={image}"),
        "--",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    env.ok(&[
        "run",
        "talk",
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done",
    ]);
    for pod in ["web", "talk"] {
        env.wait_for(&["get", "pod", pod], 60, |out| out.contains("Running"));
    }

    // Errors before the upgrade are Statuses that kubectl prints.
    let err = env.fails(&["exec", "web", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );
    let err = env.fails(&["exec", "missing", "--", "true"]);
    assert!(err.contains("not found"), "{err}");

    let mut kubectls: Vec<PathBuf> = vec![PathBuf::from("/usr/bin/kubectl")];
    if let Some(old) = kubectl_dir()
        .map(|d| d.join("kubectl.1.27"))
        .filter(|p| p.exists())
    {
        kubectls.push(old);
    }
    for kubectl in &kubectls {
        let before = sessions(&env).len();
        streams(&env, kubectl);
        let seen = sessions(&env).split_off(before);
        let count = |what: &str| seen.iter().filter(|l| l.contains(what)).count();
        // Five exec and attach sessions and one port forward, each on its first try.
        assert_eq!(seen.len(), 6, "{seen:#?}");
        if kubectl.ends_with("kubectl.1.27") {
            assert_eq!(count("session relayed"), 6, "SPDY only: {seen:#?}");
        } else {
            assert_eq!(
                count("bridged from WebSocket v5 to SPDY v4"),
                5,
                "{seen:#?}"
            );
            assert_eq!(count("tunnelled from WebSocket to SPDY"), 1, "{seen:#?}");
        }
    }
    let before = sessions(&env).len();
    python_client(&env, venv.path());
    let seen = sessions(&env).split_off(before);
    let count = |what: &str| seen.iter().filter(|l| l.contains(what)).count();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert_eq!(
        count("bridged from WebSocket v5 to SPDY v4"),
        2,
        "{seen:#?}"
    );
    assert_eq!(count("session relayed"), 2, "{seen:#?}");
    drop(containerd);
}
