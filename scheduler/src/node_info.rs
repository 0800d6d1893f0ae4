//! [`NodeInfo`]: one node, parsed once, with the pods counted on it; [`NodeSummary`]: the few
//! numbers and flags of it that a search reads for every node.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::plugins::labels::LabelSpan;
use crate::plugins::{Taint, TaintEffect};
use crate::pod_info::{HostPort, NO_LABELS, PodInfo, uid_key};
use crate::resources::{
    Extended, Resources, extended_add, node_allocatable, node_extended_allocatable,
};

/// One node and the pods counted on it (bound and assumed).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// metadata.name.
    pub name: String,
    /// The node object.
    pub node: Arc<Node>,
    /// What the node offers ([`node_allocatable`]).
    pub allocatable: Resources,
    /// Sum of the counted pods' requests (`pods` is the number of pods).
    pub requested: Resources,
    /// Sum of the counted pods' requests with scoring defaults.
    pub non_zero_requested: Resources,
    /// Extended resources the node offers, sorted by name.
    pub extended_allocatable: Extended,
    /// Extended resources the counted pods request, sorted by name.
    pub extended_requested: Extended,
    /// spec.unschedulable.
    pub unschedulable: bool,
    /// Whether the Ready condition is "True".
    pub ready: bool,
    /// NoSchedule and NoExecute taints, in the node's order (what the taint filter checks).
    pub hard_taints: Vec<Taint>,
    /// PreferNoSchedule taints (what the taint score counts).
    pub prefer_no_schedule_taints: Vec<Taint>,
    pods: Vec<Arc<PodInfo>>,
    used_ports: Vec<HostPort>,
    controller_counts: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    label_counts: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
}

/// Decrements a count, dropping it at 0.
fn decrement(counts: &mut HashMap<u64, u32, BuildHasherDefault<KeyHasher>>, key: u64) {
    if let Some(c) = counts.get_mut(&key) {
        *c = c.saturating_sub(1);
        if *c == 0 {
            counts.remove(&key);
        }
    }
}

/// A hasher for keys that are already well-mixed 64-bit hashes ([`uid_key`]).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; kept correct for anything else.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl NodeInfo {
    /// A node without pods.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            name: String::new(),
            node: node.clone(),
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            extended_allocatable: Vec::new(),
            extended_requested: Vec::new(),
            unschedulable: false,
            ready: false,
            hard_taints: Vec::new(),
            prefer_no_schedule_taints: Vec::new(),
            pods: Vec::new(),
            used_ports: Vec::new(),
            controller_counts: HashMap::default(),
            label_counts: HashMap::default(),
        };
        info.set_node(node);
        info
    }

    /// Replaces the node object (a newer version of the same node), keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.allocatable = node_allocatable(&node);
        self.extended_allocatable = node_extended_allocatable(&node);
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        self.hard_taints.clear();
        self.prefer_no_schedule_taints.clear();
        for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
            let t = Taint::from_api(t);
            match t.effect {
                TaintEffect::NoSchedule | TaintEffect::NoExecute => self.hard_taints.push(t),
                TaintEffect::PreferNoSchedule => self.prefer_no_schedule_taints.push(t),
                TaintEffect::Other(_) => {}
            }
        }
        self.node = node;
    }

    /// Counts `pod` on this node (replacing a pod with the same key).
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.remove_pod(&pod.key);
        self.add_uncounted_pod(pod);
    }

    /// Counts `pod`, which the caller knows is not counted here (no pod with its key).
    pub(crate) fn add_uncounted_pod(&mut self, pod: Arc<PodInfo>) {
        debug_assert!(
            self.pods.iter().all(|p| p.key != pod.key),
            "{} twice",
            pod.key
        );
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero);
        for (name, v) in &pod.extended_requests {
            extended_add(&mut self.extended_requested, name, *v);
        }
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if !pod.terminating {
            if let Some(key) = pod.controller_key {
                *self.controller_counts.entry(key).or_insert(0) += 1;
            }
            for key in &pod.label_keys {
                *self.label_counts.entry(*key).or_insert(0) += 1;
            }
        }
        self.pods.push(pod);
    }

    /// Stops counting the pod with `key`; false if it was not counted here.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        match self.pods.iter().position(|p| p.key == key) {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Stops counting `pod`, found by identity (the `Arc` that was counted) rather than by
    /// comparing keys; false if it was not counted here.
    pub(crate) fn remove_counted_pod(&mut self, pod: &Arc<PodInfo>) -> bool {
        match self.pods.iter().position(|p| Arc::ptr_eq(p, pod)) {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Stops counting `self.pods[i]`.
    fn remove_at(&mut self, i: usize) {
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero);
        for (name, v) in &pod.extended_requests {
            extended_add(&mut self.extended_requested, name, -*v);
        }
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if !pod.terminating {
            if let Some(key) = pod.controller_key {
                decrement(&mut self.controller_counts, key);
            }
            for key in &pod.label_keys {
                decrement(&mut self.label_counts, *key);
            }
        }
    }

    /// Number of pods counted on the node.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// The pods counted on the node, in no particular order.
    pub fn pods(&self) -> &[Arc<PodInfo>] {
        &self.pods
    }

    /// Host ports taken by the counted pods (one entry per pod port).
    pub fn used_ports(&self) -> &[HostPort] {
        &self.used_ports
    }

    /// Number of counted, not terminating pods whose controller has `uid`.
    pub fn controller_count(&self, uid: &str) -> u32 {
        self.controller_count_by_key(uid_key(uid))
    }

    /// Like [`NodeInfo::controller_count`], by [`uid_key`] of the uid.
    #[inline]
    pub fn controller_count_by_key(&self, key: u64) -> u32 {
        self.controller_counts.get(&key).copied().unwrap_or(0)
    }

    /// Number of counted, not terminating pods carrying the label with this
    /// [`crate::pod_info::label_key`] (namespace, key and value).
    #[inline]
    pub fn label_count_by_key(&self, key: u64) -> u32 {
        self.label_counts.get(&key).copied().unwrap_or(0)
    }

    /// metadata.labels (empty when unset).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }
}

