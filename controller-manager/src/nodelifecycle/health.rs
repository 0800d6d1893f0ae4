//! Node health by local observation, as Kubernetes' `tryUpdateNodeHealth` judges it: a node is heard
//! from when this controller sees its Lease's renewTime or its Ready condition's lastHeartbeatTime
//! *change*; how long ago that was is measured on this controller's own monotonic clock, so the
//! timestamps' values (and any clock skew between hosts) never matter. A node silent for longer than
//! its grace period gets its kubelet conditions set to `Unknown` ([`mark_unknown`]).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

/// The conditions a kubelet posts and this controller sets to `Unknown` when it goes silent
/// (NetworkUnavailable is left alone: the network plugin owns it).
pub const KUBELET_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The reason of a condition the kubelet stopped posting.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
/// The message of a condition the kubelet stopped posting.
pub const MESSAGE_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// The reason of a condition the kubelet never posted.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
/// The message of a condition the kubelet never posted.
pub const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";

/// The node's condition of type `type_`.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of the node's Ready condition (`True`, `False`, `Unknown`), None when it has none.
pub fn ready(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// What this controller last saw of one node's heartbeats, and when it last saw one of them change.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// When the node was last heard from, on this controller's clock.
    pub probe: Instant,
    heartbeat: Option<Time>,
    renew: Option<MicroTime>,
}

fn ready_heartbeat(node: &Node) -> Option<Time> {
    condition(node, "Ready").and_then(|c| c.last_heartbeat_time.clone())
}

fn renew_time(lease: Option<&Lease>) -> Option<MicroTime> {
    lease?.spec.as_ref()?.renew_time.clone()
}

impl Heartbeat {
    /// A node seen for the first time: heard from now (Kubernetes counts a node it has just learnt of
    /// as alive, so a restarted controller gives every node a full grace period).
    pub fn first(node: &Node, lease: Option<&Lease>, now: Instant) -> Heartbeat {
        Heartbeat {
            probe: now,
            heartbeat: ready_heartbeat(node),
            renew: renew_time(lease),
        }
    }

    /// Takes in what the node and its Lease say now: a changed heartbeat or renewTime is a sign of life.
    pub fn observe(&mut self, node: &Node, lease: Option<&Lease>, now: Instant) {
        let heartbeat = ready_heartbeat(node);
        let renew = renew_time(lease);
        if heartbeat != self.heartbeat || renew != self.renew {
            self.probe = now;
        }
        self.heartbeat = heartbeat;
        self.renew = renew;
    }

    /// Takes in conditions this controller wrote itself, which are no sign of life.
    pub fn wrote(&mut self, conditions: &[NodeCondition]) {
        self.heartbeat = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.last_heartbeat_time.clone());
    }

    /// Counts the node as heard from now (when the cluster leaves full disruption, as Kubernetes does).
    pub fn reset(&mut self, now: Instant) {
        self.probe = now;
    }

    /// Whether the node has been silent for longer than `grace` at `now`.
    pub fn timed_out(&self, grace: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.probe) > grace
    }
}

/// The grace period of a node: the startup one while it has never posted a Ready condition.
pub fn grace_period(node: &Node, monitor: Duration, startup: Duration) -> Duration {
    if condition(node, "Ready").is_some() {
        monitor
    } else {
        startup
    }
}

