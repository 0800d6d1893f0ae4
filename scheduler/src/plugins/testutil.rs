//! Builders shared by the scheduler's unit tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::node_info::NodeInfo;
use crate::pod_info::PodInfo;

/// A Ready node object with 4 cpu, 8Gi, 10 pods; `extra` is merged into the JSON object.
pub fn node_obj(name: &str, extra: Value) -> Node {
    let mut v = json!({
        "metadata": {"name": name},
        "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// [`node_obj`] as a [`NodeInfo`].
pub fn node(name: &str, extra: Value) -> NodeInfo {
    NodeInfo::new(Arc::new(node_obj(name, extra)))
}

/// A pod object in namespace "ns" with one container; `extra` is merged into the JSON object.
pub fn pod_obj(name: &str, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c"}]},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// [`pod_obj`] as a [`PodInfo`].
pub fn pod(name: &str, extra: Value) -> PodInfo {
    PodInfo::new(Arc::new(pod_obj(name, extra)))
}

/// Merges JSON object `b` into `a` (objects recursively, anything else replaced).
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}