/// What a search reads of a node for every node it visits, kept small and stored contiguously
/// by the [`crate::cache::Cache`] (one per node, in the order of its nodes), so that checking a
/// node touches a cache line or two instead of the whole [`NodeInfo`] and its label map.
///
/// The first 64 bytes hold what filtering and remembered scores read; the second what computing
/// the resource scores reads. Derived from the [`NodeInfo`] ([`NodeSummary::refresh`] after every
/// change to it), except `labels`, which the cache sets when the node's labels change. Filters
/// that the flags say may fail read the [`NodeInfo`] itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct NodeSummary {
    /// [`NodeSummary::NOT_READY`], [`NodeSummary::FULL`], ... ORed.
    pub flags: u8,
    /// Where the node's label ids are in the cache's [`crate::plugins::labels::NodeLabels`]
    /// (empty until the cache sets it).
    pub labels: LabelSpan,
    /// Allocatable cpu minus requested (saturating), in millicores.
    pub free_milli_cpu: i64,
    /// Allocatable memory minus requested (saturating), in bytes.
    pub free_memory: i64,
    /// Allocatable ephemeral storage minus requested (saturating), in bytes.
    pub free_ephemeral_storage: i64,
    /// Scores remembered by [`crate::plugins::scores::score`]; forgotten by every refresh.
    pub memo: ScoreMemo,
    /// Allocatable cpu.
    pub allocatable_milli_cpu: i64,
    /// Allocatable memory.
    pub allocatable_memory: i64,
    /// Requested cpu ([`NodeInfo::requested`]).
    pub requested_milli_cpu: i64,
    /// Requested memory ([`NodeInfo::requested`]).
    pub requested_memory: i64,
    /// Requested cpu with scoring defaults ([`NodeInfo::non_zero_requested`]).
    pub non_zero_milli_cpu: i64,
    /// Requested memory with scoring defaults ([`NodeInfo::non_zero_requested`]).
    pub non_zero_memory: i64,
}

/// Scores of a node remembered for pods of one [`crate::plugins::scores::ScoreShape`], named by
/// `key`, while the node does not change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScoreMemo {
    /// The key of the shape the scores are for; None when nothing is remembered.
    pub key: Option<NonZeroU64>,
    /// Weighted LeastAllocated plus BalancedAllocation.
    pub resources: i64,
    /// The count of the spreading group's pods on the node.
    pub spread: i64,
}

impl NodeSummary {
    /// The Ready condition is not "True".
    pub const NOT_READY: u8 = 1;
    /// spec.unschedulable.
    pub const UNSCHEDULABLE: u8 = 1 << 1;
    /// The node has NoSchedule or NoExecute taints.
    pub const HARD_TAINTS: u8 = 1 << 2;
    /// Counted pods use host ports.
    pub const USED_PORTS: u8 = 1 << 3;
    /// The node has PreferNoSchedule taints.
    pub const PREFER_NO_SCHEDULE_TAINTS: u8 = 1 << 4;
    /// The node has no room for another pod (as many pods as allocatable pods, or more).
    pub const FULL: u8 = 1 << 5;

    /// The summary of `node`, without labels.
    pub fn new(node: &NodeInfo) -> NodeSummary {
        let mut s = NodeSummary::default();
        s.refresh(node);
        s
    }

