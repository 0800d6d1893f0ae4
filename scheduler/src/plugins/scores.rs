//! Scores: how good each feasible node is for a pod, 0..=[`MAX_NODE_SCORE`] per plugin, summed
//! with the weights of Kubernetes' default profile.
//!
//! [`score`] computes the weighted totals for a set of nodes; the single-plugin functions are
//! public for tests and for anyone who wants to explain a decision.

use std::num::NonZeroU64;

use crate::node_info::{NodeInfo, NodeSummary, ScoreMemo};
use crate::plugins::{selector_matches, tolerates};
use crate::pod_info::{PodInfo, label_key};

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;
/// Weight of NodeResourcesFit (LeastAllocated).
pub const WEIGHT_LEAST_ALLOCATED: i64 = 1;
/// Weight of NodeResourcesBalancedAllocation.
pub const WEIGHT_BALANCED_ALLOCATION: i64 = 1;
/// Weight of TaintToleration.
pub const WEIGHT_TAINT_TOLERATION: i64 = 3;
/// Weight of NodeAffinity.
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
/// Weight of spreading (PodTopologySpread in Kubernetes' default profile).
pub const WEIGHT_SPREAD: i64 = 2;

/// `(capacity - requested) * 100 / capacity`, 0 when over capacity or capacity is 0.
fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    match (capacity - requested).checked_mul(MAX_NODE_SCORE) {
        Some(v) => v / capacity,
        None => {
            ((i128::from(capacity - requested) * i128::from(MAX_NODE_SCORE)) / i128::from(capacity))
                as i64
        }
    }
}

/// NodeResourcesFit with the LeastAllocated strategy over cpu and memory (weights 1 and 1), on
/// non-zero requests including the pod's: more room left scores higher. Resources the node does
/// not offer are left out of the average.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    least_allocated_of(
        pod.non_zero.milli_cpu,
        pod.non_zero.memory,
        node.non_zero_requested.milli_cpu,
        node.non_zero_requested.memory,
        node.allocatable.milli_cpu,
        node.allocatable.memory,
    )
}

/// [`least_allocated`] from the pod's and the node's non-zero cpu and memory requests and the
/// node's allocatable cpu and memory.
#[inline]
fn least_allocated_of(
    pod_cpu: i64,
    pod_memory: i64,
    node_cpu: i64,
    node_memory: i64,
    alloc_cpu: i64,
    alloc_memory: i64,
) -> i64 {
    let mut sum = 0;
    let mut count = 0;
    for (req, alloc) in [
        (node_cpu.saturating_add(pod_cpu), alloc_cpu),
        (node_memory.saturating_add(pod_memory), alloc_memory),
    ] {
        if alloc == 0 {
            continue;
        }
        sum += least_requested_score(req, alloc);
        count += 1;
    }
    if count == 0 { 0 } else { sum / count }
}

/// Whether NodeResourcesBalancedAllocation scores `pod` at all: Kubernetes skips pods that
/// request neither cpu nor memory.
pub fn balanced_allocation_applies(pod: &PodInfo) -> bool {
    pod.requests.milli_cpu != 0 || pod.requests.memory != 0
}

/// NodeResourcesBalancedAllocation: `(1 - std) * 100` where std is the standard deviation of
/// the cpu and memory fractions (actual requests including the pod's, over allocatable, capped at
/// 1). Resources the node does not offer are left out. 0 for pods it does not apply to.
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    if !balanced_allocation_applies(pod) {
        return 0;
    }
    balanced_allocation_of(
        pod.requests.milli_cpu,
        pod.requests.memory,
        node.requested.milli_cpu,
        node.requested.memory,
        node.allocatable.milli_cpu,
        node.allocatable.memory,
    )
}

