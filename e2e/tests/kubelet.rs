//! The `atoll kubelet` binary on a real containerd, with the scheduler, driven with the real kubectl:
//! `kubectl run` gives a pod that serves HTTP on its pod IP, `kubectl logs` (also `-f`, and with
//! kubectl 1.27) reads its output, `kubectl describe` shows the kubelet's events, and `kubectl
//! delete` completes once the kubelet has stopped the containers. Runs in a private network
//! namespace with its own registry and containerd.

use std::io::{Read, Write};
use std::time::Duration;

use atoll_e2e::{Env, kubectl_dir};
use atoll_testkit::runtime::{Containerd, Registry, add_node_address, isolate_network};

const NODE: &str = "e2e-node";
const NODE_IP: &str = "10.200.0.1";

fn http_get(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("address"),
        Duration::from_secs(2),
    )
    .expect("connect to the pod");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn kubectl_runs_pods_reads_logs_and_deletes_them() {
    isolate_network();
    add_node_address(&format!("{NODE_IP}/32"));
    let registry = Registry::start();
    let containerd = Containerd::start(&registry);
    let env = Env::start();
    let root = containerd.kubelet_root();
    let healthz = format!(
        "--healthz-bind-address=127.0.0.1:{}",
        atoll_testkit::free_port()
    );
    let kubelet_port = atoll_testkit::free_port().to_string();
    let _kubelet = env.component(
        "kubelet",
        &[
            "kubelet",
            "--node-name",
            NODE,
            "--node-ip",
            NODE_IP,
            "--pod-cidr",
            "10.88.0.0/24",
            "--container-runtime-endpoint",
            &containerd.endpoint(),
            "--root-dir",
            &root.to_string_lossy(),
            "--cni-conf-dir",
            &containerd.cni_conf_dir().to_string_lossy(),
            "--cgroup-root",
            containerd.cgroup_root(),
            "--port",
            &kubelet_port,
            &healthz,
        ],
    );
    let metrics = format!(
        "--metrics-bind-address=127.0.0.1:{}",
        atoll_testkit::free_port()
    );
    let _scheduler = env.component(
        "scheduler",
        &["scheduler", "--leader-elect=false", &metrics],
    );
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
