//! The EndpointSlice controller, as Kubernetes' `endpointslice-controller.k8s.io`: for every service
//! with a selector, EndpointSlices (named `<service>-<random>`, labelled with the service's name and
//! this controller, owned by the service) holding at most 100 endpoints each, one per selected pod
//! with an IP of the slice's address type, with `ready`/`serving`/`terminating` conditions. Pods whose
//! named ports resolve differently go in different slices. Each sync reconciles against the
//! service's managed slices in the informer cache as Kubernetes' reconciler does: endpoints stay in
//! the slice they are in, changed slices are updated in place and filled up, new slices are made only
//! for what does not fit, emptied slices are deleted (or reused for what would be created), and a
//! service with no endpoints keeps one empty placeholder slice. Nothing is written when nothing
//! changed. A deleted service's slices are deleted (with no garbage collector to rely on).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_client::events::{EventType, Recorder};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource};

use crate::Context;
use crate::controller::{self, ReconcileError, Requeue};
use crate::endpoints::HEADLESS_LABEL;
use crate::informer::{self, Store};
use crate::podutil;
use crate::service_pods::{self as sp, WORKERS};

/// The most endpoints one slice holds (Kubernetes' `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label naming a slice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's managing controller.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's name in [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The node label giving an endpoint's zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How long a write of ours may take to show in the cache before the cache is trusted again anyway.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// What a worker needs.
struct Ctl {
    client: kube::Client,
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    tracker: Arc<Tracker>,
    recorder: Recorder,
}

/// Starts the EndpointSlice controller: registers its informer handlers now, runs its workers once
/// the caches are synced.
pub fn start(ctx: &Context) -> impl Future<Output = ()> + Send + 'static {
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    let slices = ctx.informers.get::<EndpointSlice>();
    let queue = ctx.metrics.queue("endpointslice");
    sp::watch_services_and_pods(&services, &pods, &queue);
    let tracker = Arc::new(Tracker::default());
    {
        // Any change to a managed slice (ours or someone else's) has its service looked at again;
        // the first list so queues the services of slices whose service went while we were down.
        let q = queue.clone();
        let t = tracker.clone();
        slices.on_change(move |old, new| {
            if let Some(key) = new.or(old).and_then(service_key) {
                t.observed(&key, new.or(old), new.is_some());
                q.add(key);
            }
        });
    }
    let ctl = Arc::new(Ctl {
        client: ctx.client.clone(),
        services: services.store(),
        pods: pods.store(),
        nodes: nodes.store(),
        slices: slices.store(),
        tracker,
        recorder: Recorder::new(ctx.client.clone(), "endpoint-slice-controller", None),
    });
    let metrics = ctx.metrics.clone();
    async move {
        services.synced().await;
        pods.synced().await;
        nodes.synced().await;
        slices.synced().await;
        controller::run("endpointslice", queue, WORKERS, &metrics, |key| {
            let ctl = ctl.clone();
            async move { reconcile(&ctl, &key).await }
        })
        .await
    }
}

/// The key of the service a slice managed by this controller belongs to.
fn service_key(slice: &EndpointSlice) -> Option<String> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    let svc = labels.get(SERVICE_NAME_LABEL)?;
    let ns = slice.metadata.namespace.as_deref()?;
    Some(format!("{ns}/{svc}"))
}