/// [`balanced_allocation`] of a pod it applies to, from the pod's and the node's cpu and memory
/// requests and the node's allocatable cpu and memory.
#[inline]
fn balanced_allocation_of(
    pod_cpu: i64,
    pod_memory: i64,
    node_cpu: i64,
    node_memory: i64,
    alloc_cpu: i64,
    alloc_memory: i64,
) -> i64 {
    let mut fractions = [0f64; 2];
    let mut n = 0;
    for (req, alloc) in [
        (node_cpu.saturating_add(pod_cpu), alloc_cpu),
        (node_memory.saturating_add(pod_memory), alloc_memory),
    ] {
        if alloc == 0 {
            continue;
        }
        fractions[n] = (req as f64 / alloc as f64).min(1.0);
        n += 1;
    }
    let std = if n == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// NodeAffinity, before normalizing: the sum of the weights of the preferred terms the node
/// matches.
pub fn node_affinity_raw(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let labels = node.labels();
    pod.preferred_affinity
        .iter()
        .filter(|(_, t)| t.matches(labels, &node.name))
        .map(|(w, _)| *w)
        .sum()
}

/// TaintToleration, before normalizing: how many PreferNoSchedule taints of the node the pod
/// does not tolerate.
pub fn untolerated_prefer_no_schedule(pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.prefer_no_schedule_taints
        .iter()
        .filter(|t| !tolerates(&pod.prefer_no_schedule_tolerations, t))
        .count() as i64
}

/// Kubernetes' `DefaultNormalizeScore`: scales so the highest becomes 100 (`reverse`: the
/// highest becomes 0 and, when all are 0, all become 100).
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        if reverse {
            scores.fill(MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

/// Which pods a pod spreads away from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spread {
    /// No spreading (the pod has no controller and no Service selects it).
    None,
    /// Pods with the same controller (ownerReference with controller=true), by the
    /// [`crate::pod_info::uid_key`] of its uid.
    Controller(u64),
    /// Pods in `namespace` whose labels match every Service selector that selects the pod
    /// (Kubernetes merges those selectors into one).
    Selector {
        /// The pod's namespace.
        namespace: String,
        /// The merged selector.
        selector: Vec<(String, String)>,
        /// [`crate::pod_info::label_key`] of each selector entry.
        keys: Vec<u64>,
    },
}

impl Spread {
    /// The spreading group of `pod`, given the selectors of the Services in its namespace.
    ///
    /// A controlled pod spreads from its siblings: pods of one controller share their labels, so
    /// they are what Kubernetes' default spreading (a selector merged from the controller's and
    /// the Services') counts, and the count is a map lookup. A pod without controller spreads from
    /// the pods the merged selector of the Services that select it matches.
    pub fn for_pod<'a>(
        pod: &PodInfo,
        service_selectors: impl IntoIterator<Item = &'a [(String, String)]>,
    ) -> Spread {
        if let Some(key) = pod.controller_key {
            return Spread::Controller(key);
        }
        let labels = pod.labels();
        let mut selector: Vec<(String, String)> = Vec::new();
        for sel in service_selectors {
            if sel.is_empty() || !selector_matches(sel, labels) {
                continue;
            }
            for (k, v) in sel {
                if !selector.iter().any(|(k2, _)| k2 == k) {
                    selector.push((k.clone(), v.clone()));
                }
            }
        }
        if selector.is_empty() {
            Spread::None
        } else {
            let keys = selector
                .iter()
                .map(|(k, v)| label_key(&pod.namespace, k, v))
                .collect();
            Spread::Selector {
                namespace: pod.namespace.clone(),
                selector,
                keys,
            }
        }
    }

    /// How many pods of the group the node has (pods being deleted are not counted).
    pub fn count(&self, node: &NodeInfo) -> i64 {
        match self {
            Spread::None => 0,
            Spread::Controller(key) => i64::from(node.controller_count_by_key(*key)),
            Spread::Selector {
                namespace,
                selector,
                keys,
            } => {
                // Pods matching every entry are at most as many as those matching the rarest
                // one, and exactly as many when there is one entry.
                let mut least = u32::MAX;
                for key in keys {
                    least = least.min(node.label_count_by_key(*key));
                    if least == 0 {
                        return 0;
                    }
                }
                if keys.len() == 1 {
                    return i64::from(least);
                }
                node.pods()
                    .iter()
                    .filter(|p| {
                        !p.terminating
                            && p.namespace == *namespace
                            && selector_matches(selector, p.labels())
                    })
                    .count() as i64
            }
        }
    }
}

/// Spreading normalization: `100 * (max - count) / max`, all 100 when no node has any.
pub fn normalize_spread(counts: &mut [i64]) {
    /// Up to this maximum the results are tabulated: one division per count value rather than
    /// per node.
    const TABLE: usize = 256;
    let max = counts.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        counts.fill(MAX_NODE_SCORE);
        return;
    }
    let scale = |c: i64| MAX_NODE_SCORE * (max - c) / max;
    match usize::try_from(max) {
        Ok(m) if m < TABLE && m < counts.len() => {
            let mut table = [0i64; TABLE];
            for (c, t) in table.iter_mut().enumerate().take(m + 1) {
                *t = scale(c as i64);
            }
            for c in counts {
                *c = match usize::try_from(*c) {
                    Ok(i) if i <= m => table[i],
                    _ => scale(*c),
                };
            }
        }
        _ => {
            for c in counts {
                *c = scale(*c);
            }
        }
    }
}

