//! Filters: whether a pod may go to a node, with Kubernetes' reasons when it may not.
//!
//! [`run`] applies them in Kubernetes' order (not-Ready first) and stops at the first that fails,
//! returning a [`Failure`] that costs no allocation; [`reasons`] turns a failure into Kubernetes'
//! reason strings, only needed when the pod fits nowhere.
//!
//! [`PodFilter`] is the same check for a search over many nodes: what depends only on the pod is
//! worked out once, and each node is checked against its compact
//! [`NodeSummary`], reading the [`NodeInfo`] only where the summary says a filter may fail.

use crate::node_info::{NodeInfo, NodeSummary};
use crate::plugins::labels::{LabelId, NodeLabels, SelectorIds};
use crate::plugins::{selector_matches, tolerates};
use crate::pod_info::PodInfo;
use crate::resources::{Resources, extended_get};

/// Reason of the not-Ready check.
pub const REASON_NOT_READY: &str = "node(s) were not ready";
/// Reason of NodeUnschedulable.
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason of NodeName.
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// Reason of NodeAffinity.
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// Reason of NodePorts.
pub const REASON_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
/// Reason of NodeResourcesFit when the node is full.
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// Which filter rejected a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The node is not Ready and the pod does not tolerate `node.kubernetes.io/not-ready`.
    NotReady,
    /// NodeUnschedulable.
    Unschedulable,
    /// NodeName.
    NodeName,
    /// TaintToleration: index into the node's [`NodeInfo::hard_taints`] of the first untolerated
    /// taint.
    Taint(usize),
    /// NodeAffinity (nodeSelector or required node affinity).
    NodeAffinity,
    /// NodePorts.
    NodePorts,
    /// NodeResourcesFit (see [`insufficient_resources`] for which).
    Resources,
}

/// Node readiness: the Ready condition must be "True" unless the pod tolerates
/// `node.kubernetes.io/not-ready:NoSchedule`.
#[inline]
pub fn check_ready(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    if node.ready || pod.tolerates_not_ready {
        Ok(())
    } else {
        Err(Failure::NotReady)
    }
}

/// NodeUnschedulable: a cordoned node takes only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
#[inline]
pub fn check_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    if node.unschedulable && !pod.tolerates_unschedulable {
        Err(Failure::Unschedulable)
    } else {
        Ok(())
    }
}

/// NodeName: a pod naming a node in spec.nodeName goes only there.
#[inline]
pub fn check_node_name(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    match pod.node_name() {
        Some(name) if name != node.name => Err(Failure::NodeName),
        _ => Ok(()),
    }
}

/// TaintToleration: every NoSchedule and NoExecute taint must be tolerated.
#[inline]
pub fn check_taints(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    for (i, t) in node.hard_taints.iter().enumerate() {
        if !tolerates(&pod.tolerations, t) {
            return Err(Failure::Taint(i));
        }
    }
    Ok(())
}

/// NodeAffinity: spec.nodeSelector and the required node affinity terms.
#[inline]
pub fn check_node_affinity(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    if pod.node_selector.is_empty() && pod.required_affinity.is_none() {
        return Ok(());
    }
    let labels = node.labels();
    if !selector_matches(&pod.node_selector, labels) {
        return Err(Failure::NodeAffinity);
    }
    if let Some(terms) = &pod.required_affinity
        && !terms.iter().any(|t| t.matches(labels, &node.name))
    {
        return Err(Failure::NodeAffinity);
    }
    Ok(())
}

/// NodePorts: none of the pod's host ports may conflict with one already used on the node.
#[inline]
pub fn check_node_ports(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    let used = node.used_ports();
    if pod.host_ports.is_empty() || used.is_empty() {
        return Ok(());
    }
    if pod
        .host_ports
        .iter()
        .any(|p| used.iter().any(|u| u.conflicts(p)))
    {
        Err(Failure::NodePorts)
    } else {
        Ok(())
    }
}

/// NodeResourcesFit: room for one more pod and for every resource the pod requests.
#[inline]
pub fn check_resources(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    let ok = fits_base(
        &pod.requests,
        node.pod_count() as i64,
        &node.allocatable,
        &node.requested,
    ) && fits_extended(pod, node);
    if ok { Ok(()) } else { Err(Failure::Resources) }
}

