//! The node lifecycle controller, as Kubernetes' `pkg/controller/nodelifecycle` with its NoExecute
//! taint manager:
//!
//! - [`monitor`]: every `node_monitor_period`, judges each node's health by when this controller last
//!   *saw* its heartbeat change (the `kube-node-lease` Lease's renewTime, the Ready condition's
//!   lastHeartbeatTime) — never by comparing those timestamps with its own clock, so clock skew cannot
//!   matter ([`health`]). A node silent for the grace period gets its kubelet conditions set to
//!   `Unknown`; its pods are marked not Ready; an unhealthy node is tainted
//!   `node.kubernetes.io/unreachable` or `node.kubernetes.io/not-ready` with effect NoExecute through a
//!   per-zone token-bucket limiter whose rate depends on how much of the zone is down ([`ratelimit`]).
//! - [`noschedule`]: the NoSchedule taints that mirror node conditions (Kubernetes'
//!   TaintNodesByCondition), so the scheduler stops placing pods on unhealthy nodes.
//! - [`eviction`]: deletes pods bound to NoExecute-tainted nodes that do not tolerate the taints, at
//!   once or after their smallest `tolerationSeconds`.

pub mod eviction;
pub mod health;
pub mod monitor;
pub mod noschedule;
pub mod podindex;
pub mod podstatus;
pub mod ratelimit;
pub mod taints;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::Context;

/// The namespace of the nodes' heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// How the node lifecycle controller runs (Kubernetes' kube-controller-manager flags of the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How often node health is checked (`--node-monitor-period`, default 5 s).
    pub node_monitor_period: Duration,
    /// How long a node may go unheard before it is marked unhealthy (`--node-monitor-grace-period`,
    /// default 40 s).
    pub node_monitor_grace_period: Duration,
    /// How long a node that never posted a Ready condition may go unheard
    /// (`--node-startup-grace-period`, default 60 s).
    pub node_startup_grace_period: Duration,
    /// Unhealthy nodes NoExecute-tainted per second in a healthy zone (`--node-eviction-rate`,
    /// default 0.1).
    pub node_eviction_rate: f64,
    /// The rate in a partially disrupted zone of a large cluster (`--secondary-node-eviction-rate`,
    /// default 0.01).
    pub secondary_node_eviction_rate: f64,
    /// The share of unhealthy nodes (with more than 2 of them) from which a zone counts as partially
    /// disrupted (`--unhealthy-zone-threshold`, default 0.55).
    pub unhealthy_zone_threshold: f64,
    /// Clusters of at most this many nodes stop tainting in a partially disrupted zone instead of
    /// slowing down (`--large-cluster-size-threshold`, default 50).
    pub large_cluster_size_threshold: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

/// Starts the node lifecycle controller: registers its informer handlers now, and runs the health
/// monitor, the NoSchedule tainter and the taint eviction manager once the caches are synced.
pub fn start(ctx: &Context) -> impl Future<Output = ()> + Send + 'static {
    let nodes = ctx.informers.get::<Node>();
    let pods = ctx.informers.get::<Pod>();
    let leases = ctx.informers.get::<Lease>();
    let by_node = podindex::PodsByNode::default();
    {
        let index = by_node.clone();
        pods.on_change(move |old, new| index.update(old, new));
    }
    let noschedule = noschedule::start(ctx, nodes.clone());
    let eviction = eviction::start(ctx, nodes.clone(), pods.clone(), by_node.clone());
    let monitor = monitor::Monitor::new(
        ctx.client.clone(),
        ctx.config.node_lifecycle.clone(),
        nodes.store(),
        leases.store(),
        pods.store(),
        by_node,
    );
    async move {
        nodes.synced().await;
        pods.synced().await;
        leases.synced().await;
        futures::join!(monitor.run(), noschedule, eviction);
    }
}

/// Parses a duration as Kubernetes' flags write them (Go's syntax): `40s`, `500ms`, `1m30s`, `1.5h`,
/// or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (e.g. 40s, 500ms, 1m30s)");
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "10x", "-1s", "1s5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
