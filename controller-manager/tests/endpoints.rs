//! The Endpoints and EndpointSlice controllers against a real API server and etcd. Pods get their
//! IPs and readiness the way a kubelet reports them (status patches): there is no kubelet here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use atoll_controller_manager::Config;
use atoll_testkit::{Cluster, eventually};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

type Running = tokio::task::JoinHandle<Result<(), atoll_controller_manager::Error>>;

fn start(c: &Cluster) -> Running {
    start_counting(c, Arc::default())
}

/// Starts the controller manager with a client that counts its writes to Endpoints and
/// EndpointSlices (an API server does not store an update that changes nothing, so resourceVersions
/// cannot tell whether the controllers wrote).
fn start_counting(c: &Cluster, writes: Arc<AtomicUsize>) -> Running {
    let inner = c.kube_client();
    let counting = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let path = req.uri().path();
        if req.method() != http::Method::GET
            && (path.contains("/endpoints") || path.contains("/endpointslices"))
        {
            writes.fetch_add(1, Ordering::SeqCst);
        }
        let inner = inner.clone();
        async move { inner.send(req).await }
    });
    let client = kube::Client::new(counting, "default");
    tokio::spawn(atoll_controller_manager::run_until(
        client,
        Config::default(),
        std::future::pending(),
    ))
}

struct Apis {
    pods: Api<Pod>,
    services: Api<Service>,
    endpoints: Api<Endpoints>,
    slices: Api<EndpointSlice>,
}

async fn apis(c: &Cluster) -> Apis {
    let client = c.kube_client();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}, "spec": {}});
    nodes
        .create(&PostParams::default(), &from(node))
        .await
        .expect("create node");
    Apis {
        pods: Api::namespaced(client.clone(), "default"),
        services: Api::namespaced(client.clone(), "default"),
        endpoints: Api::namespaced(client.clone(), "default"),
        slices: Api::namespaced(client, "default"),
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

async fn service(a: &Apis, name: &str, spec: Value) {
    let svc =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    a.services
        .create(&PostParams::default(), &from(svc))
        .await
        .expect("create service");
}

/// A pod on node n1 labelled `app: <app>` whose one container has `ports` (name, number).
async fn pod(a: &Apis, name: &str, app: &str, ports: &[(&str, i32)]) {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p}))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx", "ports": ports}]}});
    a.pods
        .create(&PostParams::default(), &from(pod))
        .await
        .expect("create pod");
}

/// Reports the pod running at `ip`, ready or not, as a kubelet would.
async fn report(a: &Apis, name: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": status}]}});
    a.pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch pod status");
}

/// An Endpoints' subsets as (ready IPs, not-ready IPs, ports as `name:port`), sorted.
type Subsets = Vec<(Vec<String>, Vec<String>, Vec<String>)>;

fn subsets(ep: &Endpoints) -> Subsets {
    let ips = |l: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| -> Vec<String> {
        l.iter().flatten().map(|a| a.ip.clone()).collect()
    };
    let mut out: Subsets = ep
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            let mut ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port))
                .collect();
            ports.sort();
            (ips(&s.addresses), ips(&s.not_ready_addresses), ports)
        })
        .collect();
    out.sort();
    out
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Waits until the service's Endpoints have these subsets; returns them.
async fn endpoints_become(a: &Apis, name: &str, want: Subsets) -> Endpoints {
    eventually(&format!("endpoints {name} to be {want:?}"), || async {
        let ep = a.endpoints.get(name).await.ok()?;
        (subsets(&ep) == want).then_some(ep)
    })
    .await
}

/// The service's managed slices.
async fn slices_of(a: &Apis, svc: &str) -> Vec<EndpointSlice> {
    let lp = ListParams::default().labels(&format!(
        "kubernetes.io/service-name={svc},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
    ));
    a.slices.list(&lp).await.expect("list slices").items
}

/// Every endpoint of the service's slices: IP to (ready, serving, terminating), with each slice's
/// ports as `name:port`.
type SliceView = BTreeMap<String, ((bool, bool, bool), Vec<String>)>;

fn slice_view(slices: &[EndpointSlice]) -> SliceView {
    let mut out = SliceView::new();
    for s in slices {
        let ports: Vec<String> = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}:{}",
                    p.name.clone().unwrap_or_default(),
                    p.port.unwrap_or(0)
                )
            })
            .collect();
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            let conds = (
                c.ready == Some(true),
                c.serving == Some(true),
                c.terminating == Some(true),
            );
            for ip in &e.addresses {
                out.insert(ip.clone(), (conds, ports.clone()));
            }
        }
    }
    out
}