/// Whether `req` fits where `alloc` is offered and `used` taken (0 and negative requests always
/// fit).
#[inline]
fn fits(req: i64, alloc: i64, used: i64) -> bool {
    req <= 0 || req <= alloc.saturating_sub(used)
}

/// NodeResourcesFit on pods, cpu, memory and ephemeral storage.
#[inline]
fn fits_base(r: &Resources, pods: i64, alloc: &Resources, used: &Resources) -> bool {
    pods < alloc.pods
        && fits(r.milli_cpu, alloc.milli_cpu, used.milli_cpu)
        && fits(r.memory, alloc.memory, used.memory)
        && fits(
            r.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        )
}

/// NodeResourcesFit on extended resources.
#[inline]
fn fits_extended(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.extended_requests.iter().all(|(name, v)| {
        fits(
            *v,
            extended_get(&node.extended_allocatable, name),
            extended_get(&node.extended_requested, name),
        )
    })
}

/// Every NodeResourcesFit reason for the node, in Kubernetes' order ("Too many pods", cpu,
/// memory, ephemeral-storage, then extended resources by name); empty when the pod fits.
pub fn insufficient_resources(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let alloc = &node.allocatable;
    let used = &node.requested;
    let r = &pod.requests;
    let mut out = Vec::new();
    if node.pod_count() as i64 + 1 > alloc.pods {
        out.push(REASON_TOO_MANY_PODS.to_string());
    }
    for (name, req, a, u) in [
        ("cpu", r.milli_cpu, alloc.milli_cpu, used.milli_cpu),
        ("memory", r.memory, alloc.memory, used.memory),
        (
            "ephemeral-storage",
            r.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        ),
    ] {
        if req > 0 && req > a.saturating_sub(u) {
            out.push(format!("Insufficient {name}"));
        }
    }
    for (name, v) in &pod.extended_requests {
        let a = extended_get(&node.extended_allocatable, name);
        let u = extended_get(&node.extended_requested, name);
        if *v > 0 && *v > a.saturating_sub(u) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

/// Runs the filters in Kubernetes' order and stops at the first that fails: not-Ready,
/// NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit.
#[inline]
pub fn run(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    check_ready(pod, node)?;
    check_unschedulable(pod, node)?;
    check_node_name(pod, node)?;
    check_taints(pod, node)?;
    check_node_affinity(pod, node)?;
    check_node_ports(pod, node)?;
    check_resources(pod, node)
}

/// Kubernetes' reason strings for `failure` of `pod` on `node`.
pub fn reasons(pod: &PodInfo, node: &NodeInfo, failure: Failure) -> Vec<String> {
    let one = |s: &str| vec![s.to_string()];
    match failure {
        Failure::NotReady => one(REASON_NOT_READY),
        Failure::Unschedulable => one(REASON_UNSCHEDULABLE),
        Failure::NodeName => one(REASON_NODE_NAME),
        Failure::Taint(i) => match node.hard_taints.get(i) {
            Some(t) => vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key, t.value
            )],
            None => one("node(s) had untolerated taint"),
        },
        Failure::NodeAffinity => one(REASON_NODE_AFFINITY),
        Failure::NodePorts => one(REASON_NODE_PORTS),
        Failure::Resources => insufficient_resources(pod, node),
    }
}

/// The filters for one pod over many nodes, with what depends only on the pod worked out once:
/// [`PodFilter::run`] gives exactly what [`run`] gives, from the node's [`NodeSummary`], reading
/// the [`NodeInfo`] only for filters the summary's flags say may fail (and for a spec.nodeName,
/// required node affinity or extended resources, which the summary does not hold).
#[derive(Debug)]
pub struct PodFilter<'a> {
    pod: &'a PodInfo,
    /// [`NodeSummary`] flags that, on a node, call for the not-Ready, NodeUnschedulable,
    /// TaintToleration and NodePorts checks.
    attention: u8,
    /// spec.nodeName.
    node_name: Option<&'a str>,
    /// spec.nodeSelector in label ids.
    selector: SelectorIds<'a>,
    /// The node labels the summaries' spans point into.
    labels: &'a NodeLabels,
}

