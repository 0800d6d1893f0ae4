//! The kubelet's Prometheus metrics, named as Kubernetes' kubelet names them, served on the kubelet
//! server's `/metrics` and on the healthz address.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set of fixed names.
type Labels = Vec<(&'static str, String)>;

/// The kubelet's metrics.
pub struct Metrics {
    /// Pods with a ready sandbox (`kubelet_running_pods`).
    pub running_pods: Gauge,
    /// Containers by state: `created`, `running`, `exited`, `unknown` (`kubelet_running_containers`).
    pub running_containers: Family<Labels, Gauge>,
    /// Time from the kubelet first seeing a pod to the pod reported Running
    /// (`kubelet_pod_start_duration_seconds`).
    pub pod_start_duration: Histogram,
    /// Containers started, by type: `container`, `init_container` (`kubelet_started_containers_total`).
    pub started_containers: Family<Labels, Counter>,
    /// Containers that failed to start, by type (`kubelet_started_containers_errors_total`).
    pub started_container_errors: Family<Labels, Counter>,
    /// Always 1, labelled with the node's name (`kubelet_node_name`).
    pub node_name: Family<Labels, Gauge>,
}

impl Metrics {
    /// The metrics of the kubelet of node `node`, registered in `registry`.
    pub fn new(registry: &mut Registry, node: &str) -> Metrics {
        let m = Metrics {
            running_pods: Gauge::default(),
            running_containers: Family::default(),
            pod_start_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            started_containers: Family::default(),
            started_container_errors: Family::default(),
            node_name: Family::default(),
        };
        m.node_name
            .get_or_create(&vec![("node", node.to_string())])
            .set(1);
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            m.running_pods.clone(),
        );
        registry.register(
            "kubelet_running_containers",
            "Number of containers currently running, by state",
            m.running_containers.clone(),
        );
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration from the kubelet seeing a pod for the first time to the pod starting to run",
            m.pod_start_duration.clone(),
        );
        registry.register(
            "kubelet_started_containers",
            "Cumulative number of containers started, by type",
            m.started_containers.clone(),
        );
        registry.register(
            "kubelet_started_containers_errors",
            "Cumulative number of errors when starting containers, by type",
            m.started_container_errors.clone(),
        );
        registry.register(
            "kubelet_node_name",
            "The node's name; the count is always 1",
            m.node_name.clone(),
        );
        m
    }

    /// Counts a container start (`ok` false: it failed); `init` for init containers.
    pub fn container_started(&self, init: bool, ok: bool) {
        let kind = if init { "init_container" } else { "container" };
        let family = if ok {
            &self.started_containers
        } else {
            &self.started_container_errors
        };
        family
            .get_or_create(&vec![("container_type", kind.to_string())])
            .inc();
    }

    /// Sets the running pods and the containers by state from a relist of the runtime.
    pub fn runtime_counts(&self, pods: usize, containers: &[(&'static str, usize)]) {
        self.running_pods
            .set(i64::try_from(pods).unwrap_or(i64::MAX));
        for (state, n) in containers {
            self.running_containers
                .get_or_create(&vec![("container_state", (*state).to_string())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_kubelet_names() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry, "n1");
        m.container_started(false, true);
        m.container_started(true, false);
        m.runtime_counts(3, &[("running", 4), ("exited", 1)]);
        m.pod_start_duration.observe(0.2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kubelet_running_pods 3",
            "kubelet_running_containers{container_state=\"running\"} 4",
            "kubelet_started_containers_total{container_type=\"container\"} 1",
            "kubelet_started_containers_errors_total{container_type=\"init_container\"} 1",
            "kubelet_pod_start_duration_seconds_count 1",
            "kubelet_node_name{node=\"n1\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
