//! A whole local cluster from `atoll up --nodes 3` (each node a network namespace with its own
//! containerd, kubelet and proxy), driven with the real kubectl: the Atomic demo's Services answer
//! through their ClusterIP and NodePort from pods and hosts (also on one host); an RC's pods spread
//! over the hosts, reach
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
        command: [sh, -c, 'echo serving on $(hostname); mkdir -p /srv/www; hostname > /srv/www/index.html; exec httpd -f -p 80 -h /srv/www']
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
"#;

/// GETs `/` from `ip:80`, retrying while nothing listens there yet.
fn http_get(ip: &str) -> String {
    http_get_addr(&format!("{ip}:80"))
}

/// GETs `/` from `addr` (`ip:port`), retrying while nothing listens there yet.
fn http_get_addr(addr: &str) -> String {
    let addr = addr.parse().expect("address");
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

/// GETs `/` from `addr` inside network namespace `netns` (a node, as a process on that host would).
fn http_get_in(netns: &str, addr: &str) -> String {
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("the node's namespace");
    let addr = addr.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        http_get_addr(&addr)
    })
    .join()
    .expect("the request thread")
}

/// The Atomic demo (`deploy/examples/atomic-demo.yaml`) on `cluster`: each Service answers with its
/// own page through its ClusterIP from a pod and from every host, and through its NodePort from
/// every host to every other; scaling web-one to 3 spreads it over the hosts.
fn check_demo(cluster: &LocalCluster, nodes: u32) {
    let env = &cluster.env;
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/atomic-demo.yaml"
    );
    env.ok(&["apply", "-f", demo]);
    for app in ["web-one", "web-two"] {
        env.wait_for(
            &[
                "get",
                "endpoints",
                app,
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ],
            90,
            |out| out.split_whitespace().count() == 2,
        );
    }
    let layout = cluster.layout();
    let page = |app: &str| {
        if app == "web-one" {
            "<body>Container one</body>"
        } else {
            "<body>Container two</body>"
        }
    };
    let pod = env.ok(&[
        "get",
        "pods",
        "-l",
        "app=web-one",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    for (app, node_port) in [("web-one", 30081), ("web-two", 30082)] {
        let ip = env.ok(&["get", "svc", app, "-o", "jsonpath={.spec.clusterIP}"]);
        let from_pod = env.ok(&[
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 80"),
        ]);
        assert!(from_pod.contains(page(app)), "{app} from a pod: {from_pod}");
        for i in 1..=nodes {
            let netns = layout.node(i).netns;
            let got = http_get_in(&netns, &format!("{ip}:80"));
            assert!(
                got.contains(page(app)),
                "{app} ClusterIP from node-{i}: {got}"
            );
            let other = i % nodes + 1;
            let target = format!("{}:{node_port}", layout.node(other).ip);
            let got = http_get_in(&netns, &target);
            assert!(
                got.contains(page(app)),
                "{app} NodePort {target} from node-{i}: {got}"
            );
        }
    }
    env.ok(&["scale", "rc", "web-one", "--replicas=3"]);
    env.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=web-one",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        60,
        |out| {
            let mut hosts: Vec<&str> = out.split_whitespace().collect();
            let count = hosts.len();
            hosts.sort();
            hosts.dedup();
            count == 3 && hosts.len() == (nodes as usize).min(3)
        },
    );
}

#[test]
fn one_host_runs_the_atomic_demo() {
    isolate_network();
    let cluster = LocalCluster::up(1);
    check_demo(&cluster, 1);
}

/// The pod that answered a GET of `/` (each serves its own name).
fn answered(page: &str) -> String {
    page.lines().last().unwrap_or_default().trim().to_string()
}

