//! [`Cache`]: the scheduler's view of the cluster (nodes, the pods counted on them, Service
//! selectors) and the decision itself, [`Cache::schedule`].
//!
//! The cache is owned by one task and has no locks. Pods are counted on a node when the API shows
//! them bound there and not terminated, or when the scheduler assumed them there while their
//! binding is in flight. Each pod key is counted at most once.
//!
//! Next to each node the cache keeps its [`NodeSummary`] (what a search reads for every node,
//! contiguous in memory), whose labels are ids in the cache's [`NodeLabels`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use rand::Rng;

use crate::node_info::{KeyHasher, NodeInfo, NodeSummary};
use crate::plugins::filters::{self, Failure, PodFilter};
use crate::plugins::labels::{LabelId, NodeLabels};
use crate::plugins::scores::{self, ScoreBuffers, ScoreShape, Spread};
use crate::pod_info::{NO_LABELS, PodInfo, pod_key};

/// Below this many nodes every node is considered; also the least number of feasible nodes
/// looked for (Kubernetes' `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The lowest adaptive percentage of nodes to score (Kubernetes'
/// `minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How many feasible nodes a search stops at, as Kubernetes' adaptive `percentageOfNodesToScore`:
/// all nodes below 100; else `max(5, 50 - nodes/125)` percent of them, but at least 100.
pub fn num_feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return nodes;
    }
    let percentage = 50usize
        .saturating_sub(nodes / 125)
        .max(MIN_FEASIBLE_NODES_PERCENTAGE);
    (nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Why no node fits a pod.
///
/// Display gives Kubernetes' message, e.g. "0/5 nodes are available: 2 node(s) had untolerated
/// taint {dedicated: gpu}, 3 Insufficient cpu." and, without nodes, "no nodes available to
/// schedule pods".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes the cache had.
    pub nodes: usize,
    /// Each reason with the number of nodes that gave it (a node can give several, e.g.
    /// "Insufficient cpu" and "Insufficient memory").
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut entries: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        entries.sort();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.nodes,
            entries.join(", ")
        )
    }
}

impl std::error::Error for FitError {}

/// Counts per node index.
type NodeCounts = HashMap<u32, u32, BuildHasherDefault<IndexHasher>>;