/// What the per-node scores that [`score`] remembers depend on, besides the node: the pod's cpu
/// and memory requests (actual and non-zero) and its spreading group. On an unchanged node, pods
/// of equal shapes get equal LeastAllocated, BalancedAllocation and spreading counts.
///
/// A shape carries the key its scores are remembered under in the node summaries; whoever makes
/// shapes must give each key to one shape only, ever (see [`ScoreShape::next`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreShape {
    key: NonZeroU64,
    non_zero_milli_cpu: i64,
    non_zero_memory: i64,
    milli_cpu: i64,
    memory: i64,
    /// The pod's spreading group.
    pub spread: Spread,
}

impl ScoreShape {
    /// The shape of `pod` spreading as `spread`, with scores remembered under `key`.
    fn new(pod: &PodInfo, spread: Spread, key: NonZeroU64) -> ScoreShape {
        ScoreShape {
            key,
            non_zero_milli_cpu: pod.non_zero.milli_cpu,
            non_zero_memory: pod.non_zero.memory,
            milli_cpu: pod.requests.milli_cpu,
            memory: pod.requests.memory,
            spread,
        }
    }

    /// The shape of `pod` spreading as `spread`: `last` itself if that is the same shape (its
    /// remembered scores apply), else a new shape with the key after `last`'s.
    pub fn next(last: Option<ScoreShape>, pod: &PodInfo, spread: Spread) -> ScoreShape {
        match last {
            Some(last) if last.is_of(pod, &spread) => last,
            last => {
                let key = last.map_or(NonZeroU64::MIN, |l| l.key.saturating_add(1));
                ScoreShape::new(pod, spread, key)
            }
        }
    }

    /// The key the scores of this shape are remembered under.
    pub fn key(&self) -> NonZeroU64 {
        self.key
    }

    /// Whether `pod` spreading as `spread` has this shape.
    pub fn is_of(&self, pod: &PodInfo, spread: &Spread) -> bool {
        self.non_zero_milli_cpu == pod.non_zero.milli_cpu
            && self.non_zero_memory == pod.non_zero.memory
            && self.milli_cpu == pod.requests.milli_cpu
            && self.memory == pod.requests.memory
            && self.spread == *spread
    }

    /// Weighted LeastAllocated plus BalancedAllocation ([`least_allocated`],
    /// [`balanced_allocation`]) of the pod on the node `summary` summarizes.
    #[inline]
    pub fn resource_score(&self, summary: &NodeSummary) -> i64 {
        let least = least_allocated_of(
            self.non_zero_milli_cpu,
            self.non_zero_memory,
            summary.non_zero_milli_cpu,
            summary.non_zero_memory,
            summary.allocatable_milli_cpu,
            summary.allocatable_memory,
        );
        let balanced = if self.milli_cpu != 0 || self.memory != 0 {
            balanced_allocation_of(
                self.milli_cpu,
                self.memory,
                summary.requested_milli_cpu,
                summary.requested_memory,
                summary.allocatable_milli_cpu,
                summary.allocatable_memory,
            )
        } else {
            0
        };
        WEIGHT_LEAST_ALLOCATED * least + WEIGHT_BALANCED_ALLOCATION * balanced
    }

