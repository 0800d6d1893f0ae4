//! How fast unhealthy nodes are NoExecute-tainted (and so their pods evicted), per zone, as Kubernetes'
//! node lifecycle controller decides it: each zone has a token bucket (burst 1) at
//! `--node-eviction-rate` nodes/s; a zone with more than 2 unhealthy nodes making up at least
//! `--unhealthy-zone-threshold` of it is partially disrupted and slows to
//! `--secondary-node-eviction-rate` in clusters larger than `--large-cluster-size-threshold` (to 0 in
//! smaller ones); a zone with no healthy node is fully disrupted and keeps the normal rate — unless
//! every zone is, when nothing is tainted at all (the control plane, not the nodes, is probably cut
//! off). A node's zone is its `topology.kubernetes.io/region` and `.../zone` labels; nodes without
//! them share one zone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use k8s_openapi::api::core::v1::Node;
use tokio::time::Instant;

/// The label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The label naming a node's region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// A node with this label is left out of the zones' health (it can still be tainted).
pub const EXCLUDE_DISRUPTION_LABEL: &str = "node.kubernetes.io/exclude-disruption";

/// A token bucket with a burst of one (client-go's `NewTokenBucketRateLimiter(qps, 1)`); a rate of 0
/// or less never lets anything through.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket filling at `qps` tokens per second.
    pub fn new(qps: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            qps,
            tokens: 1.0,
            last: now,
        }
    }

    /// The rate.
    pub fn qps(&self) -> f64 {
        self.qps
    }

    /// Takes a token if there is one at `now`.
    pub fn try_accept(&mut self, now: Instant) -> bool {
        if self.qps <= 0.0 || !self.qps.is_finite() {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(1.0);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Changes the rate as client-go's `SwapLimiter` does: a new full bucket, drained at once if the
    /// old one had no token left (so a swap cannot be used to skip the wait).
    pub fn swap(&mut self, qps: f64, now: Instant) {
        if self.qps == qps {
            return;
        }
        let mut fresh = TokenBucket::new(qps, now);
        if !self.try_accept(now) {
            fresh.try_accept(now);
        }
        *self = fresh;
    }
}

/// A zone's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    /// Just seen; no rate decided yet.
    Initial,
    /// Few unhealthy nodes: the normal rate.
    Normal,
    /// Many unhealthy nodes: the secondary rate (or none in a small cluster).
    PartialDisruption,
    /// No healthy node.
    FullDisruption,
}

/// A zone's state from its counts of Ready and not Ready nodes (Kubernetes' `ComputeZoneState`).
pub fn zone_state(ready: usize, not_ready: usize, threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The zone key of a node (Kubernetes' `GetZoneKey`): "" for a node without zone labels.
pub fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str, beta: &str| {
        labels
            .and_then(|l| l.get(k).or_else(|| l.get(beta)))
            .cloned()
            .unwrap_or_default()
    };
    let region = get(REGION_LABEL, "failure-domain.beta.kubernetes.io/region");
    let zone = get(ZONE_LABEL, "failure-domain.beta.kubernetes.io/zone");
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\u{0}:{zone}")
    }
}

/// Whether the node is left out of the zones' health.
pub fn excluded(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_DISRUPTION_LABEL))
}

/// The rates and thresholds (from the controller's settings).
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Nodes per second in a healthy (or single fully disrupted) zone.
    pub normal: f64,
    /// Nodes per second in a partially disrupted zone of a large cluster.
    pub secondary: f64,
    /// The unhealthy share from which a zone is partially disrupted.
    pub threshold: f64,
    /// Clusters larger than this slow down instead of stopping in a partial disruption.
    pub large_cluster: usize,
}

impl Rates {
    /// The rate for a zone of `size` counted nodes in `state`.
    pub fn qps(&self, state: ZoneState, size: usize) -> f64 {
        match state {
            ZoneState::Initial | ZoneState::Normal | ZoneState::FullDisruption => self.normal,
            ZoneState::PartialDisruption if size > self.large_cluster => self.secondary,
            ZoneState::PartialDisruption => 0.0,
        }
    }
}

/// What a health pass changed about the cluster as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing cluster-wide.
    None,
    /// Every zone just became fully disrupted: tainting stops.
    EnteredFullDisruption,
    /// Some node is healthy again after a full disruption: every node gets a fresh grace period.
    ExitedFullDisruption,
}

/// One zone's tainting queue (Kubernetes' `RateLimitedTimedQueue`): nodes waiting for a token, in
/// order. A node stays remembered after it was tainted, until it is healthy again or gone.
#[derive(Debug)]
struct Tainter {
    limiter: TokenBucket,
    queue: VecDeque<String>,
    known: BTreeSet<String>,
}

/// Every zone's state and tainting queue.
#[derive(Debug)]
pub struct Zones {
    rates: Rates,
    states: BTreeMap<String, ZoneState>,
    tainters: BTreeMap<String, Tainter>,
}

impl Zones {
    /// No zones yet.
    pub fn new(rates: Rates) -> Zones {
        Zones {
            rates,
            states: BTreeMap::new(),
            tainters: BTreeMap::new(),
        }
    }

