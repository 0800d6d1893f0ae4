//! The `atoll kubelet` binary on a real containerd, with the scheduler, driven with the real kubectl:
//! `kubectl run` gives a pod that serves HTTP on its pod IP, `kubectl logs` (also `-f`, and with
//! kubectl 1.27) reads its output, `kubectl describe` shows the kubelet's events, and `kubectl
//! delete` completes once the kubelet has stopped the containers. A second test applies a manifest
//! and watches through kubectl: a memory limit in the container's cgroup and enforced (OOMKilled),
//! a hostPort on the node, crash-loop back-off, a liveness restart, readiness gating Ready, a killed
//! and restarted kubelet adopting its pods, and deletion within the grace period. Each runs in a
//! private network namespace with its own registry and containerd.

use std::io::{Read, Write};
use std::time::Duration;

use atoll_e2e::{Env, kubectl_dir};
use atoll_testkit::runtime::{Containerd, Registry, add_node_address, isolate_network};

const NODE: &str = "e2e-node";
const NODE_IP: &str = "10.200.0.1";

/// GETs `/` from `addr`, retrying for up to 20 s while nothing listens there yet (a Running pod's
/// server may still be binding its port).
fn http_get(addr: &str) -> String {
    let addr = addr.parse().expect("address");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
                    .expect("request");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                return out;
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "nothing answers on {addr}: {e}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[test]
fn kubectl_runs_pods_reads_logs_and_deletes_them() {
    isolate_network();
    add_node_address(&format!("{NODE_IP}/32"));
    let registry = Registry::start();
    let containerd = Containerd::start(&registry);
    let env = Env::start();
    let _kubelet = env.kubelet(&containerd, NODE, NODE_IP);
    let _scheduler = env.scheduler();
    env.wait_for(&["get", "node", NODE], 30, |out| out.contains(" Ready "));

    // A pod from `kubectl run`, scheduled onto the node and serving on its pod IP.
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
    env.wait_for(&["get", "pod", "web"], 60, |out| out.contains("Running"));
    let ip = env.ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    let page = http_get(&format!("{}:80", ip.trim()));
    assert!(page.contains("atoll busybox"), "{page}");
    let described = env.ok(&["describe", "pod", "web"]);
    for event in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            described.contains(event),
            "describe shows {event}: {described}"
        );
    }
    assert!(
        described.contains(&format!("{NODE}/{NODE_IP}")),
        "{described}"
    );

    // Logs: all of them, the tail, and a follow that ends with the container.
    env.ok(&[
        "run",
        "talk",
        "--restart=Never",
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4; do echo line $i; sleep 0.5; done",
    ]);
    env.wait_for(&["get", "pod", "talk"], 60, |out| {
        out.contains("Running") || out.contains("Completed")
    });
    let followed = env.ok(&["logs", "-f", "talk"]);
    assert!(
        followed.contains("line 1") && followed.contains("line 4"),
        "{followed}"
    );
    env.wait_for(&["get", "pod", "talk"], 30, |out| out.contains("Completed"));
    assert_eq!(
        env.ok(&["logs", "talk"]),
        "line 1\nline 2\nline 3\nline 4\n"
    );
    assert_eq!(env.ok(&["logs", "talk", "--tail=1"]), "line 4\n");
    if let Some(dir) = kubectl_dir() {
        let old = dir.join("kubectl.1.27");
        if old.exists() {
            let out = env.run_with(&old, &["logs", "talk", "--tail=2"]);
            assert!(out.status.success(), "kubectl 1.27 logs failed");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "line 3\nline 4\n");
        }
    }
    let err = env.fails(&["logs", "web", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );

    // Deletion waits for the kubelet: the containers stop, then the object goes.
    env.ok(&["delete", "pod", "web", "--grace-period=2"]);
    env.fails(&["get", "pod", "web"]);
    drop(containerd);
}

/// The restart count of the first container of `pod`.
fn restarts(env: &Env, pod: &str) -> u32 {
    env.ok(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].restartCount}",
    ])
    .trim()
    .parse()
    .unwrap_or(0)
}

