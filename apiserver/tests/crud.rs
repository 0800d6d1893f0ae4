//! Create, read, update, patch and delete against a real etcd: preconditions, generation, errors.

mod common;

use common::*;
use serde_json::json;

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn create_get_update_delete_with_preconditions() {
    let c = Cluster::start().await;
    let h = c.http();
    let created = expect(
        &h.json("POST", PODS, &pod("web", json!({"app": "web"})))
            .await,
        201,
    );
    assert!(!created["metadata"]["uid"].as_str().unwrap().is_empty());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(
        created["spec"]["restartPolicy"], "Always",
        "defaults are applied"
    );
    let first_rv = rv(&created);

    let again = expect(&h.json("POST", PODS, &pod("web", json!({}))).await, 409);
    assert_eq!(again["reason"], "AlreadyExists");
    assert_eq!(again["message"], "pods \"web\" already exists");

    let got = expect(&h.get(&format!("{PODS}/web")).await, 200);
    assert_eq!(rv(&got), first_rv);

    // A label change with the current resourceVersion succeeds and does not bump generation.
    let mut changed = got.clone();
    changed["metadata"]["labels"]["tier"] = json!("front");
    let updated = expect(&h.json("PUT", &format!("{PODS}/web"), &changed).await, 200);
    assert_ne!(rv(&updated), first_rv);
    assert_eq!(updated["metadata"]["generation"], 1);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // The old resourceVersion is now stale.
    let stale = expect(&h.json("PUT", &format!("{PODS}/web"), &changed).await, 409);
    assert_eq!(stale["reason"], "Conflict");
    assert!(
        stale["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );

    // Most of a pod's spec is immutable.
    let mut bad = updated.clone();
    bad["spec"]["containers"][0]["command"] = json!(["true"]);
    let invalid = expect(&h.json("PUT", &format!("{PODS}/web"), &bad).await, 422);
    assert_eq!(invalid["reason"], "Invalid");
    assert_eq!(invalid["details"]["causes"][0]["field"], "spec");

    // The image may change.
    let mut image = updated.clone();
    image["spec"]["containers"][0]["image"] = json!("busybox:1.37");
    let imaged = expect(&h.json("PUT", &format!("{PODS}/web"), &image).await, 200);
    assert_eq!(
        imaged["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );

    // Delete with a wrong uid precondition fails, then succeeds.
    let wrong =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "nope"}});
    expect(&h.json("DELETE", &format!("{PODS}/web"), &wrong).await, 409);
    let gone = expect(
        &h.send("DELETE", &format!("{PODS}/web"), &[], "").await,
        200,
    );
    assert_eq!(gone["metadata"]["name"], "web");
    let missing = expect(&h.get(&format!("{PODS}/web")).await, 404);
    assert_eq!(missing["message"], "pods \"web\" not found");
    assert_eq!(missing["details"]["kind"], "pods");
}

#[tokio::test]
async fn generation_tracks_spec_changes_and_status_is_separate() {
    let c = Cluster::start().await;
    let h = c.http();
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let created = expect(&h.json("POST", rcs, &rc("web", 1)).await, 201);
    assert_eq!(created["status"]["replicas"], 0);
    let scaled = expect(
        &h.patch(
            &format!("{rcs}/web"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 3}}),
        )
        .await,
        200,
    );
    assert_eq!(scaled["metadata"]["generation"], 2);
    // Status is ignored on the main resource ...
    let ignored = expect(
        &h.patch(
            &format!("{rcs}/web"),
            "application/merge-patch+json",
            &json!({"status": {"replicas": 7}}),
        )
        .await,
        200,
    );
    assert_eq!(ignored["status"]["replicas"], 0);
    // ... and only status changes through /status.
    let status = expect(
        &h.patch(
            &format!("{rcs}/web/status"),
            "application/merge-patch+json",
            &json!({"status": {"replicas": 2}, "spec": {"replicas": 9}}),
        )
        .await,
        200,
    );
    assert_eq!(status["status"]["replicas"], 2);
    assert_eq!(status["spec"]["replicas"], 3);
    assert_eq!(status["metadata"]["generation"], 2);

    // The scale subresource reads and writes spec.replicas.
    let scale = expect(&h.get(&format!("{rcs}/web/scale")).await, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    let scaled = expect(
        &h.patch(
            &format!("{rcs}/web/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 5}}),
        )
        .await,
        200,
    );
    assert_eq!(scaled["spec"]["replicas"], 5);
    let mut put = scaled.clone();
    put["spec"]["replicas"] = json!(1);
    put["metadata"]["resourceVersion"] = json!("1");
    expect(&h.json("PUT", &format!("{rcs}/web/scale"), &put).await, 409);
    put["metadata"]["resourceVersion"] = scaled["metadata"]["resourceVersion"].clone();
    expect(&h.json("PUT", &format!("{rcs}/web/scale"), &put).await, 200);
    let after = expect(&h.get(&format!("{rcs}/web")).await, 200);
    assert_eq!(after["spec"]["replicas"], 1);
    let neg = expect(
        &h.patch(
            &format!("{rcs}/web/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": -1}}),
        )
        .await,
        422,
    );
    assert_eq!(neg["details"]["causes"][0]["field"], "spec.replicas");

    // Deployments and ReplicaSets are served with scale too.
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let d = expect(&h.json("POST", deploys, &d).await, 201);
    assert_eq!(d["spec"]["replicas"], 1);
    let scale = expect(&h.get(&format!("{deploys}/d/scale")).await, 200);
    assert_eq!(scale["status"]["selector"], "app=d");
}

