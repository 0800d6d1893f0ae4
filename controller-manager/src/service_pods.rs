//! What the Endpoints and EndpointSlice controllers share: which services a pod backs, which pods
//! count as endpoints, their addresses and named ports (Kubernetes' `endpointutil` and `FindPort`),
//! the informer handlers that turn pod and service changes into service keys, and API error helpers.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::informer::{self, Informer, Store};
use crate::podutil;
use crate::queue::Queue;

/// The workers per controller (Kubernetes' `--concurrent-service-endpoint-syncs` default).
pub const WORKERS: usize = 5;

/// The service's selector if the controllers manage its endpoints: it has a non-empty selector and is
/// not of type ExternalName. Services without one are left to whoever writes their endpoints.
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `selector` (a non-empty equality selector) matches `labels`.
pub fn matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pods in the service's namespace that its selector selects (none if it has no managed selector).
pub fn selected_pods(svc: &Service, pods: &Store<Pod>) -> Vec<std::sync::Arc<Pod>> {
    let Some(selector) = managed_selector(svc) else {
        return vec![];
    };
    let ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let mut selected: Vec<_> = pods
        .list_namespace(ns)
        .into_iter()
        .filter(|p| matches(selector, p.metadata.labels.as_ref()))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

/// Whether the service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether the service has a cluster IP (Kubernetes' `IsServiceIPSet`).
pub fn has_cluster_ip(svc: &Service) -> bool {
    !matches!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        None | Some("") | Some("None")
    )
}

/// Whether a pod belongs in the service's endpoints at all (Kubernetes' `ShouldPodBeInEndpoints`):
/// it has an IP, has not finished, and is not being deleted unless `include_terminating`.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    !matches!(podutil::phase(pod), "Succeeded" | "Failed")
        && !pod_ips(pod).is_empty()
        && (include_terminating || !podutil::is_deleting(&pod.metadata))
}

/// The pod's IPs: `status.podIPs`, with `status.podIP` authoritative for the first one (as the API
/// server's conversion treats a kubelet that only sets `podIP`).
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return vec![];
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    match status.pod_ip.as_deref() {
        Some(ip) if !ip.is_empty() && ips.first().map(String::as_str) != Some(ip) => {
            vec![ip.to_string()]
        }
        _ => ips,
    }
}

/// Whether `ip` is an IPv6 address.
pub fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// The container port a service port reaches on this pod (Kubernetes' `FindPort`): a number as is; a
/// name looked up among the containers' (then restartable init containers') ports with the service
/// port's protocol. None if the pod has no such named port.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        Some(IntOrString::String(name)) => name,
        Some(IntOrString::Int(n)) => return Some(*n),
        None => return Some(port.port),
    };
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// The pod's hostname if the service publishes it (Kubernetes' `ShouldSetHostname`: the pod's
/// subdomain is the service's name, in the same namespace).
pub fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.to_string())
}

/// The `targetRef` of a pod's endpoint.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's node name, if it is bound.
pub fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// Whether the service has `publishNotReadyAddresses: true`.
pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// Everything about a pod that endpoints are made of; a pod change that leaves it alone changes no
/// endpoints.
fn endpoint_view(pod: &Pod) -> impl PartialEq + use<> {
    (
        pod.metadata.uid.clone(),
        pod.metadata.labels.clone(),
        pod.metadata.deletion_timestamp.is_some(),
        podutil::phase(pod).to_string(),
        podutil::is_ready(pod),
        pod_ips(pod),
        pod.spec
            .as_ref()
            .map(|s| (s.node_name.clone(), s.hostname.clone(), s.subdomain.clone())),
    )
}