async fn reconcile(ctl: &Ctl, key: &str) -> Result<Requeue, ReconcileError> {
    let (ns, name) = informer::split_key(key);
    let api: Api<EndpointSlice> = Api::namespaced(ctl.client.clone(), ns);
    let slices: Vec<Arc<EndpointSlice>> = ctl
        .slices
        .list_namespace(ns)
        .into_iter()
        .filter(|s| service_key(s).as_deref() == Some(key))
        .filter(|s| !podutil::is_deleting(&s.metadata))
        .collect();
    let Some(svc) = ctl.services.get(ns, name) else {
        for s in &slices {
            delete(&api, s).await?;
        }
        return Ok(None);
    };
    if sp::managed_selector(&svc).is_none() {
        return Ok(None);
    }
    if ctl.tracker.stale(key, &slices) {
        return Err(ReconcileError::Failed(format!(
            "the EndpointSlice cache of service {key} is out of date"
        )));
    }
    let pods = sp::selected_pods(&svc, &ctl.pods);
    let zone = |node: &str| {
        ctl.nodes.get("", node).map(|n| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL).cloned())
        })
    };
    let (plan, skipped) = plan(&svc, &pods, &zone, &slices, MAX_ENDPOINTS_PER_SLICE);
    if let Err(e) = apply(ctl, &api, key, &svc, plan).await {
        if !sp::is_status(&e, 409) {
            let message = format!("Error updating Endpoint Slices for Service {key}: {e}");
            ctl.recorder
                .record(
                    &svc.object_ref(&()),
                    EventType::Warning,
                    "FailedToUpdateEndpointSlices",
                    &message,
                )
                .await;
        }
        return Err(e.into());
    }
    if skipped.is_empty() {
        Ok(None)
    } else {
        // Kubernetes retries until the pods' nodes exist.
        Err(ReconcileError::Failed(skipped.join("; ")))
    }
}

