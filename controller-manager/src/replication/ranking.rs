//! Which pods a replication controller deletes first when it has too many: the least useful, as
//! Kubernetes ranks them (`ActivePodsWithRanks`): unscheduled before scheduled, pending before unknown
//! before running, not ready before ready, lower `controller.kubernetes.io/pod-deletion-cost` first,
//! pods doubled up on a node before lone ones, ready for less time first, more restarts first, newer
//! first.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::podutil;

/// The annotation by which users say how costly deleting a pod is.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn phase_rank(pod: &Pod) -> u8 {
    match podutil::phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn created(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// Orders `pods` so that the first are the ones to delete.
pub fn least_useful_first(pods: &mut [Arc<Pod>]) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods.iter() {
        let n = node(p);
        if !n.is_empty() {
            *per_node.entry(n.to_string()).or_default() += 1;
        }
    }
    let colocated = |p: &Pod| per_node.get(node(p)).copied().unwrap_or(0);
    pods.sort_by(|a, b| {
        let (assigned_a, assigned_b) = (!node(a).is_empty(), !node(b).is_empty());
        assigned_a
            .cmp(&assigned_b)
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| podutil::is_ready(a).cmp(&podutil::is_ready(b)))
            .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
            .then_with(|| colocated(b).cmp(&colocated(a)))
            .then_with(|| ready_for_less(a, b))
            .then_with(|| restarts(b).cmp(&restarts(a)))
            .then_with(|| created(b).cmp(&created(a)))
    });
}

/// Ready pods that became ready later come first.
fn ready_for_less(a: &Pod, b: &Pod) -> Ordering {
    match (
        podutil::ready_since(a).flatten(),
        podutil::ready_since(b).flatten(),
    ) {
        (Some(x), Some(y)) => y.cmp(&x),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(name: &str, node: &str, status: Value, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": node, "containers": []},
                "status": status,
            }))
            .expect("pod"),
        )
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn least_useful_pods_come_first() {
        let ready = |since: &str| {
            json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": since}]})
        };
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:01:00Z";
        let mut pods = vec![
            pod("old-ready-alone", "n1", ready(t0), t0),
            pod("running-not-ready", "n2", json!({"phase": "Running"}), t0),
            pod("unscheduled", "", json!({"phase": "Pending"}), t0),
            pod("pending", "n2", json!({"phase": "Pending"}), t0),
            pod("new-ready-doubled", "n3", ready(t1), t1),
            pod("old-ready-doubled", "n3", ready(t0), t0),
        ];
        least_useful_first(&mut pods);
        assert_eq!(
            names(&pods),
            [
                "unscheduled",
                "pending",
                "running-not-ready",
                "new-ready-doubled",
                "old-ready-doubled",
                "old-ready-alone"
            ]
        );
    }

    #[test]
    fn deletion_cost_outranks_colocation() {
        let t0 = "2026-01-01T00:00:00Z";
        let mut cheap = (*pod("cheap", "n1", json!({"phase": "Running"}), t0)).clone();
        cheap.metadata.annotations = Some([(DELETION_COST.to_string(), "-5".to_string())].into());
        let mut pods = vec![
            pod("doubled-a", "n2", json!({"phase": "Running"}), t0),
            pod("doubled-b", "n2", json!({"phase": "Running"}), t0),
            Arc::new(cheap),
        ];
        least_useful_first(&mut pods);
        assert_eq!(names(&pods)[0], "cheap");
    }
}
