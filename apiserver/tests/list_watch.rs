//! Lists (paging at one revision, selectors, tables) and watches (initial events, resume, 410,
//! selector transitions, bookmarks, timeouts) against a real etcd.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn paged_lists_are_consistent() {
    let c = Cluster::start().await;
    let h = c.http();
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        expect(
            &h.json(
                "POST",
                PODS,
                &pod(
                    &format!("p{i:02}"),
                    json!({"tier": tier, "n": i.to_string()}),
                ),
            )
            .await,
            201,
        );
    }
    let first = expect(&h.get(&format!("{PODS}?limit=10")).await, 200);
    assert_eq!(first["kind"], "PodList");
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    let list_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // A pod created between pages is not part of this list.
    expect(
        &h.json("POST", PODS, &pod("p05a", json!({"tier": "new"})))
            .await,
        201,
    );
    let second = expect(
        &h.get(&format!("{PODS}?limit=10&continue={token}")).await,
        200,
    );
    assert_eq!(second["metadata"]["resourceVersion"], list_rv.as_str());
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let third = expect(
        &h.get(&format!("{PODS}?limit=10&continue={token}")).await,
        200,
    );
    assert!(third["metadata"].get("continue").is_none());
    let mut all = names(&first);
    all.extend(names(&second));
    all.extend(names(&third));
    assert_eq!(all.len(), 25);
    assert!(!all.contains(&"p05a".to_string()));
    expect(
        &h.get(&format!("{PODS}?limit=10&continue=garbage")).await,
        400,
    );

    // A fresh list sees the new pod; label selectors filter, also across pages.
    assert_eq!(names(&expect(&h.get(PODS).await, 200)).len(), 26);
    let odd = expect(
        &h.get(&format!("{PODS}?labelSelector=tier%3Dodd&limit=5"))
            .await,
        200,
    );
    assert_eq!(odd["items"].as_array().unwrap().len(), 5);
    assert!(odd["metadata"]["continue"].is_string());
    let count = |sel: &str| {
        let h = h.clone();
        let path = format!("{PODS}?labelSelector={sel}");
        async move { names(&expect(&h.get(&path).await, 200)).len() }
    };
    assert_eq!(count("tier%3Dodd").await, 12);
    assert_eq!(count("tier!%3Dodd").await, 14);
    assert_eq!(count("tier%20in%20(odd,new)").await, 13);
    assert_eq!(count("tier%20notin%20(odd,even)").await, 1);
    assert_eq!(count("n").await, 25);
    assert_eq!(count("!n").await, 1);
    assert_eq!(count("tier%3Deven,n%3D4").await, 1);
    assert_eq!(count("n%3E20").await, 4);

    // Field selectors.
    let one = expect(
        &h.get(&format!("{PODS}?fieldSelector=metadata.name%3Dp03"))
            .await,
        200,
    );
    assert_eq!(names(&one), vec!["p03"]);
    let pending = expect(
        &h.get(&format!(
            "{PODS}?fieldSelector=status.phase%3DPending,spec.nodeName%3D"
        ))
        .await,
        200,
    );
    assert_eq!(names(&pending).len(), 26);
    let not_pending = expect(
        &h.get(&format!("{PODS}?fieldSelector=status.phase!%3DPending"))
            .await,
        200,
    );
    assert!(names(&not_pending).is_empty());

    // All namespaces, and the watch cache (resourceVersion=0).
    let sys =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    expect(
        &h.json("POST", "/api/v1/namespaces/kube-system/configmaps", &sys)
            .await,
        201,
    );
    expect(
        &h.json("POST", "/api/v1/namespaces/default/configmaps", &sys)
            .await,
        201,
    );
    let everywhere = expect(&h.get("/api/v1/configmaps").await, 200);
    assert_eq!(everywhere["items"].as_array().unwrap().len(), 2);
    let cached = expect(
        &h.get(&format!(
            "{PODS}?resourceVersion=0&labelSelector=tier%3Deven"
        ))
        .await,
        200,
    );
    assert_eq!(names(&cached).len(), 13);
}