/// Writes the plan: creates first (unless the service is being deleted), then updates, then deletes.
async fn apply(
    ctl: &Ctl,
    api: &Api<EndpointSlice>,
    key: &str,
    svc: &Service,
    plan: Plan,
) -> Result<(), kube::Error> {
    if !podutil::is_deleting(&svc.metadata) {
        for slice in &plan.create {
            match api.create(&PostParams::default(), slice).await {
                Ok(made) => ctl.tracker.expect(key, &made, Expect::Present),
                Err(e) if sp::is_namespace_terminating(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    for slice in &plan.update {
        let name = slice.metadata.name.as_deref().unwrap_or("");
        api.replace(name, &PostParams::default(), slice).await?;
    }
    for slice in &plan.delete {
        delete(api, slice).await?;
        ctl.tracker.expect(key, slice, Expect::Gone);
    }
    Ok(())
}

/// Deletes a slice (the one with this UID: a slice made since under the same name stays); gone
/// already is fine.
async fn delete(api: &Api<EndpointSlice>, slice: &EndpointSlice) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: slice.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api
        .delete(slice.metadata.name.as_deref().unwrap_or(""), &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if sp::is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the cache must show of a write of ours before it is trusted for that service again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A slice we created.
    Present,
    /// A slice we deleted.
    Gone,
}

/// Kubernetes' EndpointSlice tracker, for creates and deletes: a sync that does not see a slice it
/// made (or still sees one it deleted) would make a duplicate (or reuse a dead one), so it waits.
/// Updates need no tracking: they carry the cached resourceVersion.
#[derive(Default)]
struct Tracker(Mutex<HashMap<String, Expectations>>);

/// A service's expectations: by slice name, what and since when.
type Expectations = HashMap<String, (Expect, Instant)>;

impl Tracker {
    fn expect(&self, service: &str, slice: &EndpointSlice, what: Expect) {
        let Some(name) = slice.metadata.name.clone() else {
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(service.to_string())
            .or_default()
            .insert(name, (what, Instant::now()));
    }

    /// Forgets what an informer event shows: a slice of ours seen (`present`) or seen deleted.
    fn observed(&self, service: &str, slice: Option<&EndpointSlice>, present: bool) {
        let Some(name) = slice.and_then(|s| s.metadata.name.as_deref()) else {
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(expected) = map.get_mut(service)
            && expected
                .get(name)
                .is_some_and(|(what, _)| !present || *what == Expect::Present)
        {
            expected.remove(name);
        }
    }

    /// Whether `cached` (the service's slices in the cache) misses a write of ours; forgets the
    /// writes it shows (and those too old to wait for).
    fn stale(&self, service: &str, cached: &[Arc<EndpointSlice>]) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(expected) = map.get_mut(service) else {
            return false;
        };
        let names: BTreeSet<&str> = cached
            .iter()
            .filter_map(|s| s.metadata.name.as_deref())
            .collect();
        expected.retain(|name, (what, since)| {
            let shown = match what {
                Expect::Present => names.contains(name.as_str()),
                Expect::Gone => !names.contains(name.as_str()),
            };
            !shown && since.elapsed() < EXPECTATION_TTL
        });
        let stale = !expected.is_empty();
        if !stale {
            map.remove(service);
        }
        stale
    }
}

// ---------------------------------------------------------------------------------------------
// The pure computation.

/// The writes that bring a service's slices to what its pods say.
#[derive(Debug, Default)]
pub struct Plan {
    /// Slices to create (with `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Slices to replace (with the cached resourceVersion).
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl Plan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The address types of the service's slices: its IP families, else its cluster IP's, else (a
/// headless service without families) both.
fn address_types(svc: &Service) -> BTreeSet<&'static str> {
    let spec = svc.spec.as_ref();
    let mut types: BTreeSet<&'static str> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            _ => None,
        })
        .collect();
    if types.is_empty() {
        if sp::has_cluster_ip(svc) {
            let v6 = spec
                .and_then(|s| s.cluster_ip.as_deref())
                .is_some_and(sp::is_ipv6);
            types.insert(if v6 { "IPv6" } else { "IPv4" });
        } else {
            types.extend(["IPv4", "IPv6"]);
        }
    }
    types
}

/// The labels of the service's slices: the service's (but the reserved ones), the headless label for
/// a service without a cluster IP, the service's name and this controller.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| {
            ![SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !sp::has_cluster_ip(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

/// The slice ports of a pod: each service port whose target the pod has (Kubernetes'
/// `getEndpointPorts`).
fn pod_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(sp::find_port(pod, p)?),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// A set of slice ports, in a canonical order: slices with equal keys hold the same ports.
type PortsKey = Vec<(String, Option<i32>, String, Option<String>)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut key: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// An endpoint's identity (Kubernetes hashes the same fields): addresses, hostname, target.
type EndpointKey = (Vec<String>, String, String, String);

fn endpoint_key(e: &Endpoint) -> EndpointKey {
    let mut addresses = e.addresses.clone();
    addresses.sort();
    let target = e.target_ref.as_ref();
    (
        addresses,
        e.hostname.clone().unwrap_or_default(),
        target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
        target.and_then(|t| t.name.clone()).unwrap_or_default(),
    )
}

/// An endpoint as compared: without the target's resourceVersion.
fn comparable(e: &Endpoint) -> Endpoint {
    let mut e = e.clone();
    if let Some(t) = e.target_ref.as_mut() {
        t.resource_version = None;
    }
    e
}

/// The pod's endpoint in a slice of `address_type` (Kubernetes' `podToEndpoint`): a terminating pod
/// is not ready (unless the service publishes not-ready addresses) but may still be serving.
fn pod_endpoint(svc: &Service, pod: &Pod, zone: Option<String>, address_type: &str) -> Endpoint {
    let serving = podutil::is_ready(pod);
    let terminating = podutil::is_deleting(&pod.metadata);
    let ready = sp::publish_not_ready(svc) || (serving && !terminating);
    Endpoint {
        addresses: sp::pod_ips(pod)
            .into_iter()
            .filter(|ip| sp::is_ipv6(ip) == (address_type == "IPv6"))
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: sp::hostname(pod, svc),
        node_name: sp::node_name(pod),
        target_ref: Some(sp::pod_ref(pod)),
        zone,
        ..Default::default()
    }
}

/// Whether the slice is owned by this service (an owner reference to its UID).
fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|r| {
        r.kind == "Service" && r.api_version == "v1" && Some(&r.uid) == svc.metadata.uid.as_ref()
    })
}

/// A new slice of the service (named by the API server from `<service>-`).
fn new_slice(svc: &Service, address_type: &str, ports: Vec<EndpointPort>) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![podutil::controller_ref(svc)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: vec![],
        ports: Some(ports),
    }
}

/// Whether `slice` is the placeholder Kubernetes keeps for a service without endpoints.
fn is_placeholder(slice: &EndpointSlice, svc: &Service, address_type: &str) -> bool {
    slice.address_type == address_type
        && slice.endpoints.is_empty()
        && slice.ports.as_ref().is_none_or(Vec::is_empty)
        && slice.metadata.namespace == svc.metadata.namespace
        && slice.metadata.labels.clone().unwrap_or_default() == slice_labels(svc)
}

/// Kubernetes' EndpointSlice reconciler: the writes that make `existing` (the service's managed,
/// not-deleting slices) hold the endpoints of `pods` (those the service selects), at most `max` per
/// slice. `zone` gives a node's zone label, None if the node does not exist: such pods are left out
/// (unless the service publishes not-ready addresses) and returned as the second value.
pub fn plan(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone: &dyn Fn(&str) -> Option<Option<String>>,
    existing: &[Arc<EndpointSlice>],
    max: usize,
) -> (Plan, Vec<String>) {
    let types = address_types(svc);
    let mut plan = Plan::default();
    let mut skipped = BTreeSet::new();
    let mut by_type: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        if types.contains(s.address_type.as_str()) {
            by_type.entry(s.address_type.as_str()).or_default().push(s);
        } else {
            plan.delete.push((**s).clone());
        }
    }
    for t in &types {
        let p = plan_address_type(
            svc,
            pods,
            zone,
            by_type.remove(t).unwrap_or_default(),
            t,
            max,
            &mut skipped,
        );
        plan.create.extend(p.create);
        plan.update.extend(p.update);
        plan.delete.extend(p.delete);
    }
    (plan, skipped.into_iter().collect())
}

type Desired = BTreeMap<PortsKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)>;

fn plan_address_type(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone: &dyn Fn(&str) -> Option<Option<String>>,
    existing: Vec<&EndpointSlice>,
    address_type: &str,
    max: usize,
    skipped: &mut BTreeSet<String>,
) -> Plan {
    let mut desired: Desired = BTreeMap::new();
    for pod in pods {
        if !sp::should_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = pod_ports(svc, pod);
        let entry = desired
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, BTreeMap::new()));
        let node = sp::node_name(pod).unwrap_or_default();
        let z = match zone(&node) {
            Some(z) => z,
            None if sp::publish_not_ready(svc) => None,
            None => {
                skipped.insert(format!(
                    "skipping Pod {} for Service {}: Node {node} Not Found",
                    pod.metadata.name.as_deref().unwrap_or(""),
                    informer::key(svc)
                ));
                continue;
            }
        };
        let ep = pod_endpoint(svc, pod, z, address_type);
        if !ep.addresses.is_empty() {
            entry.1.insert(endpoint_key(&ep), ep);
        }
    }
    let mut plan = Plan::default();
    let mut existing_by_ports: BTreeMap<PortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in &existing {
        if owned_by(s, svc) {
            let key = ports_key(s.ports.as_deref().unwrap_or(&[]));
            existing_by_ports.entry(key).or_default().push(s);
        } else {
            plan.delete.push((*s).clone());
        }
    }
    for (key, (ports, want)) in desired.iter_mut() {
        let found = existing_by_ports.get(key).cloned().unwrap_or_default();
        let p = plan_ports(svc, address_type, ports, found, std::mem::take(want), max);
        plan.create.extend(p.create);
        plan.update.extend(p.update);
        plan.delete.extend(p.delete);
    }
    for (key, slices) in existing_by_ports {
        if !desired.contains_key(&key) {
            plan.delete.extend(slices.into_iter().cloned());
        }
    }
    // A service without endpoints keeps one empty placeholder slice.
    if existing.len() == plan.delete.len() && plan.create.is_empty() {
        if plan.delete.len() == 1 && is_placeholder(&plan.delete[0], svc, address_type) {
            plan.delete.clear();
        } else {
            plan.create.push(new_slice(svc, address_type, vec![]));
        }
    }
    // Rather than create one slice and delete another, reuse the one to delete.
    let mut kept = vec![];
    for old in std::mem::take(&mut plan.delete) {
        if old.address_type == address_type
            && owned_by(&old, svc)
            && let Some(mut fresh) = plan.create.pop()
        {
            fresh.metadata.generate_name = None;
            fresh.metadata.name = old.metadata.name.clone();
            fresh.metadata.resource_version = old.metadata.resource_version.clone();
            plan.update.push(fresh);
        } else {
            kept.push(old);
        }
    }
    plan.delete = kept;
    plan
}

