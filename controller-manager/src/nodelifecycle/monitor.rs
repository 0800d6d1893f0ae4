//! The health monitor (Kubernetes' `monitorNodeHealth` and `doNoExecuteTaintingPass`): every
//! `node_monitor_period` it judges each node's health from the caches, marks silent nodes' conditions
//! `Unknown`, marks pods on unhealthy nodes not Ready, decides each zone's tainting rate, and queues
//! unhealthy nodes for their NoExecute taint; every 100 ms it taints the queued nodes its zones'
//! limiters let through. Everything is decided afresh from the caches on every pass, so a failed
//! write is simply tried again on the next one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use atoll_client::events::{EventType, Recorder};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Resource, ResourceExt};
use tokio::time::{Instant, MissedTickBehavior};

use super::health::{self, Heartbeat};
use super::podindex::{self, PodsByNode};
use super::ratelimit::{self, Rates, Transition, Zones};
use super::taints::{self, NO_EXECUTE, NOT_READY, UNREACHABLE};
use super::{NODE_LEASE_NAMESPACE, Settings, podstatus};
use crate::informer::{Store, split_key};

/// How often queued nodes are offered to their zone's limiter (Kubernetes' `NodeEvictionPeriod`).
const TAINTING_PERIOD: Duration = Duration::from_millis(100);

/// The health monitor's state: what it last heard of each node, and each zone's tainting queue.
pub struct Monitor {
    settings: Settings,
    client: kube::Client,
    nodes_api: Api<Node>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    by_node: PodsByNode,
    health: HashMap<String, Heartbeat>,
    /// The nodes seen so far, to tell of nodes coming and going.
    known: HashMap<String, ObjectReference>,
    /// Each node's Ready status as the last pass judged it (including what it wrote itself).
    judged: HashMap<String, String>,
    zones: Zones,
    recorder: Recorder,
}

/// The NoExecute taint a node with this Ready status gets, and the opposite one it loses.
fn no_execute_for(ready: &str) -> Option<(Taint, Taint)> {
    let unreachable = taints::taint(UNREACHABLE, NO_EXECUTE);
    let not_ready = taints::taint(NOT_READY, NO_EXECUTE);
    match ready {
        "False" => Some((not_ready, unreachable)),
        "Unknown" => Some((unreachable, not_ready)),
        _ => None,
    }
}

impl Monitor {
    /// A monitor over the informers' stores.
    pub fn new(
        client: kube::Client,
        settings: Settings,
        nodes: Store<Node>,
        leases: Store<Lease>,
        pods: Store<Pod>,
        by_node: PodsByNode,
    ) -> Monitor {
        let rates = Rates {
            normal: settings.node_eviction_rate,
            secondary: settings.secondary_node_eviction_rate,
            threshold: settings.unhealthy_zone_threshold,
            large_cluster: settings.large_cluster_size_threshold,
        };
        Monitor {
            settings,
            nodes_api: Api::all(client.clone()),
            recorder: Recorder::new(client.clone(), "node-controller", None),
            client,
            nodes,
            leases,
            pods,
            by_node,
            health: HashMap::new(),
            known: HashMap::new(),
            judged: HashMap::new(),
            zones: Zones::new(rates),
        }
    }