#[tokio::test]
async fn tables_for_kubectl() {
    let c = Cluster::start().await;
    let h = c.http();
    expect(&h.json("POST", PODS, &pod("web", json!({}))).await, 201);
    let t = expect(&h.send("GET", PODS, &[("accept", TABLE)], "").await, 200);
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(&cols[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    let row = &t["rows"][0];
    assert_eq!(row["cells"][0], "web");
    assert_eq!(row["cells"][1], "0/1");
    assert_eq!(row["cells"][2], "Pending");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    let one = expect(
        &h.send("GET", &format!("{PODS}/web"), &[("accept", TABLE)], "")
            .await,
        200,
    );
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    let ns = expect(
        &h.send("GET", "/api/v1/namespaces", &[("accept", TABLE)], "")
            .await,
        200,
    );
    let names: Vec<&str> = ns["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert_eq!(ns["rows"][0]["cells"][1], "Active");
}

async fn next_event(w: &mut atoll_testkit::Lines) -> (String, Value) {
    let ev = w.next(WAIT).await.expect("a watch event");
    (
        ev["type"].as_str().unwrap_or("").to_string(),
        ev["object"].clone(),
    )
}

#[tokio::test]
async fn watches_start_resume_and_follow_selectors() {
    let c = Cluster::start().await;
    let h = c.http();
    expect(
        &h.json("POST", PODS, &pod("a", json!({"app": "x"}))).await,
        201,
    );
    expect(
        &h.json("POST", PODS, &pod("b", json!({"app": "y"}))).await,
        201,
    );

    // Without a resourceVersion: synthetic ADDED events first.
    let mut w = h
        .stream(&format!("{PODS}?watch=true"), "application/json")
        .await;
    assert_eq!(w.status, 200);
    let mut initial = [next_event(&mut w).await, next_event(&mut w).await];
    initial.sort_by(|a, b| {
        a.1["metadata"]["name"]
            .as_str()
            .cmp(&b.1["metadata"]["name"].as_str())
    });
    assert_eq!(initial[0].0, "ADDED");
    assert_eq!(initial[0].1["metadata"]["name"], "a");

    // A selector watch: changes in and out of the selection are ADDED and DELETED.
    let list = expect(&h.get(&format!("{PODS}?labelSelector=app%3Dx")).await, 200);
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sel = h
        .stream(
            &format!("{PODS}?watch=1&labelSelector=app%3Dx&resourceVersion={list_rv}"),
            "application/json",
        )
        .await;
    let moved_out = expect(
        &h.patch(
            &format!("{PODS}/a"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"app": "z"}}}),
        )
        .await,
        200,
    );
    let (ty, obj) = next_event(&mut sel).await;
    assert_eq!(
        (ty.as_str(), obj["metadata"]["name"].as_str()),
        ("DELETED", Some("a"))
    );
    assert_eq!(
        obj["metadata"]["resourceVersion"],
        moved_out["metadata"]["resourceVersion"]
    );
    assert_eq!(
        obj["metadata"]["labels"]["app"], "x",
        "a DELETED for leaving the selection carries the previous state"
    );
    expect(
        &h.patch(
            &format!("{PODS}/b"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"app": "x"}}}),
        )
        .await,
        200,
    );
    let (ty, obj) = next_event(&mut sel).await;
    assert_eq!(
        (ty.as_str(), obj["metadata"]["name"].as_str()),
        ("ADDED", Some("b"))
    );
    expect(
        &h.patch(
            &format!("{PODS}/b"),
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": {"k": "v"}}}),
        )
        .await,
        200,
    );
    let (ty, _) = next_event(&mut sel).await;
    assert_eq!(ty, "MODIFIED");
    expect(&h.send("DELETE", &format!("{PODS}/b"), &[], "").await, 200);
    let (ty, obj) = next_event(&mut sel).await;
    assert_eq!(
        (ty.as_str(), obj["metadata"]["name"].as_str()),
        ("DELETED", Some("b"))
    );

    // The unfiltered watch saw every change, in order.
    let mut types = vec![];
    for _ in 0..4 {
        types.push(next_event(&mut w).await.0);
    }
    assert_eq!(types, ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]);

    // Resuming from the list's resourceVersion replays everything since.
    let mut resumed = h
        .stream(
            &format!("{PODS}?watch=true&resourceVersion={list_rv}"),
            "application/json",
        )
        .await;
    let mut replay = vec![];
    for _ in 0..4 {
        replay.push(next_event(&mut resumed).await.0);
    }
    assert_eq!(replay, ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]);

    // Field selectors on watches too (kubectl delete waits on metadata.name).
    let mut by_name = h
        .stream(
            &format!("{PODS}?watch=true&fieldSelector=metadata.name%3Da"),
            "application/json",
        )
        .await;
    let (ty, obj) = next_event(&mut by_name).await;
    assert_eq!(
        (ty.as_str(), obj["metadata"]["name"].as_str()),
        ("ADDED", Some("a"))
    );

    // Tables on watches (kubectl get -w).
    let mut tw = h.stream(&format!("{PODS}?watch=true"), TABLE).await;
    let (ty, obj) = next_event(&mut tw).await;
    assert_eq!(ty, "ADDED");
    assert_eq!(obj["kind"], "Table");
    assert_eq!(obj["rows"][0]["cells"][0], "a");
}

