//! Graceful deletion, finalizers, binding, namespaces, Service allocation and discovery.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const SVCS: &str = "/api/v1/namespaces/default/services";

fn binding(pod: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
}

#[tokio::test]
async fn binding_and_graceful_pod_deletion() {
    let c = Cluster::start().await;
    let h = c.http();
    expect(&h.json("POST", PODS, &pod("bound", json!({}))).await, 201);
    let r = expect(
        &h.json(
            "POST",
            &format!("{PODS}/bound/binding"),
            &binding("bound", "node-1"),
        )
        .await,
        201,
    );
    assert_eq!(r["status"], "Success");
    let p = expect(&h.get(&format!("{PODS}/bound")).await, 200);
    assert_eq!(p["spec"]["nodeName"], "node-1");
    assert!(
        p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")
    );
    let again = expect(
        &h.json(
            "POST",
            &format!("{PODS}/bound/binding"),
            &binding("bound", "node-2"),
        )
        .await,
        409,
    );
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already assigned to node"),
        "{again}"
    );
    let by_node = expect(
        &h.get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dnode-1"))
            .await,
        200,
    );
    assert_eq!(names(&by_node), vec!["bound"]);

    // A bound pod waits for its kubelet: deletion only marks it.
    let marked = expect(
        &h.send("DELETE", &format!("{PODS}/bound"), &[], "").await,
        202,
    );
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    let still = expect(&h.get(&format!("{PODS}/bound")).await, 200);
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    // A shorter grace period shortens it; zero (the kubelet's confirmation) removes it.
    let shorter = expect(
        &h.json(
            "DELETE",
            &format!("{PODS}/bound"),
            &json!({"gracePeriodSeconds": 5}),
        )
        .await,
        202,
    );
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    expect(
        &h.send(
            "DELETE",
            &format!("{PODS}/bound?gracePeriodSeconds=0"),
            &[],
            "",
        )
        .await,
        200,
    );
    expect(&h.get(&format!("{PODS}/bound")).await, 404);

    // A pod never bound goes at once.
    expect(&h.json("POST", PODS, &pod("loose", json!({}))).await, 201);
    expect(
        &h.send("DELETE", &format!("{PODS}/loose"), &[], "").await,
        200,
    );
    expect(&h.get(&format!("{PODS}/loose")).await, 404);
}

#[tokio::test]
async fn finalizers_hold_objects() {
    let c = Cluster::start().await;
    let h = c.http();
    let cms = "/api/v1/namespaces/default/configmaps";
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    expect(&h.json("POST", cms, &cm).await, 201);
    let marked = expect(
        &h.send("DELETE", &format!("{cms}/held"), &[], "").await,
        202,
    );
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let r = expect(
        &h.patch(
            &format!("{cms}/held"),
            "application/json-patch+json",
            &json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/more"}]),
        )
        .await,
        422,
    );
    assert!(r["message"].as_str().unwrap().contains("no new finalizers"));
    expect(
        &h.patch(
            &format!("{cms}/held"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await,
        200,
    );
    expect(&h.get(&format!("{cms}/held")).await, 404);

    // Orphan and foreground deletion leave the object to the garbage collector's finalizers.
    expect(
        &h.json(
            "POST",
            "/api/v1/namespaces/default/replicationcontrollers",
            &rc("o", 0),
        )
        .await,
        201,
    );
    let r = expect(
        &h.json(
            "DELETE",
            "/api/v1/namespaces/default/replicationcontrollers/o",
            &json!({"propagationPolicy": "Orphan"}),
        )
        .await,
        202,
    );
    assert_eq!(r["metadata"]["finalizers"], json!(["orphan"]));
    expect(
        &h.json(
            "DELETE",
            "/api/v1/namespaces/default/replicationcontrollers/o",
            &json!({"propagationPolicy": "Sideways"}),
        )
        .await,
        400,
    );

    // deletecollection with a selector.
    for (n, l) in [("d1", "x"), ("d2", "x"), ("d3", "y")] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "labels": {"l": l}}});
        expect(&h.json("POST", cms, &cm).await, 201);
    }
    let deleted = expect(
        &h.send("DELETE", &format!("{cms}?labelSelector=l%3Dx"), &[], "")
            .await,
        200,
    );
    assert_eq!(names(&deleted), vec!["d1", "d2"]);
    assert_eq!(names(&expect(&h.get(cms).await, 200)), vec!["d3"]);
}