    /// The state of `zone`, if it has counted nodes.
    pub fn state(&self, zone: &str) -> Option<ZoneState> {
        self.states.get(zone).copied()
    }

    /// Whether every zone with counted nodes has no healthy node (then nothing is tainted).
    pub fn all_fully_disrupted(&self) -> bool {
        !self.states.is_empty()
            && self
                .states
                .values()
                .all(|s| *s == ZoneState::FullDisruption)
    }

    fn tainter(&mut self, zone: &str, now: Instant) -> &mut Tainter {
        let normal = self.rates.normal;
        self.tainters
            .entry(zone.to_string())
            .or_insert_with(|| Tainter {
                limiter: TokenBucket::new(normal, now),
                queue: VecDeque::new(),
                known: BTreeSet::new(),
            })
    }

    /// Takes in this pass's counts of Ready and not Ready nodes per zone (Kubernetes'
    /// `handleDisruption`) and sets each zone's rate.
    pub fn update(
        &mut self,
        counts: &BTreeMap<String, (usize, usize)>,
        now: Instant,
    ) -> Transition {
        let fresh: BTreeMap<String, ZoneState> = counts
            .iter()
            .map(|(z, (r, n))| (z.clone(), zone_state(*r, *n, self.rates.threshold)))
            .collect();
        let all_are = fresh.values().all(|s| *s == ZoneState::FullDisruption);
        self.states.retain(|z, _| fresh.contains_key(z));
        for z in fresh.keys() {
            self.states.entry(z.clone()).or_insert(ZoneState::Initial);
            self.tainter(z, now);
        }
        let all_were = self
            .states
            .values()
            .all(|s| *s == ZoneState::FullDisruption);
        if all_are && all_were {
            return Transition::None;
        }
        let size = |z: &str| counts.get(z).map_or(0, |(r, n)| r + n);
        if all_are {
            tracing::info!("every node is not Ready: NoExecute tainting and evictions stop");
            for (z, s) in self.states.iter_mut() {
                if let Some(t) = self.tainters.get_mut(z) {
                    t.limiter.swap(0.0, now);
                }
                *s = ZoneState::FullDisruption;
            }
            return Transition::EnteredFullDisruption;
        }
        let zones: Vec<String> = self.states.keys().cloned().collect();
        for z in &zones {
            let new = fresh.get(z).copied().unwrap_or(ZoneState::Normal);
            if !all_were && self.states.get(z) == Some(&new) {
                continue;
            }
            if self.states.get(z) != Some(&new) {
                tracing::info!(zone = %z, state = ?new, "zone changed state");
            }
            let qps = self.rates.qps(new, size(z));
            self.tainter(z, now).limiter.swap(qps, now);
            self.states.insert(z.clone(), new);
        }
        if all_were {
            tracing::info!("some node is Ready again: leaving full disruption");
            Transition::ExitedFullDisruption
        } else {
            Transition::None
        }
    }

    /// Queues `node` of `zone` for a NoExecute taint, unless it already is queued or was tainted.
    pub fn enqueue(&mut self, zone: &str, node: &str, now: Instant) {
        let t = self.tainter(zone, now);
        if t.known.insert(node.to_string()) {
            t.queue.push_back(node.to_string());
        }
    }

    /// Forgets `node` (healthy again, or gone): it is queued afresh when next unhealthy.
    pub fn forget(&mut self, node: &str) {
        for t in self.tainters.values_mut() {
            if t.known.remove(node) {
                t.queue.retain(|n| n != node);
            }
        }
    }

    /// Forgets every node but those in `keep`.
    pub fn retain(&mut self, keep: &BTreeSet<String>) {
        for t in self.tainters.values_mut() {
            t.known.retain(|n| keep.contains(n));
            t.queue.retain(|n| keep.contains(n));
        }
    }