/// A hasher for node indices: a multiplication, so that consecutive indices spread over a hash
/// table's buckets and its tag bits.
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u32 keys; kept correct for anything else.
        for b in bytes {
            self.write_u32(u32::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Adds `delta` (±1) to the count of `pod`'s controller on node `i`, if the pod counts for
/// spreading (has a controller and is not being deleted); counts reaching 0 are dropped.
fn add_controller_count(
    counts: &mut HashMap<u64, NodeCounts, BuildHasherDefault<KeyHasher>>,
    pod: &PodInfo,
    i: usize,
    delta: i32,
) {
    let Some(key) = pod.controller_key.filter(|_| !pod.terminating) else {
        return;
    };
    let i = u32::try_from(i).expect("fewer than 2^32 nodes");
    let by_node = counts.entry(key).or_default();
    let count = by_node.entry(i).or_insert(0);
    *count = count.saturating_add_signed(delta);
    if *count == 0 {
        by_node.remove(&i);
        if by_node.is_empty() {
            counts.remove(&key);
        }
    }
}

/// A counted pod: where, and whether only assumed.
#[derive(Clone, Debug)]
struct PodEntry {
    info: Arc<PodInfo>,
    node: String,
    assumed: bool,
}

/// The scheduler's view of the cluster, owned by one task (no locks inside).
#[derive(Debug, Default)]
pub struct Cache {
    /// Nodes in round-robin order.
    nodes: Vec<NodeInfo>,
    /// The summary of each node, same order as `nodes`.
    summaries: Vec<NodeSummary>,
    /// The labels of the nodes, as ids.
    labels: NodeLabels,
    /// Controller key ([`crate::pod_info::uid_key`]) → node index → number of counted, not
    /// terminating pods of that controller there: the nodes' own
    /// [`NodeInfo::controller_count_by_key`], arranged so that scoring reads one small table for
    /// all the nodes it scores rather than a table per node.
    controllers: HashMap<u64, NodeCounts, BuildHasherDefault<KeyHasher>>,
    /// Node name → index in `nodes`.
    index: HashMap<String, usize>,
    /// Every counted pod (bound per the API or assumed), by key.
    pods: HashMap<String, PodEntry>,
    /// Keys of counted pods whose node the cache does not have, by node name.
    waiting: HashMap<String, HashSet<String>>,
    /// Service selectors (non-empty only): namespace → name → selector.
    services: HashMap<String, HashMap<String, Vec<(String, String)>>>,
    /// Where the next search starts.
    next_start: usize,
    /// Scratch: indices of the feasible nodes found by the current search.
    feasible: Vec<usize>,
    /// Scratch: nodes rejected by the current search, with the filter that did it.
    failures: Vec<(usize, Failure)>,
    /// Scratch: score buffers.
    scores: ScoreBuffers,
    /// Scratch: the label ids of the nodeSelector of the pod being scheduled.
    selector: Vec<LabelId>,
    /// The score shape of the last pod scored (a new one, with a new key, for each new shape).
    shape: Option<ScoreShape>,
}

/// The pod's node per the API, if it is bound and not terminated (so counted).
fn counted_node(pod: &Pod) -> Option<&str> {
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if terminal {
        return None;
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Adds a node, or replaces it (keeping the pods counted on it). Pods already known to be
    /// bound to (or assumed on) a node of that name are counted on it.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(&i) = self.index.get(&name) {
            let old = self.nodes[i].node.clone();
            self.nodes[i].set_node(node);
            let (info, summary) = (&self.nodes[i], &mut self.summaries[i]);
            let old_labels = old.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
            summary.labels = self
                .labels
                .replace(summary.labels, old_labels, info.labels());
            summary.refresh(info);
            self.compact_labels();
            return;
        }
        let mut info = NodeInfo::new(node);
        let i = self.nodes.len();
        if let Some(keys) = self.waiting.remove(&name) {
            for key in keys {
                if let Some(entry) = self.pods.get(&key) {
                    info.add_uncounted_pod(entry.info.clone());
                    add_controller_count(&mut self.controllers, &entry.info, i, 1);
                }
            }
        }
        let mut summary = NodeSummary::new(&info);
        summary.labels = self.labels.add(info.labels());
        self.index.insert(name, i);
        self.nodes.push(info);
        self.summaries.push(summary);
    }

    /// Removes a node. Its pods stay known and are counted again if the node comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let info = self.nodes.swap_remove(i);
        let summary = self.summaries.swap_remove(i);
        self.labels.remove(summary.labels, info.labels());
        self.compact_labels();
        for p in info.pods() {
            add_controller_count(&mut self.controllers, p, i, -1);
        }
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
            // It was the last node.
            let from = self.nodes.len();
            for p in moved.pods() {
                add_controller_count(&mut self.controllers, p, from, -1);
                add_controller_count(&mut self.controllers, p, i, 1);
            }
        }
        if info.pod_count() > 0 {
            let waiting = self.waiting.entry(name.to_string()).or_default();
            waiting.extend(info.pods().iter().map(|p| p.key.clone()));
        }
    }

    /// A pod as seen from the API (watch). If it is bound (spec.nodeName set) and not terminated
    /// (phase Succeeded/Failed), it is counted on its node; this confirms an assumption of the
    /// same pod (the assumption is dropped and the real one counted, on whatever node the API
    /// says). If it is unbound or terminated, it is not counted (removing any earlier count, but
    /// keeping an assumption of it that is not yet confirmed). Pods on nodes the cache does not
    /// know yet are kept and counted when the node arrives.
    pub fn upsert_pod(&mut self, pod: Arc<Pod>) {
        match counted_node(&pod).map(str::to_string) {
            Some(node) => {
                let info = Arc::new(PodInfo::new(pod));
                self.uncount(&info.key);
                self.count(info, node, false);
            }
            None => {
                let key = pod_key(&pod);
                if self.pods.get(&key).is_some_and(|e| !e.assumed) {
                    self.uncount(&key);
                }
            }
        }
    }

    /// A pod was deleted: drop its count and any assumption of it.
    pub fn remove_pod(&mut self, key: &str) {
        self.uncount(key);
    }

    /// Counts `pod` on `node` until the API shows it bound (upsert_pod) or `forget` is called.
    /// Replaces any earlier count of the same key. A node the cache does not know counts the pod
    /// when it arrives.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.uncount(&pod.key);
        self.count(pod, node.to_string(), true);
    }

    /// Drops an assumption (failed bind). A pod counted because the API shows it bound is left
    /// alone.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.uncount(key);
        }
    }

    /// Whether the pod is assumed and not yet confirmed by the API.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|e| e.assumed)
    }

    /// Whether the pod is counted anywhere (bound per the API, or assumed).
    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// The node a pod is counted on (bound per the API, or assumed), known to the cache or not.
    pub fn pod_node(&self, key: &str) -> Option<&str> {
        self.pods.get(key).map(|e| e.node.as_str())
    }

    /// Adds or replaces a Service, key "ns/name"; only spec.selector matters (spreading). A
    /// Service without selector selects no pods.
    pub fn upsert_service(&mut self, svc: Arc<Service>) {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let selector: Vec<(String, String)> = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if selector.is_empty() {
            self.remove_service(&format!("{ns}/{name}"));
        } else {
            self.services
                .entry(ns.to_string())
                .or_default()
                .insert(name.to_string(), selector);
        }
    }

    /// Removes a Service by key "ns/name".
    pub fn remove_service(&mut self, key: &str) {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        if let Some(by_name) = self.services.get_mut(ns) {
            by_name.remove(name);
            if by_name.is_empty() {
                self.services.remove(ns);
            }
        }
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// All nodes, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter()
    }

    /// Picks a node for `pod` (does not assume it): filter, score, highest total wins, ties
    /// broken uniformly at random with `rng`.
    ///
    /// As Kubernetes, the search starts at the node after where the previous one stopped and
    /// stops once [`num_feasible_nodes_to_find`] feasible nodes are found; only those are scored.
    pub fn schedule(&mut self, pod: &PodInfo, rng: &mut impl Rng) -> Result<String, FitError> {
        let n = self.nodes.len();
        if n == 0 {
            return Err(FitError {
                nodes: 0,
                reasons: BTreeMap::new(),
            });
        }
        let want = num_feasible_nodes_to_find(n);
        self.feasible.clear();
        self.failures.clear();
        let filter = PodFilter::new(pod, &self.labels, &mut self.selector);
        let start = self.next_start % n;
        let mut evaluated = 0;
        for k in 0..n {
            let i = if start + k < n {
                start + k
            } else {
                start + k - n
            };
            evaluated += 1;
            match filter.run(&self.summaries[i], &self.nodes[i]) {
                Ok(()) => {
                    self.feasible.push(i);
                    if self.feasible.len() >= want {
                        break;
                    }
                }
                Err(f) => self.failures.push((i, f)),
            }
        }
        self.next_start = (start + evaluated) % n;

        match self.feasible.len() {
            0 => return Err(self.fit_error(pod)),
            1 => return Ok(self.nodes[self.feasible[0]].name.clone()),
            _ => {}
        }
        let spread = Spread::for_pod(
            pod,
            self.services
                .get(&pod.namespace)
                .into_iter()
                .flat_map(|by_name| by_name.values().map(Vec::as_slice)),
        );
        // Consecutive pods of one shape (replicas of one template) reuse the scores remembered
        // on the nodes that did not change.
        let shape = ScoreShape::next(self.shape.take(), pod, spread);
        let shape = self.shape.insert(shape);
        let nodes = &self.nodes;
        let by_node = match shape.spread {
            Spread::Controller(key) => Some(self.controllers.get(&key)),
            _ => None,
        };
        let spread_count = |i: usize| match by_node {
            Some(by_node) => {
                let count = u32::try_from(i)
                    .ok()
                    .and_then(|i| by_node?.get(&i).copied())
                    .unwrap_or(0);
                i64::from(count)
            }
            None => shape.spread.count(&nodes[i]),
        };
        scores::score(
            pod,
            shape,
            nodes,
            &mut self.summaries,
            &self.feasible,
            spread_count,
            &mut self.scores,
        );

        // Reservoir sampling among the best, as Kubernetes' selectHost.
        let mut best = 0;
        let mut best_score = i64::MIN;
        let mut ties: u32 = 0;
        for (j, &s) in self.scores.totals.iter().enumerate() {
            if s > best_score {
                best_score = s;
                best = j;
                ties = 1;
            } else if s == best_score {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = j;
                }
            }
        }
        Ok(self.nodes[self.feasible[best]].name.clone())
    }

    /// [`PodFilter::run`] of `pod` on the node called `name`, as a search would run it.
    #[cfg(test)]
    fn filter_node(&self, pod: &PodInfo, name: &str) -> Option<Result<(), Failure>> {
        let i = *self.index.get(name)?;
        let mut scratch = Vec::new();
        Some(
            PodFilter::new(pod, &self.labels, &mut scratch).run(&self.summaries[i], &self.nodes[i]),
        )
    }

    /// Compacts the node labels when replaced and removed nodes left much garbage, keeping each
    /// node's labels in the order of the nodes.
    fn compact_labels(&mut self) {
        if self.labels.needs_compaction() {
            self.labels
                .compact(self.summaries.iter_mut().map(|s| &mut s.labels));
        }
    }

    /// The reasons of the failed search just run.
    fn fit_error(&self, pod: &PodInfo) -> FitError {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for &(i, failure) in &self.failures {
            for reason in filters::reasons(pod, &self.nodes[i], failure) {
                *reasons.entry(reason).or_insert(0) += 1;
            }
        }
        FitError {
            nodes: self.nodes.len(),
            reasons,
        }
    }

    /// Counts a pod that is not counted yet.
    fn count(&mut self, info: Arc<PodInfo>, node: String, assumed: bool) {
        let key = info.key.clone();
        match self.index.get(&node) {
            Some(&i) => {
                add_controller_count(&mut self.controllers, &info, i, 1);
                self.nodes[i].add_uncounted_pod(info.clone());
                self.summaries[i].refresh(&self.nodes[i]);
            }
            None => {
                self.waiting
                    .entry(node.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.pods.insert(
            key,
            PodEntry {
                info,
                node,
                assumed,
            },
        );
    }

    /// Stops counting a pod, wherever it is.
    fn uncount(&mut self, key: &str) {
        let Some(entry) = self.pods.remove(key) else {
            return;
        };
        match self.index.get(&entry.node) {
            Some(&i) => {
                if self.nodes[i].remove_counted_pod(&entry.info) {
                    add_controller_count(&mut self.controllers, &entry.info, i, -1);
                }
                self.summaries[i].refresh(&self.nodes[i]);
            }
            None => {
                if let Some(keys) = self.waiting.get_mut(&entry.node) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.waiting.remove(&entry.node);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node_obj, pod_obj};
    use crate::resources::{Resources, pod_extended_requests, pod_requests};
    use k8s_openapi::api::core::v1 as api;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use serde_json::{Value, json};

    fn info(name: &str, extra: Value) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(pod_obj(name, extra))))
    }

    fn bound(name: &str, node: &str, extra: Value) -> Arc<Pod> {
        let mut p = pod_obj(name, extra);
        p.spec.get_or_insert_default().node_name = Some(node.to_string());
        Arc::new(p)
    }

    fn cpu(m: &str) -> Value {
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": m}}}]}})
    }

    fn requested_cpu(c: &Cache, node: &str) -> i64 {
        c.node(node).map(|n| n.requested.milli_cpu).unwrap_or(-1)
    }

    /// Checks the cache's bookkeeping: each counted pod on exactly its node (or waiting), and each
    /// node's sums equal to its pods' requests.
    fn check_consistency(c: &Cache) {
        let mut seen = HashSet::new();
        for (i, n) in c.nodes.iter().enumerate() {
            assert_eq!(c.index.get(&n.name), Some(&i));
            let mut sum = Resources::default();
            let mut nz = Resources::default();
            for p in n.pods() {
                assert!(seen.insert(p.key.clone()), "{} counted twice", p.key);
                let e = c.pods.get(&p.key).expect("counted pod known");
                assert_eq!(e.node, n.name);
                assert!(Arc::ptr_eq(&e.info, p));
                sum.add(&p.requests);
                nz.add(&p.non_zero);
            }
            assert_eq!(n.requested, sum, "node {}", n.name);
            assert_eq!(n.non_zero_requested, nz, "node {}", n.name);
            // The summary is up to date, its labels are the node's.
            let mut expect = NodeSummary::new(n);
            let summary = &c.summaries[i];
            expect.labels = summary.labels;
            expect.memo = summary.memo;
            assert_eq!(*summary, expect, "node {}", n.name);
            // Remembered scores under the current key are what they would be now.
            if let Some(shape) = &c.shape
                && summary.memo.key == Some(shape.key())
            {
                let count = shape.spread.count(n);
                assert_eq!(summary.memo, shape.memo(summary, count), "node {}", n.name);
            }
            let mut ids: Vec<LabelId> = n
                .labels()
                .iter()
                .map(|(k, v)| {
                    c.labels
                        .interner()
                        .label(k, v)
                        .expect("node label interned")
                })
                .collect();
            ids.sort_unstable();
            assert_eq!(c.labels.get(c.summaries[i].labels), ids, "node {}", n.name);
        }
        // The interner holds one reference per use of a string as a key or value of a node
        // label, and nothing else.
        let mut uses: HashMap<&str, u32> = HashMap::new();
        for n in &c.nodes {
            for (k, v) in n.labels() {
                *uses.entry(k).or_default() += 1;
                *uses.entry(v).or_default() += 1;
            }
        }
        for (s, count) in &uses {
            assert_eq!(c.labels.interner().refs(s), *count, "{s}");
        }
        assert_eq!(c.labels.interner().len(), uses.len());
        assert_eq!(c.summaries.len(), c.nodes.len());
        for (node, keys) in &c.waiting {
            assert!(!c.index.contains_key(node));
            assert!(!keys.is_empty());
            for k in keys {
                assert!(seen.insert(k.clone()), "{k} counted twice");
                assert_eq!(c.pods.get(k).map(|e| e.node.as_str()), Some(node.as_str()));
            }
        }
        assert_eq!(seen.len(), c.pods.len());
        assert_eq!(c.index.len(), c.nodes.len());
        // The controller index holds exactly the nodes' controller counts.
        let mut controllers: BTreeMap<(u64, u32), u32> = BTreeMap::new();
        for (i, n) in c.nodes.iter().enumerate() {
            for p in n.pods() {
                if let Some(k) = p.controller_key
                    && !p.terminating
                {
                    *controllers.entry((k, i as u32)).or_default() += 1;
                }
            }
        }
        let indexed: BTreeMap<(u64, u32), u32> = c
            .controllers
            .iter()
            .flat_map(|(k, by_node)| by_node.iter().map(move |(i, n)| ((*k, *i), *n)))
            .collect();
        assert_eq!(indexed, controllers);
        for ((k, i), count) in &controllers {
            assert_eq!(c.nodes[*i as usize].controller_count_by_key(*k), *count);
        }
    }

    #[test]
    fn fit_error_message() {
        let e = FitError {
            nodes: 5,
            reasons: [
                (
                    "node(s) had untolerated taint {dedicated: gpu}".to_string(),
                    2,
                ),
                ("Insufficient cpu".to_string(), 3),
            ]
            .into(),
        };
        assert_eq!(
            e.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu."
        );
        // Sorted as strings, like Kubernetes: "10 ..." before "2 ...".
        let e = FitError {
            nodes: 12,
            reasons: [
                ("Insufficient cpu".to_string(), 2),
                ("Too many pods".to_string(), 10),
            ]
            .into(),
        };
        assert_eq!(
            e.to_string(),
            "0/12 nodes are available: 10 Too many pods, 2 Insufficient cpu."
        );
        let e = FitError {
            nodes: 0,
            reasons: BTreeMap::new(),
        };
        assert_eq!(e.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn schedule_reports_reasons() {
        let mut c = Cache::new();
        let mut rng = StdRng::seed_from_u64(1);
        let p = info("p", cpu("3"));
        assert_eq!(
            c.schedule(&p, &mut rng).unwrap_err().to_string(),
            "no nodes available to schedule pods"
        );
        c.upsert_node(Arc::new(node_obj("a", json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}))));
        c.upsert_node(Arc::new(node_obj("b", json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}))));
        c.upsert_node(Arc::new(node_obj(
            "c",
            json!({"status": {"allocatable": {"cpu": "2", "memory": "1Gi"}}}),
        )));
        c.upsert_node(Arc::new(node_obj(
            "d",
            json!({"spec": {"unschedulable": true}}),
        )));
        c.upsert_node(Arc::new(node_obj(
            "e",
            json!({"status": {"allocatable": {"cpu": "2", "memory": "1Gi"}}}),
        )));
        let p = info(
            "p",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "2Gi"}}}]}}),
        );
        let err = c.schedule(&p, &mut rng).unwrap_err();
        assert_eq!(err.nodes, 5);
        assert_eq!(
            err.to_string(),
            "0/5 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory, \
             2 node(s) had untolerated taint {dedicated: gpu}."
        );
        let small = info("s", cpu("1"));
        let chosen = c.schedule(&small, &mut rng).unwrap();
        assert!(chosen == "c" || chosen == "e");
    }

    #[test]
    fn assume_confirm_forget_remove() {
        let mut c = Cache::new();
        c.upsert_node(Arc::new(node_obj("n1", json!({}))));
        c.upsert_node(Arc::new(node_obj("n2", json!({}))));
        let p = info("p", cpu("1"));
        c.assume(p.clone(), "n1");
        assert!(c.is_assumed("ns/p") && c.is_placed("ns/p"));
        assert_eq!(requested_cpu(&c, "n1"), 1000);
        // An unbound update keeps the assumption.
        c.upsert_pod(p.pod.clone());
        assert!(c.is_assumed("ns/p"));
        assert_eq!(requested_cpu(&c, "n1"), 1000);
        // The API shows it bound (somewhere else, even): confirmed there.
        c.upsert_pod(bound("p", "n2", cpu("1")));
        assert!(!c.is_assumed("ns/p") && c.is_placed("ns/p"));
        assert_eq!(requested_cpu(&c, "n1"), 0);
        assert_eq!(requested_cpu(&c, "n2"), 1000);
        assert_eq!(c.pod_node("ns/p"), Some("n2"));
        // Forget does not touch a bound pod.
        c.forget("ns/p");
        assert!(c.is_placed("ns/p"));
        // An update with new requests replaces the count.
        c.upsert_pod(bound("p", "n2", cpu("2")));
        assert_eq!(requested_cpu(&c, "n2"), 2000);
        // Terminated: no longer counted.
        let mut done = (*bound("p", "n2", cpu("2"))).clone();
        done.status = Some(api::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        c.upsert_pod(Arc::new(done));
        assert!(!c.is_placed("ns/p"));
        assert_eq!(requested_cpu(&c, "n2"), 0);
        check_consistency(&c);

        // Failed bind: forget drops the assumption.
        let q = info("q", cpu("1"));
        c.assume(q.clone(), "n1");
        c.forget("ns/q");
        assert!(!c.is_placed("ns/q"));
        assert_eq!(requested_cpu(&c, "n1"), 0);
        // Assuming again moves it.
        c.assume(q.clone(), "n1");
        c.assume(q.clone(), "n2");
        assert_eq!(requested_cpu(&c, "n1"), 0);
        assert_eq!(requested_cpu(&c, "n2"), 1000);
        // Deleted while assumed.
        c.remove_pod("ns/q");
        assert!(!c.is_placed("ns/q"));
        assert_eq!(requested_cpu(&c, "n2"), 0);
        // Bound then deleted.
        c.upsert_pod(bound("r", "n1", cpu("1")));
        c.remove_pod("ns/r");
        assert_eq!(requested_cpu(&c, "n1"), 0);
        // A bound pod later seen unbound (should not happen) is uncounted.
        c.upsert_pod(bound("s", "n1", cpu("1")));
        c.upsert_pod(Arc::new(pod_obj("s", cpu("1"))));
        assert!(!c.is_placed("ns/s"));
        check_consistency(&c);
    }

    #[test]
    fn bound_pod_before_its_node() {
        let mut c = Cache::new();
        c.upsert_pod(bound("p", "late", cpu("1")));
        assert!(c.is_placed("ns/p"));
        assert!(c.node("late").is_none());
        c.assume(info("q", cpu("500m")), "late");
        check_consistency(&c);
        c.upsert_node(Arc::new(node_obj("late", json!({}))));
        assert_eq!(requested_cpu(&c, "late"), 1500);
        assert_eq!(c.node("late").map(NodeInfo::pod_count), Some(2));
        check_consistency(&c);
    }

    #[test]
    fn node_removal_and_readd() {
        let mut c = Cache::new();
        for n in ["a", "b", "c"] {
            c.upsert_node(Arc::new(node_obj(n, json!({}))));
        }
        c.upsert_pod(bound("p", "a", cpu("1")));
        c.assume(info("q", cpu("1")), "a");
        c.upsert_pod(bound("r", "c", cpu("1")));
        c.remove_node("a");
        assert_eq!(c.node_count(), 2);
        assert!(c.node("a").is_none());
        assert_eq!(requested_cpu(&c, "c"), 1000);
        assert!(c.is_placed("ns/p") && c.is_assumed("ns/q"));
        check_consistency(&c);
        // While the node is gone, pods come and go.
        c.remove_pod("ns/p");
        c.forget("ns/q");
        c.upsert_pod(bound("s", "a", cpu("2")));
        check_consistency(&c);
        // An update of a node keeps its pods and picks up the new allocatable.
        c.upsert_node(Arc::new(node_obj(
            "c",
            json!({"status": {"allocatable": {"cpu": "16"}}}),
        )));
        assert_eq!(requested_cpu(&c, "c"), 1000);
        assert_eq!(c.node("c").map(|n| n.allocatable.milli_cpu), Some(16000));
        c.upsert_node(Arc::new(node_obj("a", json!({}))));
        assert_eq!(requested_cpu(&c, "a"), 2000);
        assert_eq!(c.node("a").map(NodeInfo::pod_count), Some(1));
        check_consistency(&c);
        c.remove_node("missing");
        assert_eq!(c.node_count(), 3);
    }

    #[test]
    fn prefers_emptier_nodes_and_spreads() {
        let mut c = Cache::new();
        let mut rng = StdRng::seed_from_u64(7);
        c.upsert_node(Arc::new(node_obj("a", json!({}))));
        c.upsert_node(Arc::new(node_obj("b", json!({}))));
        c.upsert_pod(bound("big", "a", cpu("3")));
        for _ in 0..20 {
            assert_eq!(c.schedule(&info("p", cpu("100m")), &mut rng).unwrap(), "b");
        }

        // Equal nodes: replicas of one controller spread out.
        let mut c = Cache::new();
        for n in ["a", "b", "c"] {
            c.upsert_node(Arc::new(node_obj(n, json!({}))));
        }
        let owned = |name: &str| {
            info(
                name,
                json!({"metadata": {"labels": {"app": "web"}, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]}}),
            )
        };
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..9 {
            let p = owned(&format!("w{i}"));
            let n = c.schedule(&p, &mut rng).unwrap();
            *counts.entry(n.clone()).or_default() += 1;
            c.assume(p, &n);
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);

        // Bare pods behind a Service spread from what the Service selects.
        let mut c = Cache::new();
        for n in ["a", "b"] {
            c.upsert_node(Arc::new(node_obj(n, json!({}))));
        }
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"}, "spec": {"selector": {"app": "web"}}}))
        .unwrap();
        c.upsert_service(Arc::new(svc));
        c.upsert_pod(bound(
            "x",
            "a",
            json!({"metadata": {"labels": {"app": "web"}}}),
        ));
        let p = info("p", json!({"metadata": {"labels": {"app": "web"}}}));
        for _ in 0..20 {
            assert_eq!(c.schedule(&p, &mut rng).unwrap(), "b");
        }
        c.remove_service("ns/web");
        c.remove_pod("ns/x");
        let mut seen = HashSet::new();
        for _ in 0..50 {
            seen.insert(c.schedule(&p, &mut rng).unwrap());
        }
        assert_eq!(seen.len(), 2, "ties are broken at random");
    }

    #[test]
    fn selector_follows_node_label_changes() {
        let mut c = Cache::new();
        let mut rng = StdRng::seed_from_u64(11);
        let labelled = |name: &str, labels: Value| {
            Arc::new(node_obj(name, json!({"metadata": {"labels": labels}})))
        };
        c.upsert_node(labelled("a", json!({"disk": "ssd", "zone": "z1"})));
        c.upsert_node(labelled("b", json!({"disk": "hdd", "zone": "z1"})));
        check_consistency(&c);
        let ssd = info("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        let z2 = info(
            "q",
            json!({"spec": {"nodeSelector": {"zone": "z2", "disk": "hdd"}}}),
        );
        for _ in 0..10 {
            assert_eq!(c.schedule(&ssd, &mut rng).unwrap(), "a");
        }
        // "z2" is on no node: nothing matches.
        assert_eq!(
            c.schedule(&z2, &mut rng).unwrap_err().to_string(),
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
        // Labels move from node to node.
        c.upsert_node(labelled("a", json!({"disk": "hdd", "zone": "z2"})));
        c.upsert_node(labelled("b", json!({"disk": "ssd"})));
        check_consistency(&c);
        assert_eq!(c.labels.interner().refs("z1"), 0);
        for _ in 0..10 {
            assert_eq!(c.schedule(&ssd, &mut rng).unwrap(), "b");
            assert_eq!(c.schedule(&z2, &mut rng).unwrap(), "a");
        }
        // Strings freed by one node and interned again for another (freed ids are reused):
        // only the current labels count.
        c.upsert_node(labelled("a", json!({"disk": "hdd", "zone": "z3"})));
        c.upsert_node(labelled("c", json!({"rack": "r1", "zone": "z2"})));
        check_consistency(&c);
        assert_eq!(c.schedule(&z2, &mut rng).unwrap_err().nodes, 3);
        // Gone nodes give their labels back.
        for n in ["a", "b", "c"] {
            c.remove_node(n);
            check_consistency(&c);
        }
        assert!(c.labels.interner().is_empty());
        c.upsert_node(labelled("b", json!({"disk": "ssd"})));
        assert_eq!(c.schedule(&ssd, &mut rng).unwrap(), "b");
        check_consistency(&c);
    }

    #[test]
    fn node_labels_are_compacted() {
        let mut c = Cache::new();
        let mut rng = StdRng::seed_from_u64(12);
        let labelled = |i: usize, round: usize| {
            let zone = ["a", "b"][(i + round) % 2];
            Arc::new(node_obj(
                &format!("n{i}"),
                json!({"metadata": {"labels": {"host": format!("n{i}"), "round": round.to_string(),
                                               "zone": zone}}}),
            ))
        };
        for i in 0..300 {
            c.upsert_node(labelled(i, 0));
        }
        let mut most = 0;
        for round in 1..=20 {
            for i in 0..300 {
                c.upsert_node(labelled(i, round));
            }
            most = most.max(c.labels.stored());
            check_consistency(&c);
            let now = info(
                "p",
                json!({"spec": {"nodeSelector": {"round": round.to_string(), "zone": "a"}}}),
            );
            let n = c.schedule(&now, &mut rng).unwrap();
            assert_eq!(c.node(&n).unwrap().labels()["zone"], "a");
            let before = info(
                "q",
                json!({"spec": {"nodeSelector": {"round": (round - 1).to_string()}}}),
            );
            assert!(c.schedule(&before, &mut rng).is_err());
        }
        // 900 live ids; replaced lists are dropped once garbage passes 4096 ids and half of all.
        assert!(most <= 900 + 4096 + 900, "{most} ids stored");
    }

    #[test]
    fn percentage_of_nodes() {
        assert_eq!(num_feasible_nodes_to_find(0), 0);
        assert_eq!(num_feasible_nodes_to_find(99), 99);
        assert_eq!(num_feasible_nodes_to_find(100), 100);
        assert_eq!(num_feasible_nodes_to_find(250), 120);
        assert_eq!(num_feasible_nodes_to_find(1000), 420);
        assert_eq!(num_feasible_nodes_to_find(5000), 500);
        assert_eq!(num_feasible_nodes_to_find(6000), 300);
        assert_eq!(num_feasible_nodes_to_find(100_000), 5000);

        // Round robin: each search starts where the previous stopped.
        let mut c = Cache::new();
        for i in 0..250 {
            c.upsert_node(Arc::new(node_obj(&format!("n{i}"), json!({}))));
        }
        let mut rng = StdRng::seed_from_u64(3);
        let p = info("p", json!({}));
        c.schedule(&p, &mut rng).unwrap();
        assert_eq!(c.next_start, 120);
        c.schedule(&p, &mut rng).unwrap();
        assert_eq!(c.next_start, 240);
        c.schedule(&p, &mut rng).unwrap();
        assert_eq!(c.next_start, 110);
        // Only 10 nodes fit: the whole ring is searched.
        for i in 0..250 {
            if i % 25 != 0 {
                c.upsert_node(Arc::new(node_obj(
                    &format!("n{i}"),
                    json!({"spec": {"unschedulable": true}}),
                )));
            }
        }
        let n = c.schedule(&p, &mut rng).unwrap();
        assert!(c.node(&n).is_some_and(|n| !n.unschedulable));
        assert_eq!(c.next_start, 110);
    }

    #[test]
    fn five_thousand_nodes() {
        let mut c = Cache::new();
        for i in 0..5000 {
            let zone = ["a", "b", "c"][i % 3];
            c.upsert_node(Arc::new(node_obj(
                &format!("node-{i}"),
                json!({"metadata": {"labels": {"zone": zone}},
                       "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}),
            )));
        }
        assert_eq!(c.node_count(), 5000);
        let mut rng = StdRng::seed_from_u64(5000);
        for i in 0..2000 {
            let p = info(
                &format!("p{i}"),
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "rs", "uid": format!("rs-{}", i % 10), "controller": true}]},
                       "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}],
                                "nodeSelector": if i % 4 == 0 { json!({"zone": "b"}) } else { json!({}) }}}),
            );
            let n = c.schedule(&p, &mut rng).unwrap();
            assert!(filters::run(&p, c.node(&n).unwrap()).is_ok());
            c.assume(p, &n);
        }
        let max = c.nodes().map(NodeInfo::pod_count).max();
        assert_eq!(
            max,
            Some(1),
            "2000 pods over 5000 empty nodes land on distinct nodes"
        );
        let unfit = info("huge", cpu("9"));
        let err = c.schedule(&unfit, &mut rng).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/5000 nodes are available: 5000 Insufficient cpu."
        );
    }

    // ---- property test ----

    /// Raw-API toleration matching, written independently of the plugins.
    fn ref_tolerated(pod: &Pod, key: &str, value: &str, effect: &str) -> bool {
        let tols = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        tols.iter().any(|t| {
            let te = t.effect.as_deref().unwrap_or("");
            let tk = t.key.as_deref().unwrap_or("");
            (te.is_empty() || te == effect)
                && (tk.is_empty() || tk == key)
                && match t.operator.as_deref().unwrap_or("Equal") {
                    "Exists" => true,
                    "Equal" | "" => t.value.as_deref().unwrap_or("") == value,
                    _ => false,
                }
        })
    }

    /// Whether `pod` may go to `node` already holding `placed`, by a direct reading of the rules.
    fn ref_fits(pod: &Pod, node: &Node, placed: &[Arc<Pod>]) -> bool {
        let spec = pod.spec.as_ref().unwrap();
        let nspec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready && !ref_tolerated(pod, "node.kubernetes.io/not-ready", "", "NoSchedule") {
            return false;
        }
        if nspec.unschedulable == Some(true)
            && !ref_tolerated(pod, "node.kubernetes.io/unschedulable", "", "NoSchedule")
        {
            return false;
        }
        for t in nspec.taints.iter().flatten() {
            if (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !ref_tolerated(pod, &t.key, t.value.as_deref().unwrap_or(""), &t.effect)
            {
                return false;
            }
        }
        let labels = node.metadata.labels.clone().unwrap_or_default();
        for (k, v) in spec.node_selector.iter().flatten() {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
        let ports = |p: &Pod| -> Vec<(String, String, i32)> {
            p.spec
                .as_ref()
                .unwrap()
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter(|cp| cp.host_port.unwrap_or(0) > 0)
                .map(|cp| {
                    let ip = cp.host_ip.clone().unwrap_or_default();
                    let ip = if ip.is_empty() {
                        "0.0.0.0".to_string()
                    } else {
                        ip
                    };
                    (
                        cp.protocol.clone().unwrap_or("TCP".into()),
                        ip,
                        cp.host_port.unwrap_or(0),
                    )
                })
                .collect()
        };
        for (proto, ip, port) in ports(pod) {
            for other in placed {
                for (p2, ip2, port2) in ports(other) {
                    if proto == p2
                        && port == port2
                        && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
                    {
                        return false;
                    }
                }
            }
        }
        let alloc = crate::resources::node_allocatable(node);
        let gpus = crate::resources::node_extended_allocatable(node)
            .first()
            .map(|(_, v)| *v)
            .unwrap_or(0);
        let mut used = pod_requests(spec);
        let mut used_gpu: i64 = pod_extended_requests(spec).iter().map(|(_, v)| v).sum();
        for other in placed {
            used.add(&pod_requests(other.spec.as_ref().unwrap()));
            used_gpu += pod_extended_requests(other.spec.as_ref().unwrap())
                .iter()
                .map(|(_, v)| v)
                .sum::<i64>();
        }
        let req = pod_requests(spec);
        used.pods <= alloc.pods
            && (req.milli_cpu == 0 || used.milli_cpu <= alloc.milli_cpu)
            && (req.memory == 0 || used.memory <= alloc.memory)
            && (req.ephemeral_storage == 0 || used.ephemeral_storage <= alloc.ephemeral_storage)
            && (used_gpu == 0 || pod_extended_requests(spec).is_empty() || used_gpu <= gpus)
    }

    fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
        &items[rng.random_range(0..items.len())]
    }

    fn random_node(rng: &mut StdRng, name: &str) -> Node {
        let mut alloc = json!({
            "cpu": pick(rng, &["500m", "1", "2", "4"]),
            "memory": pick(rng, &["512Mi", "1Gi", "2Gi", "4Gi"]),
            "pods": pick(rng, &["1", "2", "3", "5", "8"]),
        });
        if rng.random_bool(0.5) {
            alloc["ephemeral-storage"] = json!(pick(rng, &["1Gi", "10Gi"]));
        }
        if rng.random_bool(0.3) {
            alloc["example.com/gpu"] = json!(pick(rng, &["1", "2"]));
        }
        let labels = random_labels(rng);
        let all_taints = [
            json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
            json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"}),
            json!({"key": "spot", "effect": "NoExecute"}),
            json!({"key": "soft", "value": "x", "effect": "PreferNoSchedule"}),
        ];
        let taints: Vec<Value> = all_taints
            .iter()
            .filter(|_| rng.random_bool(0.2))
            .cloned()
            .collect();
        let ready = if rng.random_bool(0.93) {
            "True"
        } else {
            "False"
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints, "unschedulable": rng.random_bool(0.08)},
            "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    /// Node labels: usually a zone, often a disk type, sometimes strings used elsewhere as keys
    /// or values.
    fn random_labels(rng: &mut StdRng) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if rng.random_bool(0.9) {
            labels.insert("zone".into(), pick(rng, &["a", "b", "c"]).to_string());
        }
        if rng.random_bool(0.5) {
            labels.insert("disk".into(), pick(rng, &["ssd", "hdd"]).to_string());
        }
        if rng.random_bool(0.2) {
            let (k, v) = *pick(rng, &[("ssd", "disk"), ("a", "zone"), ("x", "ssd")]);
            labels.insert(k.into(), v.into());
        }
        labels
    }

    fn random_pod(rng: &mut StdRng, name: &str) -> Pod {
        let mut requests = serde_json::Map::new();
        if rng.random_bool(0.8) {
            requests.insert(
                "cpu".into(),
                json!(pick(rng, &["0", "100m", "250m", "500m", "1", "1500m"])),
            );
        }
        if rng.random_bool(0.7) {
            requests.insert(
                "memory".into(),
                json!(pick(rng, &["64Mi", "256Mi", "512Mi", "1Gi", "3Gi"])),
            );
        }
        if rng.random_bool(0.1) {
            requests.insert("ephemeral-storage".into(), json!("2Gi"));
        }
        if rng.random_bool(0.1) {
            requests.insert("example.com/gpu".into(), json!("1"));
        }
        let mut container = json!({"name": "c", "resources": {"requests": requests}});
        if rng.random_bool(0.3) {
            let port = json!({"containerPort": 80, "hostPort": pick(rng, &[80, 443]),
                              "hostIP": pick(rng, &["", "0.0.0.0", "10.0.0.1", "10.0.0.2"]),
                              "protocol": pick(rng, &["TCP", "UDP"])});
            container["ports"] = json!([port]);
        }
        let mut spec = json!({"containers": [container]});
        if rng.random_bool(0.2) {
            spec["initContainers"] = json!([{"name": "init", "resources": {"requests": {
                "cpu": pick(rng, &["1", "2"]), "memory": "128Mi"}}}]);
        }
        let all_tols = [
            json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
            json!({"key": "dedicated", "operator": "Exists"}),
            json!({"key": "spot", "operator": "Exists", "effect": "NoExecute"}),
            json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}),
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}),
            json!({"operator": "Exists"}),
        ];
        let tols: Vec<Value> = all_tols
            .iter()
            .enumerate()
            .filter(|(i, _)| rng.random_bool(if *i == 5 { 0.03 } else { 0.15 }))
            .map(|(_, t)| t.clone())
            .collect();
        spec["tolerations"] = json!(tols);
        match rng.random_range(0..6) {
            0 => spec["nodeSelector"] = json!({"zone": pick(rng, &["a", "b", "c"])}),
            1 => spec["nodeSelector"] = json!({"disk": "ssd"}),
            2 => {
                spec["nodeSelector"] = pick(
                    rng,
                    &[
                        json!({"zone": "a", "disk": "ssd"}),
                        json!({"ssd": "disk"}),
                        json!({"a": "zone"}),
                    ],
                )
                .clone()
            }
            _ => {}
        }
        let mut meta = json!({"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                              "labels": {"app": pick(rng, &["web", "db"])}});
        if rng.random_bool(0.5) {
            let rs = *pick(rng, &["rs-1", "rs-2", "rs-3"]);
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": rs, "uid": rs, "controller": true}]);
        }
        serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap()
    }

    #[test]
    fn property_schedules_only_where_pods_fit() {
        let mut rng = StdRng::seed_from_u64(0xA7011);
        let mut scheduled = 0;
        let mut unschedulable = 0;
        for case in 0..200 {
            let mut c = Cache::new();
            let node_count = match case % 4 {
                0 => rng.random_range(1..=5),
                1 | 2 => rng.random_range(5..=40),
                _ => rng.random_range(100..=160),
            };
            let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
            for i in 0..node_count {
                let name = format!("n{i}");
                let n = random_node(&mut rng, &name);
                c.upsert_node(Arc::new(n.clone()));
                nodes.insert(name, n);
            }
            if rng.random_bool(0.3) {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": "web", "namespace": "ns"}, "spec": {"selector": {"app": "web"}}}))
                .unwrap();
                c.upsert_service(Arc::new(svc));
            }
            // What the test believes is placed where, kept apart from the cache.
            let mut placed: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
            let mut assumed: BTreeMap<String, String> = BTreeMap::new();
            let pod_count = rng.random_range(1..=60);
            for i in 0..pod_count {
                let pod = Arc::new(random_pod(&mut rng, &format!("p{i}")));
                let pi = Arc::new(PodInfo::new(pod.clone()));
                // The production filters agree with the direct reading on every node, and the
                // search's filters (summaries, label ids) with them, failure for failure.
                for (name, n) in &nodes {
                    let here = placed.get(name).map(Vec::as_slice).unwrap_or_default();
                    let expect = ref_fits(&pod, n, here);
                    let full = filters::run(&pi, c.node(name).unwrap());
                    assert_eq!(full.is_ok(), expect, "case {case} pod {i} node {name}");
                    assert_eq!(
                        c.filter_node(&pi, name),
                        Some(full),
                        "case {case} pod {i} node {name}"
                    );
                }
                match c.schedule(&pi, &mut rng) {
                    Ok(name) => {
                        let here = placed.get(&name).map(Vec::as_slice).unwrap_or_default();
                        assert!(
                            ref_fits(&pod, &nodes[&name], here),
                            "case {case}: pod {i} put on {name} where it does not fit"
                        );
                        assert!(!c.is_placed(&pi.key), "pod scheduled twice");
                        c.assume(pi.clone(), &name);
                        placed.entry(name.clone()).or_default().push(pod.clone());
                        assumed.insert(pi.key.clone(), name);
                        scheduled += 1;
                    }
                    Err(e) => {
                        assert_eq!(e.nodes, node_count);
                        assert!(e.reasons.values().sum::<usize>() >= node_count, "{e}");
                        for (name, n) in &nodes {
                            let here = placed.get(name).map(Vec::as_slice).unwrap_or_default();
                            assert!(
                                !ref_fits(&pod, n, here),
                                "case {case}: {e} but pod {i} fits {name}"
                            );
                        }
                        unschedulable += 1;
                    }
                }
                // Now and then a binding fails, gets confirmed, or a pod goes away.
                if !assumed.is_empty() && rng.random_bool(0.15) {
                    let keys: Vec<String> = assumed.keys().cloned().collect();
                    let key = pick(&mut rng, &keys).clone();
                    let node = assumed[&key].clone();
                    let list = placed.get_mut(&node).unwrap();
                    let pos = list.iter().position(|p| pod_key(p) == key).unwrap();
                    match rng.random_range(0..3) {
                        0 => {
                            c.forget(&key);
                            list.remove(pos);
                            assumed.remove(&key);
                            assert!(!c.is_placed(&key));
                        }
                        1 => {
                            let mut p = (*list[pos]).clone();
                            p.spec.get_or_insert_default().node_name = Some(node.clone());
                            c.upsert_pod(Arc::new(p));
                            assumed.remove(&key);
                            assert!(c.is_placed(&key) && !c.is_assumed(&key));
                        }
                        _ => {
                            c.remove_pod(&key);
                            list.remove(pos);
                            assumed.remove(&key);
                            assert!(!c.is_placed(&key));
                        }
                    }
                }
                // Now and then a node's labels change, or the node goes and comes back.
                if rng.random_bool(0.15) {
                    let names: Vec<String> = nodes.keys().cloned().collect();
                    let name = pick(&mut rng, &names).clone();
                    let mut n = nodes[&name].clone();
                    n.metadata.labels = Some(random_labels(&mut rng));
                    if rng.random_bool(0.3) {
                        c.remove_node(&name);
                        assert!(c.node(&name).is_none());
                        check_consistency(&c);
                    }
                    c.upsert_node(Arc::new(n.clone()));
                    nodes.insert(name, n);
                }
                check_consistency(&c);
                // Nothing over-committed, recomputed from the test's own record.
                for (name, pods) in &placed {
                    let alloc = crate::resources::node_allocatable(&nodes[name]);
                    let mut sum = Resources::default();
                    for p in pods {
                        sum.add(&pod_requests(p.spec.as_ref().unwrap()));
                    }
                    assert!(
                        sum.pods <= alloc.pods,
                        "case {case}: {name} has too many pods"
                    );
                    assert!(
                        sum.milli_cpu <= alloc.milli_cpu,
                        "case {case}: {name} cpu over"
                    );
                    assert!(
                        sum.memory <= alloc.memory,
                        "case {case}: {name} memory over"
                    );
                    assert!(
                        sum.ephemeral_storage <= alloc.ephemeral_storage,
                        "case {case}: {name} storage over"
                    );
                    let gpus: i64 = pods
                        .iter()
                        .flat_map(|p| pod_extended_requests(p.spec.as_ref().unwrap()))
                        .map(|(_, v)| v)
                        .sum();
                    let have = crate::resources::node_extended_allocatable(&nodes[name])
                        .first()
                        .map(|(_, v)| *v)
                        .unwrap_or(0);
                    assert!(gpus <= have, "case {case}: {name} gpu over");
                    assert_eq!(c.node(name).unwrap().requested, sum, "case {case}: {name}");
                }
                for (key, node) in &assumed {
                    assert!(c.is_assumed(key));
                    assert_eq!(c.pod_node(key), Some(node.as_str()));
                }
            }
        }
        // The generator exercises both outcomes.
        assert!(
            scheduled > 1000 && unschedulable > 200,
            "{scheduled} scheduled, {unschedulable} unschedulable"
        );
    }
}
