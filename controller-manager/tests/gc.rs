//! The garbage collector against a real API server and etcd: owners deleted with each propagation
//! policy, dangling and mixed owner references, owners deleted while the collector was down, and
//! references the collector must leave alone.

use std::time::Duration;

use atoll_controller_manager::Config;
use atoll_testkit::{Cluster, eventually};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ReplicationController, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NS: &str = "gc";

fn start(c: &Cluster) -> tokio::task::JoinHandle<Result<(), atoll_controller_manager::Error>> {
    tokio::spawn(atoll_controller_manager::run_until(
        c.kube_client(),
        Config::default(),
        std::future::pending(),
    ))
}

async fn setup(c: &Cluster) -> Client {
    let client = c.kube_client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    client
}

/// An owner reference to `obj`.
fn owner<K: Resource<DynamicType = ()>>(obj: &K, block: bool) -> Value {
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "name": obj.name_any(),
        "uid": obj.uid().unwrap_or_default(),
        "blockOwnerDeletion": block,
    })
}

trait Namespaced:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}
impl<K> Namespaced for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

fn api<K: Namespaced>(client: &Client) -> Api<K> {
    Api::namespaced(client.clone(), NS)
}

/// Creates `body` (its metadata gets `name`, `owners` and `finalizers`).
async fn create<K: Namespaced>(
    client: &Client,
    name: &str,
    mut body: Value,
    owners: Vec<Value>,
    finalizers: &[&str],
) -> K {
    body["metadata"] = json!({"name": name, "ownerReferences": owners, "finalizers": finalizers});
    let obj: K = serde_json::from_value(body).expect("object");
    api::<K>(client)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

async fn configmap(client: &Client, name: &str, owners: Vec<Value>) -> ConfigMap {
    create(client, name, json!({}), owners, &[]).await
}

fn pod_body() -> Value {
    json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

async fn exists<K: Namespaced>(client: &Client, name: &str) -> Option<K> {
    api::<K>(client).get_opt(name).await.expect("get")
}

async fn wait_gone<K: Namespaced>(client: &Client, name: &str) {
    eventually(&format!("{} {name} to be gone", K::kind(&())), || async {
        exists::<K>(client, name).await.is_none().then_some(())
    })
    .await
}

fn owner_uids<K: Resource>(obj: &K) -> Vec<String> {
    obj.owner_references()
        .iter()
        .map(|r| r.uid.clone())
        .collect()
}

async fn delete<K: Namespaced>(client: &Client, name: &str, dp: &DeleteParams) {
    api::<K>(client)
        .delete(name, dp)
        .await
        .expect("delete owner");
}

async fn drop_finalizers<K: Namespaced>(client: &Client, name: &str) {
    api::<K>(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("remove finalizers");
}

#[tokio::test]
async fn background_deletes_dependents_of_every_kind() {
    let c = Cluster::start().await;
    let client = setup(&c).await;
    let cm = start(&c);
    // An RC-like owner with dependents of several kinds (the RC has no pods of its own).
    let rc: ReplicationController = create(
        &client,
        "rc",
        json!({"spec": {"replicas": 0, "selector": {"app": "none"},
            "template": {"metadata": {"labels": {"app": "none"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        vec![],
        &[],
    )
    .await;
    let _: Pod = create(&client, "p", pod_body(), vec![owner(&rc, true)], &[]).await;
    configmap(&client, "c", vec![owner(&rc, false)]).await;
    let _: Secret = create(&client, "s", json!({}), vec![owner(&rc, true)], &[]).await;
    configmap(&client, "bystander", vec![]).await;
    delete::<ReplicationController>(&client, "rc", &DeleteParams::background()).await;
    wait_gone::<Pod>(&client, "p").await;
    wait_gone::<ConfigMap>(&client, "c").await;
    wait_gone::<Secret>(&client, "s").await;
    assert!(exists::<ConfigMap>(&client, "bystander").await.is_some());
    cm.abort();
}

#[tokio::test]
async fn orphan_keeps_dependents_without_the_reference_and_removes_the_owner() {
    let c = Cluster::start().await;
    let client = setup(&c).await;
    let cm = start(&c);
    let o = configmap(&client, "owner", vec![]).await;
    let other = configmap(&client, "other-owner", vec![]).await;
    configmap(&client, "d1", vec![owner(&o, true)]).await;
    let _: Pod = create(
        &client,
        "d2",
        pod_body(),
        vec![owner(&o, false), owner(&other, false)],
        &[],
    )
    .await;
    delete::<ConfigMap>(&client, "owner", &DeleteParams::orphan()).await;
    wait_gone::<ConfigMap>(&client, "owner").await;
    let d1 = exists::<ConfigMap>(&client, "d1").await.expect("d1 stays");
    assert!(owner_uids(&d1).is_empty(), "{:?}", d1.metadata);
    let d2 = exists::<Pod>(&client, "d2").await.expect("d2 stays");
    assert_eq!(owner_uids(&d2), vec![other.uid().unwrap_or_default()]);
    cm.abort();
}

#[tokio::test]
async fn foreground_keeps_the_owner_until_its_blocking_dependents_are_gone() {
    let c = Cluster::start().await;
    let client = setup(&c).await;
    let cm = start(&c);
    let o = configmap(&client, "owner", vec![]).await;
    // A blocking dependent that a finalizer holds, and a non-blocking one.
    let _: ConfigMap = create(
        &client,
        "held",
        json!({}),
        vec![owner(&o, true)],
        &["example.com/hold"],
    )
    .await;
    let _: Pod = create(&client, "free", pod_body(), vec![owner(&o, false)], &[]).await;
    delete::<ConfigMap>(&client, "owner", &DeleteParams::foreground()).await;
    wait_gone::<Pod>(&client, "free").await;
    let held = eventually("the blocking dependent to be deleted", || async {
        exists::<ConfigMap>(&client, "held")
            .await
            .filter(|h| h.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert_eq!(owner_uids(&held), vec![o.uid().unwrap_or_default()]);
    // The owner waits, marked for deletion, for as long as the blocking dependent is there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = exists::<ConfigMap>(&client, "owner")
        .await
        .expect("owner waits");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(waiting.finalizers(), ["foregroundDeletion".to_string()]);
    drop_finalizers::<ConfigMap>(&client, "held").await;
    wait_gone::<ConfigMap>(&client, "held").await;
    wait_gone::<ConfigMap>(&client, "owner").await;
    cm.abort();
}

#[tokio::test]
async fn a_dependent_with_a_live_owner_only_loses_the_dead_reference() {
    let c = Cluster::start().await;
    let client = setup(&c).await;
    let cm = start(&c);
    let live = configmap(&client, "live", vec![]).await;
    let dead = configmap(&client, "dead", vec![]).await;
    configmap(&client, "d", vec![owner(&dead, true), owner(&live, true)]).await;
    // An owner that never existed (a uid nobody has) is as dead.
    let mut ghost = owner(&dead, false);
    ghost["uid"] = "00000000-0000-0000-0000-000000000000".into();
    ghost["name"] = "ghost".into();
    configmap(&client, "e", vec![ghost, owner(&live, false)]).await;
    delete::<ConfigMap>(&client, "dead", &DeleteParams::background()).await;
    for name in ["d", "e"] {
        let d = eventually(&format!("{name} to lose its dead owner"), || async {
            exists::<ConfigMap>(&client, name)
                .await
                .filter(|d| d.owner_references().len() == 1)
        })
        .await;
        assert_eq!(owner_uids(&d), vec![live.uid().unwrap_or_default()]);
        assert!(d.metadata.deletion_timestamp.is_none());
    }
    cm.abort();
}

#[tokio::test]
async fn owners_deleted_while_the_collector_was_down_are_found_at_start() {
    let c = Cluster::start().await;
    let client = setup(&c).await;
    let gone = configmap(&client, "gone", vec![]).await;
    let stays = configmap(&client, "stays", vec![]).await;
    let _: Pod = create(
        &client,
        "orphaned",
        pod_body(),
        vec![owner(&gone, true)],
        &[],
    )
    .await;
    configmap(&client, "kept", vec![owner(&stays, true)]).await;
    // Deleted with no collector running: its dependent dangles.
    delete::<ConfigMap>(&client, "gone", &DeleteParams::background()).await;
    wait_gone::<ConfigMap>(&client, "gone").await;
    let cm = start(&c);
    wait_gone::<Pod>(&client, "orphaned").await;
    let kept = exists::<ConfigMap>(&client, "kept").await.expect("kept");
    assert_eq!(owner_uids(&kept), vec![stays.uid().unwrap_or_default()]);
    cm.abort();
}

#[tokio::test]
async fn an_invalid_reference_deletes_nothing() {
    let c = Cluster::start().await;
    let client = setup(&c).await;
    let cm = start(&c);
    // A cluster-scoped object naming a namespaced owner (that does not exist): invalid, left alone.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"metadata": {"name": "n1", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000001"}
    ]}, "spec": {}});
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).expect("node"),
        )
        .await
        .expect("create node");
    // An owner of an unknown kind: unresolvable, left alone.
    configmap(
        &client,
        "unknown-kind",
        vec![
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "00000000-0000-0000-0000-000000000002"}),
        ],
    )
    .await;
    // A sentinel the collector does delete: once it is gone, the others have been looked at.
    configmap(
        &client,
        "sentinel",
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000001"}),
        ],
    )
    .await;
    wait_gone::<ConfigMap>(&client, "sentinel").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n1 = nodes.get("n1").await.expect("node stays");
    assert!(n1.metadata.deletion_timestamp.is_none());
    assert_eq!(n1.owner_references().len(), 1);
    let u = exists::<ConfigMap>(&client, "unknown-kind")
        .await
        .expect("stays");
    assert_eq!(u.owner_references().len(), 1);
    cm.abort();
}
