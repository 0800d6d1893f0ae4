//! A whole local cluster from `atoll up --nodes 3` (each node a network namespace with its own
//! containerd and kubelet), driven with the real kubectl: an RC's pods spread over the hosts, reach
//! each other across hosts and are reached from the control plane's namespace, a deleted pod is
//! replaced, logs and exec work on every host, a host cut off from the network becomes NotReady and
//! its pods are recreated on the others, it rejoins when its link returns, and `atoll down` leaves
//! nothing behind. Runs in a private network namespace.

use std::io::{Read, Write};
use std::time::Duration;

use atoll_e2e::LocalCluster;
use atoll_testkit::runtime::isolate_network;

const RC: &str = r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 6
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      # Replaced soon after their node is cut off (the default toleration is 300 s).
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - name: web
        image: localhost:5000/busybox:1.35
        command: [sh, -c, 'echo serving on $(hostname); exec httpd -f -p 80 -h /www']
"#;

/// GETs `/` from `ip:80`, retrying while nothing listens there yet.
fn http_get(ip: &str) -> String {
    let addr = format!("{ip}:80").parse().expect("address");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("request");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing answers on {addr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (pod, node, IP) of the RC's running pods.
fn pods(cluster: &LocalCluster) -> Vec<(String, String, String)> {
    cluster
        .env
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{\"\\n\"}{end}",
        ])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.into(), w.next()?.into(), w.next()?.into()))
        })
        .collect()
}

#[test]
fn three_hosts_run_pods_that_reach_each_other() {
    isolate_network();
    // Nodes are declared unreachable 20 s after their last heartbeat (Kubernetes: 40 s).
    let cluster = LocalCluster::up_with(
        3,
        &[
            "--extra-args",
            "controller-manager=--node-monitor-grace-period=20s",
        ],
    );
    let env = &cluster.env;
    let nodes = env.ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{nodes}"
    );

    env.ok(&["apply", "-f", &env.write("rc.yaml", RC)]);
    env.wait_for(&["get", "rc", "web"], 90, |out| {
        out.lines().nth(1).is_some_and(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(3) == Some(&"6")
        })
    });
    let running = pods(&cluster);
    assert_eq!(running.len(), 6, "{running:?}");
    let mut hosts: Vec<&str> = running.iter().map(|p| p.1.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(
        hosts,
        ["node-1", "node-2", "node-3"],
        "spread over the hosts"
    );

    // Every pod answers from the control plane's namespace (routed via its node).
    for (_, _, ip) in &running {
        let page = http_get(ip);
        assert!(page.contains("atoll busybox"), "{ip}: {page}");
    }
    // A pod reaches a pod on another host, and kubectl logs and exec reach every host.
    let on = |node: &str| {
        running
            .iter()
            .find(|p| p.1 == node)
            .expect("a pod on the node")
    };
    let (from, _, _) = on("node-1");
    let (to, _, to_ip) = on("node-3");
    let answer = env.ok(&[
        "exec",
        from,
        "--",
        "sh",
        "-c",
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {to_ip} 80"),
    ]);
    assert!(answer.contains("atoll busybox"), "{answer}");
    for (pod, _, _) in &running {
        assert_eq!(env.ok(&["exec", pod, "--", "hostname"]).trim(), pod);
        assert_eq!(env.ok(&["logs", pod]).trim(), format!("serving on {pod}"));
    }

    // A deleted pod is replaced.
    env.ok(&["delete", "pod", to]);
    env.wait_for(&["get", "rc", "web"], 60, |out| {
        out.lines().nth(1).is_some_and(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(3) == Some(&"6")
        })
    });
    assert!(!pods(&cluster).iter().any(|p| &p.0 == to));

    // A host cut off: NotReady, its pods replaced on the others; back, it rejoins and stops them.
    let id = cluster.id();
    let link = |state: &str| {
        let ok = std::process::Command::new("ip")
            .args(["link", "set", &format!("atoll{id}v2"), state])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set {state}");
    };
    link("down");
    env.wait_for(&["get", "node", "node-2", "--no-headers"], 90, |out| {
        out.contains("NotReady")
    });
    env.wait_for(&["get", "pods", "-l", "app=web", "-o", "wide"], 60, |_| {
        pods(&cluster).iter().filter(|p| p.1 != "node-2").count() == 6
    });
    link("up");
    env.wait_for(&["get", "node", "node-2", "--no-headers"], 60, |out| {
        out.contains(" Ready ")
    });
    env.wait_for(&["get", "pods", "-l", "app=web", "-o", "wide"], 60, |_| {
        pods(&cluster).iter().all(|p| p.1 != "node-2")
    });

    // `atoll down` removes everything it made.
    cluster.down().expect("atoll down");
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("atoll{id}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(netns.is_empty(), "network namespaces left: {netns:?}");
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!("atoll{id}")), "{links}");
    let data = cluster.data_dir().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&data), "mounts left: {mounts}");
    let own = std::process::id().to_string();
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != own)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&data))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let cgroup = format!("/sys/fs/cgroup/memory/atoll-{id}");
    assert!(!std::path::Path::new(&cgroup).exists(), "{cgroup} left");
}