impl<'a> PodFilter<'a> {
    /// Prepares the filters of `pod` for nodes whose summaries' labels are in `labels`, looking
    /// the pod's nodeSelector up there with `scratch` for the ids.
    pub fn new(
        pod: &'a PodInfo,
        labels: &'a NodeLabels,
        scratch: &'a mut Vec<LabelId>,
    ) -> PodFilter<'a> {
        let mut attention = NodeSummary::HARD_TAINTS;
        if !pod.tolerates_not_ready {
            attention |= NodeSummary::NOT_READY;
        }
        if !pod.tolerates_unschedulable {
            attention |= NodeSummary::UNSCHEDULABLE;
        }
        if !pod.host_ports.is_empty() {
            attention |= NodeSummary::USED_PORTS;
        }
        PodFilter {
            pod,
            attention,
            node_name: pod.node_name(),
            selector: SelectorIds::new(&pod.node_selector, labels.interner(), scratch),
            labels,
        }
    }

    /// [`run`] on the node that `summary` summarizes (with its labels in the [`NodeLabels`] given
    /// to [`PodFilter::new`]).
    #[inline]
    pub fn run(&self, summary: &NodeSummary, node: &NodeInfo) -> Result<(), Failure> {
        let attention = summary.any(self.attention);
        if attention {
            check_ready(self.pod, node)?;
            check_unschedulable(self.pod, node)?;
        }
        if let Some(name) = self.node_name
            && name != node.name
        {
            return Err(Failure::NodeName);
        }
        if attention {
            check_taints(self.pod, node)?;
        }
        if !self.selector.matches(self.labels.get(summary.labels)) {
            return Err(Failure::NodeAffinity);
        }
        if let Some(terms) = &self.pod.required_affinity
            && !terms.iter().any(|t| t.matches(node.labels(), &node.name))
        {
            return Err(Failure::NodeAffinity);
        }
        if attention {
            check_node_ports(self.pod, node)?;
        }
        let r = &self.pod.requests;
        let free = |req: i64, free: i64| req <= 0 || req <= free;
        let ok = !summary.any(NodeSummary::FULL)
            && free(r.milli_cpu, summary.free_milli_cpu)
            && free(r.memory, summary.free_memory)
            && free(r.ephemeral_storage, summary.free_ephemeral_storage)
            && (self.pod.extended_requests.is_empty() || fits_extended(self.pod, node));
        if ok { Ok(()) } else { Err(Failure::Resources) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{merge, node, pod};
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn why(p: &PodInfo, n: &NodeInfo) -> Vec<String> {
        match run(p, n) {
            Ok(()) => vec![],
            Err(f) => reasons(p, n, f),
        }
    }

    #[test]
    fn not_ready() {
        let p = pod("p", json!({}));
        let n = node(
            "n",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert_eq!(why(&p, &n), vec![REASON_NOT_READY]);
        let n = node("n", json!({"status": {"conditions": []}}));
        assert_eq!(why(&p, &n), vec![REASON_NOT_READY]);
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}}),
        );
        assert_eq!(why(&p, &n), Vec::<String>::new());
        // Not-ready comes before unschedulable.
        let p = pod("p", json!({}));
        let n = node(
            "n",
            json!({"spec": {"unschedulable": true}, "status": {"conditions": []}}),
        );
        assert_eq!(why(&p, &n), vec![REASON_NOT_READY]);
    }

    #[test]
    fn unschedulable() {
        let n = node("n", json!({"spec": {"unschedulable": true}}));
        assert_eq!(why(&pod("p", json!({})), &n), vec![REASON_UNSCHEDULABLE]);
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(run(&p, &n).is_ok());
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
        );
        assert!(run(&p, &n).is_ok());
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoExecute"}]}}),
        );
        assert_eq!(why(&p, &n), vec![REASON_UNSCHEDULABLE]);
    }

    #[test]
    fn node_name() {
        let p = pod("p", json!({"spec": {"nodeName": "a"}}));
        assert!(run(&p, &node("a", json!({}))).is_ok());
        assert_eq!(why(&p, &node("b", json!({}))), vec![REASON_NODE_NAME]);
    }

    #[test]
    fn taints() {
        let n = node(
            "n",
            json!({"spec": {"taints": [
                {"key": "soft", "effect": "PreferNoSchedule"},
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": "evict", "effect": "NoExecute"},
            ]}}),
        );
        assert_eq!(
            why(&pod("p", json!({})), &n),
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(why(&p, &n), vec!["node(s) had untolerated taint {evict: }"]);
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Exists"}, {"key": "evict", "operator": "Exists", "effect": "NoExecute"}]}}),
        );
        assert!(run(&p, &n).is_ok());
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
        );
        assert!(run(&p, &n).is_ok());
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "dedicated", "value": "cpu"}]}}),
        );
        assert_eq!(
            why(&p, &n),
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
    }

    #[test]
    fn node_affinity() {
        let n = node(
            "n1",
            json!({"metadata": {"labels": {"disk": "ssd", "zone": "a", "gen": "3"}}}),
        );
        let ok = |p: PodInfo| run(&p, &n).is_ok();
        assert!(ok(pod(
            "p",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}}})
        )));
        assert!(ok(pod(
            "p",
            json!({"spec": {"nodeSelector": {"disk": "ssd", "zone": "a"}}})
        )));
        assert!(!ok(pod(
            "p",
            json!({"spec": {"nodeSelector": {"disk": "hdd"}}})
        )));
        assert!(!ok(pod(
            "p",
            json!({"spec": {"nodeSelector": {"other": "x"}}})
        )));
        let aff = |terms: Value| {
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}})
        };
        assert!(ok(pod(
            "p",
            aff(
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}])
            )
        )));
        assert!(!ok(pod(
            "p",
            aff(
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}])
            )
        )));
        // Terms are ORed.
        assert!(ok(pod(
            "p",
            aff(json!([
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["2"]}]},
            ]))
        )));
        // Expressions are ANDed.
        assert!(!ok(pod(
            "p",
            aff(json!([{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "disk", "operator": "DoesNotExist"},
            ]}]))
        )));
        assert!(ok(pod(
            "p",
            aff(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])
            )
        )));
        assert!(!ok(pod(
            "p",
            aff(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}])
            )
        )));
        // An empty term matches nothing.
        assert!(!ok(pod("p", aff(json!([{}])))));
        // nodeSelector and affinity both apply.
        let mut v = aff(json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]));
        merge(&mut v, json!({"spec": {"nodeSelector": {"disk": "hdd"}}}));
        assert_eq!(why(&pod("p", v), &n), vec![REASON_NODE_AFFINITY]);
    }

    #[test]
    fn node_ports() {
        let mut n = node("n", json!({}));
        let with_port = |name: &str, port: Value| {
            pod(
                name,
                json!({"spec": {"containers": [{"name": "c", "ports": [port]}]}}),
            )
        };
        n.add_pod(Arc::new(with_port(
            "a",
            json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}),
        )));
        let ok = |p: PodInfo| run(&p, &n).is_ok();
        assert!(!ok(with_port(
            "b",
            json!({"containerPort": 80, "hostPort": 8080})
        )));
        assert!(!ok(with_port(
            "b",
            json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"})
        )));
        assert!(ok(with_port(
            "b",
            json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.2"})
        )));
        assert!(ok(with_port(
            "b",
            json!({"containerPort": 80, "hostPort": 8080, "protocol": "UDP"})
        )));
        assert!(ok(with_port(
            "b",
            json!({"containerPort": 80, "hostPort": 8081})
        )));
        assert!(ok(with_port("b", json!({"containerPort": 8080}))));
        assert_eq!(
            why(
                &with_port(
                    "b",
                    json!({"containerPort": 80, "hostPort": 8080, "hostIP": "0.0.0.0"})
                ),
                &n
            ),
            vec![REASON_NODE_PORTS]
        );
    }

    #[test]
    fn resources_fit() {
        let mut n = node(
            "n",
            json!({"status": {"allocatable": {"pods": "2", "example.com/gpu": "1"}}}),
        );
        let req = |name: &str, r: Value| {
            pod(
                name,
                json!({"spec": {"containers": [{"name": "c", "resources": {"requests": r}}]}}),
            )
        };
        assert!(run(&req("a", json!({"cpu": "4", "memory": "8Gi"})), &n).is_ok());
        n.add_pod(Arc::new(req("a", json!({"cpu": "3", "memory": "6Gi"}))));
        assert!(run(&req("b", json!({"cpu": "1", "memory": "2Gi"})), &n).is_ok());
        assert_eq!(
            why(&req("b", json!({"cpu": "1500m"})), &n),
            vec!["Insufficient cpu"]
        );
        assert_eq!(
            why(
                &req(
                    "b",
                    json!({"cpu": "2", "memory": "3Gi", "ephemeral-storage": "1"})
                ),
                &n
            ),
            vec![
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient ephemeral-storage"
            ]
        );
        assert_eq!(
            why(&req("b", json!({"example.com/gpu": "2"})), &n),
            vec!["Insufficient example.com/gpu"]
        );
        assert_eq!(
            why(&req("b", json!({"example.com/fpga": "1"})), &n),
            vec!["Insufficient example.com/fpga"]
        );
        assert!(run(&req("b", json!({"example.com/gpu": "1"})), &n).is_ok());
        // A zero request is not checked, even where nothing is left.
        n.add_pod(Arc::new(req("c", json!({"cpu": "1"}))));
        assert_eq!(why(&req("d", json!({})), &n), vec![REASON_TOO_MANY_PODS]);
        assert_eq!(
            why(&req("d", json!({"cpu": "1"})), &n),
            vec![REASON_TOO_MANY_PODS, "Insufficient cpu"]
        );
        n.remove_pod("ns/c");
        assert!(run(&req("d", json!({"cpu": "0"})), &n).is_ok());
    }

    #[test]
    fn pod_filter_agrees_with_run() {
        let mut nodes = [
            node(
                "a",
                json!({"metadata": {"labels": {"zone": "a", "disk": "ssd"}}}),
            ),
            node(
                "b",
                json!({"metadata": {"labels": {"zone": "b"}}, "spec": {"unschedulable": true}}),
            ),
            node("c", json!({"status": {"conditions": []}})),
            node(
                "d",
                json!({"spec": {"taints": [{"key": "t", "effect": "NoSchedule"}]},
                       "status": {"allocatable": {"cpu": "1", "pods": "1", "example.com/gpu": "1"}}}),
            ),
            node("e", json!({"status": {"allocatable": {"pods": "1"}}})),
        ];
        nodes[4].add_pod(Arc::new(pod(
            "x",
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}]}}),
        )));
        let mut labels = NodeLabels::new();
        let summaries: Vec<NodeSummary> = nodes
            .iter()
            .map(|n| NodeSummary {
                labels: labels.add(n.labels()),
                ..NodeSummary::new(n)
            })
            .collect();
        let pods = [
            json!({}),
            json!({"spec": {"nodeSelector": {"zone": "a"}}}),
            json!({"spec": {"nodeSelector": {"zone": "a", "disk": "hdd"}}}),
            json!({"spec": {"nodeSelector": {"zone": "nowhere"}}}),
            json!({"spec": {"nodeName": "b"}}),
            json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
            json!({"spec": {"tolerations": [{"key": "t", "operator": "Exists"}],
                            "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}}),
            json!({"spec": {"tolerations": [{"operator": "Exists"}],
                            "containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]}}),
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}],
                            "tolerations": [{"operator": "Exists"}]}}),
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}},
                            "tolerations": [{"operator": "Exists"}]}}),
        ];
        let mut scratch = Vec::new();
        for (i, v) in pods.into_iter().enumerate() {
            let p = pod(&format!("p{i}"), v);
            let filter = PodFilter::new(&p, &labels, &mut scratch);
            for (n, s) in nodes.iter().zip(&summaries) {
                assert_eq!(filter.run(s, n), run(&p, n), "pod {i} node {}", n.name);
            }
        }
    }

    #[test]
    fn stops_at_first_failing_filter() {
        let n = node(
            "n",
            json!({"spec": {"taints": [{"key": "t", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "1"}}}),
        );
        let p = pod(
            "p",
            json!({"spec": {"nodeSelector": {"x": "y"},
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}}),
        );
        assert_eq!(why(&p, &n), vec!["node(s) had untolerated taint {t: }"]);
        assert_eq!(check_node_affinity(&p, &n), Err(Failure::NodeAffinity));
        assert_eq!(check_resources(&p, &n), Err(Failure::Resources));
    }
}
