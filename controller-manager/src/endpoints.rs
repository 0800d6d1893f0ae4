//! The Endpoints controller, as Kubernetes' `endpoint-controller`: for every service with a selector,
//! an Endpoints object of the same name listing the selected pods' addresses (ready ones in
//! `addresses`, others in `notReadyAddresses`) with the service's ports resolved per pod, repacked into
//! subsets of addresses that share the same ports. Services without a selector keep whatever
//! Endpoints their owners write; a deleted service's Endpoints are deleted. Past 1000 addresses the
//! Endpoints are truncated and annotated `endpoints.kubernetes.io/over-capacity: truncated`. It writes
//! only when the computed subsets, labels or that annotation differ from what is stored.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use atoll_client::events::{EventType, Recorder};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Resource};

use crate::Context;
use crate::controller::{self, ReconcileError, Requeue};
use crate::informer::{self, Store};
use crate::podutil;
use crate::service_pods::{self as sp, WORKERS};

/// The label Endpoints and EndpointSlices of headless services carry.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The annotation marking Endpoints cut down to [`MAX_ADDRESSES`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// The most addresses an Endpoints object holds (EndpointSlices hold the rest).
pub const MAX_ADDRESSES: usize = 1000;
/// The annotation of Endpoints used as leader-election locks, which are never cleaned up.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// What a worker needs.
struct Ctl {
    client: kube::Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    recorder: Recorder,
}

/// Starts the Endpoints controller: registers its informer handlers now, runs its workers once the
/// caches are synced (first queueing every existing Endpoints, so those of services deleted while it
/// was down go too).
pub fn start(ctx: &Context) -> impl Future<Output = ()> + Send + 'static {
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let endpoints = ctx.informers.get::<Endpoints>();
    let queue = ctx.metrics.queue("endpoint");
    sp::watch_services_and_pods(&services, &pods, &queue);
    {
        // Endpoints deleted by someone else are made again.
        let q = queue.clone();
        endpoints.on_change(move |old, new| {
            if let (Some(ep), None) = (old, new) {
                q.add(informer::key(ep));
            }
        });
    }
    let ctl = Arc::new(Ctl {
        client: ctx.client.clone(),
        services: services.store(),
        pods: pods.store(),
        endpoints: endpoints.store(),
        recorder: Recorder::new(ctx.client.clone(), "endpoint-controller", None),
    });
    let metrics = ctx.metrics.clone();
    async move {
        services.synced().await;
        pods.synced().await;
        endpoints.synced().await;
        for ep in ctl.endpoints.list() {
            let leader_lock = ep
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
            if !leader_lock {
                queue.add(informer::key(ep.as_ref()));
            }
        }
        controller::run("endpoint", queue, WORKERS, &metrics, |key| {
            let ctl = ctl.clone();
            async move { reconcile(&ctl, &key).await }
        })
        .await
    }
}

