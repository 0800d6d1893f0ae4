//! The Rust `kube` client (what Atoll's own scheduler, controllers and kubelet will use) against the
//! `atoll apiserver` binary: typed create, list with selectors, merge and apply patches, the
//! `kube::runtime` watcher (list, then watch with bookmarks), as controllers run it, and a custom
//! resource defined with kube-derive.

use std::time::Duration;

use atoll_e2e::Env;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A custom kind defined the kube-derive way.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Document",
    namespaced,
    status = "DocumentStatus",
    shortname = "doc",
    printcolumn = r#"{"name": "Title", "type": "string", "jsonPath": ".spec.title"}"#,
    printcolumn = r#"{"name": "Pages", "type": "integer", "jsonPath": ".spec.pages"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#
)]
struct DocumentSpec {
    title: String,
    pages: Option<i32>,
}

/// The status of a [`Document`].
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
struct DocumentStatus {
    phase: String,
}

async fn client(env: &Env) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(env.path("kubeconfig")).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_client_and_watcher() {
    let env = tokio::task::spawn_blocking(Env::start).await.expect("env");
    let pods: Api<Pod> = Api::namespaced(client(&env).await, "default");

    // The watcher lists, then watches; it must see pods created before and after it started.
    pods.create(&PostParams::default(), &pod("before"))
        .await
        .expect("create");
    let mut events = watcher::watcher(
        pods.clone(),
        watcher::Config::default().labels("app=kube-rs"),
    )
    .boxed();
    let mut seen_init = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("watcher event in time")
    {
        if let Event::InitDone = ev {
            seen_init = true;
            break;
        }
    }
    assert!(seen_init, "the watcher finished its initial list");

    pods.create(&PostParams::default(), &pod("after"))
        .await
        .expect("create");
    let listed = pods
        .list(&ListParams::default().labels("app=kube-rs"))
        .await
        .expect("list");
    let mut names: Vec<String> = listed
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "before"]);

    let merged = pods
        .patch(
            "after",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"patched": "merge"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        merged
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("patched"))
            .map(String::as_str),
        Some("merge")
    );
    let applied = pods
        .patch(
            "after",
            &PatchParams::apply("atoll-e2e"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after", "annotations": {"applied": "yes"}}})),
        )
        .await
        .expect("server-side apply");
    assert_eq!(
        applied
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("applied"))
            .map(String::as_str),
        Some("yes")
    );
    assert!(
        applied
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("atoll-e2e"))
    );

    pods.delete("after", &DeleteParams::default())
        .await
        .expect("delete");
    let mut saw_apply = false;
    let mut saw_delete = false;
    while !(saw_apply && saw_delete) {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("watcher event in time")
        {
            Ok(Some(Event::Apply(p))) if p.metadata.name.as_deref() == Some("after") => {
                saw_apply = true
            }
            Ok(Some(Event::Delete(p))) if p.metadata.name.as_deref() == Some("after") => {
                saw_delete = true
            }
            Ok(Some(_)) => {}
            other => panic!("watcher ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_derive_custom_resources() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};
    let env = tokio::task::spawn_blocking(Env::start).await.expect("env");
    let client = client(&env).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Document::crd())
        .await
        .expect("create the CRD kube-derive generated");
    let established = await_condition(
        crds.clone(),
        "documents.example.com",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(20), established)
        .await
        .expect("established in time")
        .expect("wait");

    let docs: Api<Document> = Api::namespaced(client, "default");
    let spec = DocumentSpec {
        title: "Atomic".into(),
        pages: Some(12),
    };
    docs.create(&PostParams::default(), &Document::new("guide", spec))
        .await
        .expect("create a Document");
    let done = docs
        .patch_status(
            "guide",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Published"}})),
        )
        .await
        .expect("status");
    assert_eq!(done.status.map(|s| s.phase).as_deref(), Some("Published"));
    let listed = docs.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].spec.title, "Atomic");

    // kubectl knows the kind by its short name, and validates manifests of it on the server.
    // With the printer columns kube-derive put in the CRD.
    let table = env.ok(&["get", "doc"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "TITLE", "PAGES", "PHASE"], "{table}");
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row, ["guide", "Atomic", "12", "Published"], "{table}");
    let manifest = env.write(
        "doc.yaml",
        "apiVersion: example.com/v1\nkind: Document\nmetadata:\n  name: notes\nspec:\n  title: Notes\n",
    );
    env.ok(&["apply", "-f", &manifest]);
    let bad = env.write(
        "bad.yaml",
        "apiVersion: example.com/v1\nkind: Document\nmetadata:\n  name: bad\nspec:\n  title: Bad\n  colour: red\n",
    );
    let err = env.fails(&["create", "-f", &bad]);
    assert!(err.contains("colour"), "{err}");
    let explained = env.ok(&["explain", "documents.spec"]);
    assert!(
        explained.contains("title") && explained.contains("pages"),
        "{explained}"
    );
    env.ok(&["delete", "crd", "documents.example.com"]);
    let gone = env.fails(&["get", "doc"]);
    assert!(!gone.is_empty());
}