#[test]
fn kubectl_sees_restarts_probes_limits_and_adoption() {
    isolate_network();
    add_node_address(&format!("{NODE_IP}/32"));
    let registry = Registry::start();
    let containerd = Containerd::start(&registry);
    let env = Env::start();
    let (mut kubelet, _) = env.kubelet(&containerd, NODE, NODE_IP);
    let _scheduler = env.scheduler();
    env.wait_for(&["get", "node", NODE], 30, |out| out.contains(" Ready "));
    let image = registry.image("busybox:1.35");
    let httpd = r#"["httpd", "-f", "-p", "80", "-h", "/www"]"#;
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: web
    image: {image}
    command: {httpd}
    ports: [{{containerPort: 80, hostPort: 18080}}]
    resources: {{limits: {{memory: 48Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  containers:
  - {{name: c, image: {image}, command: [sh, -c, "exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  containers:
  - name: c
    image: {image}
    command: {httpd}
    livenessProbe: {{httpGet: {{path: /missing, port: 80}}, periodSeconds: 1, failureThreshold: 2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: ready}}
spec:
  containers:
  - name: c
    image: {image}
    command: [sleep, "3600"]
    readinessProbe: {{exec: {{command: [cat, /tmp/ready]}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: oom}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    command: [sh, -c, "a=$(yes | head -c 100000000); echo survived"]
    resources: {{limits: {{memory: 32Mi}}}}
"#
    );
    env.ok(&["apply", "-f", &env.write("pods.yaml", &manifest)]);

    // The memory limit is in the container's cgroup, and a hostPort answers on the node.
    env.wait_for(&["get", "pod", "web"], 60, |out| out.contains("Running"));
    let limit = env.ok(&[
        "exec",
        "web",
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(limit.trim(), (48u64 << 20).to_string());
    let page = http_get(&format!("{NODE_IP}:18080"));
    assert!(page.contains("atoll busybox"), "{page}");

    // Enforced: the container over its limit is OOMKilled.
    env.wait_for(
        &[
            "get",
            "pod",
            "oom",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason}",
        ],
        60,
        |out| out == "OOMKilled",
    );
    assert!(env.ok(&["get", "pod", "oom"]).contains("OOMKilled"));

    // A crashing container backs off and restarts with a growing count.
    env.wait_for(&["get", "pod", "crash"], 60, |out| {
        out.contains("CrashLoopBackOff")
    });
    let first = restarts(&env, "crash");
    env.wait_for(
        &[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        60,
        |out| out.trim().parse::<u32>().is_ok_and(|n| n > first),
    );
    let described = env.ok(&["describe", "pod", "crash"]);
    assert!(
        described.contains("Back-off restarting failed container"),
        "{described}"
    );

    // A failing liveness probe restarts its container.
    env.wait_for(
        &[
            "get",
            "pod",
            "live",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        60,
        |out| out.trim().parse::<u32>().is_ok_and(|n| n >= 1),
    );
    let described = env.ok(&["describe", "pod", "live"]);
    assert!(described.contains("Liveness probe failed"), "{described}");

    // Readiness gates Ready: not ready until the probe's file exists.
    env.wait_for(&["get", "pod", "ready"], 60, |out| out.contains("Running"));
    let ready = || {
        env.ok(&[
            "get",
            "pod",
            "ready",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
    };
    assert_eq!(ready(), "False");
    env.ok(&["exec", "ready", "--", "touch", "/tmp/ready"]);
    env.wait_for(&["get", "pod", "ready"], 30, |out| out.contains("1/1"));

    // A restarted kubelet adopts the running pods: same containers, no restarts.
    let id = |pod: &str| {
        env.ok(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ])
    };
    let before = (id("web"), id("ready"));
    kubelet.kill();
    let (_kubelet, healthz) = env.kubelet(&containerd, NODE, NODE_IP);
    // Once it serves, it is watched for a few relists (one a second): nothing may restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&healthz).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new kubelet never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!((id("web"), id("ready")), before, "containers were replaced");
    assert_eq!(restarts(&env, "web"), 0);
    assert_eq!(restarts(&env, "ready"), 0);
    assert!(env.ok(&["get", "pod", "ready"]).contains("1/1"));

    // Deleting a pod stops it within its grace period.
    let started = std::time::Instant::now();
    env.ok(&["delete", "pod", "web", "--grace-period=3"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "deletion took {took:?}");
    env.fails(&["get", "pod", "web"]);
    drop(containerd);
}