#[tokio::test]
async fn watch_edges_gone_bookmarks_timeout() {
    let c = Cluster::start().await;
    let h = c.http();
    let created = expect(&h.json("POST", PODS, &pod("a", json!({}))).await, 201);
    let old_rv = rv(&created);
    expect(
        &h.patch(
            &format!("{PODS}/a"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"x": "1"}}}),
        )
        .await,
        200,
    );

    // timeoutSeconds ends the stream.
    let mut short = h
        .stream(
            &format!(
                "{PODS}?watch=true&timeoutSeconds=1&resourceVersion={}",
                rv(&created)
            ),
            "application/json",
        )
        .await;
    assert_eq!(next_event(&mut short).await.0, "MODIFIED");
    assert!(
        short.next(Duration::from_secs(5)).await.is_none(),
        "the watch ends after timeoutSeconds"
    );

    // sendInitialEvents with bookmarks ends the initial events with a bookmark.
    let mut b = h.stream(&format!("{PODS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"), "application/json").await;
    assert_eq!(next_event(&mut b).await.0, "ADDED");
    let (ty, obj) = next_event(&mut b).await;
    assert_eq!(ty, "BOOKMARK");
    assert_eq!(
        obj["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // After a restart the watch cache starts anew: an older resourceVersion is gone (410).
    let c = c.restart().await;
    let h = c.http();
    let mut gone = h
        .stream(
            &format!("{PODS}?watch=true&resourceVersion={old_rv}"),
            "application/json",
        )
        .await;
    let (ty, obj) = next_event(&mut gone).await;
    assert_eq!(ty, "ERROR");
    assert_eq!(obj["code"], 410);
    assert_eq!(obj["reason"], "Expired");
    // The stored objects survived the restart.
    assert_eq!(names(&expect(&h.get(PODS).await, 200)), vec!["a"]);
}

#[tokio::test]
async fn unpaged_lists_read_their_writes() {
    // Unpaged lists may be served from the watch cache; they must still see every write before them.
    let c = Cluster::start().await;
    let h = c.http();
    let cms = "/api/v1/namespaces/default/configmaps";
    let mut live = 0;
    for i in 0..30 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}, "data": {"v": "1"}});
        expect(&h.json("POST", cms, &cm).await, 201);
        live += 1;
        let listed = expect(&h.get(cms).await, 200);
        assert_eq!(
            names(&listed).len(),
            live,
            "the create just before is listed"
        );
        let patched = expect(
            &h.patch(
                &format!("{cms}/c{i}"),
                "application/merge-patch+json",
                &json!({"data": {"v": "2"}}),
            )
            .await,
            200,
        );
        let listed = expect(&h.get(cms).await, 200);
        let item = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["metadata"]["name"] == format!("c{i}"))
            .cloned()
            .unwrap();
        assert_eq!(item["data"]["v"], "2", "the update just before is listed");
        assert_eq!(
            item["metadata"]["resourceVersion"],
            patched["metadata"]["resourceVersion"]
        );
        let list_rv: i64 = listed["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(list_rv >= rv(&patched).parse::<i64>().unwrap());
        if i % 3 == 0 {
            expect(
                &h.send("DELETE", &format!("{cms}/c{i}"), &[], "").await,
                200,
            );
            live -= 1;
            let listed = expect(&h.get(cms).await, 200);
            assert!(
                !names(&listed).contains(&format!("c{i}")),
                "the delete just before is listed"
            );
        }
    }
}