/// The conditions of a node that went silent: each kubelet condition it has set to `Unknown`
/// ("Kubelet stopped posting node status."), each it never had added as `Unknown` ("Kubelet never
/// posted node status.", heartbeat = the node's creation). None when they already are so.
pub fn mark_unknown(node: &Node, now: &Time) -> Option<Vec<NodeCondition>> {
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some(MESSAGE_NEVER_UPDATED.into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_UNKNOWN.into());
                c.message = Some(MESSAGE_UNKNOWN.into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed.then_some(conditions)
}

/// Writes the node's conditions to `nodes/status`, with the cached resourceVersion as precondition
/// (a conflict means the kubelet just posted: the next pass judges again).
pub async fn write_conditions(
    api: &Api<Node>,
    node: &Node,
    conditions: &[NodeCondition],
) -> Result<(), kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "status": {"conditions": conditions},
    });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(conditions: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": conditions}
        }))
        .expect("node")
    }

    fn lease(renew: &str) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"renewTime": renew}}))
            .expect("lease")
    }

    #[test]
    fn heard_from_when_a_heartbeat_changes_whatever_its_value() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(40);
        let n = node(json!([{"type": "Ready", "status": "True",
            "lastHeartbeatTime": "2026-01-01T00:00:10Z"}]));
        let l = lease("2020-01-01T00:00:00.000000Z");
        let mut hb = Heartbeat::first(&n, Some(&l), t0);
        assert!(!hb.timed_out(grace, t0 + grace));
        // The same heartbeats later: silent.
        hb.observe(&n, Some(&l), t0 + Duration::from_secs(30));
        assert!(hb.timed_out(grace, t0 + Duration::from_secs(41)));
        // A renewTime in the past (a skewed clock) still counts, because it changed.
        hb.observe(
            &n,
            Some(&lease("2019-01-01T00:00:00.000000Z")),
            t0 + Duration::from_secs(35),
        );
        assert!(!hb.timed_out(grace, t0 + Duration::from_secs(75)));
        assert!(hb.timed_out(grace, t0 + Duration::from_secs(76)));
        // So does a new Ready heartbeat.
        let posted = node(json!([{"type": "Ready", "status": "True",
            "lastHeartbeatTime": "2000-01-01T00:00:00Z"}]));
        hb.observe(&posted, None, t0 + Duration::from_secs(80));
        assert_eq!(hb.probe, t0 + Duration::from_secs(80));
        // What this controller wrote is no sign of life.
        let written =
            mark_unknown(&node(json!([])), &Time(jiff::Timestamp::UNIX_EPOCH)).expect("changed");
        hb.wrote(&written);
        let mut n2 = node(json!([]));
        n2.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions: Some(written),
            ..Default::default()
        });
        hb.observe(&n2, None, t0 + Duration::from_secs(90));
        assert_eq!(hb.probe, t0 + Duration::from_secs(80));
    }

    #[test]
    fn silent_nodes_get_unknown_conditions() {
        let now = Time("2026-01-01T00:05:00Z".parse().expect("time"));
        let n = node(json!([
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-01-01T00:01:00Z"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "NetworkUnavailable", "status": "False"},
        ]));
        let c = mark_unknown(&n, &now).expect("changed");
        let by = |t: &str| c.iter().find(|x| x.type_ == t).expect("condition").clone();
        let ready = by("Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(REASON_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_UNKNOWN));
        assert_eq!(ready.last_transition_time, Some(now.clone()));
        assert_eq!(
            ready.last_heartbeat_time,
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c[0].last_heartbeat_time.clone())
        );
        assert_eq!(by("MemoryPressure").status, "Unknown");
        assert_eq!(by("NetworkUnavailable").status, "False");
        let never = by("DiskPressure");
        assert_eq!(never.reason.as_deref(), Some(REASON_NEVER_UPDATED));
        assert_eq!(never.message.as_deref(), Some(MESSAGE_NEVER_UPDATED));
        assert_eq!(never.last_heartbeat_time, n.metadata.creation_timestamp);
        assert_eq!(by("PIDPressure").status, "Unknown");
        // Already Unknown: nothing to write.
        let mut again = n.clone();
        if let Some(s) = again.status.as_mut() {
            s.conditions = Some(c);
        }
        assert_eq!(mark_unknown(&again, &now), None);
    }

    #[test]
    fn startup_grace_until_a_ready_condition() {
        let (monitor, startup) = (Duration::from_secs(40), Duration::from_secs(60));
        assert_eq!(grace_period(&node(json!([])), monitor, startup), startup);
        let n = node(json!([{"type": "Ready", "status": "False"}]));
        assert_eq!(grace_period(&n, monitor, startup), monitor);
    }
}