async fn reconcile(ctl: &Ctl, key: &str) -> Result<Requeue, ReconcileError> {
    let (ns, name) = informer::split_key(key);
    let api: Api<Endpoints> = Api::namespaced(ctl.client.clone(), ns);
    let Some(svc) = ctl.services.get(ns, name) else {
        return match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(None),
            Err(e) if sp::is_status(&e, 404) => Ok(None),
            Err(e) => Err(e.into()),
        };
    };
    if sp::managed_selector(&svc).is_none() {
        return Ok(None);
    }
    let pods = sp::selected_pods(&svc, &ctl.pods);
    let mut subsets = desired_subsets(&svc, &pods);
    let truncated = truncate(&mut subsets);
    let labels = desired_labels(&svc);
    let current = ctl.endpoints.get(ns, name);
    let (result, created) = match current {
        Some(cur) if up_to_date(&cur, &subsets, &labels, truncated) => return Ok(None),
        Some(cur) => {
            let mut new = (*cur).clone();
            new.subsets = non_empty(subsets);
            new.metadata.labels = Some(labels);
            set_over_capacity(&mut new.metadata, truncated);
            (api.replace(name, &PostParams::default(), &new).await, false)
        }
        None => {
            let mut metadata = ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(labels),
                ..Default::default()
            };
            set_over_capacity(&mut metadata, truncated);
            let new = Endpoints {
                metadata,
                subsets: non_empty(subsets),
            };
            (api.create(&PostParams::default(), &new).await, true)
        }
    };
    let Err(e) = result else {
        return Ok(None);
    };
    if created && sp::is_namespace_terminating(&e) {
        return Ok(None);
    }
    if !sp::is_status(&e, 409) {
        let object = Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            subsets: None,
        };
        let (reason, message) = if created {
            (
                "FailedToCreateEndpoint",
                format!("Failed to create endpoint for service {ns}/{name}: {e}"),
            )
        } else {
            (
                "FailedToUpdateEndpoint",
                format!("Failed to update endpoint {ns}/{name}: {e}"),
            )
        };
        ctl.recorder
            .record(
                &object.object_ref(&()),
                EventType::Warning,
                reason,
                &message,
            )
            .await;
    }
    Err(e.into())
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// Whether the stored Endpoints already say what the controller would write.
fn up_to_date(
    cur: &Endpoints,
    subsets: &[EndpointSubset],
    labels: &BTreeMap<String, String>,
    truncated: bool,
) -> bool {
    let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
    let marked = cur
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION))
        .is_some_and(|v| v == "truncated");
    &cur_labels == labels
        && marked == truncated
        && canonical(cur.subsets.clone().unwrap_or_default()) == subsets
}

/// Sets or removes the over-capacity annotation.
fn set_over_capacity(meta: &mut ObjectMeta, truncated: bool) {
    if truncated {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else if let Some(a) = meta.annotations.as_mut() {
        a.remove(OVER_CAPACITY_ANNOTATION);
    }
}

/// Kubernetes' `truncateEndpoints`: keeps at most [`MAX_ADDRESSES`] addresses, each subset keeping its
/// share (rounded up, until none is left). Not-ready addresses go first: only if the ready ones alone
/// are too many are they cut too (and every not-ready one dropped). Returns whether it cut anything.
fn truncate(subsets: &mut Vec<EndpointSubset>) -> bool {
    let len = |l: &Option<Vec<EndpointAddress>>| l.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| len(&s.addresses)).sum();
    let total: usize = ready
        + subsets
            .iter()
            .map(|s| len(&s.not_ready_addresses))
            .sum::<usize>();
    if total <= MAX_ADDRESSES {
        return false;
    }
    let cut_ready = ready > MAX_ADDRESSES;
    let (room, pool) = if cut_ready {
        (MAX_ADDRESSES, ready)
    } else {
        (MAX_ADDRESSES - ready, total - ready)
    };
    let mut left = room;
    for s in subsets.iter_mut() {
        let list = if cut_ready {
            s.not_ready_addresses = None;
            &mut s.addresses
        } else {
            &mut s.not_ready_addresses
        };
        let share = (len(list) * room).div_ceil(pool.max(1)).min(left);
        if let Some(l) = list.as_mut() {
            l.truncate(share);
        }
        left -= len(list);
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    true
}

/// The Endpoints' labels: the service's, plus the headless label for a headless service.
pub fn desired_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if sp::is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The IP family of the service's endpoints: its first `ipFamilies` entry, else that of its cluster
/// IP, else (headless) that of the pod's IP.
fn wants_ipv6(svc: &Service, pod: &Pod) -> bool {
    let spec = svc.spec.as_ref();
    if let Some(family) = spec.and_then(|s| s.ip_families.as_ref()?.first()) {
        return family == "IPv6";
    }
    if sp::has_cluster_ip(svc) {
        return spec
            .and_then(|s| s.cluster_ip.as_deref())
            .is_some_and(sp::is_ipv6);
    }
    sp::pod_ips(pod).first().is_some_and(|ip| sp::is_ipv6(ip))
}

/// The pod's address in the service's endpoints, if it has an IP of the service's family.
fn address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let v6 = wants_ipv6(svc, pod);
    let ip = sp::pod_ips(pod)
        .into_iter()
        .find(|ip| sp::is_ipv6(ip) == v6)?;
    Some(EndpointAddress {
        ip,
        hostname: sp::hostname(pod, svc),
        node_name: sp::node_name(pod),
        target_ref: Some(sp::pod_ref(pod)),
    })
}

