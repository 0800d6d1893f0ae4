//! The Rust `kube` client (what Atoll's own scheduler, controllers and kubelet will use) against the
//! `atoll apiserver` binary: typed create, list with selectors, merge and apply patches, and the
//! `kube::runtime` watcher (list, then watch with bookmarks), as controllers run it.

use std::time::Duration;

use atoll_e2e::Env;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

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
    let kubeconfig =
        kube::config::Kubeconfig::read_from(env.path("kubeconfig")).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");

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