#[tokio::test]
async fn namespaces_exist_terminate_and_guard_content() {
    let c = Cluster::start().await;
    let h = c.http();
    let all = expect(&h.get("/api/v1/namespaces").await, 200);
    assert_eq!(
        names(&all),
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    let created = expect(&h.json("POST", "/api/v1/namespaces", &ns).await, 201);
    assert_eq!(created["status"]["phase"], "Active");
    assert_eq!(created["spec"]["finalizers"], json!(["kubernetes"]));
    expect(
        &h.json("POST", "/api/v1/namespaces/team/pods", &pod("p", json!({})))
            .await,
        201,
    );
    let terminating = expect(
        &h.send("DELETE", "/api/v1/namespaces/team", &[], "").await,
        202,
    );
    assert_eq!(terminating["status"]["phase"], "Terminating");
    let r = expect(
        &h.json("POST", "/api/v1/namespaces/team/pods", &pod("q", json!({})))
            .await,
        403,
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("because it is being terminated")
    );
    // The namespace goes once its content is gone and its finalizer is removed (the namespace controller's job).
    expect(
        &h.send("DELETE", "/api/v1/namespaces/team/pods/p", &[], "")
            .await,
        200,
    );
    let mut fin = expect(&h.get("/api/v1/namespaces/team").await, 200);
    fin["spec"]["finalizers"] = json!([]);
    expect(
        &h.json("PUT", "/api/v1/namespaces/team/finalize", &fin)
            .await,
        200,
    );
    expect(&h.get("/api/v1/namespaces/team").await, 404);
    let bad = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    expect(&h.json("POST", "/api/v1/namespaces", &bad).await, 422);
}

fn allocated(svc: &Value) -> (String, Vec<i64>) {
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    let ports = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect();
    (ip, ports)
}

#[tokio::test]
async fn service_allocation_is_unique_transactional_and_durable() {
    let c = Cluster::start().await;
    let h = c.http();
    // 40 concurrent creates: no ClusterIP or NodePort is handed out twice.
    let mut tasks = vec![];
    for i in 0..40 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.json(
                "POST",
                SVCS,
                &service(&format!("s{i}"), "NodePort", json!({})),
            )
            .await
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for t in tasks {
        let svc = expect(&t.await.unwrap(), 201);
        let (ip, p) = allocated(&svc);
        assert!(ip.starts_with("10.96.0."), "{ip}");
        assert_ne!(
            ip, "10.96.0.1",
            "the first address is reserved for the kubernetes Service"
        );
        assert!(ips.insert(ip));
        for n in p {
            assert!((30000..=30099).contains(&n));
            assert!(ports.insert(n), "node port {n} handed out twice");
        }
    }
    assert_eq!(svc_ipfamily(&h).await, json!(["IPv4"]));

    // Explicit values: taken → 422, out of range → 422; nothing is written by a failed create.
    let taken_ip = ips.iter().next().unwrap().clone();
    let r = expect(
        &h.json(
            "POST",
            SVCS,
            &service("dup", "ClusterIP", json!({"clusterIP": taken_ip})),
        )
        .await,
        422,
    );
    assert!(
        r["message"].as_str().unwrap().contains("already allocated"),
        "{r}"
    );
    let r = expect(
        &h.json(
            "POST",
            SVCS,
            &service("far", "ClusterIP", json!({"clusterIP": "10.200.0.5"})),
        )
        .await,
        422,
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("not in the valid range"),
        "{r}"
    );
    let taken_port = *ports.iter().next().unwrap();
    let r = expect(
        &h.json(
            "POST",
            SVCS,
            &service(
                "dupport",
                "NodePort",
                json!({"ports": [{"port": 80, "nodePort": taken_port}]}),
            ),
        )
        .await,
        422,
    );
    assert_eq!(r["details"]["causes"][0]["field"], "spec.ports[0].nodePort");
    let r = expect(
        &h.json(
            "POST",
            SVCS,
            &service(
                "farport",
                "NodePort",
                json!({"ports": [{"port": 80, "nodePort": 40000}]}),
            ),
        )
        .await,
        422,
    );
    assert!(r["message"].as_str().unwrap().contains("valid range"));
    expect(&h.get(&format!("{SVCS}/dup")).await, 404);
    let r = expect(
        &h.json(
            "POST",
            SVCS,
            &service(
                "cip-port",
                "ClusterIP",
                json!({"ports": [{"port": 80, "nodePort": 30050}]}),
            ),
        )
        .await,
        422,
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("may not be used when `type` is 'ClusterIP'"),
        "{r}"
    );

    // Updates keep allocations; a type change releases the node port; delete releases the IP.
    let s0 = expect(&h.get(&format!("{SVCS}/s0")).await, 200);
    let (ip0, ports0) = allocated(&s0);
    let mut upd = s0.clone();
    upd["metadata"]["labels"] = json!({"x": "y"});
    upd["spec"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("nodePort");
    let upd = expect(&h.json("PUT", &format!("{SVCS}/s0"), &upd).await, 200);
    assert_eq!(
        allocated(&upd),
        (ip0.clone(), ports0.clone()),
        "an update keeps the node port it had"
    );
    let mut immut = upd.clone();
    let other_ip = if ip0 == "10.96.0.250" {
        "10.96.0.251"
    } else {
        "10.96.0.250"
    };
    immut["spec"]["clusterIP"] = json!(other_ip);
    immut["spec"]["clusterIPs"] = json!([other_ip]);
    expect(&h.json("PUT", &format!("{SVCS}/s0"), &immut).await, 422);
    let to_cip = expect(
        &h.patch(
            &format!("{SVCS}/s0"),
            "application/merge-patch+json",
            &json!({"spec": {"type": "ClusterIP"}}),
        )
        .await,
        200,
    );
    assert!(allocated(&to_cip).1.is_empty());
    let reuse_port = expect(
        &h.json(
            "POST",
            SVCS,
            &service(
                "reuse-port",
                "NodePort",
                json!({"ports": [{"port": 80, "nodePort": ports0[0]}]}),
            ),
        )
        .await,
        201,
    );
    assert_eq!(allocated(&reuse_port).1, ports0);
    expect(&h.send("DELETE", &format!("{SVCS}/s0"), &[], "").await, 200);

    // After a restart the allocations are still known (they live in etcd).
    let c = c.restart().await;
    let h = c.http();
    // One still held (s0's was released by its deletion above).
    let second = ips.iter().find(|ip| **ip != ip0).unwrap().clone();
    expect(
        &h.json(
            "POST",
            SVCS,
            &service("dup2", "ClusterIP", json!({"clusterIP": second})),
        )
        .await,
        422,
    );
    let reuse = expect(
        &h.json(
            "POST",
            SVCS,
            &service("reuse", "ClusterIP", json!({"clusterIP": ip0})),
        )
        .await,
        201,
    );
    assert_eq!(
        allocated(&reuse).0,
        ip0,
        "a deleted Service's IP is free again"
    );

    // Headless and ExternalName services take no IP.
    let headless = expect(
        &h.json(
            "POST",
            SVCS,
            &service("hl", "ClusterIP", json!({"clusterIP": "None"})),
        )
        .await,
        201,
    );
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let ext = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
    let ext = expect(&h.json("POST", SVCS, &ext).await, 201);
    assert!(ext["spec"].get("clusterIP").is_none() || ext["spec"]["clusterIP"] == "");
}

async fn svc_ipfamily(h: &Http) -> Value {
    expect(&h.get(&format!("{SVCS}/s1")).await, 200)["spec"]["ipFamilies"].clone()
}

#[tokio::test]
async fn discovery_version_and_health() {
    let c = Cluster::start().await;
    let h = c.http();
    let v = expect(&h.get("/version").await, 200);
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("33"))
    );
    for (accept, version) in [
        (
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
            "v2",
        ),
        (
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
            "v2beta1",
        ),
    ] {
        let r = h.send("GET", "/api", &[("accept", accept)], "").await;
        assert_eq!(r.status, 200);
        assert!(
            r.content_type.contains(&format!("v={version}")),
            "{}",
            r.content_type
        );
        let doc = r.json();
        assert_eq!(doc["kind"], "APIGroupDiscoveryList");
        let apis = h
            .send("GET", "/apis", &[("accept", accept)], "")
            .await
            .json();
        let groups: Vec<&str> = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(
            groups.contains(&"apps")
                && groups.contains(&"coordination.k8s.io")
                && groups.contains(&"discovery.k8s.io"),
            "{groups:?}"
        );
    }
    assert_eq!(expect(&h.get("/api").await, 200)["versions"], json!(["v1"]));
    let apis = expect(&h.get("/apis").await, 200);
    assert_eq!(apis["kind"], "APIGroupList");
    let v1 = expect(&h.get("/api/v1").await, 200);
    let res: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for want in [
        "pods",
        "pods/status",
        "pods/binding",
        "services",
        "endpoints",
        "replicationcontrollers/scale",
        "nodes",
        "events",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "namespaces",
    ] {
        assert!(res.contains(&want), "{want} missing from {res:?}");
    }
    expect(&h.get("/apis/apps/v1").await, 200);
    expect(&h.get("/apis/nope/v1").await, 404);
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(h.get(p).await.status, 200, "{p}");
    }
}

