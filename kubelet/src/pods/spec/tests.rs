use super::*;
use serde_json::json;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

#[test]
fn expands_references_as_kubernetes_does() {
    let env = HashMap::from([
        ("A".to_string(), "1".to_string()),
        ("B".to_string(), "two".to_string()),
    ]);
    assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
    assert_eq!(expand("$$(A) costs $$5", &env), "$(A) costs $5");
    assert_eq!(expand("$(MISSING) and $(A", &env), "$(MISSING) and $(A");
    assert_eq!(expand("plain $ sign", &env), "plain $ sign");
}

#[test]
fn cgroup_parent_by_qos() {
    assert_eq!(cgroup_parent("/", Qos::Guaranteed, "u1"), "/kubepods/podu1");
    assert_eq!(
        cgroup_parent("/atoll-test-x", Qos::BestEffort, "u1"),
        "/atoll-test-x/kubepods/besteffort/podu1"
    );
    assert_eq!(
        cgroup_parent("/r/", Qos::Burstable, "u1"),
        "/r/kubepods/burstable/podu1"
    );
}

#[test]
fn resources_become_cgroup_limits() {
    let c: Container = serde_json::from_value(json!({"name": "c", "resources": {
        "requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}})).unwrap();
    let r = linux_resources(c.resources.as_ref(), Qos::Burstable, 1 << 30);
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.cpu_period),
        (256, 50_000, 100_000)
    );
    assert_eq!(r.memory_limit_in_bytes, 128 << 20);
    assert_eq!(r.oom_score_adj, 1000 - 1000 * (64 << 20) / (1 << 30));
    let none = linux_resources(None, Qos::BestEffort, 1 << 30);
    assert_eq!(
        (
            none.cpu_shares,
            none.cpu_quota,
            none.memory_limit_in_bytes,
            none.oom_score_adj
        ),
        (2, 0, 0, 1000)
    );
}

#[test]
fn qos_from_the_shared_rule() {
    let best = pod(json!({"spec": {"containers": [{"name": "a"}]}}));
    assert_eq!(qos(&best), Qos::BestEffort);
    let g = pod(
        json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}}),
    );
    assert_eq!(qos(&g), Qos::Guaranteed);
}

#[test]
fn sandbox_config_maps_ports_and_namespaces() {
    let p = pod(
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
        "spec": {"hostname": "h", "containers": [{"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}, {"containerPort": 9}]}]}}),
    );
    let dns = cri::DnsConfig {
        servers: vec!["1.1.1.1".into()],
        ..Default::default()
    };
    let cfg = sandbox_config(
        &p,
        &SandboxInputs {
            cgroup_parent: "/kubepods/podu1".into(),
            log_directory: "/l".into(),
            host_dns: &dns,
            attempt: 2,
        },
    );
    assert_eq!(cfg.hostname, "h");
    assert_eq!(cfg.metadata.as_ref().unwrap().attempt, 2);
    assert_eq!(cfg.port_mappings.len(), 2);
    assert_eq!(cfg.port_mappings[1].protocol, cri::Protocol::Udp as i32);
    assert_eq!(cfg.labels[labels::POD_UID], "u1");
    assert_eq!(cfg.dns_config.unwrap().servers, ["1.1.1.1"]);
    let ns = cfg
        .linux
        .unwrap()
        .security_context
        .unwrap()
        .namespace_options
        .unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
}

#[test]
fn container_config_expands_and_hashes() {
    let p = pod(
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [{"name": "a", "image": "busybox", "command": ["sh", "-c"], "args": ["echo $(GREETING)"],
          "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}]}}),
    );
    let c = &p.spec.as_ref().unwrap().containers[0];
    let cfg = container_config(
        &p,
        c,
        ContainerInputs {
            env: vec![("GREETING".into(), "hi".into())],
            mounts: vec![],
            attempt: 3,
            qos: Qos::BestEffort,
            node_memory: 0,
            init: false,
        },
    );
    assert_eq!(cfg.args, ["echo hi"]);
    assert_eq!(cfg.log_path, "a/3.log");
    assert_eq!(cfg.annotations[labels::CONTAINER_HASH], container_hash(c));
    let sc = cfg.linux.unwrap().security_context.unwrap();
    assert_eq!(sc.run_as_user.unwrap().value, 1000);
    assert!(sc.readonly_rootfs && sc.no_new_privs);
    assert_eq!(sc.capabilities.unwrap().drop_capabilities, ["ALL"]);
    let mut changed = c.clone();
    changed.image = Some("busybox:2".into());
    assert_ne!(container_hash(c), container_hash(&changed));
    let mut resized = c.clone();
    resized.resources = Some(Default::default());
    assert_eq!(container_hash(c), container_hash(&resized));
}