    /// Runs the health passes and the tainting passes, forever.
    pub async fn run(mut self) {
        let period = self
            .settings
            .node_monitor_period
            .max(Duration::from_millis(10));
        let mut monitor = tokio::time::interval(period);
        monitor.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tainting = tokio::time::interval(TAINTING_PERIOD);
        tainting.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = monitor.tick() => self.pass(Instant::now()).await,
                _ = tainting.tick() => self.tainting_pass(Instant::now()).await,
            }
        }
    }

    /// One health pass over every node.
    pub async fn pass(&mut self, now: Instant) {
        let nodes = self.nodes.list();
        let names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.register(&nodes, &names);
        self.health.retain(|n, _| names.contains(n));
        self.judged.retain(|n, _| names.contains(n));
        self.zones.retain(&names);
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut judged = Vec::with_capacity(nodes.len());
        for node in nodes {
            let ready = self.check_health(&node, now).await;
            if !ratelimit::excluded(&node) {
                let c = counts.entry(ratelimit::zone_of(&node)).or_default();
                if ready.as_deref() == Some("True") {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
            match &ready {
                Some(r) => self.judged.insert(node.name_any(), r.clone()),
                None => self.judged.remove(&node.name_any()),
            };
            judged.push((node, ready));
        }
        if self.zones.update(&counts, now) == Transition::ExitedFullDisruption {
            // As Kubernetes does: every node gets a full grace period again.
            for hb in self.health.values_mut() {
                hb.reset(now);
            }
        }
        let stopped = self.zones.all_fully_disrupted();
        for (node, ready) in judged {
            let Some(ready) = ready else { continue };
            self.taint_decision(&node, &ready, stopped, now).await;
            if ready != "True" {
                self.mark_pods_not_ready(&node).await;
            }
        }
    }

    /// Tells of nodes this controller sees for the first time and of nodes that went, as Kubernetes'
    /// `RegisteredNode` and `RemovingNode` events.
    /// Recorded in the background, so that a first pass over many nodes is not held up.
    fn register(&mut self, nodes: &[Arc<Node>], names: &BTreeSet<String>) {
        let mut events = vec![];
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = self.known.remove(&name) {
                let message = format!("Removing Node {name} from Controller");
                events.push((r, "RemovingNode", message));
            }
        }
        for node in nodes {
            if let std::collections::hash_map::Entry::Vacant(e) = self.known.entry(node.name_any())
            {
                let r = node.object_ref(&());
                let message = format!("Registered Node {} in Controller", e.key());
                events.push((r.clone(), "RegisteredNode", message));
                e.insert(r);
            }
        }
        if events.is_empty() {
            return;
        }
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            for (r, reason, message) in events {
                recorder
                    .record(&r, EventType::Normal, reason, &message)
                    .await;
            }
        });
    }

    /// Takes in the node's heartbeats and, if it has been silent too long, writes its conditions as
    /// `Unknown`. Returns its Ready status as judged now.
    async fn check_health(&mut self, node: &Node, now: Instant) -> Option<String> {
        let name = node.name_any();
        let lease = self.leases.get(NODE_LEASE_NAMESPACE, &name);
        let hb = self
            .health
            .entry(name.clone())
            .and_modify(|h| h.observe(node, lease.as_deref(), now))
            .or_insert_with(|| Heartbeat::first(node, lease.as_deref(), now));
        let before = health::ready(node).map(str::to_string);
        let grace = health::grace_period(
            node,
            self.settings.node_monitor_grace_period,
            self.settings.node_startup_grace_period,
        );
        if !hb.timed_out(grace, now) {
            return before;
        }
        let Some(conditions) = health::mark_unknown(node, &Time(jiff::Timestamp::now())) else {
            return before;
        };
        if let Err(e) = health::write_conditions(&self.nodes_api, node, &conditions).await {
            tracing::info!(node = %name, "marking the node's status Unknown: {e}");
            return before;
        }
        tracing::info!(node = %name, "node stopped posting status: Ready is Unknown");
        if let Some(hb) = self.health.get_mut(&name) {
            hb.wrote(&conditions);
        }
        if before.as_deref() == Some("True") {
            let message = format!("Node {name} status is now: NodeNotReady");
            self.recorder
                .record(
                    &node.object_ref(&()),
                    EventType::Normal,
                    "NodeNotReady",
                    &message,
                )
                .await;
        }
        Some("Unknown".into())
    }

    /// Kubernetes' `processTaintBaseEviction`: a Ready node loses its NoExecute taints; an unhealthy
    /// one has the opposite taint swapped at once, or is queued for its taint. While every zone is
    /// fully disrupted, no node keeps or gets one.
    async fn taint_decision(&mut self, node: &Node, ready: &str, stopped: bool, now: Instant) {
        let name = node.name_any();
        let wanted = no_execute_for(ready);
        match wanted {
            Some((add, remove)) if !stopped => {
                if taints::has(node, &remove) {
                    self.swap(node, &[add], &[remove]).await;
                } else if !taints::has(node, &add) {
                    self.zones.enqueue(&ratelimit::zone_of(node), &name, now);
                }
            }
            _ => {
                self.zones.forget(&name);
                let remove = [
                    taints::taint(UNREACHABLE, NO_EXECUTE),
                    taints::taint(NOT_READY, NO_EXECUTE),
                ];
                if remove.iter().any(|t| taints::has(node, t))
                    && self.swap(node, &[], &remove).await
                {
                    tracing::info!(node = %name, "removed the node's NoExecute taints");
                }
            }
        }
    }

    /// Swaps taints on the node, logging a failure (the next pass tries again). Whether it changed.
    async fn swap(&self, node: &Node, add: &[Taint], remove: &[Taint]) -> bool {
        match taints::swap_taints(&self.nodes_api, node, add, remove).await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::info!(node = %node.name_any(), "changing the node's taints: {e}");
                false
            }
        }
    }

    /// One tainting pass: the queued nodes whose zone has a token get their NoExecute taint.
    pub async fn tainting_pass(&mut self, now: Instant) {
        for name in self.zones.due(now) {
            let Some(node) = self.nodes.get("", &name) else {
                continue;
            };
            // The status as judged (the cache may not show what the last pass wrote yet).
            let Some((add, remove)) = self.judged.get(&name).and_then(|r| no_execute_for(r)) else {
                continue;
            };
            match taints::swap_taints(
                &self.nodes_api,
                &node,
                std::slice::from_ref(&add),
                &[remove],
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(node = %name, taint = %add.key, "tainted the node NoExecute")
                }
                Err(e) => {
                    tracing::info!(node = %name, "tainting the node: {e}");
                    self.zones.requeue(&ratelimit::zone_of(&node), &name, now);
                }
            }
        }
    }

    /// Kubernetes' `MarkPodsNotReady`: the pods bound to an unhealthy node are no longer Ready.
    async fn mark_pods_not_ready(&self, node: &Node) {
        let name = node.name_any();
        let now = Time(jiff::Timestamp::now());
        for key in self.by_node.pods(&name) {
            let Some(pod) = self.pods.get_key(&key) else {
                continue;
            };
            if podindex::node_of(&pod) != Some(name.as_str()) {
                continue;
            }
            let Some(ready) = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            else {
                continue;
            };
            let not_ready = PodCondition {
                status: "False".into(),
                ..ready.clone()
            };
            let Some(conditions) = podstatus::with_condition(&pod, not_ready, &now) else {
                continue;
            };
            let (ns, _) = split_key(&key);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            match podstatus::write(&api, &pod, &conditions).await {
                Ok(()) => {
                    tracing::info!(pod = %key, node = %name, "marked the pod not Ready");
                    self.recorder
                        .record(
                            &pod.object_ref(&()),
                            EventType::Warning,
                            "NodeNotReady",
                            "Node is not ready",
                        )
                        .await;
                }
                Err(e) => tracing::info!(pod = %key, "marking the pod not Ready: {e}"),
            }
        }
    }
}
