//! [`PodInfo`]: a pod with what the filters and scores need parsed once.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::plugins::{NodeSelectorTerm, Taint, TaintEffect, Toleration, tolerates};
use crate::resources::{
    Extended, Resources, pod_extended_requests, pod_non_zero_requests, pod_requests,
};

/// The taint key the node controller sets on cordoned nodes.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint key the node lifecycle controller sets on nodes that are not Ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// A host port a pod's container asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// "TCP", "UDP" or "SCTP" ("TCP" when unset).
    pub protocol: String,
    /// The host IP to bind; "" means any (also what "0.0.0.0" is stored as).
    pub host_ip: String,
    /// The host port (> 0).
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports cannot both be bound on one node: same protocol and port, and the
    /// same host IP or either binds every address.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.host_ip.is_empty()
                || other.host_ip.is_empty()
                || self.host_ip == other.host_ip)
    }
}

/// A pod with what scheduling needs precomputed once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// "namespace/name" (see [`pod_key`]).
    pub key: String,
    /// metadata.uid ("" when unset).
    pub uid: String,
    /// The pod's namespace ("default" when unset).
    pub namespace: String,
    /// The pod object.
    pub pod: Arc<Pod>,
    /// What the pod requests ([`pod_requests`]).
    pub requests: Resources,
    /// What the pod requests with scoring defaults ([`pod_non_zero_requests`]).
    pub non_zero: Resources,
    /// Extended resources requested, sorted by name, zero amounts left out.
    pub extended_requests: Extended,
    /// Host ports of the pod's containers (only ports with hostPort > 0).
    pub host_ports: Vec<HostPort>,
    /// uid of the ownerReference with controller=true.
    pub controller_uid: Option<String>,
    /// [`uid_key`] of `controller_uid`: what nodes count controlled pods by.
    pub controller_key: Option<u64>,
    /// [`label_key`] of each of the pod's labels, for the per-node label counts.
    pub label_keys: Vec<u64>,
    /// Whether the pod is being deleted (metadata.deletionTimestamp set); such pods still take
    /// resources but do not count for spreading.
    pub terminating: bool,
    /// spec.tolerations, parsed.
    pub tolerations: Vec<Toleration>,
    /// Tolerations that apply to PreferNoSchedule taints (effect empty or PreferNoSchedule).
    pub prefer_no_schedule_tolerations: Vec<Toleration>,
    /// Whether the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule`.
    pub tolerates_unschedulable: bool,
    /// Whether the pod tolerates `node.kubernetes.io/not-ready:NoSchedule`.
    pub tolerates_not_ready: bool,
    /// spec.nodeSelector as (key, value) pairs.
    pub node_selector: Vec<(String, String)>,
    /// Required node affinity terms (ORed). None when the pod has no required node affinity;
    /// terms that can never match (empty or invalid) are left out, so `Some(vec![])` matches no
    /// node.
    pub required_affinity: Option<Vec<NodeSelectorTerm>>,
    /// Preferred node affinity terms with their weights (terms that can never match and
    /// weight-0 terms left out).
    pub preferred_affinity: Vec<(i64, NodeSelectorTerm)>,
}

/// An empty label map, for pods and nodes without labels.
pub(crate) static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The cache key of a pod: "namespace/name", with namespace "default" when unset.
pub fn pod_key(pod: &Pod) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    format!("{ns}/{name}")
}

/// FNV-1a over `parts` (each followed by a 0 byte), then a SplitMix64 finalizer so every bit
/// is mixed.
fn key64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A 64-bit key for a uid, so that per-node counts are looked up without hashing or comparing
/// strings. Two different uids colliding is a 2^-64 event and would only skew spreading scores.
pub fn uid_key(uid: &str) -> u64 {
    key64(&[uid])
}

/// A 64-bit key for the label `key=value` of a pod in `namespace` (see [`uid_key`]).
pub fn label_key(namespace: &str, key: &str, value: &str) -> u64 {
    key64(&[namespace, key, value])
}