/// The subsets Kubernetes writes for `svc` given the pods its selector selects: one address per pod
/// that belongs in endpoints (ready, or every one with `publishNotReadyAddresses`, in `addresses`;
/// others in `notReadyAddresses`), each service port resolved per pod (a pod without a named target
/// port is left out of that port), repacked and in canonical order.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let tolerate = sp::publish_not_ready(svc);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut pieces = vec![];
    for pod in pods {
        if !sp::should_be_in_endpoints(pod, tolerate) {
            continue;
        }
        let Some(addr) = address(svc, pod) else {
            continue;
        };
        let ready = tolerate || podutil::is_ready(pod);
        if ports.is_empty() {
            if sp::is_headless(svc) {
                pieces.push((addr.clone(), ready, None));
            }
            continue;
        }
        for p in &ports {
            if let Some(number) = sp::find_port(pod, p) {
                let port = EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: number,
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                };
                pieces.push((addr.clone(), ready, Some(port)));
            }
        }
    }
    canonical(repack(pieces))
}

/// An address's identity when repacking: its IP and its target's UID.
type AddrKey = (String, String);
/// A port's identity: name, number, protocol, appProtocol; number -1 stands for "no ports".
type PortKey = (Option<String>, i32, Option<String>, Option<String>);

fn addr_key(a: &EndpointAddress) -> AddrKey {
    (
        a.ip.clone(),
        a.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// Kubernetes' `RepackSubsets`: groups (address, ready, port) triples into subsets of the addresses
/// that offer exactly the same ports; an address not ready on any port is not ready on all of them.
fn repack(pieces: Vec<(EndpointAddress, bool, Option<EndpointPort>)>) -> Vec<EndpointSubset> {
    let mut addrs: BTreeMap<AddrKey, EndpointAddress> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddrKey, bool>> = BTreeMap::new();
    for (addr, ready, port) in pieces {
        let k = addr_key(&addr);
        addrs.entry(k.clone()).or_insert(addr);
        let pk = match port {
            Some(p) => (p.name, p.port, p.protocol, p.app_protocol),
            None => (None, -1, None, None),
        };
        let was = by_port.entry(pk).or_default().entry(k).or_insert(ready);
        *was = *was && ready;
    }
    let mut by_addrs: BTreeMap<BTreeMap<AddrKey, bool>, Vec<EndpointPort>> = BTreeMap::new();
    for ((name, port, protocol, app_protocol), set) in by_port {
        let ports = by_addrs.entry(set).or_default();
        if port >= 0 {
            ports.push(EndpointPort {
                name,
                port,
                protocol,
                app_protocol,
            });
        }
    }
    by_addrs
        .into_iter()
        .map(|(set, ports)| {
            let pick = |want: bool| -> Vec<EndpointAddress> {
                set.iter()
                    .filter(|(_, r)| **r == want)
                    .filter_map(|(k, _)| addrs.get(k).cloned())
                    .collect()
            };
            EndpointSubset {
                addresses: non_empty(pick(true)),
                not_ready_addresses: non_empty(pick(false)),
                ports: non_empty(ports),
            }
        })
        .collect()
}

/// Subsets in one order with empty lists as absent and target resourceVersions dropped, so that two
/// ways of writing the same endpoints compare equal.
fn canonical(mut subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    fn addresses(list: Option<Vec<EndpointAddress>>) -> Option<Vec<EndpointAddress>> {
        let mut list = list.unwrap_or_default();
        for a in &mut list {
            if let Some(r) = a.target_ref.as_mut() {
                r.resource_version = None;
            }
        }
        list.sort_by_key(addr_key);
        non_empty(list)
    }
    for s in &mut subsets {
        s.addresses = addresses(s.addresses.take());
        s.not_ready_addresses = addresses(s.not_ready_addresses.take());
        let mut ports = s.ports.take().unwrap_or_default();
        ports.sort_by(|a, b| {
            (&a.name, a.port, &a.protocol, &a.app_protocol).cmp(&(
                &b.name,
                b.port,
                &b.protocol,
                &b.app_protocol,
            ))
        });
        s.ports = non_empty(ports);
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    subsets.sort_by_cached_key(|s| serde_json::to_string(s).unwrap_or_default());
    subsets
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "ns", "labels": {"team": "t"}}, "spec": spec}))
            .expect("service")
    }

    fn pod(name: &str, ip: &str, ready: bool, ports: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .expect("pod"),
        )
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_share_a_subset_per_port_set() {
        let s = svc(json!({"selector": {"app": "a"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}));
        let pods = [
            pod("b", "10.0.0.2", true, json!([])),
            pod("a", "10.0.0.1", false, json!([])),
            pod("c", "10.0.0.3", true, json!([])),
        ];
        let got = desired_subsets(&s, &pods);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(ips(&got[0].addresses), ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(ips(&got[0].not_ready_addresses), ["10.0.0.1"]);
        let port = &got[0].ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), 8080, Some("TCP"))
        );
        let a = &got[0].not_ready_addresses.as_ref().expect("nra")[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        let r = a.target_ref.as_ref().expect("ref");
        assert_eq!(
            (
                r.kind.as_deref(),
                r.name.as_deref(),
                r.namespace.as_deref(),
                r.uid.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("ns"), Some("uid-a"))
        );
        // publishNotReadyAddresses: all ready.
        let s = svc(
            json!({"selector": {"app": "a"}, "publishNotReadyAddresses": true, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}),
        );
        let got = desired_subsets(&s, &pods);
        assert_eq!(ips(&got[0].addresses), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert!(got[0].not_ready_addresses.is_none());
    }

    #[test]
    fn named_target_ports_split_subsets_and_leave_pods_out() {
        let s = svc(json!({"selector": {"app": "a"}, "ports": [
            {"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "raw", "port": 81, "targetPort": 9000, "protocol": "TCP"}]}));
        let pods = [
            pod(
                "a",
                "10.0.0.1",
                true,
                json!([{"name": "http", "containerPort": 8080}]),
            ),
            pod(
                "b",
                "10.0.0.2",
                true,
                json!([{"name": "http", "containerPort": 8081}]),
            ),
            pod("c", "10.0.0.3", true, json!([])),
            pod(
                "d",
                "10.0.0.4",
                true,
                json!([{"name": "http", "containerPort": 8080}]),
            ),
        ];
        let got = desired_subsets(&s, &pods);
        type Summary<'a> = Vec<(Vec<&'a str>, Vec<(String, i32)>)>;
        let summary: Summary = got
            .iter()
            .map(|ss| {
                (
                    ips(&ss.addresses),
                    ss.ports
                        .iter()
                        .flatten()
                        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                        .collect(),
                )
            })
            .collect();
        let mut summary = summary;
        summary.sort();
        assert_eq!(
            summary,
            vec![
                // Subsets group the addresses by port: every pod has the numeric port.
                (
                    vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
                    vec![("raw".into(), 9000)]
                ),
                (vec!["10.0.0.1", "10.0.0.4"], vec![("web".into(), 8080)]),
                (vec!["10.0.0.2"], vec![("web".into(), 8081)]),
            ]
        );
    }

    #[test]
    fn pods_left_out_and_headless() {
        let s = svc(
            json!({"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}),
        );
        let mut no_ip = (*pod("a", "", true, json!([]))).clone();
        no_ip.status.as_mut().expect("status").pod_ip = None;
        let mut failed = (*pod("b", "10.0.0.2", true, json!([]))).clone();
        failed.status.as_mut().expect("status").phase = Some("Failed".into());
        let mut deleting = (*pod("c", "10.0.0.3", true, json!([]))).clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let pods = [
            Arc::new(no_ip),
            Arc::new(failed),
            Arc::new(deleting.clone()),
        ];
        assert!(desired_subsets(&s, &pods).is_empty());
        let tolerant = svc(
            json!({"selector": {"app": "a"}, "publishNotReadyAddresses": true,
            "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}),
        );
        assert_eq!(
            ips(&desired_subsets(&tolerant, &pods)[0].addresses),
            ["10.0.0.3"]
        );
        // Headless without ports: addresses without ports; with a cluster IP and no ports: nothing.
        let headless = svc(json!({"selector": {"app": "a"}, "clusterIP": "None"}));
        let p = [pod("a", "10.0.0.1", true, json!([]))];
        let got = desired_subsets(&headless, &p);
        assert_eq!(got.len(), 1);
        assert!(got[0].ports.is_none());
        assert_eq!(
            desired_labels(&headless)
                .get(HEADLESS_LABEL)
                .map(String::as_str),
            Some("")
        );
        let portless = svc(json!({"selector": {"app": "a"}, "clusterIP": "10.96.0.1"}));
        assert!(desired_subsets(&portless, &p).is_empty());
        // An IPv6 service takes the pod's IPv6 address.
        let v6 = svc(json!({"selector": {"app": "a"}, "ipFamilies": ["IPv6"],
            "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}));
        let mut dual = (*pod("a", "10.0.0.1", true, json!([]))).clone();
        dual.status.as_mut().expect("status").pod_ips = Some(vec![
            serde_json::from_value(json!({"ip": "10.0.0.1"})).expect("ip"),
            serde_json::from_value(json!({"ip": "fd00::1"})).expect("ip"),
        ]);
        assert_eq!(
            ips(&desired_subsets(&v6, &[Arc::new(dual)])[0].addresses),
            ["fd00::1"]
        );
    }

    #[test]
    fn stored_endpoints_in_another_order_are_up_to_date() {
        let s = svc(json!({"selector": {"app": "a"}, "ports": [
            {"name": "a", "port": 80, "targetPort": 80, "protocol": "TCP"},
            {"name": "b", "port": 81, "targetPort": 81, "protocol": "TCP"}]}));
        let pods = [
            pod("a", "10.0.0.1", true, json!([])),
            pod("b", "10.0.0.2", false, json!([])),
        ];
        let want = desired_subsets(&s, &pods);
        let mut stored = want.clone();
        for ss in &mut stored {
            ss.ports.as_mut().expect("ports").reverse();
            for a in ss.addresses.iter_mut().flatten() {
                a.target_ref.as_mut().expect("ref").resource_version = Some("7".into());
            }
        }
        let ep = Endpoints {
            metadata: ObjectMeta {
                labels: Some(desired_labels(&s)),
                ..Default::default()
            },
            subsets: Some(stored),
        };
        assert!(up_to_date(&ep, &want, &desired_labels(&s), false));
        let other = desired_subsets(&s, &pods[..1]);
        assert!(!up_to_date(&ep, &other, &desired_labels(&s), false));
        assert!(!up_to_date(&ep, &want, &BTreeMap::new(), false));
        assert!(!up_to_date(&ep, &want, &desired_labels(&s), true));
    }

    #[test]
    fn over_capacity_is_truncated_not_ready_first() {
        let s = svc(
            json!({"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}),
        );
        let count = |subsets: &[EndpointSubset]| -> (usize, usize) {
            subsets.iter().fold((0, 0), |(r, n), ss| {
                (
                    r + ss.addresses.as_ref().map_or(0, Vec::len),
                    n + ss.not_ready_addresses.as_ref().map_or(0, Vec::len),
                )
            })
        };
        let pods: Vec<Arc<Pod>> = (0..1200)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    i < 700,
                    json!([]),
                )
            })
            .collect();
        let mut subsets = desired_subsets(&s, &pods);
        assert!(truncate(&mut subsets));
        assert_eq!(count(&subsets), (700, 300));
        let pods: Vec<Arc<Pod>> = (0..1200)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    i < 1100,
                    json!([]),
                )
            })
            .collect();
        let mut subsets = desired_subsets(&s, &pods);
        assert!(truncate(&mut subsets));
        assert_eq!(count(&subsets), (1000, 0));
        let mut small = desired_subsets(&s, &pods[..10]);
        assert!(!truncate(&mut small));
        assert_eq!(count(&small), (10, 0));
    }
}