#[tokio::test]
async fn field_selectors_of_events_and_nodes_and_delete_preconditions() {
    let c = Cluster::start().await;
    let h = c.http();
    let evs = "/api/v1/namespaces/default/events";
    for (name, pod, reason, ty) in [
        ("e1", "web", "Scheduled", "Normal"),
        ("e2", "web", "BackOff", "Warning"),
        ("e3", "db", "Scheduled", "Normal"),
    ] {
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod, "uid": format!("uid-{pod}")},
            "reason": reason, "type": ty, "message": "m", "source": {"component": "test"}});
        expect(&h.json("POST", evs, &ev).await, 201);
    }
    let sel = |q: &str| {
        let h = h.clone();
        let path = format!("{evs}?fieldSelector={q}");
        async move { names(&expect(&h.get(&path).await, 200)) }
    };
    assert_eq!(sel("involvedObject.name%3Dweb,involvedObject.namespace%3Ddefault,involvedObject.uid%3Duid-web").await, vec!["e1", "e2"]);
    assert_eq!(sel("reason%3DScheduled").await, vec!["e1", "e3"]);
    assert_eq!(sel("type%3DWarning").await, vec!["e2"]);
    assert_eq!(
        sel("involvedObject.kind%3DPod,reason!%3DScheduled").await,
        vec!["e2"]
    );

    for (name, unschedulable) in [("n1", true), ("n2", false)] {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"unschedulable": unschedulable}});
        expect(&h.json("POST", "/api/v1/nodes", &node).await, 201);
    }
    expect(
        &h.json(
            "POST",
            "/api/v1/nodes",
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n3"}}),
        )
        .await,
        201,
    );
    assert_eq!(
        names(&expect(
            &h.get("/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue")
                .await,
            200
        )),
        vec!["n1"]
    );
    assert_eq!(
        names(&expect(
            &h.get("/api/v1/nodes?fieldSelector=spec.unschedulable%3Dfalse")
                .await,
            200
        )),
        vec!["n2", "n3"]
    );

    // Delete preconditions on resourceVersion.
    let n1 = expect(&h.get("/api/v1/nodes/n1").await, 200);
    let stale = json!({"preconditions": {"resourceVersion": "1"}});
    let r = expect(&h.json("DELETE", "/api/v1/nodes/n1", &stale).await, 409);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed"),
        "{r}"
    );
    let current =
        json!({"preconditions": {"resourceVersion": rv(&n1), "uid": n1["metadata"]["uid"]}});
    expect(&h.json("DELETE", "/api/v1/nodes/n1", &current).await, 200);
    expect(&h.get("/api/v1/nodes/n1").await, 404);

    // Malformed YAML.
    let r = expect(
        &h.send(
            "POST",
            evs,
            &[("content-type", "application/yaml")],
            "kind: [unclosed",
        )
        .await,
        400,
    );
    assert!(r["message"].as_str().unwrap().contains("YAML"));
}