impl PodInfo {
    /// Parses what scheduling needs from `pod`.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let key = pod_key(&pod);
        let uid = meta.uid.clone().unwrap_or_default();
        let controller_uid = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let controller_key = controller_uid.as_deref().map(uid_key);
        let terminating = meta.deletion_timestamp.is_some();
        let label_keys = meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| label_key(&namespace, k, v))
            .collect();

        let (requests, non_zero, extended_requests, host_ports, tolerations, node_selector) =
            match &pod.spec {
                Some(spec) => {
                    let host_ports = spec
                        .containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .filter(|p| p.host_port.is_some_and(|hp| hp > 0))
                        .map(|p| HostPort {
                            protocol: match p.protocol.as_deref() {
                                None | Some("") => "TCP".to_string(),
                                Some(proto) => proto.to_string(),
                            },
                            host_ip: match p.host_ip.as_deref() {
                                None | Some("0.0.0.0") => String::new(),
                                Some(ip) => ip.to_string(),
                            },
                            port: p.host_port.unwrap_or_default(),
                        })
                        .collect();
                    let tolerations = spec
                        .tolerations
                        .iter()
                        .flatten()
                        .map(Toleration::from_api)
                        .collect();
                    let node_selector = spec
                        .node_selector
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    (
                        pod_requests(spec),
                        pod_non_zero_requests(spec),
                        pod_extended_requests(spec),
                        host_ports,
                        tolerations,
                        node_selector,
                    )
                }
                None => {
                    let one = Resources {
                        pods: 1,
                        ..Default::default()
                    };
                    (one, one, Vec::new(), Vec::new(), Vec::new(), Vec::new())
                }
            };

        let node_affinity = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        let required_affinity = node_affinity
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|sel| {
                sel.node_selector_terms
                    .iter()
                    .filter_map(NodeSelectorTerm::parse)
                    .collect()
            });
        let preferred_affinity = node_affinity
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0)
            .filter_map(|p| {
                NodeSelectorTerm::parse(&p.preference).map(|t| (i64::from(p.weight), t))
            })
            .collect();

        let tolerates_key = |key: &str| {
            tolerates(
                &tolerations,
                &Taint {
                    key: key.to_string(),
                    value: String::new(),
                    effect: TaintEffect::NoSchedule,
                },
            )
        };
        let tolerates_unschedulable = tolerates_key(TAINT_UNSCHEDULABLE);
        let tolerates_not_ready = tolerates_key(TAINT_NOT_READY);
        let prefer_no_schedule_tolerations = tolerations
            .iter()
            .filter(|t| matches!(t.effect, None | Some(TaintEffect::PreferNoSchedule)))
            .cloned()
            .collect();

        PodInfo {
            key,
            uid,
            namespace,
            pod,
            requests,
            non_zero,
            extended_requests,
            host_ports,
            controller_uid,
            controller_key,
            label_keys,
            terminating,
            tolerations,
            prefer_no_schedule_tolerations,
            tolerates_unschedulable,
            tolerates_not_ready,
            node_selector,
            required_affinity,
            preferred_affinity,
        }
    }

    /// spec.nodeName, when set and not empty.
    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    /// metadata.labels (empty when unset).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(v: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(serde_json::from_value(v).unwrap()))
    }

    #[test]
    fn precomputes() {
        let p = info(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "not-controller"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true},
                ]},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "ports": [
                    {"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
                    {"containerPort": 443, "hostPort": 8443, "hostIP": "0.0.0.0"},
                    {"containerPort": 9090},
                    {"containerPort": 9091, "hostPort": 0},
                ], "resources": {"requests": {"cpu": "250m"}}}],
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [
                    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "a", "value": "b", "effect": "PreferNoSchedule"},
                    {"key": "c", "operator": "Exists", "effect": "NoExecute"},
                ],
                "affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {},
                    ]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 5, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
                        {"weight": 0, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
                        {"weight": 3, "preference": {}},
                    ],
                }},
            },
        }));
        assert_eq!(p.key, "ns/p");
        assert_eq!(p.uid, "u1");
        assert_eq!(p.namespace, "ns");
        assert_eq!(p.controller_uid.as_deref(), Some("rs-uid"));
        assert_eq!(p.node_name(), Some("n1"));
        assert_eq!(p.requests.milli_cpu, 250);
        assert_eq!(p.non_zero.memory, 200 << 20);
        assert_eq!(
            p.host_ports,
            vec![
                HostPort {
                    protocol: "TCP".into(),
                    host_ip: "".into(),
                    port: 8080
                },
                HostPort {
                    protocol: "UDP".into(),
                    host_ip: "10.0.0.1".into(),
                    port: 53
                },
                HostPort {
                    protocol: "TCP".into(),
                    host_ip: "".into(),
                    port: 8443
                },
            ]
        );
        assert!(p.tolerates_unschedulable);
        assert!(!p.tolerates_not_ready);
        assert_eq!(p.prefer_no_schedule_tolerations.len(), 1);
        assert_eq!(
            p.node_selector,
            vec![("disk".to_string(), "ssd".to_string())]
        );
        assert_eq!(p.required_affinity.as_ref().map(Vec::len), Some(1));
        assert_eq!(p.preferred_affinity.len(), 1);
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
        assert!(!p.terminating);
    }

    #[test]
    fn defaults() {
        let p = info(json!({"metadata": {"name": "p"}}));
        assert_eq!(p.key, "default/p");
        assert_eq!(p.node_name(), None);
        assert_eq!(
            p.requests,
            Resources {
                pods: 1,
                ..Default::default()
            }
        );
        assert_eq!(p.required_affinity, None);
        assert!(p.labels().is_empty());
        let p = info(
            json!({"metadata": {"name": "p", "namespace": "x"}, "spec": {"nodeName": "", "containers": []}}),
        );
        assert_eq!(p.node_name(), None);
    }

    #[test]
    fn host_port_conflicts() {
        let hp = |proto: &str, ip: &str, port| HostPort {
            protocol: proto.into(),
            host_ip: ip.into(),
            port,
        };
        assert!(hp("TCP", "", 80).conflicts(&hp("TCP", "", 80)));
        assert!(hp("TCP", "", 80).conflicts(&hp("TCP", "1.2.3.4", 80)));
        assert!(hp("TCP", "1.2.3.4", 80).conflicts(&hp("TCP", "", 80)));
        assert!(hp("TCP", "1.2.3.4", 80).conflicts(&hp("TCP", "1.2.3.4", 80)));
        assert!(!hp("TCP", "1.2.3.4", 80).conflicts(&hp("TCP", "1.2.3.5", 80)));
        assert!(!hp("TCP", "", 80).conflicts(&hp("UDP", "", 80)));
        assert!(!hp("TCP", "", 80).conflicts(&hp("TCP", "", 81)));
    }
}