/// Kubernetes' `reconcileByPortMapping` for the slices of one set of ports.
fn plan_ports(
    svc: &Service,
    address_type: &str,
    ports: &[EndpointPort],
    existing: Vec<&EndpointSlice>,
    mut want: BTreeMap<EndpointKey, Endpoint>,
    max: usize,
) -> Plan {
    let labels = slice_labels(svc);
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged = BTreeSet::new();
    let mut to_update = BTreeSet::new();
    let mut to_delete = BTreeSet::new();
    // 1. Keep wanted endpoints where they are, drop the others, note what changed.
    for s in existing {
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut kept = vec![];
        let mut changed = false;
        for e in &s.endpoints {
            if let Some(w) = want.remove(&endpoint_key(e)) {
                changed |= comparable(&w) != comparable(e);
                kept.push(w);
            }
        }
        let labels_changed = s.metadata.labels.as_ref() != Some(&labels);
        if changed || kept.len() != s.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
            } else {
                to_update.insert(name.clone());
            }
        } else if labels_changed {
            to_update.insert(name.clone());
        } else {
            unchanged.insert(name.clone());
        }
        let mut s = s.clone();
        s.endpoints = kept;
        s.metadata.labels = Some(labels.clone());
        by_name.insert(name, s);
    }
    // 2. Fill the slices being updated, fullest first.
    if !want.is_empty() {
        let mut names: Vec<&String> = to_update.iter().collect();
        names.sort_by_key(|n| std::cmp::Reverse(by_name.get(*n).map_or(0, |s| s.endpoints.len())));
        for n in names {
            if let Some(s) = by_name.get_mut(n) {
                while s.endpoints.len() < max {
                    let Some((_, e)) = want.pop_first() else {
                        break;
                    };
                    s.endpoints.push(e);
                }
            }
        }
    }
    // 3. What is left goes in the unchanged slice it fits best, or in new slices.
    let mut create = vec![];
    while !want.is_empty() {
        let mut fill: Option<String> = None;
        if want.len() < max {
            let mut closest = max;
            for n in &unchanged {
                let len = by_name.get(n).map_or(max, |s| s.endpoints.len());
                if let Some(diff) = max.checked_sub(want.len() + len)
                    && diff < closest
                {
                    closest = diff;
                    fill = Some(n.clone());
                }
            }
        }
        let mut slice = match fill.as_ref().and_then(|n| by_name.remove(n)) {
            Some(s) => s,
            None => new_slice(svc, address_type, ports.to_vec()),
        };
        while slice.endpoints.len() < max {
            let Some((_, e)) = want.pop_first() else {
                break;
            };
            slice.endpoints.push(e);
        }
        match slice.metadata.name.clone() {
            Some(name) => {
                unchanged.remove(&name);
                to_update.insert(name.clone());
                by_name.insert(name, slice);
            }
            None => create.push(slice),
        }
    }
    Plan {
        create,
        update: to_update.iter().filter_map(|n| by_name.remove(n)).collect(),
        delete: to_delete.iter().filter_map(|n| by_name.remove(n)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "t"}},
            "spec": spec
        }))
        .expect("service")
    }

    fn web() -> Service {
        svc(
            json!({"selector": {"app": "a"}, "clusterIP": "10.96.0.1", "ipFamilies": ["IPv4"],
            "ports": [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}]}),
        )
    }

    fn pod(i: usize, http: i32, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p{i:03}"), "namespace": "ns", "uid": format!("u{i}")},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": http}]}]},
                "status": {"phase": "Running", "podIP": format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .expect("pod"),
        )
    }

    fn zone(node: &str) -> Option<Option<String>> {
        (node == "n1").then(|| Some("z1".to_string()))
    }

    /// The slices after the API server made the plan's creates (named `s-<i>`) and updates.
    fn applied(existing: &[Arc<EndpointSlice>], plan: Plan) -> Vec<Arc<EndpointSlice>> {
        let mut by_name: BTreeMap<String, EndpointSlice> = existing
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), (**s).clone()))
            .collect();
        for d in plan.delete {
            by_name.remove(d.metadata.name.as_deref().unwrap_or(""));
        }
        for u in plan.update {
            by_name.insert(u.metadata.name.clone().unwrap_or_default(), u);
        }
        let mut n = by_name.len();
        for mut c in plan.create {
            n += 1;
            c.metadata.name = Some(format!("s-{n}"));
            c.metadata.resource_version = Some("1".into());
            by_name.insert(format!("s-{n}"), c);
        }
        by_name.into_values().map(Arc::new).collect()
    }

    #[test]
    fn endpoints_with_conditions_labels_and_owner() {
        let mut terminating = (*pod(2, 8080, true)).clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let pods = [
            pod(0, 8080, true),
            pod(1, 8080, false),
            Arc::new(terminating),
        ];
        let (p, skipped) = plan(&web(), &pods, &zone, &[], 100);
        assert!(skipped.is_empty() && p.update.is_empty() && p.delete.is_empty());
        assert_eq!(p.create.len(), 1);
        let s = &p.create[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("s-"));
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("s")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(CONTROLLER_NAME)
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("t"));
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", "svc-uid", Some(true))
        );
        let port = &s.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("web"), Some(8080), Some("TCP"))
        );
        let conds: Vec<(bool, bool, bool)> = s
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.as_ref().expect("conditions");
                (
                    c.ready == Some(true),
                    c.serving == Some(true),
                    c.terminating == Some(true),
                )
            })
            .collect();
        assert_eq!(
            conds,
            [
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        let e = &s.endpoints[0];
        assert_eq!(
            (e.node_name.as_deref(), e.zone.as_deref()),
            (Some("n1"), Some("z1"))
        );
        assert_eq!(
            e.target_ref.as_ref().and_then(|r| r.uid.as_deref()),
            Some("u0")
        );
        // A service publishing not-ready addresses: everything ready.
        let mut tolerant = web();
        tolerant
            .spec
            .as_mut()
            .expect("spec")
            .publish_not_ready_addresses = Some(true);
        let (p, _) = plan(&tolerant, &pods, &zone, &[], 100);
        assert!(
            p.create[0]
                .endpoints
                .iter()
                .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        );
    }

    #[test]
    fn splits_at_max_and_by_ports_and_then_changes_nothing() {
        let mut pods: Vec<Arc<Pod>> = (0..120).map(|i| pod(i, 8080, true)).collect();
        pods.push(pod(500, 9090, true));
        let (p, _) = plan(&web(), &pods, &zone, &[], 100);
        let mut sizes: Vec<(usize, Option<i32>)> = p
            .create
            .iter()
            .map(|s| (s.endpoints.len(), s.ports.as_ref().and_then(|p| p[0].port)))
            .collect();
        sizes.sort();
        assert_eq!(
            sizes,
            [(1, Some(9090)), (20, Some(8080)), (100, Some(8080))]
        );
        let slices = applied(&[], p);
        // Nothing changed: nothing to write.
        let (again, _) = plan(&web(), &pods, &zone, &slices, 100);
        assert!(again.is_empty(), "{again:?}");
        // One pod not ready: only its slice is updated, in place.
        pods[5] = pod(5, 8080, false);
        let (p, _) = plan(&web(), &pods, &zone, &slices, 100);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].metadata.resource_version.as_deref(), Some("1"));
        // The odd pod gone: its slice is deleted.
        let slices = applied(&slices, p);
        pods.pop();
        let (p, _) = plan(&web(), &pods, &zone, &slices, 100);
        assert!(p.create.is_empty() && p.update.is_empty());
        assert_eq!(p.delete.len(), 1);
    }

    #[test]
    fn placeholder_foreign_slices_and_missing_nodes() {
        // No pods: one empty placeholder, kept on the next sync.
        let (p, _) = plan(&web(), &[], &zone, &[], 100);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        let slices = applied(&[], p);
        let (p, _) = plan(&web(), &[], &zone, &slices, 100);
        assert!(p.is_empty(), "{p:?}");
        // Then a pod: the placeholder is reused rather than deleted and a new one created.
        let (p, _) = plan(&web(), &[pod(0, 8080, true)], &zone, &slices, 100);
        assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].endpoints.len(), 1);
        // A slice owned by an older service of the same name is deleted.
        let mut foreign = (*slices[0]).clone();
        foreign.metadata.owner_references.as_mut().expect("owners")[0].uid = "old".into();
        foreign.metadata.name = Some("old-1".into());
        let (p, _) = plan(
            &web(),
            &[pod(0, 8080, true)],
            &zone,
            &[Arc::new(foreign)],
            100,
        );
        assert_eq!((p.create.len(), p.delete.len()), (1, 1));
        // A pod on a node that does not exist is left out and reported.
        let mut lost = (*pod(1, 8080, true)).clone();
        lost.spec.as_mut().expect("spec").node_name = Some("gone".into());
        let (p, skipped) = plan(
            &web(),
            &[pod(0, 8080, true), Arc::new(lost)],
            &zone,
            &[],
            100,
        );
        assert_eq!(p.create[0].endpoints.len(), 1);
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn ipv6_pods_go_in_ipv6_slices_and_labels_follow_the_service() {
        let dual = svc(
            json!({"selector": {"app": "a"}, "clusterIP": "None", "ipFamilies": ["IPv4", "IPv6"],
            "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}),
        );
        let mut p = (*pod(0, 8080, true)).clone();
        p.status.as_mut().expect("status").pod_ips = Some(vec![
            serde_json::from_value(json!({"ip": "10.0.0.1"})).expect("ip"),
            serde_json::from_value(json!({"ip": "fd00::1"})).expect("ip"),
        ]);
        let (plan_, _) = plan(&dual, &[Arc::new(p)], &zone, &[], 100);
        let mut got: Vec<(String, Vec<String>)> = plan_
            .create
            .iter()
            .map(|s| (s.address_type.clone(), s.endpoints[0].addresses.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("IPv4".into(), vec!["10.0.0.1".into()]),
                ("IPv6".into(), vec!["fd00::1".into()])
            ]
        );
        assert!(
            plan_.create[0]
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(HEADLESS_LABEL))
        );
        // A label change on the service updates the slices.
        let slices = applied(&[], plan(&web(), &[pod(0, 8080, true)], &zone, &[], 100).0);
        let mut relabelled = web();
        relabelled.metadata.labels = Some([("team".to_string(), "u".to_string())].into());
        let (p, _) = plan(&relabelled, &[pod(0, 8080, true)], &zone, &slices, 100);
        assert_eq!(p.update.len(), 1);
        assert_eq!(
            p.update[0]
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("u")
        );
    }

    #[test]
    fn tracker_waits_for_the_cache() {
        let t = Tracker::default();
        let made: EndpointSlice = serde_json::from_value(
            json!({"metadata": {"name": "s-1"}, "addressType": "IPv4", "endpoints": []}),
        )
        .expect("slice");
        t.expect("ns/s", &made, Expect::Present);
        assert!(t.stale("ns/s", &[]));
        assert!(!t.stale("ns/s", &[Arc::new(made.clone())]));
        assert!(!t.stale("ns/s", &[]));
        t.expect("ns/s", &made, Expect::Gone);
        assert!(t.stale("ns/s", &[Arc::new(made.clone())]));
        assert!(!t.stale("ns/s", &[]));
        // Made, then deleted by someone else before the cache showed it: the delete event settles it.
        t.expect("ns/s", &made, Expect::Present);
        t.observed("ns/s", Some(&made), false);
        assert!(!t.stale("ns/s", &[]));
    }
}
