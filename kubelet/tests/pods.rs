//! The kubelet against a real containerd (its own root, socket and CNI config, in a private network
//! namespace), a local registry, etcd and the API server: pods run, serve, crash and back off, are
//! probed, limited, deleted within their grace period and adopted by a restarted kubelet.

#![allow(clippy::unwrap_used)] // a test: a failed step should fail it loudly

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use atoll_kubelet::Config;
use atoll_testkit::runtime::{Containerd, Registry, add_node_address, isolate_network};
use atoll_testkit::{Cluster, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE: &str = "node-a";
const NODE_IP: &str = "10.200.0.1";
/// The kubelet server's port (each test has its own network namespace).
const KUBELET_PORT: u16 = 10250;

/// One node: API server, registry, containerd and a kubelet run in this process.
struct Env {
    cluster: Cluster,
    registry: Registry,
    containerd: Containerd,
    root: tempfile::TempDir,
    kubelet: Option<tokio::task::JoinHandle<()>>,
}

impl Env {
    fn config(&self) -> Config {
        let mut c = Config::new(NODE);
        c.runtime_endpoint = self.containerd.endpoint();
        c.root_dir = self.containerd.kubelet_root();
        c.cni_conf_dir = self.containerd.cni_conf_dir().to_path_buf();
        c.cgroup_root = self.containerd.cgroup_root().to_string();
        c.node_ip = Some(NODE_IP.parse().unwrap());
        c.pod_cidr = Some("10.88.0.0/24".into());
        c.status_interval = Duration::from_millis(500);
        c.crash_backoff = Duration::from_secs(2);
        c.server_addr = Some(format!("{NODE_IP}:{KUBELET_PORT}").parse().unwrap());
        c
    }

    fn start_kubelet(&mut self) {
        let client = self.cluster.kube_client();
        let config = self.config();
        self.kubelet = Some(tokio::spawn(async move {
            if let Err(e) = atoll_kubelet::run_until(client, config, std::future::pending()).await {
                panic!("kubelet: {e}");
            }
        }));
    }

    /// Stops the kubelet as a crash would: its pods keep running.
    async fn kill_kubelet(&mut self) {
        if let Some(k) = self.kubelet.take() {
            k.abort();
            let _ = k.await;
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.kube_client(), "default")
    }

    fn image(&self) -> String {
        self.registry.image("busybox:1.35")
    }

    async fn create(&self, pod: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    /// Waits (up to `secs`) until the pod satisfies `check`.
    async fn wait_pod(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        check: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(p)) = self.pods().get_opt(name).await
                && check(&p)
            {
                return p;
            }
            if tokio::time::Instant::now() > deadline {
                let p = self.pods().get_opt(name).await.ok().flatten();
                panic!(
                    "timed out waiting for pod {name} to be {what}; it is {:#?}",
                    p.map(|p| p.status)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn running(&self, name: &str) -> Pod {
        self.wait_pod(name, 60, "Running and Ready", |p| {
            let s = p.status.clone().unwrap_or_default();
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .await
    }

    /// The runtime's sandboxes of the pod with `uid`.
    async fn sandboxes(&self, uid: &str) -> usize {
        let rt = atoll_kubelet::cri::Runtime::connect(&self.containerd.endpoint()).unwrap();
        let labels = HashMap::from([(
            atoll_kubelet::cri::labels::POD_UID.to_string(),
            uid.to_string(),
        )]);
        rt.list_sandboxes_matching(labels).await.unwrap().len()
    }
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

fn container_status(p: &Pod, i: usize) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .clone()
        .unwrap_or_default()
        .container_statuses
        .unwrap_or_default()
        .get(i)
        .cloned()
        .unwrap_or_default()
}

/// Runs `test` on a fresh node in a private network namespace; everything is cleaned up after.
fn node_test<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Env>,
{
    isolate_network();
    add_node_address(&format!("{NODE_IP}/32"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::start();
    let containerd = Containerd::start(&registry);
    runtime.block_on(async move {
        let cluster = Cluster::start().await;
        let root = tempfile::Builder::new()
            .prefix("atoll-kubelet-")
            .tempdir()
            .unwrap();
        let mut env = Env {
            cluster,
            registry,
            containerd,
            root,
            kubelet: None,
        };
        env.start_kubelet();
        let mut env = test(env).await;
        env.kill_kubelet().await;
    });
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out)
}

#[test]
fn node_registers_and_heartbeats() {
    node_test(|env| async move {
        let nodes: Api<Node> = Api::all(env.cluster.kube_client());
        let node = eventually("the node Ready", || async {
            let n = nodes.get_opt(NODE).await.ok()??;
            let ready = n
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(n)
        })
        .await;
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["pods"].0, "110");
        assert!(
            cap.contains_key("cpu")
                && cap.contains_key("memory")
                && cap.contains_key("ephemeral-storage")
        );
        let info = status.node_info.unwrap();
        assert!(
            info.container_runtime_version.starts_with("containerd://"),
            "{}",
            info.container_runtime_version
        );
        assert!(!info.kernel_version.is_empty() && !info.os_image.is_empty());
        assert!(
            status
                .addresses
                .unwrap()
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == NODE_IP)
        );
        assert_eq!(node.spec.unwrap().pod_cidr.as_deref(), Some("10.88.0.0/24"));
        let leases: Api<Lease> = Api::namespaced(env.cluster.kube_client(), "kube-node-lease");
        let lease = eventually("the node lease", || async {
            leases.get_opt(NODE).await.ok()?
        })
        .await;
        assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(NODE));
        env
    });
}

#[test]
fn pod_runs_serves_and_stops_within_its_grace_period() {
    node_test(|env| async move {
        let image = env.image();
        env.create(json!({"metadata": {"name": "web"}, "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 3,
            "containers": [{"name": "web", "image": image, "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
                "ports": [{"containerPort": 80, "hostPort": 18080}],
                "resources": {"limits": {"memory": "64Mi"}}}]}}))
            .await;
        let pod = env.running("web").await;
        let status = pod.status.clone().unwrap();
        let ip = status.pod_ip.clone().expect("a pod IP");
        assert!(ip.starts_with("10.88.0."), "{ip}");
        assert_eq!(status.host_ip.as_deref(), Some(NODE_IP));
        assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
        let c = container_status(&pod, 0);
        assert!(c.container_id.unwrap().starts_with("containerd://"));
        assert!(c.image_id.contains("sha256:"), "{}", c.image_id);
        // Running means started: httpd may still be binding its port.
        let addr = format!("{ip}:80");
        let page = eventually("the pod answers on its IP", || http_get(&addr, "/")).await;
        assert!(
            page.contains("200 OK") && page.contains("atoll busybox"),
            "{page}"
        );
        let addr = format!("{NODE_IP}:18080");
        let page = eventually("the hostPort answers on the node", || http_get(&addr, "/")).await;
        assert!(page.contains("atoll busybox"), "{page}");

        // The kubelet server lists the pod and counts it.
        let kubelet = format!("{NODE_IP}:{KUBELET_PORT}");
        let pods = http_get(&kubelet, "/pods").await.expect("/pods answers");
        assert!(
            pods.contains("\"kind\":\"PodList\"") && pods.contains(&uid_of(&pod)),
            "{pods}"
        );
        let metrics = eventually("the running pod counted", || async {
            let m = http_get(&kubelet, "/metrics").await?;
            m.contains("kubelet_running_pods 1").then_some(m)
        })
        .await;
        for line in [
            "kubelet_running_containers{container_state=\"running\"} 1",
            "kubelet_started_containers_total{container_type=\"container\"} 1",
            "kubelet_pod_start_duration_seconds_count 1",
        ] {
            assert!(metrics.contains(line), "{line} missing from {metrics}");
        }

        // The memory limit is in the container's cgroup.
        let uid = pod.metadata.uid.clone().unwrap();
        let dir = format!(
            "/sys/fs/cgroup/memory{}/kubepods/burstable/pod{uid}",
            env.containerd.cgroup_root()
        );
        let limits: Vec<u64> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("memory.limit_in_bytes")).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        assert!(
            limits.contains(&(64 << 20)),
            "no container cgroup under {dir} has the 64Mi limit: {limits:?}"
        );

        // httpd ignores SIGTERM as PID 1: the grace period (3 s) runs out, then SIGKILL.
        let started = tokio::time::Instant::now();
        env.pods()
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        eventually("the pod gone", || async {
            env.pods()
                .get_opt("web")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "deletion took {took:?}");
        assert_eq!(env.sandboxes(&uid).await, 0, "the sandbox is removed");
        assert!(
            !std::path::Path::new(&dir).exists(),
            "the pod cgroup is removed"
        );
        env
    });
}

#[test]
fn crashing_container_backs_off_and_oom_is_reported() {
    node_test(|env| async move {
        let image = env.image();
        env.create(json!({"metadata": {"name": "crash"}, "spec": {"nodeName": NODE,
            "containers": [{"name": "c", "image": image, "command": ["sh", "-c", "echo dying; echo bye > /dev/termination-log; exit 3"]}]}}))
            .await;
        env.create(json!({"metadata": {"name": "oom"}, "spec": {"nodeName": NODE, "restartPolicy": "Never",
            "containers": [{"name": "c", "image": image, "command": ["sh", "-c", "a=$(yes | head -c 100000000); echo survived"],
                "resources": {"limits": {"memory": "32Mi"}}}]}}))
            .await;
        let mut saw_backoff = false;
        let pod = env
            .wait_pod("crash", 60, "restarted twice", |p| {
                let c = container_status(p, 0);
                c.restart_count >= 2
            })
            .await;
        let c = container_status(&pod, 0);
        let last = c
            .last_state
            .unwrap()
            .terminated
            .expect("the last termination");
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert_eq!(
            last.message.as_deref(),
            Some("bye\n"),
            "the termination message"
        );
        for _ in 0..100 {
            let p = env.pods().get("crash").await.unwrap();
            let c = container_status(&p, 0);
            if c.state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref()
                == Some("CrashLoopBackOff")
            {
                saw_backoff = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            saw_backoff,
            "the container waits in CrashLoopBackOff between restarts"
        );

        let oom = env
            .wait_pod("oom", 60, "Failed", |p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            })
            .await;
        let t = container_status(&oom, 0).state.unwrap().terminated.unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
        env
    });
}

#[test]
fn probes_restart_and_gate_readiness() {
    node_test(|env| async move {
        let image = env.image();
        env.create(json!({"metadata": {"name": "probed"}, "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "live", "image": image, "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
                 "livenessProbe": {"httpGet": {"port": 81}, "periodSeconds": 1, "failureThreshold": 2}},
                {"name": "ready", "image": image, "command": ["sh", "-c", "sleep 2; touch /tmp/ready; sleep 1000"],
                 "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}}]}}))
            .await;
        // Before /tmp/ready exists the readiness probe fails: running but not ready.
        let early = env
            .wait_pod("probed", 60, "running with 'ready' not ready", |p| {
                let c = container_status(p, 1);
                c.state.and_then(|s| s.running).is_some()
            })
            .await;
        assert!(
            !container_status(&early, 1).ready,
            "not ready before the probe passes"
        );
        env.wait_pod("probed", 30, "'ready' ready", |p| {
            container_status(p, 1).ready
        })
        .await;
        env.wait_pod(
            "probed",
            30,
            "'live' restarted by its liveness probe",
            |p| container_status(p, 0).restart_count >= 1,
        )
        .await;
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(env.cluster.kube_client(), "default");
        eventually("an Unhealthy event", || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Unhealthy"))
                .then_some(())
        })
        .await;
        env
    });
}

#[test]
fn init_containers_env_and_volumes() {
    node_test(|env| async move {
        let image = env.image();
        let cms: Api<ConfigMap> = Api::namespaced(env.cluster.kube_client(), "default");
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"greeting": "hello", "color": "blue"}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(env.cluster.kube_client(), "default");
        let svc = serde_json::from_value(
            json!({"metadata": {"name": "web-one"}, "spec": {"ports": [{"port": 8080}]}}),
        )
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
        let out = env.root.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        env.create(json!({"metadata": {"name": "setup", "labels": {"app": "demo"}}, "spec": {"nodeName": NODE, "restartPolicy": "Never",
            "initContainers": [{"name": "init", "image": image, "command": ["sh", "-c", "echo from-init > /work/x"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "containers": [{"name": "main", "image": image, "workingDir": "/work",
                "command": ["sh", "-c", "echo \"$GREETING $POD $APP $(cat x) $(cat /config/color) $CFG_color $WEB_ONE_SERVICE_PORT\" > /out/result; grep ' /mem ' /proc/mounts > /out/mem"],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "config", "mountPath": "/config"},
                                 {"name": "out", "mountPath": "/out"}, {"name": "mem", "mountPath": "/mem"}]}],
            "volumes": [{"name": "work", "emptyDir": {}}, {"name": "config", "configMap": {"name": "settings"}},
                        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                        {"name": "out", "hostPath": {"path": out.display().to_string()}}]}}))
            .await;
        let pod = env
            .wait_pod("setup", 60, "Succeeded", |p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
            })
            .await;
        let result = std::fs::read_to_string(out.join("result")).unwrap();
        assert_eq!(result.trim(), "hello setup demo from-init blue blue 8080");
        // The memory-backed emptyDir is a tmpfs of its sizeLimit, in the container and on the node,
        // and is unmounted when the pod goes.
        let mem = std::fs::read_to_string(out.join("mem")).unwrap();
        assert!(
            mem.starts_with("tmpfs /mem tmpfs") && mem.contains("size=8192k"),
            "{mem}"
        );
        let pod_dir = env
            .containerd
            .kubelet_root()
            .join("pods")
            .join(pod.metadata.uid.clone().unwrap());
        let mounted = || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .contains(&pod_dir.display().to_string())
        };
        assert!(mounted(), "the tmpfs is mounted on the node");
        let init = pod.status.unwrap().init_container_statuses.unwrap();
        assert_eq!(
            init[0]
                .state
                .clone()
                .unwrap()
                .terminated
                .unwrap()
                .reason
                .as_deref(),
            Some("Completed")
        );

        env.pods()
            .delete("setup", &DeleteParams::default())
            .await
            .unwrap();
        eventually(
            "the pod's tmpfs unmounted and its directory removed",
            || async { (!mounted() && !pod_dir.exists()).then_some(()) },
        )
        .await;

        // A missing ConfigMap key is a CreateContainerConfigError naming it.
        env.create(json!({"metadata": {"name": "broken"}, "spec": {"nodeName": NODE,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "1000"],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope"}}}]}]}}))
            .await;
        let broken = env
            .wait_pod(
                "broken",
                30,
                "waiting with CreateContainerConfigError",
                |p| {
                    container_status(p, 0)
                        .state
                        .and_then(|s| s.waiting)
                        .and_then(|w| w.reason)
                        .as_deref()
                        == Some("CreateContainerConfigError")
                },
            )
            .await;
        let message = container_status(&broken, 0)
            .state
            .unwrap()
            .waiting
            .unwrap()
            .message
            .unwrap();
        assert!(
            message.contains("couldn't find key nope in ConfigMap default/settings"),
            "{message}"
        );
        env
    });
}

#[test]
fn restarted_kubelet_adopts_running_pods_and_cleans_up_deleted_ones() {
    node_test(|mut env| async move {
        let image = env.image();
        for name in ["keep", "gone"] {
            env.create(json!({"metadata": {"name": name}, "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": image, "command": ["sleep", "1000"]}]}}))
                .await;
        }
        let keep = env.running("keep").await;
        let gone = env.running("gone").await;
        let before = container_status(&keep, 0).container_id;

        env.kill_kubelet().await;
        // While the kubelet is down, "gone" is deleted for good (no kubelet confirms it).
        env.pods()
            .delete(
                "gone",
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        env.start_kubelet();

        let gone_uid = gone.metadata.uid.unwrap();
        eventually("the deleted pod's sandbox removed", || async {
            (env.sandboxes(&gone_uid).await == 0).then_some(())
        })
        .await;
        let pods_dir = env.containerd.kubelet_root().join("pods");
        eventually("the deleted pod's directory removed", || async {
            (!pods_dir.join(&gone_uid).exists()).then_some(())
        })
        .await;
        // The running pod is adopted: same container, no restart, still Ready.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let keep = env.running("keep").await;
        let c = container_status(&keep, 0);
        assert_eq!(c.container_id, before, "the container was not replaced");
        assert_eq!(c.restart_count, 0);
        assert!(pods_dir.join(keep.metadata.uid.unwrap()).exists());
        env
    });
}

#[test]
fn config_map_and_projected_volumes_follow_their_sources() {
    node_test(|env| async move {
        let image = env.image();
        let cms: Api<ConfigMap> = Api::namespaced(env.cluster.kube_client(), "default");
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "live"}, "data": {"color": "blue"}}),
        )
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        env.create(json!({"metadata": {"name": "reader", "labels": {"tier": "web"}}, "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "1000"],
                "volumeMounts": [{"name": "config", "mountPath": "/config"}, {"name": "all", "mountPath": "/all"}]}],
            "volumes": [{"name": "config", "configMap": {"name": "live"}},
                        {"name": "all", "projected": {"sources": [
                            {"configMap": {"name": "live", "items": [{"key": "color", "path": "settings/color"}]}},
                            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels['tier']"}}]}}]}}]}}))
            .await;
        let pod = env.running("reader").await;
        let id = container_status(&pod, 0)
            .container_id
            .unwrap()
            .trim_start_matches("containerd://")
            .to_string();
        let rt = atoll_kubelet::cri::Runtime::connect(&env.containerd.endpoint()).unwrap();
        let cat = |path: &'static str| {
            let rt = rt.clone();
            let id = id.clone();
            async move {
                let r = rt
                    .exec_sync(&id, vec!["cat".into(), path.into()], Duration::from_secs(5))
                    .await
                    .unwrap();
                String::from_utf8_lossy(&r.stdout).into_owned()
            }
        };
        assert_eq!(cat("/config/color").await, "blue");
        assert_eq!(cat("/all/settings/color").await, "blue");
        assert_eq!(cat("/all/labels").await, "web");
        // Projected (and secret) volumes live in memory; configMap volumes on disk.
        let mounts = cat("/proc/mounts").await;
        assert!(
            mounts.lines().any(|l| l.starts_with("tmpfs /all tmpfs")),
            "{mounts}"
        );
        assert!(
            !mounts.lines().any(|l| l.starts_with("tmpfs /config ")),
            "{mounts}"
        );
        let patch = json!({"data": {"color": "green"}});
        cms.patch(
            "live",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while cat("/config/color").await != "green" || cat("/all/settings/color").await != "green" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the running container never saw the new value"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        env
    });
}
