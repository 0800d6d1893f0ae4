//! The namespace controller against a real API server and etcd: deleting a namespace deletes its
//! content (custom resources too), then the namespace; content with finalizers holds it Terminating, with conditions.

use atoll_controller_manager::Config;
use atoll_testkit::{Cluster, eventually};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Pod, ReplicationController, Secret, Service,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn start(c: &Cluster) -> tokio::task::JoinHandle<Result<(), atoll_controller_manager::Error>> {
    tokio::spawn(atoll_controller_manager::run_until(
        c.kube_client(),
        Config::default(),
        std::future::pending(),
    ))
}

async fn create<K>(client: &Client, ns: &str, obj: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(obj).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

async fn namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn count<K>(client: &Client, ns: &str) -> usize
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX)
}

async fn gone(nss: &Api<Namespace>, name: &str) {
    eventually(&format!("namespace {name} to be gone"), || async {
        match nss.get(name).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            _ => None,
        }
    })
    .await
}

#[tokio::test]
async fn a_deleted_namespace_loses_all_its_content_then_goes() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let cm = start(&c);
    namespace(&client, "doomed").await;
    namespace(&client, "kept").await;
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let _: Pod = create(&client, "doomed", pod.clone()).await;
    let _: Pod = create(
        &client,
        "doomed",
        json!({"metadata": {"name": "p2"}, "spec": {"containers": [{"name": "c", "image": "nginx"}], "terminationGracePeriodSeconds": 30}}),
    )
    .await;
    let _: Pod = create(&client, "kept", pod).await;
    let _: Service = create(
        &client,
        "doomed",
        // No selector: its Endpoints are written by hand below, not by the endpoints controller.
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    let _: ConfigMap = create(
        &client,
        "doomed",
        json!({"metadata": {"name": "c"}, "data": {"k": "v"}}),
    )
    .await;
    let _: Secret = create(
        &client,
        "doomed",
        json!({"metadata": {"name": "sec"}, "stringData": {"k": "v"}}),
    )
    .await;
    let _: ReplicationController = create(
        &client,
        "doomed",
        json!({"metadata": {"name": "rc"}, "spec": {"replicas": 0, "selector": {"app": "a"},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    let _: Endpoints = create(
        &client,
        "doomed",
        json!({"metadata": {"name": "s"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
    )
    .await;

    // A custom resource: deleted like every other namespaced kind discovery lists.
    let h = c.http();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]},
    });
    assert_eq!(
        h.json(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &crd
        )
        .await
        .status,
        201
    );
    let widgets = "/apis/example.com/v1/namespaces/doomed/widgets";
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}});
    eventually("the widget to be created", || async {
        (h.json("POST", widgets, &widget).await.status == 201).then_some(())
    })
    .await;

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("doomed", &DeleteParams::default())
        .await
        .expect("delete namespace");
    gone(&nss, "doomed").await;
    let left = h.get(widgets).await.json();
    assert_eq!(left["items"], json!([]), "{left}");
    assert_eq!(count::<Pod>(&client, "doomed").await, 0);
    assert_eq!(count::<Service>(&client, "doomed").await, 0);
    assert_eq!(count::<ConfigMap>(&client, "doomed").await, 0);
    assert_eq!(count::<Secret>(&client, "doomed").await, 0);
    assert_eq!(count::<ReplicationController>(&client, "doomed").await, 0);
    assert_eq!(count::<Endpoints>(&client, "doomed").await, 0);
    // Other namespaces keep their content.
    assert_eq!(count::<Pod>(&client, "kept").await, 1);
    assert!(nss.get("kept").await.is_ok());
    cm.abort();
}

fn condition(ns: &Namespace, kind: &str) -> Option<(String, String, String)> {
    let c = ns
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test]
async fn content_with_a_finalizer_holds_the_namespace_terminating_with_conditions() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let cm = start(&c);
    namespace(&client, "held").await;
    let _: ConfigMap = create(
        &client,
        "held",
        json!({"metadata": {"name": "stuck", "finalizers": ["example.com/x"]}}),
    )
    .await;
    let _: ConfigMap = create(&client, "held", json!({"metadata": {"name": "free"}})).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("held", &DeleteParams::default())
        .await
        .expect("delete namespace");

    let ns = eventually("the content conditions", || async {
        let ns = nss.get("held").await.ok()?;
        let (st, _, _) = condition(&ns, "NamespaceFinalizersRemaining")?;
        (st == "True").then_some(ns)
    })
    .await;
    assert_eq!(
        ns.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining"),
        Some((
            "True".into(),
            "SomeFinalizersRemain".into(),
            "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances".into()
        ))
    );
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining"),
        Some((
            "True".into(),
            "SomeResourcesRemain".into(),
            "Some resources are remaining: configmaps. has 1 resource instances".into()
        ))
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionDiscoveryFailure").map(|c| (c.0, c.1)),
        Some(("False".into(), "ResourcesDiscovered".into()))
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionContentFailure").map(|c| (c.0, c.1)),
        Some(("False".into(), "ContentDeleted".into()))
    );
    // The deletable content went; the held object waits with a deletionTimestamp.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "held");
    assert!(cms.get("free").await.is_err());
    let stuck = cms.get("stuck").await.expect("held object");
    assert!(stuck.metadata.deletion_timestamp.is_some());
    // Still held a while later.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(nss.get("held").await.is_ok());

    cms.patch(
        "stuck",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    gone(&nss, "held").await;
    cm.abort();
}

#[tokio::test]
async fn a_bound_pod_is_deleted_with_its_grace_period_and_holds_the_namespace_until_it_goes() {
    let c = Cluster::start().await;
    let client = c.kube_client();
    let cm = start(&c);
    namespace(&client, "graceful").await;
    let _: Pod = create(
        &client,
        "graceful",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}], "terminationGracePeriodSeconds": 600}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "graceful");
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let _: Value = pods
        .create_subresource("binding", "p", &PostParams::default(), &binding)
        .await
        .expect("bind");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("graceful", &DeleteParams::default())
        .await
        .expect("delete namespace");
    // The pod is being deleted with its grace period (a kubelet would stop it); the namespace waits.
    let ns = eventually("the remaining pod to be reported", || async {
        let ns = nss.get("graceful").await.ok()?;
        let (st, _, _) = condition(&ns, "NamespaceContentRemaining")?;
        (st == "True").then_some(ns)
    })
    .await;
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining").map(|c| c.2),
        Some("Some resources are remaining: pods. has 1 resource instances".into())
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining").map(|c| (c.0, c.1)),
        Some(("False".into(), "ContentHasNoFinalizers".into()))
    );
    let pod = pods.get("p").await.expect("pod waits");
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(600));
    // What a kubelet does once the containers stopped: the final delete.
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("final delete");
    gone(&nss, "graceful").await;
    cm.abort();
}
