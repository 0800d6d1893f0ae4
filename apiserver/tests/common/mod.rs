//! Helpers shared by the API server's integration tests.
#![allow(dead_code)]

use serde_json::{Value, json};

#[allow(unused_imports)]
pub use atoll_testkit::{Cluster, Http, Reply};

/// A minimal valid pod.
pub fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}
    })
}

/// A ClusterIP (or other type) service.
pub fn service(name: &str, ty: &str, extra_spec: Value) -> Value {
    let mut spec =
        json!({"type": ty, "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

/// A replication controller.
pub fn rc(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"app": name},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    })
}

/// Asserts the status code, printing the body when it differs.
#[track_caller]
pub fn expect(r: &Reply, code: u16) -> Value {
    assert_eq!(
        r.status,
        code,
        "unexpected status; body: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The names of the items of a list.
pub fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// The `resourceVersion` of an object.
pub fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