/// (ready, serving, terminating).
type Conditions = (bool, bool, bool);

async fn slices_become(a: &Apis, svc: &str, want: Vec<(&str, Conditions, &[&str])>) {
    let want: SliceView = want
        .into_iter()
        .map(|(ip, c, p)| (ip.to_string(), (c, strs(p))))
        .collect();
    eventually(&format!("slices of {svc} to be {want:?}"), || async {
        (slice_view(&slices_of(a, svc).await) == want).then_some(())
    })
    .await
}

/// The resourceVersions of the service's Endpoints and slices.
async fn versions(a: &Apis, svc: &str) -> Vec<String> {
    let mut v = vec![
        a.endpoints
            .get(svc)
            .await
            .expect("endpoints")
            .metadata
            .resource_version
            .unwrap_or_default(),
    ];
    for s in slices_of(a, svc).await {
        v.push(format!(
            "{}@{}",
            s.metadata.name.unwrap_or_default(),
            s.metadata.resource_version.unwrap_or_default()
        ));
    }
    v.sort();
    v
}

const READY: (bool, bool, bool) = (true, true, false);
const NOT_READY: (bool, bool, bool) = (false, false, false);

#[tokio::test]
async fn endpoints_and_slices_follow_pods_readiness_ports_ips_and_labels() {
    let c = Cluster::start().await;
    let a = apis(&c).await;
    let cm = start(&c);
    service(
        &a,
        "web",
        json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "admin", "port": 81, "targetPort": 9000}]}),
    )
    .await;
    pod(&a, "a", "web", &[("http", 8080)]).await;
    pod(&a, "b", "web", &[("http", 8081)]).await;
    pod(&a, "c", "web", &[]).await;
    pod(&a, "other", "db", &[("http", 8080)]).await;
    // No pod has an IP yet: Endpoints without subsets, and a placeholder slice.
    endpoints_become(&a, "web", vec![]).await;
    eventually("a placeholder slice", || async {
        let s = slices_of(&a, "web").await;
        (s.len() == 1 && s[0].endpoints.is_empty()).then_some(())
    })
    .await;
    // Not ready, then ready.
    report(&a, "a", "10.244.0.1", false).await;
    report(&a, "other", "10.244.0.9", true).await;
    endpoints_become(
        &a,
        "web",
        vec![(
            vec![],
            strs(&["10.244.0.1"]),
            strs(&["admin:9000", "http:8080"]),
        )],
    )
    .await;
    slices_become(
        &a,
        "web",
        vec![("10.244.0.1", NOT_READY, &["http:8080", "admin:9000"])],
    )
    .await;
    report(&a, "a", "10.244.0.1", true).await;
    let ep = endpoints_become(
        &a,
        "web",
        vec![(
            strs(&["10.244.0.1"]),
            vec![],
            strs(&["admin:9000", "http:8080"]),
        )],
    )
    .await;
    let addr = &ep.subsets.as_ref().expect("subsets")[0]
        .addresses
        .as_ref()
        .expect("addresses")[0];
    let target = addr.target_ref.as_ref().expect("targetRef");
    assert_eq!(addr.node_name.as_deref(), Some("n1"));
    assert_eq!(
        (
            target.kind.as_deref(),
            target.namespace.as_deref(),
            target.name.as_deref()
        ),
        (Some("Pod"), Some("default"), Some("a"))
    );
    let uid = a.pods.get("a").await.expect("pod a").metadata.uid;
    assert_eq!(target.uid, uid);
    // Named target ports resolve per pod: b has another http port, c none (only in admin).
    report(&a, "b", "10.244.0.2", true).await;
    report(&a, "c", "10.244.0.3", true).await;
    endpoints_become(
        &a,
        "web",
        vec![
            (strs(&["10.244.0.1"]), vec![], strs(&["http:8080"])),
            (
                strs(&["10.244.0.1", "10.244.0.2", "10.244.0.3"]),
                vec![],
                strs(&["admin:9000"]),
            ),
            (strs(&["10.244.0.2"]), vec![], strs(&["http:8081"])),
        ],
    )
    .await;
    slices_become(
        &a,
        "web",
        vec![
            ("10.244.0.1", READY, &["http:8080", "admin:9000"]),
            ("10.244.0.2", READY, &["http:8081", "admin:9000"]),
            ("10.244.0.3", READY, &["admin:9000"]),
        ],
    )
    .await;
    let slices = slices_of(&a, "web").await;
    assert_eq!(slices.len(), 3, "one slice per port set");
    let svc_uid = a.services.get("web").await.expect("svc").metadata.uid;
    for s in &slices {
        assert_eq!(s.address_type, "IPv4");
        assert!(
            s.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-"))
        );
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), Some(&owner.uid), owner.controller),
            ("Service", svc_uid.as_ref(), Some(true))
        );
        let e = &s.endpoints[0];
        assert_eq!(
            (e.node_name.as_deref(), e.zone.as_deref()),
            (Some("n1"), Some("z1"))
        );
        assert_eq!(
            e.target_ref.as_ref().and_then(|t| t.kind.as_deref()),
            Some("Pod")
        );
    }
    // A new IP; a label change takes b out.
    report(&a, "a", "10.244.0.11", true).await;
    let relabel = json!({"metadata": {"labels": {"app": "elsewhere"}}});
    a.pods
        .patch("b", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel b");
    endpoints_become(
        &a,
        "web",
        vec![
            (strs(&["10.244.0.11"]), vec![], strs(&["http:8080"])),
            (
                strs(&["10.244.0.11", "10.244.0.3"]),
                vec![],
                strs(&["admin:9000"]),
            ),
        ],
    )
    .await;
    slices_become(
        &a,
        "web",
        vec![
            ("10.244.0.11", READY, &["http:8080", "admin:9000"]),
            ("10.244.0.3", READY, &["admin:9000"]),
        ],
    )
    .await;
    // Terminating (deleted with a grace period, no kubelet to finish it): out of Endpoints, in the
    // slices as terminating and still serving; a failed pod leaves both.
    a.pods
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    endpoints_become(
        &a,
        "web",
        vec![(
            strs(&["10.244.0.11"]),
            vec![],
            strs(&["admin:9000", "http:8080"]),
        )],
    )
    .await;
    slices_become(
        &a,
        "web",
        vec![
            ("10.244.0.11", READY, &["http:8080", "admin:9000"]),
            ("10.244.0.3", (false, true, true), &["admin:9000"]),
        ],
    )
    .await;
    let failed = json!({"status": {"phase": "Failed"}});
    a.pods
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&failed))
        .await
        .expect("fail c");
    slices_become(
        &a,
        "web",
        vec![("10.244.0.11", READY, &["http:8080", "admin:9000"])],
    )
    .await;
    // Nothing more to change: a pod change endpoints do not depend on writes nothing, nor does a
    // restart of the controller manager.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cm.abort();
    let _ = cm.await;
    let writes = Arc::new(AtomicUsize::new(0));
    let cm = start_counting(&c, writes.clone());
    let before = versions(&a, "web").await;
    let unrelated = json!({"status": {"conditions": [{"type": "Ready", "status": "True"},
        {"type": "PodScheduled", "status": "True"}], "containerStatuses": [{"name": "c", "image": "nginx",
        "imageID": "", "ready": true, "restartCount": 3, "started": true}]}});
    a.pods
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&unrelated))
        .await
        .expect("unrelated status change");
    // A witness: once its Endpoints and slice are written (two writes), the restarted controllers
    // have long looked at `web` (queued first, at their first list).
    service(
        &a,
        "witness",
        json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
    )
    .await;
    endpoints_become(
        &a,
        "witness",
        vec![(strs(&["10.244.0.11"]), vec![], strs(&[":80"]))],
    )
    .await;
    slices_become(&a, "witness", vec![("10.244.0.11", READY, &[":80"])]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(versions(&a, "web").await, before);
    assert_eq!(
        writes.load(Ordering::SeqCst),
        2,
        "only the witness's Endpoints and slice were written"
    );
    cm.abort();
}