    /// The queued nodes whose zone's limiter has a token now, each taking one, in queue order.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut out = vec![];
        for t in self.tainters.values_mut() {
            while !t.queue.is_empty() && t.limiter.try_accept(now) {
                out.extend(t.queue.pop_front());
            }
        }
        out
    }

    /// Puts back a node whose tainting failed, to be tried again with the next token.
    pub fn requeue(&mut self, zone: &str, node: &str, now: Instant) {
        let t = self.tainter(zone, now);
        t.known.insert(node.to_string());
        if !t.queue.iter().any(|n| n == node) {
            t.queue.push_back(node.to_string());
        }
    }

    /// The current rate of `zone`'s limiter.
    pub fn qps(&self, zone: &str) -> Option<f64> {
        self.tainters.get(zone).map(|t| t.limiter.qps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rates() -> Rates {
        Rates {
            normal: 0.1,
            secondary: 0.01,
            threshold: 0.55,
            large_cluster: 50,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn token_bucket_lets_one_through_per_period() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.1, t0);
        assert!(b.try_accept(t0), "starts full");
        assert!(!b.try_accept(t0));
        assert!(!b.try_accept(t0 + secs(9.9)));
        assert!(b.try_accept(t0 + secs(10.0)));
        // Tokens do not pile up beyond the burst of one.
        assert!(b.try_accept(t0 + secs(100.0)));
        assert!(!b.try_accept(t0 + secs(100.0)));
        let mut never = TokenBucket::new(0.0, t0);
        assert!(!never.try_accept(t0 + secs(1e6)));
    }

    #[test]
    fn swapping_rates_never_skips_the_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.1, t0);
        assert!(b.try_accept(t0));
        // Emptied: the new bucket starts empty too.
        b.swap(1.0, t0);
        assert!(!b.try_accept(t0));
        assert!(b.try_accept(t0 + secs(1.0)));
        // The same rate: kept as it is.
        b.swap(1.0, t0 + secs(1.0));
        assert!(!b.try_accept(t0 + secs(1.0)));
        // A full one swaps to a full one.
        b.swap(0.5, t0 + secs(10.0));
        assert!(b.try_accept(t0 + secs(10.0)));
        b.swap(0.0, t0 + secs(20.0));
        assert!(!b.try_accept(t0 + secs(100.0)));
        assert_eq!(b.qps(), 0.0);
    }

    #[test]
    fn zone_states_as_kubernetes_computes_them() {
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
        // Two unhealthy nodes are never a partial disruption, whatever the share.
        assert_eq!(zone_state(1, 2, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(1, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        let r = rates();
        assert_eq!(r.qps(ZoneState::Normal, 10), 0.1);
        assert_eq!(r.qps(ZoneState::FullDisruption, 10), 0.1);
        assert_eq!(r.qps(ZoneState::PartialDisruption, 50), 0.0);
        assert_eq!(r.qps(ZoneState::PartialDisruption, 51), 0.01);
    }

    #[test]
    fn zones_slow_down_stop_and_resume() {
        let t0 = Instant::now();
        let mut z = Zones::new(rates());
        let one = |r, n| BTreeMap::from([(String::new(), (r, n))]);
        assert_eq!(z.update(&one(4, 0), t0), Transition::None);
        assert_eq!(z.state(""), Some(ZoneState::Normal));
        assert_eq!(z.qps(""), Some(0.1));
        // 3 of 4 down in a small cluster: stop.
        assert_eq!(z.update(&one(1, 3), t0), Transition::None);
        assert_eq!(z.state(""), Some(ZoneState::PartialDisruption));
        assert_eq!(z.qps(""), Some(0.0));
        z.enqueue("", "a", t0);
        assert!(z.due(t0 + secs(100.0)).is_empty());
        // All down: full disruption, nothing tainted.
        assert_eq!(z.update(&one(0, 4), t0), Transition::EnteredFullDisruption);
        assert!(z.all_fully_disrupted());
        assert_eq!(z.update(&one(0, 4), t0), Transition::None);
        assert!(z.due(t0 + secs(100.0)).is_empty());
        // One back: leave it, at the rate for the new state.
        assert_eq!(
            z.update(&one(3, 1), t0 + secs(200.0)),
            Transition::ExitedFullDisruption
        );
        assert!(!z.all_fully_disrupted());
        assert_eq!(z.qps(""), Some(0.1));
        // The stopped limiter had no token, so the new one starts empty.
        assert!(z.due(t0 + secs(200.0)).is_empty());
        assert_eq!(z.due(t0 + secs(210.0)), vec!["a"]);
        // Tainted nodes are remembered until forgotten.
        z.enqueue("", "a", t0 + secs(300.0));
        assert!(z.due(t0 + secs(300.0)).is_empty());
        z.forget("a");
        z.enqueue("", "a", t0 + secs(300.0));
        assert_eq!(z.due(t0 + secs(300.0)), vec!["a"]);
    }

    #[test]
    fn a_large_cluster_slows_down_and_one_dead_zone_of_many_keeps_the_normal_rate() {
        let t0 = Instant::now();
        let mut z = Zones::new(rates());
        let counts = BTreeMap::from([("a".to_string(), (20, 40)), ("b".to_string(), (0, 5))]);
        z.update(&counts, t0);
        assert_eq!(z.state("a"), Some(ZoneState::PartialDisruption));
        assert_eq!(z.qps("a"), Some(0.01));
        assert_eq!(z.state("b"), Some(ZoneState::FullDisruption));
        assert_eq!(z.qps("b"), Some(0.1));
        assert!(!z.all_fully_disrupted());
        // A zone that went is forgotten.
        z.update(&BTreeMap::from([("a".to_string(), (60, 0))]), t0);
        assert_eq!(z.state("b"), None);
        assert_eq!(z.qps("a"), Some(0.1));
    }

    #[test]
    fn zone_keys_from_topology_labels() {
        let node = |labels: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n", "labels": labels}}))
                .expect("node")
        };
        assert_eq!(zone_of(&node(serde_json::json!({}))), "");
        assert_eq!(
            zone_of(&node(
                serde_json::json!({ZONE_LABEL: "z1", REGION_LABEL: "r"})
            )),
            "r:\u{0}:z1"
        );
        assert!(excluded(&node(
            serde_json::json!({EXCLUDE_DISRUPTION_LABEL: ""})
        )));
    }
}