    /// Recomputes everything but `labels` from `node`, and forgets the remembered scores.
    pub fn refresh(&mut self, node: &NodeInfo) {
        let (alloc, req) = (&node.allocatable, &node.requested);
        self.free_milli_cpu = alloc.milli_cpu.saturating_sub(req.milli_cpu);
        self.free_memory = alloc.memory.saturating_sub(req.memory);
        self.free_ephemeral_storage = alloc
            .ephemeral_storage
            .saturating_sub(req.ephemeral_storage);
        self.memo = ScoreMemo::default();
        self.allocatable_milli_cpu = alloc.milli_cpu;
        self.allocatable_memory = alloc.memory;
        self.requested_milli_cpu = req.milli_cpu;
        self.requested_memory = req.memory;
        self.non_zero_milli_cpu = node.non_zero_requested.milli_cpu;
        self.non_zero_memory = node.non_zero_requested.memory;
        let full = (node.pod_count() as i64) >= alloc.pods;
        let flag = |on: bool, f: u8| if on { f } else { 0 };
        self.flags = flag(!node.ready, Self::NOT_READY)
            | flag(node.unschedulable, Self::UNSCHEDULABLE)
            | flag(!node.hard_taints.is_empty(), Self::HARD_TAINTS)
            | flag(!node.used_ports.is_empty(), Self::USED_PORTS)
            | flag(
                !node.prefer_no_schedule_taints.is_empty(),
                Self::PREFER_NO_SCHEDULE_TAINTS,
            )
            | flag(full, Self::FULL);
    }

    /// Whether any of `flags` is set.
    #[inline]
    pub fn any(&self, flags: u8) -> bool {
        self.flags & flags != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(serde_json::from_value(v).unwrap())))
    }

    #[test]
    fn parses_node() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"unschedulable": true, "taints": [
                {"key": "a", "effect": "NoSchedule"},
                {"key": "b", "value": "x", "effect": "PreferNoSchedule"},
                {"key": "c", "effect": "NoExecute"},
            ]},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        let info = NodeInfo::new(Arc::new(n));
        assert_eq!(info.name, "n1");
        assert!(info.unschedulable);
        assert!(info.ready);
        assert_eq!(info.hard_taints.len(), 2);
        assert_eq!(info.hard_taints[1].key, "c");
        assert_eq!(info.prefer_no_schedule_taints[0].value, "x");
        assert_eq!(info.allocatable.milli_cpu, 4000);
        assert_eq!(info.labels().get("zone").map(String::as_str), Some("a"));
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n2"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
        }))
        .unwrap();
        assert!(!NodeInfo::new(Arc::new(n)).ready);
    }

    #[test]
    fn summarizes() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "b", "effect": "PreferNoSchedule"}]},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "1"}},
        }))
        .unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        let s = NodeSummary::new(&info);
        assert_eq!(std::mem::size_of::<NodeSummary>(), 128);
        // Filtering and remembered scores read the first cache line only.
        assert_eq!(std::mem::offset_of!(NodeSummary, allocatable_milli_cpu), 64);
        assert_eq!(
            s.flags,
            NodeSummary::NOT_READY | NodeSummary::PREFER_NO_SCHEDULE_TAINTS
        );
        assert_eq!((s.free_milli_cpu, s.free_memory), (2000, 1 << 30));
        info.add_pod(pod(json!({
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]},
        })));
        let s = NodeSummary::new(&info);
        assert!(s.any(NodeSummary::FULL));
        assert_eq!((s.free_milli_cpu, s.requested_milli_cpu), (-1000, 3000));
        assert_eq!((s.non_zero_milli_cpu, s.non_zero_memory), (3000, 200 << 20));
    }

    #[test]
    fn counts_pods() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        let p1 = pod(json!({
            "metadata": {"name": "a", "namespace": "ns", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                "resources": {"requests": {"cpu": "1", "example.com/gpu": "1"}}}]},
        }));
        let p2 = pod(json!({
            "metadata": {"name": "b", "namespace": "ns", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": "1Gi"}}}]},
        }));
        info.add_pod(p1.clone());
        info.add_pod(p2);
        info.add_pod(p1);
        assert_eq!(info.pod_count(), 2);
        assert_eq!(info.requested.milli_cpu, 1000);
        assert_eq!(info.requested.memory, 1 << 30);
        assert_eq!(info.requested.pods, 2);
        assert_eq!(info.non_zero_requested.milli_cpu, 1100);
        assert_eq!(
            info.extended_requested,
            vec![("example.com/gpu".to_string(), 1)]
        );
        assert_eq!(info.used_ports().len(), 1);
        assert_eq!(info.controller_count("rs1"), 2);
        assert_eq!(
            info.label_count_by_key(crate::pod_info::label_key("ns", "app", "web")),
            0
        );
        assert!(info.remove_pod("ns/a"));
        assert!(!info.remove_pod("ns/a"));
        assert_eq!(
            info.requested,
            Resources {
                memory: 1 << 30,
                pods: 1,
                ..Default::default()
            }
        );
        assert!(info.extended_requested.is_empty());
        assert!(info.used_ports().is_empty());
        assert_eq!(info.controller_count("rs1"), 1);
        assert!(info.remove_pod("ns/b"));
        assert_eq!(info.requested, Resources::default());
        assert_eq!(info.non_zero_requested, Resources::default());
        assert_eq!(info.controller_count("rs1"), 0);
    }
}