#[tokio::test]
async fn patches_merge_and_json() {
    let c = Cluster::start().await;
    let h = c.http();
    expect(
        &h.json("POST", PODS, &pod("p", json!({"a": "1", "b": "2"})))
            .await,
        201,
    );
    let merged = expect(
        &h.patch(
            &format!("{PODS}/p"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .await,
        200,
    );
    assert_eq!(merged["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    let ops = json!([{"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}, {"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:2"}]);
    let patched = expect(
        &h.patch(&format!("{PODS}/p"), "application/json-patch+json", &ops)
            .await,
        200,
    );
    assert_eq!(patched["metadata"]["annotations"]["note"], "x");
    assert_eq!(patched["spec"]["containers"][0]["image"], "busybox:2");
    let failing = json!([{"op": "test", "path": "/metadata/name", "value": "other"}]);
    expect(
        &h.patch(
            &format!("{PODS}/p"),
            "application/json-patch+json",
            &failing,
        )
        .await,
        422,
    );
    let stale = json!({"metadata": {"resourceVersion": "2", "labels": {"z": "1"}}});
    expect(
        &h.patch(&format!("{PODS}/p"), "application/merge-patch+json", &stale)
            .await,
        409,
    );
    let r = h
        .patch(&format!("{PODS}/p"), "text/plain", &json!({}))
        .await;
    assert_eq!(expect(&r, 415)["reason"], "UnsupportedMediaType");
    expect(
        &h.patch(
            &format!("{PODS}/missing"),
            "application/merge-patch+json",
            &json!({}),
        )
        .await,
        404,
    );
    let dry = expect(
        &h.patch(
            &format!("{PODS}/p?dryRun=All"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"dry": "run"}}}),
        )
        .await,
        200,
    );
    assert_eq!(dry["metadata"]["labels"]["dry"], "run");
    let real = expect(&h.get(&format!("{PODS}/p")).await, 200);
    assert!(
        real["metadata"]["labels"].get("dry").is_none(),
        "dry run wrote nothing"
    );
}