/// The Services over the RC's pods, through the proxies: a ClusterIP spreads a host's requests over
/// the pods, a pod reaches itself through it (hairpin), ClientIP affinity keeps a client on one pod,
/// a Service without endpoints refuses at once, and a deleted pod leaves the rotation within a
/// second.
fn check_services(cluster: &LocalCluster, running: &[(String, String, String)]) {
    let env = &cluster.env;
    let host = cluster.layout().node(2).netns;
    let ip = |svc: &str| env.ok(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"]);
    let web = format!("{}:80", ip("web"));
    env.wait_for(
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        30,
        |out| out.split_whitespace().count() == 6,
    );
    let mut seen: Vec<String> = (0..50)
        .map(|_| answered(&http_get_in(&host, &web)))
        .collect();
    seen.sort();
    seen.dedup();
    assert!(seen.len() >= 3, "50 requests reached only {seen:?}");
    assert!(
        seen.iter().all(|p| running.iter().any(|r| &r.0 == p)),
        "{seen:?}"
    );

    let (pod, _, _) = &running[0];
    let hairpin = env.ok(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        &format!(
            "for i in $(seq 1 60); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {} 80 | tail -n 1; done",
            ip("web")
        ),
    ]);
    assert!(
        hairpin.lines().any(|l| l.trim() == pod.as_str()),
        "{pod} never reached itself through its Service: {hairpin}"
    );

    let sticky = format!("{}:80", ip("sticky"));
    let mut pinned: Vec<String> = (0..20)
        .map(|_| answered(&http_get_in(&host, &sticky)))
        .collect();
    pinned.dedup();
    assert_eq!(pinned.len(), 1, "ClientIP affinity: {pinned:?}");

    let nobody = format!("{}:80", ip("nobody"));
    let refused = {
        let ns = std::fs::File::open(format!("/run/netns/{host}")).expect("netns");
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let started = std::time::Instant::now();
            let r = std::net::TcpStream::connect_timeout(
                &nobody.parse().expect("addr"),
                Duration::from_secs(3),
            );
            (r.map_err(|e| e.kind()), started.elapsed())
        })
        .join()
        .expect("thread")
    };
    assert!(
        matches!(refused, (Err(std::io::ErrorKind::ConnectionRefused), t) if t < Duration::from_secs(1)),
        "a Service without endpoints: {refused:?}"
    );

    // The pod goes from the rotation as soon as it is terminating.
    let (gone, _, _) = &running[1];
    env.ok(&["delete", "pod", gone, "--wait=false"]);
    let deleted = std::time::Instant::now();
    let mut clean = 0;
    while clean < 20 {
        if answered(&http_get_in(&host, &web)) == *gone {
            clean = 0;
        } else {
            clean += 1;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(10),
            "{gone} still answers 10 s after its deletion"
        );
    }
    let took = deleted.elapsed();
    eprintln!("{gone} left the rotation within {took:?} (20 clean requests included)");
    assert!(
        took < Duration::from_secs(3),
        "{gone} left the rotation only after {took:?}"
    );
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
    for (pod, _, ip) in &running {
        let page = http_get(ip);
        assert!(page.contains(pod.as_str()), "{ip}: {page}");
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
    assert!(answer.contains(to.as_str()), "{answer}");
    for (pod, _, _) in &running {
        assert_eq!(env.ok(&["exec", pod, "--", "hostname"]).trim(), pod);
        assert_eq!(env.ok(&["logs", pod]).trim(), format!("serving on {pod}"));
    }

    check_services(&cluster, &running);

    // A deleted pod is replaced.
    env.ok(&["delete", "pod", to]);
    env.wait_for(&["get", "rc", "web"], 60, |out| {
        out.lines().nth(1).is_some_and(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(3) == Some(&"6")
        })
    });
    assert!(!pods(&cluster).iter().any(|p| &p.0 == to));

    check_demo(&cluster, 3);

    // A host cut off: NotReady, its pods replaced on the others; back, it rejoins and stops them.
    let layout = cluster.layout();
    let link = |state: &str| {
        let ok = std::process::Command::new("ip")
            .args(["link", "set", &layout.node(2).veth, state])
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
    let netns: Vec<String> = layout
        .all_nodes()
        .into_iter()
        .map(|n| n.netns)
        .filter(|n| atoll_cluster::net::netns_exists(n))
        .collect();
    assert!(netns.is_empty(), "network namespaces left: {netns:?}");
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&layout.bridge()), "{links}");
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
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains("atoll"), "nftables tables left: {tables}");
    let cgroup = format!("/sys/fs/cgroup/memory{}", layout.cgroup_root());
    assert!(!std::path::Path::new(&cgroup).exists(), "{cgroup} left");
}