/// Queues the key of every service `pod` backs (through the labels it has or had).
fn queue_services_of(
    queue: &Queue,
    services: &Store<Service>,
    old: Option<&Pod>,
    new: Option<&Pod>,
) {
    if let (Some(o), Some(n)) = (old, new)
        && endpoint_view(o) == endpoint_view(n)
    {
        return;
    }
    let Some(ns) = new.or(old).and_then(|p| p.metadata.namespace.clone()) else {
        return;
    };
    for svc in services.list_namespace(&ns) {
        let Some(selector) = managed_selector(&svc) else {
            continue;
        };
        if [old, new]
            .into_iter()
            .flatten()
            .any(|p| matches(selector, p.metadata.labels.as_ref()))
        {
            queue.add(informer::key(svc.as_ref()));
        }
    }
}

/// Makes pod and service changes queue the keys of the services they affect.
pub fn watch_services_and_pods(services: &Informer<Service>, pods: &Informer<Pod>, queue: &Queue) {
    {
        let q = queue.clone();
        services.on_change(move |old, new| {
            if let Some(s) = new.or(old) {
                q.add(informer::key(s));
            }
        });
    }
    let q = queue.clone();
    let store = services.store();
    pods.on_change(move |old, new| queue_services_of(&q, &store, old, new));
}

/// Whether the request failed with this HTTP status.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Whether a create failed because the namespace is being deleted (nothing more can be made in it).
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            s.message.contains("because it is being terminated")
                || s.details
                    .as_ref()
                    .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn named_ports_resolve_per_pod_and_protocol() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "ports": [{"name": "metrics", "containerPort": 9090}]},
                {"name": "init", "ports": [{"name": "setup", "containerPort": 1}]}]}}));
        let port = |t: serde_json::Value, proto: &str| -> ServicePort {
            serde_json::from_value(json!({"port": 80, "targetPort": t, "protocol": proto}))
                .expect("port")
        };
        assert_eq!(find_port(&p, &port(json!("http"), "TCP")), Some(8080));
        assert_eq!(find_port(&p, &port(json!("dns"), "UDP")), Some(53));
        assert_eq!(find_port(&p, &port(json!("dns"), "TCP")), None);
        assert_eq!(find_port(&p, &port(json!("metrics"), "TCP")), Some(9090));
        assert_eq!(find_port(&p, &port(json!("setup"), "TCP")), None);
        assert_eq!(find_port(&p, &port(json!(81), "TCP")), Some(81));
    }

    #[test]
    fn pod_ips_and_membership() {
        let p = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Running", "podIP": "10.0.0.1"}}),
        );
        assert_eq!(pod_ips(&p), ["10.0.0.1"]);
        assert!(should_be_in_endpoints(&p, false));
        let dual = pod(
            json!({"metadata": {"name": "p"}, "status": {"podIP": "10.0.0.1",
            "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}}),
        );
        assert_eq!(pod_ips(&dual), ["10.0.0.1", "fd00::1"]);
        let done = pod(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Succeeded", "podIP": "10.0.0.1"}}),
        );
        assert!(!should_be_in_endpoints(&done, true));
        let deleting = pod(
            json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"podIP": "10.0.0.1"}}),
        );
        assert!(!should_be_in_endpoints(&deleting, false));
        assert!(should_be_in_endpoints(&deleting, true));
        assert!(!should_be_in_endpoints(
            &pod(json!({"metadata": {"name": "p"}})),
            true
        ));
    }

    #[test]
    fn selectors() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "s"},
            "spec": {"selector": {"app": "a"}}}))
        .expect("svc");
        let sel = managed_selector(&svc).expect("selector");
        let labels: BTreeMap<String, String> =
            [("app".into(), "a".into()), ("x".into(), "y".into())].into();
        assert!(matches(sel, Some(&labels)));
        assert!(!matches(sel, None));
        let external: Service = serde_json::from_value(json!({"metadata": {"name": "s"},
            "spec": {"type": "ExternalName", "selector": {"app": "a"}}}))
        .expect("svc");
        assert!(managed_selector(&external).is_none());
        let empty: Service =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"selector": {}}}))
                .expect("svc");
        assert!(managed_selector(&empty).is_none());
    }
}