#[tokio::test]
async fn evictions_delete_gracefully() {
    let c = Cluster::start().await;
    let h = c.http();
    let mut bound = pod("bound", json!({}));
    bound["spec"]["nodeName"] = json!("n1");
    expect(&h.json("POST", PODS, &bound).await, 201);
    let eviction = |name: &str, grace: Option<i64>| {
        let mut e = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}});
        if let Some(g) = grace {
            e["deleteOptions"] = json!({"gracePeriodSeconds": g});
        }
        e
    };
    let r = expect(
        &h.json(
            "POST",
            &format!("{PODS}/bound/eviction"),
            &eviction("bound", None),
        )
        .await,
        201,
    );
    assert_eq!(r["status"], "Success");
    let terminating = expect(&h.get(&format!("{PODS}/bound")).await, 200);
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "a bound pod is evicted gracefully"
    );
    expect(
        &h.json(
            "POST",
            &format!("{PODS}/bound/eviction"),
            &eviction("bound", Some(0)),
        )
        .await,
        201,
    );
    expect(&h.get(&format!("{PODS}/bound")).await, 404);
    expect(
        &h.json(
            "POST",
            &format!("{PODS}/gone/eviction"),
            &eviction("gone", None),
        )
        .await,
        404,
    );
    expect(&h.json("POST", PODS, &pod("other", json!({}))).await, 201);
    expect(
        &h.json(
            "POST",
            &format!("{PODS}/other/eviction"),
            &eviction("wrong", None),
        )
        .await,
        400,
    );
    let v1 = expect(&h.get("/api/v1").await, 200);
    assert!(
        v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/eviction" && r["group"] == "policy")
    );
}