#[tokio::test]
async fn publish_not_ready_selectorless_services_and_service_deletion() {
    let c = Cluster::start().await;
    let a = apis(&c).await;
    // A service without a selector and its hand-written Endpoints, made before the controllers run.
    service(&a, "manual", json!({"ports": [{"port": 5432}]})).await;
    let manual = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "192.168.1.10"}], "ports": [{"port": 5432}]}]});
    let manual: Endpoints = a
        .endpoints
        .create(&PostParams::default(), &from(manual))
        .await
        .expect("create manual endpoints");
    let cm = start(&c);
    service(
        &a,
        "all",
        json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true, "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    pod(&a, "a", "web", &[]).await;
    pod(&a, "b", "web", &[]).await;
    report(&a, "a", "10.244.0.1", false).await;
    report(&a, "b", "10.244.0.2", true).await;
    endpoints_become(
        &a,
        "all",
        vec![(
            strs(&["10.244.0.1", "10.244.0.2"]),
            vec![],
            strs(&[":8080"]),
        )],
    )
    .await;
    slices_become(
        &a,
        "all",
        vec![
            ("10.244.0.1", (true, false, false), &[":8080"]),
            ("10.244.0.2", READY, &[":8080"]),
        ],
    )
    .await;
    // A terminating pod stays published.
    a.pods
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    slices_become(
        &a,
        "all",
        vec![
            ("10.244.0.1", (true, false, true), &[":8080"]),
            ("10.244.0.2", READY, &[":8080"]),
        ],
    )
    .await;
    endpoints_become(
        &a,
        "all",
        vec![(
            strs(&["10.244.0.1", "10.244.0.2"]),
            vec![],
            strs(&[":8080"]),
        )],
    )
    .await;
    // The selectorless service's Endpoints were left alone, and it has no managed slices.
    let now = a.endpoints.get("manual").await.expect("manual endpoints");
    assert_eq!(
        now.metadata.resource_version,
        manual.metadata.resource_version
    );
    assert!(slices_of(&a, "manual").await.is_empty());
    // Deleting the service deletes its Endpoints and slices.
    a.services
        .delete("all", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually(
        "the deleted service's Endpoints and slices to go",
        || async {
            let gone = a.endpoints.get_opt("all").await.ok()?.is_none();
            (gone && slices_of(&a, "all").await.is_empty()).then_some(())
        },
    )
    .await;
    let now = a.endpoints.get("manual").await.expect("manual endpoints");
    assert_eq!(
        now.metadata.resource_version,
        manual.metadata.resource_version
    );
    cm.abort();
}

#[tokio::test]
async fn slices_hold_at_most_100_endpoints() {
    let c = Cluster::start().await;
    let a = apis(&c).await;
    service(
        &a,
        "big",
        json!({"selector": {"app": "big"}, "ports": [{"port": 80}]}),
    )
    .await;
    let a = &a;
    futures::stream::iter(0..120)
        .for_each_concurrent(16, |i| async move {
            let name = format!("p{i}");
            pod(a, &name, "big", &[]).await;
            report(
                a,
                &name,
                &format!("10.244.{}.{}", i / 100, i % 100 + 1),
                true,
            )
            .await;
        })
        .await;
    // Started after the pods are ready, the controller sees all 120 at once and packs them as
    // Kubernetes does: a full slice and the rest. (Pods trickling in fill slices unevenly: a slice is
    // never split to make room.)
    let cm = start(&c);
    let sizes = eventually("120 endpoints in two slices", || async {
        let slices = slices_of(a, "big").await;
        let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        (sizes.iter().sum::<usize>() == 120 && slice_view(&slices).len() == 120).then_some(sizes)
    })
    .await;
    assert_eq!(sizes, [20, 100]);
    let ep = eventually("120 addresses in the Endpoints", || async {
        let ep = a.endpoints.get("big").await.ok()?;
        let n: usize = ep
            .subsets
            .iter()
            .flatten()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        (n == 120).then_some(ep)
    })
    .await;
    assert_eq!(ep.subsets.as_ref().map(Vec::len), Some(1));
    // One pod not ready: one slice changes, in place.
    let before = slices_of(a, "big").await;
    report(a, "p7", "10.244.0.8", false).await;
    eventually("p7 not ready in its slice", || async {
        let view = slice_view(&slices_of(a, "big").await);
        (view.get("10.244.0.8").map(|v| v.0) == Some(NOT_READY)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = slices_of(a, "big").await;
    let names = |s: &[EndpointSlice]| -> Vec<String> {
        let mut v: Vec<String> = s.iter().filter_map(|s| s.metadata.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&before),
        names(&after),
        "slices were replaced, not updated"
    );
    let changed = before
        .iter()
        .filter(|b| {
            !after
                .iter()
                .any(|x| x.metadata.resource_version == b.metadata.resource_version)
        })
        .count();
    assert_eq!(changed, 1);
    cm.abort();
}