    /// What a summary remembers of this shape, on the node summarized by `summary` that has
    /// `spread_count` pods of the spreading group ([`Spread::count`]).
    #[inline]
    pub fn memo(&self, summary: &NodeSummary, spread_count: i64) -> ScoreMemo {
        ScoreMemo {
            key: Some(self.key),
            resources: self.resource_score(summary),
            spread: spread_count,
        }
    }
}

/// Reusable buffers for [`score`], so scoring does not allocate once warmed up.
#[derive(Clone, Debug, Default)]
pub struct ScoreBuffers {
    /// The weighted totals, one per scored node, in the order given.
    pub totals: Vec<i64>,
    affinity: Vec<i64>,
    taints: Vec<i64>,
    spread: Vec<i64>,
}

/// Scores `nodes[i]` for each `i` in `which` and leaves the weighted totals in `buf.totals` (in
/// the order of `which`). `summaries[i]` is the [`NodeSummary`] of `nodes[i]`, `shape` is the
/// shape of `pod` (with its spreading group) and `spread_count(i)` must be [`Spread::count`] of
/// the shape's group on `nodes[i]`.
///
/// The scores that depend only on the shape are remembered in the summaries under the shape's
/// key and reused from there: keys must name one shape only, ever (see [`ScoreShape`]), and a
/// summary must be refreshed when its node changes (which forgets them).
///
/// NodeAffinity without preferred terms, BalancedAllocation for pods requesting neither cpu nor
/// memory, and spreading without a group are skipped, as Kubernetes does (they add 0);
/// TaintToleration when none of the nodes has a PreferNoSchedule taint adds the same to every
/// node.
pub fn score(
    pod: &PodInfo,
    shape: &ScoreShape,
    nodes: &[NodeInfo],
    summaries: &mut [NodeSummary],
    which: &[usize],
    spread_count: impl Fn(usize) -> i64,
    buf: &mut ScoreBuffers,
) {
    buf.totals.clear();
    buf.spread.clear();
    let spreading = shape.spread != Spread::None;
    let mut prefer_no_schedule = false;
    for &i in which {
        let s = &mut summaries[i];
        if s.memo.key != Some(shape.key) {
            let count = if spreading { spread_count(i) } else { 0 };
            s.memo = shape.memo(s, count);
        }
        prefer_no_schedule |= s.any(NodeSummary::PREFER_NO_SCHEDULE_TAINTS);
        buf.totals.push(s.memo.resources);
        if spreading {
            buf.spread.push(s.memo.spread);
        }
    }
    if !pod.preferred_affinity.is_empty() {
        buf.affinity.clear();
        buf.affinity
            .extend(which.iter().map(|&i| node_affinity_raw(pod, &nodes[i])));
        normalize(&mut buf.affinity, false);
        for (t, s) in buf.totals.iter_mut().zip(&buf.affinity) {
            *t += WEIGHT_NODE_AFFINITY * s;
        }
    }
    if prefer_no_schedule {
        buf.taints.clear();
        buf.taints.extend(which.iter().map(|&i| {
            if summaries[i].any(NodeSummary::PREFER_NO_SCHEDULE_TAINTS) {
                untolerated_prefer_no_schedule(pod, &nodes[i])
            } else {
                0
            }
        }));
        normalize(&mut buf.taints, true);
        for (t, s) in buf.totals.iter_mut().zip(&buf.taints) {
            *t += WEIGHT_TAINT_TOLERATION * s;
        }
    } else {
        // No taint to count: every node normalizes to the maximum.
        for t in &mut buf.totals {
            *t += WEIGHT_TAINT_TOLERATION * MAX_NODE_SCORE;
        }
    }
    if spreading {
        normalize_spread(&mut buf.spread);
        for (t, s) in buf.totals.iter_mut().zip(&buf.spread) {
            *t += WEIGHT_SPREAD * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn req(name: &str, r: Value) -> PodInfo {
        pod(
            name,
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": r}}]}}),
        )
    }

    #[test]
    fn least_allocated_scores() {
        // 4 cpu / 8Gi node, pod 1 cpu / 2Gi: (75 + 75) / 2.
        let n = node("n", json!({}));
        assert_eq!(
            least_allocated(&req("p", json!({"cpu": "1", "memory": "2Gi"})), &n),
            75
        );
        // Defaults 100m / 200Mi when nothing is requested.
        let p = req("p", json!({}));
        let cpu = (4000 - 100) * 100 / 4000;
        let mem = ((8i64 << 30) - (200 << 20)) * 100 / (8i64 << 30);
        assert_eq!(least_allocated(&p, &n), (cpu + mem) / 2);
        // Over capacity scores 0 for that resource.
        assert_eq!(
            least_allocated(&req("p", json!({"cpu": "5", "memory": "4Gi"})), &n),
            25
        );
        // Existing pods count.
        let mut n = node("n", json!({}));
        n.add_pod(Arc::new(req("a", json!({"cpu": "2", "memory": "4Gi"}))));
        assert_eq!(
            least_allocated(&req("p", json!({"cpu": "1", "memory": "2Gi"})), &n),
            25
        );
        // A node without memory: cpu alone.
        let n = node("n", json!({"status": {"allocatable": {"memory": "0"}}}));
        assert_eq!(least_allocated(&req("p", json!({"cpu": "1"})), &n), 75);
    }

    #[test]
    fn balanced_allocation_scores() {
        let n = node("n", json!({}));
        // cpu 1/4, memory 2/8: perfectly balanced.
        assert_eq!(
            balanced_allocation(&req("p", json!({"cpu": "1", "memory": "2Gi"})), &n),
            100
        );
        // cpu 2/4 = 0.5, memory 0/8: std 0.25.
        assert_eq!(balanced_allocation(&req("p", json!({"cpu": "2"})), &n), 75);
        // Fractions are capped at 1: cpu 8/4 → 1, memory 0.
        assert_eq!(balanced_allocation(&req("p", json!({"cpu": "8"})), &n), 50);
        // Best-effort pods are not scored.
        assert!(!balanced_allocation_applies(&req("p", json!({}))));
        assert_eq!(balanced_allocation(&req("p", json!({})), &n), 0);
    }

    #[test]
    fn node_affinity_scores() {
        let p = pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 30, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
            ]}}}}),
        );
        let n1 = node("n1", json!({"metadata": {"labels": {"zone": "a"}}}));
        let n2 = node(
            "n2",
            json!({"metadata": {"labels": {"zone": "a", "gpu": "1"}}}),
        );
        let n3 = node("n3", json!({}));
        let mut raw: Vec<i64> = [&n1, &n2, &n3]
            .iter()
            .map(|n| node_affinity_raw(&p, n))
            .collect();
        assert_eq!(raw, vec![10, 40, 0]);
        normalize(&mut raw, false);
        assert_eq!(raw, vec![25, 100, 0]);
        let mut zero = vec![0, 0];
        normalize(&mut zero, false);
        assert_eq!(zero, vec![0, 0]);
    }

    #[test]
    fn taint_toleration_scores() {
        let n1 = node(
            "n1",
            json!({"spec": {"taints": [
            {"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"},
            {"key": "c", "effect": "NoSchedule"}]}}),
        );
        let n2 = node(
            "n2",
            json!({"spec": {"taints": [{"key": "a", "effect": "PreferNoSchedule"}]}}),
        );
        let n3 = node("n3", json!({}));
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [
            {"key": "b", "operator": "Exists", "effect": "PreferNoSchedule"},
            // A NoSchedule toleration does not count for PreferNoSchedule taints.
            {"key": "a", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        let mut raw: Vec<i64> = [&n1, &n2, &n3]
            .iter()
            .map(|n| untolerated_prefer_no_schedule(&p, n))
            .collect();
        assert_eq!(raw, vec![1, 1, 0]);
        let q = pod("q", json!({}));
        assert_eq!(untolerated_prefer_no_schedule(&q, &n1), 2);
        normalize(&mut raw, true);
        assert_eq!(raw, vec![0, 0, 100]);
        let mut zero = vec![0, 0];
        normalize(&mut zero, true);
        assert_eq!(zero, vec![100, 100]);
        let mut v = vec![2, 1, 0];
        normalize(&mut v, true);
        assert_eq!(v, vec![0, 50, 100]);
    }

    fn owned(name: &str, rs: &str, labels: Value) -> PodInfo {
        pod(
            name,
            json!({"metadata": {"labels": labels, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs, "controller": true}]}}),
        )
    }

    #[test]
    fn spreading() {
        let mut n1 = node("n1", json!({}));
        let mut n2 = node("n2", json!({}));
        let n3 = node("n3", json!({}));
        n1.add_pod(Arc::new(owned("a", "rs1", json!({"app": "web"}))));
        n1.add_pod(Arc::new(owned("b", "rs1", json!({"app": "web"}))));
        n2.add_pod(Arc::new(owned("c", "rs1", json!({"app": "web"}))));
        n2.add_pod(Arc::new(owned("d", "rs2", json!({"app": "db"}))));
        n2.add_pod(Arc::new(pod(
            "e",
            json!({"metadata": {"labels": {"app": "web"}}}),
        )));
        let p = owned("p", "rs1", json!({"app": "web"}));
        let s = Spread::for_pod(&p, []);
        assert_eq!(s, Spread::Controller(crate::pod_info::uid_key("rs1")));
        let mut counts: Vec<i64> = [&n1, &n2, &n3].iter().map(|n| s.count(n)).collect();
        assert_eq!(counts, vec![2, 1, 0]);
        normalize_spread(&mut counts);
        assert_eq!(counts, vec![0, 50, 100]);

        // A bare pod selected by a Service spreads from the pods that Service selects.
        let bare = pod(
            "q",
            json!({"metadata": {"labels": {"app": "web", "tier": "x"}}}),
        );
        let web = vec![("app".to_string(), "web".to_string())];
        let other = vec![("app".to_string(), "db".to_string())];
        assert_eq!(Spread::for_pod(&bare, [other.as_slice()]), Spread::None);
        let s = Spread::for_pod(&bare, [web.as_slice(), other.as_slice()]);
        let counts: Vec<i64> = [&n1, &n2, &n3].iter().map(|n| s.count(n)).collect();
        assert_eq!(counts, vec![2, 2, 0]);
        // Other namespaces do not count.
        let elsewhere = pod(
            "r",
            json!({"metadata": {"namespace": "other", "labels": {"app": "web"}}}),
        );
        let mut n3 = n3;
        n3.add_pod(Arc::new(elsewhere));
        assert_eq!(s.count(&n3), 0);

        // Two Services: pods must match both selectors.
        let tier = vec![("tier".to_string(), "x".to_string())];
        let s = Spread::for_pod(&bare, [web.as_slice(), tier.as_slice()]);
        assert!(matches!(&s, Spread::Selector { selector, .. } if selector.len() == 2));
        let counts: Vec<i64> = [&n1, &n2, &n3].iter().map(|n| s.count(n)).collect();
        assert_eq!(counts, vec![0, 0, 0]);
        n3.add_pod(Arc::new(pod(
            "t",
            json!({"metadata": {"labels": {"app": "web", "tier": "x"}}}),
        )));
        n3.add_pod(Arc::new(pod(
            "u",
            json!({"metadata": {"labels": {"app": "web"}}}),
        )));
        n3.add_pod(Arc::new(pod(
            "v",
            json!({"metadata": {"labels": {"tier": "x"}}}),
        )));
        assert_eq!(s.count(&n3), 1);
        // Pods being deleted do not count.
        let gone = pod(
            "w",
            json!({"metadata": {"labels": {"app": "web", "tier": "x"},
            "deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        n3.add_pod(Arc::new(gone));
        assert_eq!(s.count(&n3), 1);
        n3.remove_pod("ns/w");
        n3.remove_pod("ns/t");
        assert_eq!(s.count(&n3), 0);

        let mut zero = vec![0, 0];
        normalize_spread(&mut zero);
        assert_eq!(zero, vec![100, 100]);
        // Tabulated or not, the same as the formula.
        for counts in [
            vec![3, 0, 1, 2, 3, 3],
            (0..1000).map(|c| c % 7).collect(),
            (0..1000).map(|c| c % 300).collect(),
            vec![5, 1000, 0],
            vec![i64::from(u32::MAX), 17, 0],
        ] {
            let max = counts.iter().copied().max().unwrap();
            let expect: Vec<i64> = counts.iter().map(|c| 100 * (max - c) / max).collect();
            let mut got = counts.clone();
            normalize_spread(&mut got);
            assert_eq!(got, expect);
        }
        assert_eq!(Spread::for_pod(&pod("z", json!({})), []), Spread::None);
    }

    #[test]
    fn weighted_totals() {
        let nodes = vec![
            node(
                "n0",
                json!({"spec": {"taints": [{"key": "a", "effect": "PreferNoSchedule"}]}}),
            ),
            node("n1", json!({})),
        ];
        let mut summaries: Vec<NodeSummary> = nodes.iter().map(NodeSummary::new).collect();
        let p = req("p", json!({"cpu": "1", "memory": "2Gi"}));
        let shape = ScoreShape::next(None, &p, Spread::None);
        let mut buf = ScoreBuffers::default();
        let mut run = |shape: &ScoreShape, which: &[usize], summaries: &mut [NodeSummary]| {
            score(&p, shape, &nodes, summaries, which, |_| 0, &mut buf);
            buf.totals.clone()
        };
        // 75 least + 100 balanced, + 3 * (0 | 100) taint.
        assert_eq!(run(&shape, &[0, 1], &mut summaries), vec![175, 475]);
        assert_eq!(summaries[0].memo.key, Some(shape.key()));
        assert_eq!(summaries[0].memo.resources, 175);
        assert_eq!(run(&shape, &[1], &mut summaries), vec![475]);
        // Remembered scores are used as they are (here, made up to show it)...
        summaries[1].memo.resources = 1;
        assert_eq!(run(&shape, &[1], &mut summaries), vec![301]);
        // ... until the node changes...
        summaries[1].refresh(&nodes[1]);
        assert_eq!(run(&shape, &[1], &mut summaries), vec![475]);
        // ... or another shape comes, with another key.
        summaries[1].memo.resources = 1;
        let same = ScoreShape::next(
            Some(shape.clone()),
            &req("p2", json!({"cpu": "1", "memory": "2Gi"})),
            Spread::None,
        );
        assert_eq!(same, shape);
        let q = req("q", json!({}));
        let other = ScoreShape::next(Some(shape.clone()), &q, Spread::None);
        assert!(other.key() > shape.key());
        assert!(!other.is_of(&p, &Spread::None) && shape.is_of(&p, &Spread::None));
        assert_ne!(other.resource_score(&summaries[1]), 175);
        let spread = ScoreShape::next(Some(other.clone()), &q, Spread::Controller(1));
        assert!(spread.key() > other.key());
        let again = ScoreShape::next(Some(spread.clone()), &q, Spread::None);
        assert!(again.key() > spread.key());
        let p_again = ScoreShape::next(Some(again.clone()), &p, Spread::None);
        assert!(p_again.key() > again.key());
        assert_eq!(run(&p_again, &[1], &mut summaries), vec![475]);
    }

    #[test]
    fn weighted_totals_with_spreading() {
        let nodes = vec![
            node("n0", json!({})),
            node("n1", json!({})),
            node("n2", json!({})),
        ];
        let mut summaries: Vec<NodeSummary> = nodes.iter().map(NodeSummary::new).collect();
        let p = req("p", json!({"cpu": "1", "memory": "2Gi"}));
        let shape = ScoreShape::next(None, &p, Spread::Controller(7));
        let mut buf = ScoreBuffers::default();
        let counts = [2, 1, 0];
        score(
            &p,
            &shape,
            &nodes,
            &mut summaries,
            &[0, 1, 2],
            |i| counts[i],
            &mut buf,
        );
        // 175 + 300 (no taints) + 2 * (0 | 50 | 100) spreading.
        assert_eq!(buf.totals, vec![475, 575, 675]);
        assert_eq!(summaries[0].memo.spread, 2);
        // Remembered counts are not asked for again.
        score(
            &p,
            &shape,
            &nodes,
            &mut summaries,
            &[2, 0],
            |_| unreachable!(),
            &mut buf,
        );
        assert_eq!(buf.totals, vec![675, 475]);
    }
}