#[tokio::test]
async fn concurrent_patches_without_a_resource_version_all_apply() {
    let c = Cluster::start().await;
    let h = c.http();
    expect(&h.json("POST", PODS, &pod("busy", json!({}))).await, 201);
    let mut tasks = vec![];
    for i in 0..16 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"metadata": {"labels": {format!("l{i}"): "x"}}});
            h.patch(
                &format!("{PODS}/busy"),
                "application/merge-patch+json",
                &body,
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            200,
            "a patch without a precondition is retried, not refused"
        );
    }
    let got = expect(&h.get(&format!("{PODS}/busy")).await, 200);
    assert_eq!(got["metadata"]["labels"].as_object().unwrap().len(), 16);
    // A resourceVersion in the patch is a precondition.
    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"z": "1"}}});
    let r = expect(
        &h.patch(
            &format!("{PODS}/busy"),
            "application/merge-patch+json",
            &stale,
        )
        .await,
        409,
    );
    assert_eq!(r["reason"], "Conflict");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let c = Cluster::start().await;
    let h = c.http();
    let r = expect(
        &h.json("POST", PODS, &pod("Bad_Name", json!({}))).await,
        422,
    );
    assert_eq!(r["details"]["causes"][0]["field"], "metadata.name");
    let mut no_containers = pod("nc", json!({}));
    no_containers["spec"]["containers"] = json!([]);
    let r = expect(&h.json("POST", PODS, &no_containers).await, 422);
    assert!(
        r["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "spec.containers"),
        "{r}"
    );
    let mut bad_label = pod("bl", json!({"bad key": "v"}));
    bad_label["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}]);
    let r = expect(&h.json("POST", PODS, &bad_label).await, 422);
    assert!(
        r["details"]["causes"].as_array().unwrap().len() >= 2,
        "every problem is named: {r}"
    );

    let mut wrong_kind = pod("wk", json!({}));
    wrong_kind["kind"] = json!("Service");
    assert_eq!(
        expect(&h.json("POST", PODS, &wrong_kind).await, 400)["reason"],
        "BadRequest"
    );
    let mut wrong_version = pod("wv", json!({}));
    wrong_version["apiVersion"] = json!("apps/v1");
    let r = expect(&h.json("POST", PODS, &wrong_version).await, 400);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("does not match the expected API version")
    );
    let mut wrong_ns = pod("wn", json!({}));
    wrong_ns["metadata"]["namespace"] = json!("kube-system");
    expect(&h.json("POST", PODS, &wrong_ns).await, 400);
    let mut wrong_type = pod("wt", json!({}));
    wrong_type["spec"]["containers"] = json!("not a list");
    let r = expect(&h.json("POST", PODS, &wrong_type).await, 400);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("cannot be handled as a Pod"),
        "{r}"
    );

    let r = expect(
        &h.send(
            "POST",
            PODS,
            &[("content-type", "application/json")],
            "{\"kind\": ",
        )
        .await,
        400,
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("could not be decoded")
    );
    let r = expect(
        &h.send(
            "POST",
            PODS,
            &[("content-type", "application/xml")],
            "<pod/>",
        )
        .await,
        415,
    );
    assert_eq!(r["reason"], "UnsupportedMediaType");
    let huge = vec![b' '; 3 * 1024 * 1024 + 10];
    let r = expect(
        &h.send("POST", PODS, &[("content-type", "application/json")], huge)
            .await,
        413,
    );
    assert_eq!(r["reason"], "RequestEntityTooLarge");

    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let r = expect(
        &h.send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            &[("content-type", "application/yaml")],
            yaml,
        )
        .await,
        201,
    );
    assert_eq!(r["data"]["k"], "v");

    expect(&h.json("POST", PODS, &pod("ok", json!({}))).await, 201);
    let mut renamed = expect(&h.get(&format!("{PODS}/ok")).await, 200);
    renamed["metadata"]["name"] = json!("other");
    let r = expect(&h.json("PUT", &format!("{PODS}/ok"), &renamed).await, 400);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("does not match the name on the URL")
    );

    let r = expect(
        &h.json(
            "POST",
            "/api/v1/namespaces/nowhere/pods",
            &pod("x", json!({})),
        )
        .await,
        404,
    );
    assert_eq!(r["message"], "namespaces \"nowhere\" not found");
    let r = expect(&h.get("/api/v1/namespaces/default/widgets").await, 404);
    assert_eq!(r["kind"], "Status");
    expect(
        &h.send(
            "POST",
            "/api/v1/pods",
            &[("content-type", "application/json")],
            "{}",
        )
        .await,
        405,
    );
    expect(
        &h.get(&format!("{PODS}?labelSelector=a%20in%20(b")).await,
        400,
    );
    let r = expect(
        &h.get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx")).await,
        400,
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("field label not supported")
    );
    expect(
        &h.send(
            "GET",
            PODS,
            &[("accept", "application/vnd.kubernetes.protobuf")],
            "",
        )
        .await,
        406,
    );

    // The server is still healthy after all of that.
    assert_eq!(h.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn generate_name_and_dry_run() {
    let c = Cluster::start().await;
    let h = c.http();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cfg-"}, "data": {"a": "b"}});
    let a = expect(
        &h.json("POST", "/api/v1/namespaces/default/configmaps", &cm)
            .await,
        201,
    );
    let b = expect(
        &h.json("POST", "/api/v1/namespaces/default/configmaps", &cm)
            .await,
        201,
    );
    let (an, bn) = (
        a["metadata"]["name"].as_str().unwrap(),
        b["metadata"]["name"].as_str().unwrap(),
    );
    assert!(an.starts_with("cfg-") && an.len() == 9 && an != bn);
    let dry = expect(
        &h.json(
            "POST",
            &format!("{PODS}?dryRun=All"),
            &pod("dry", json!({})),
        )
        .await,
        201,
    );
    assert_eq!(dry["metadata"]["name"], "dry");
    expect(&h.get(&format!("{PODS}/dry")).await, 404);
}

#[tokio::test]
async fn field_validation_strict_warn_ignore() {
    let c = Cluster::start().await;
    let h = c.http();
    let mut bad = pod("strict", json!({}));
    bad["spec"]["bogus"] = json!(1);
    bad["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let r = expect(
        &h.json("POST", &format!("{PODS}?fieldValidation=Strict"), &bad)
            .await,
        400,
    );
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("strict decoding error"), "{msg}");
    assert!(
        msg.contains(r#"unknown field "spec.bogus""#)
            && msg.contains(r#"unknown field "spec.containers[0].imagePullPolicyy""#),
        "{msg}"
    );
    expect(&h.get(&format!("{PODS}/strict")).await, 404);

    let dup = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"dup","name":"dup"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
    let r = expect(
        &h.send(
            "POST",
            &format!("{PODS}?fieldValidation=Strict"),
            &[("content-type", "application/json")],
            &dup[..],
        )
        .await,
        400,
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains(r#"duplicate field "metadata.name""#),
        "{r}"
    );

    // Warn (the default): created, unknown fields dropped, and said so.
    let r = h.json("POST", PODS, &bad).await;
    let created = expect(&r, 201);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains(r#"unknown field \"spec.bogus\""#)),
        "{:?}",
        r.warnings
    );
    assert!(
        created["spec"].get("bogus").is_none(),
        "unknown fields are never stored"
    );
    let stored = expect(&h.get(&format!("{PODS}/strict")).await, 200);
    assert!(stored["spec"].get("bogus").is_none());

    // Ignore: no warnings.
    let mut other = bad.clone();
    other["metadata"]["name"] = json!("ignored");
    let r = h
        .json("POST", &format!("{PODS}?fieldValidation=Ignore"), &other)
        .await;
    expect(&r, 201);
    assert!(r.warnings.is_empty());

    // Patches and updates are checked too.
    let r = h
        .patch(
            &format!("{PODS}/strict?fieldValidation=Strict"),
            "application/merge-patch+json",
            &json!({"metadata": {"labelz": {"a": "b"}}}),
        )
        .await;
    assert!(
        expect(&r, 400)["message"]
            .as_str()
            .unwrap()
            .contains(r#"unknown field "metadata.labelz""#)
    );
    let r = h
        .patch(
            &format!("{PODS}/strict"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    assert!(expect(&r, 200)["metadata"]["labels"]["a"] == "b" && r.warnings.is_empty());
    expect(
        &h.json(
            "POST",
            &format!("{PODS}?fieldValidation=Sometimes"),
            &pod("x", json!({})),
        )
        .await,
        400,
    );
}

#[tokio::test]
async fn strategic_merge_patches() {
    let c = Cluster::start().await;
    let h = c.http();
    let mut p = pod("smp", json!({"a": "1"}));
    p["spec"]["containers"] = json!([
        {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "side", "image": "busybox"}
    ]);
    expect(&h.json("POST", PODS, &p).await, 201);
    let smp = "application/strategic-merge-patch+json";
    let patch = json!({"metadata": {"labels": {"b": "2"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:2"}]}});
    let out = expect(&h.patch(&format!("{PODS}/smp"), smp, &patch).await, 200);
    assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "containers merge by name");
    assert_eq!(containers[0]["image"], "nginx:2");
    assert_eq!(containers[0]["env"][0]["name"], "A");
    // Directives reach the server's merge.
    let order = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["none"], "finalizers": ["example.com/f"]}});
    let out = expect(&h.patch(&format!("{PODS}/smp"), smp, &order).await, 200);
    assert_eq!(out["metadata"]["finalizers"], json!(["example.com/f"]));
    let bad = expect(
        &h.patch(
            &format!("{PODS}/smp"),
            smp,
            &json!({"metadata": {"$patch": "sideways"}}),
        )
        .await,
        422,
    );
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("unknown patch type")
    );
    // Nodes cordon this way; scale takes it too.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
    expect(&h.json("POST", "/api/v1/nodes", &node).await, 201);
    let cordoned = expect(
        &h.patch(
            "/api/v1/nodes/n",
            smp,
            &json!({"spec": {"unschedulable": true}}),
        )
        .await,
        200,
    );
    assert_eq!(cordoned["spec"]["unschedulable"], true);
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    expect(&h.json("POST", rcs, &rc("r", 1)).await, 201);
    let scaled = expect(
        &h.patch(
            &format!("{rcs}/r/scale"),
            smp,
            &json!({"spec": {"replicas": 4}}),
        )
        .await,
        200,
    );
    assert_eq!(scaled["spec"]["replicas"], 4);
    let r = h
        .patch(
            &format!("{PODS}/smp"),
            "application/apply-patch+yaml",
            &json!({}),
        )
        .await;
    assert!(
        expect(&r, 400)["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager is required")
    );
}

/// A server-side apply (`application/apply-patch+yaml`) of `body` at `path`.
fn apply_patch<'h>(
    h: &'h Http,
    path: String,
    body: &str,
) -> impl std::future::Future<Output = Reply> + use<'h> {
    let body = body.to_string();
    async move {
        h.send(
            "PATCH",
            &path,
            &[("content-type", "application/apply-patch+yaml")],
            body,
        )
        .await
    }
}

/// The query of an apply by `manager`, with `force=true` or not.
fn applier(manager: &str, force: bool) -> String {
    let force = if force { "&force=true" } else { "" };
    format!("fieldManager={manager}{force}")
}

#[tokio::test]
async fn server_side_apply_and_field_ownership() {
    let c = Cluster::start().await;
    let h = c.http();
    let apply = |manager: &str, force: bool, body: &str| {
        apply_patch(&h, format!("{PODS}/ssa?{}", applier(manager, force)), body)
    };
    let config = |image: &str, label: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ssa\n  labels:\n    app: web\n    {label}: 'yes'\nspec:\n  containers:\n  - name: web\n    image: {image}\n"
        )
    };
    // Creates when missing; the manager owns what it applied.
    let created = expect(
        &apply("alice", false, &config("nginx:1", "extra")).await,
        201,
    );
    let mf = &created["metadata"]["managedFields"][0];
    assert_eq!(
        (mf["manager"].as_str(), mf["operation"].as_str()),
        (Some("alice"), Some("Apply"))
    );
    assert!(
        mf["fieldsV1"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:image"].is_object(),
        "{mf}"
    );
    // A merge patch by another manager takes the image over.
    let patched = h
        .patch(
            &format!("{PODS}/ssa?fieldManager=bob"),
            "application/merge-patch+json",
            &json!({"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}),
        )
        .await;
    expect(&patched, 200);
    // Applying a different image now conflicts, naming the owner and the field.
    let r = expect(
        &apply("alice", false, &config("nginx:1", "extra")).await,
        409,
    );
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("Apply failed with 1 conflict")
            && msg.contains(r#"conflict with "bob""#)
            && msg.contains(r#".spec.containers[name="web"].image"#),
        "{msg}"
    );
    assert_eq!(r["details"]["causes"][0]["reason"], "FieldManagerConflict");
    // Force takes it back; a label alice stops applying is removed.
    let forced = expect(
        &apply("alice", true, &config("nginx:1", "other")).await,
        200,
    );
    assert_eq!(forced["spec"]["containers"][0]["image"], "nginx:1");
    assert!(
        forced["metadata"]["labels"].get("extra").is_none(),
        "{}",
        forced["metadata"]["labels"]
    );
    assert_eq!(forced["metadata"]["labels"]["other"], "yes");
    // The same config again is a no-op.
    let again = expect(
        &apply("alice", false, &config("nginx:1", "other")).await,
        200,
    );
    assert_eq!(
        again["metadata"]["resourceVersion"],
        forced["metadata"]["resourceVersion"]
    );
    // Apply needs a field manager.
    let r = apply_patch(&h, format!("{PODS}/ssa"), &config("x", "y")).await;
    expect(&r, 400);
    // Every write records its manager.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tracked"}, "data": {"a": "1"}});
    let made = expect(
        &h.json(
            "POST",
            "/api/v1/namespaces/default/configmaps?fieldManager=maker",
            &cm,
        )
        .await,
        201,
    );
    assert_eq!(made["metadata"]["managedFields"][0]["manager"], "maker");
    assert!(made["metadata"]["managedFields"][0]["fieldsV1"]["f:data"]["f:a"].is_object());

    // Apply to the status subresource: only status changes, owned under subresource "status";
    // another manager's status field conflicts; a missing object is 404, not created.
    let apply_status = |manager: &str, force: bool, body: &str| {
        apply_patch(
            &h,
            format!("{PODS}/ssa/status?{}", applier(manager, force)),
            body,
        )
    };
    let entry = |obj: &serde_json::Value, manager: &str, sub: &str| {
        obj["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["manager"] == manager && m["subresource"].as_str().unwrap_or("") == sub)
            .cloned()
    };
    let status = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ssa\nspec:\n  nodeName: ignored\nstatus:\n  message: applied\n";
    let applied = expect(&apply_status("kubelet", false, status).await, 200);
    assert_eq!(applied["status"]["message"], "applied");
    assert!(
        applied["spec"].get("nodeName").is_none(),
        "{}",
        applied["spec"]
    );
    let owned = entry(&applied, "kubelet", "status").expect("the kubelet's status entry");
    assert_eq!(
        owned["fieldsV1"],
        json!({"f:status": {"f:message": {}}}),
        "only status fields are owned through /status"
    );
    let other = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ssa\nstatus:\n  message: mine\n";
    let conflict = expect(&apply_status("other", false, other).await, 409);
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains(".status.message"),
        "{conflict}"
    );
    let forced = expect(&apply_status("other", true, other).await, 200);
    assert_eq!(forced["status"]["message"], "mine");
    assert!(entry(&forced, "other", "status").is_some());
    // A plain status update is recorded under the status subresource too.
    let updated = expect(
        &h.patch(
            &format!("{PODS}/ssa/status?fieldManager=patcher"),
            "application/merge-patch+json",
            &json!({"status": {"reason": "Testing"}}),
        )
        .await,
        200,
    );
    let patcher = entry(&updated, "patcher", "status").expect("the patcher's status entry");
    assert_eq!(patcher["operation"], "Update");
    assert_eq!(patcher["fieldsV1"], json!({"f:status": {"f:reason": {}}}));
    let missing = apply_patch(
        &h,
        format!("{PODS}/nobody/status?{}", applier("kubelet", false)),
        &status.replace("ssa", "nobody"),
    )
    .await;
    expect(&missing, 404);
}
