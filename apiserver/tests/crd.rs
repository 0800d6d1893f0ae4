//! CustomResourceDefinitions: a CRD is established and its kind served (REST, watch, discovery,
//! OpenAPI), custom resources are pruned, defaulted and validated against its schema, the status
//! subresource is separate, deleting the CRD deletes its resources, and all of it survives a restart.

mod common;

use atoll_testkit::eventually;
use common::*;
use serde_json::{Value, json};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const DOCS: &str = "/apis/example.com/v1/namespaces/default/documents";

/// A CRD as kube-derive would generate it: `Document` in `example.com/v1`, with a status subresource.
fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "documents.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Document", "plural": "documents", "shortNames": ["doc"], "categories": ["all"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Title", "type": "string", "jsonPath": ".spec.title"},
                    {"name": "Pages", "type": "integer", "jsonPath": ".spec.pages", "priority": 1},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object", "title": "Document",
                    "required": ["spec"],
                    "properties": {
                        "spec": {"type": "object", "required": ["title"], "properties": {
                            "title": {"type": "string"},
                            "pages": {"type": "integer", "format": "int32", "minimum": 1, "default": 1},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        }},
                        "status": {"type": "object", "nullable": true, "properties": {
                            "phase": {"type": "string"},
                        }},
                    },
                }},
            }],
        },
    })
}

fn doc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Document", "metadata": {"name": name}, "spec": spec})
}

async fn established(h: &Http) -> Value {
    eventually("the CRD to be established", || async {
        let r = h.get(&format!("{CRDS}/documents.example.com")).await;
        let crd = r.json();
        let conditions = crd["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(crd)
    })
    .await
}

#[tokio::test]
async fn a_crd_is_established_and_its_resources_checked_against_the_schema() {
    let c = Cluster::start().await;
    let h = c.http();
    let created = expect(&h.json("POST", CRDS, &crd()).await, 201);
    assert_eq!(
        created["metadata"]["finalizers"],
        json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    let crd = established(&h).await;
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Document");
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "DocumentList");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));

    // Discovery and OpenAPI know the new kind.
    let list = expect(&h.get("/apis/example.com/v1").await, 200);
    let resource = list["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "documents").cloned())
        .expect("documents in discovery");
    assert_eq!(resource["kind"], "Document");
    assert_eq!(resource["shortNames"], json!(["doc"]));
    let openapi = expect(&h.get("/openapi/v3/apis/example.com/v1").await, 200);
    assert!(openapi.to_string().contains("\"kind\":\"Document\""));

    // Created: unknown fields pruned (with a warning), defaults filled, status dropped.
    let mut body = doc(
        "a",
        json!({"title": "A", "bogus": 1, "extra": {"free": {"form": true}}}),
    );
    body["status"] = json!({"phase": "Done"});
    let r = h.json("POST", DOCS, &body).await;
    assert!(
        r.warnings.iter().any(|w| w.contains("spec.bogus")),
        "{:?}",
        r.warnings
    );
    let a = expect(&r, 201);
    assert_eq!(
        a["spec"],
        json!({"title": "A", "pages": 1, "extra": {"free": {"form": true}}})
    );
    assert!(a.get("status").is_none(), "{a}");
    // Strict field validation refuses unknown fields; the schema's rules are enforced.
    let strict = h
        .json(
            "POST",
            &format!("{DOCS}?fieldValidation=Strict"),
            &doc("b", json!({"title": "B", "bogus": 1})),
        )
        .await;
    let strict = expect(&strict, 400);
    assert!(
        strict["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.bogus"),
        "{strict}"
    );
    let invalid = expect(
        &h.json("POST", DOCS, &doc("c", json!({"pages": 0}))).await,
        422,
    );
    let message = invalid["message"].as_str().unwrap_or("");
    assert!(message.contains("spec.title"), "{message}");
    assert!(message.contains("spec.pages"), "{message}");

    // The status subresource: the main resource ignores status, /status changes only status.
    let mut changed = a.clone();
    changed["spec"]["title"] = json!("A2");
    changed["status"] = json!({"phase": "Ignored"});
    let updated = expect(&h.json("PUT", &format!("{DOCS}/a"), &changed).await, 200);
    assert_eq!(updated["spec"]["title"], "A2");
    assert!(updated.get("status").is_none());
    assert_eq!(updated["metadata"]["generation"], 2);
    let status = h
        .patch(
            &format!("{DOCS}/a/status"),
            "application/merge-patch+json",
            &json!({"status": {"phase": "Done"}, "spec": {"title": "ignored"}}),
        )
        .await;
    let status = expect(&status, 200);
    // No patch strategies for custom resources: a strategic merge patch is refused, as Kubernetes does.
    let smp = h
        .patch(
            &format!("{DOCS}/a"),
            "application/strategic-merge-patch+json",
            &json!({"spec": {"title": "x"}}),
        )
        .await;
    assert_eq!(expect(&smp, 415)["reason"], "UnsupportedMediaType");
    assert_eq!(status["status"]["phase"], "Done");
    assert_eq!(status["spec"]["title"], "A2");
    assert_eq!(status["metadata"]["generation"], 2);

    // Lists, tables and label selectors work as for any kind.
    let listed = expect(&h.get(DOCS).await, 200);
    assert_eq!(listed["kind"], "DocumentList");
    assert_eq!(names(&listed), vec!["a"]);
    let table = h
        .send(
            "GET",
            DOCS,
            &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
            "",
        )
        .await
        .json();
    assert_eq!(table["kind"], "Table");
    let headers: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(headers, ["Name", "Title", "Pages", "Phase", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "a");
    assert_eq!(cells[1], "A2");
    assert_eq!(cells[2], 1);
    assert_eq!(cells[3], "Done");
    assert!(
        cells[4].as_str().is_some_and(|age| age.ends_with('s')),
        "{cells}"
    );
}

#[tokio::test]
async fn deleting_a_crd_deletes_its_resources_and_a_restart_keeps_them_served() {
    let c = Cluster::start().await;
    let h = c.http();
    expect(&h.json("POST", CRDS, &crd()).await, 201);
    established(&h).await;
    expect(
        &h.json("POST", DOCS, &doc("kept", json!({"title": "K"})))
            .await,
        201,
    );

    // After a restart the kind is served at once and the resource is still there.
    let c = c.restart().await;
    let h = c.http();
    let kept = expect(&h.get(&format!("{DOCS}/kept")).await, 200);
    assert_eq!(kept["spec"]["title"], "K");

    // Another CRD may not take the same resource name.
    let mut clash = crd();
    clash["spec"]["names"]["kind"] = json!("Paper");
    clash["metadata"]["name"] = json!("documents.example.com");
    expect(&h.json("POST", CRDS, &clash).await, 409);

    let deleted = h
        .send("DELETE", &format!("{CRDS}/documents.example.com"), &[], "")
        .await;
    assert!([200, 202].contains(&deleted.status), "{}", deleted.status);
    eventually("the CRD and its resources to be gone", || async {
        let crd = h.get(&format!("{CRDS}/documents.example.com")).await.status;
        let listed = h.get("/apis/example.com/v1").await.status;
        (crd == 404 && listed == 404).then_some(())
    })
    .await;
    // Created again, it starts empty.
    expect(&h.json("POST", CRDS, &crd()).await, 201);
    established(&h).await;
    let listed = eventually("the kind served again", || async {
        let r = h.get(DOCS).await;
        (r.status == 200).then(|| r.json())
    })
    .await;
    assert!(names(&listed).is_empty(), "{listed}");
}

#[tokio::test]
async fn the_scale_subresource_follows_the_crd_paths() {
    let c = Cluster::start().await;
    let h = c.http();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "fleets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Fleet", "plural": "fleets"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.size", "statusReplicasPath": ".status.ready",
                    "labelSelectorPath": ".status.selector"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {
                        "ready": {"type": "integer"}, "selector": {"type": "string"}}}}}}}]},
    });
    expect(&h.json("POST", CRDS, &crd).await, 201);
    let fleets = "/apis/example.com/v1/namespaces/default/fleets";
    let fleet = json!({"apiVersion": "example.com/v1", "kind": "Fleet", "metadata": {"name": "f"}, "spec": {"size": 2}});
    eventually("the fleet to be created", || async {
        (h.json("POST", fleets, &fleet).await.status == 201).then_some(())
    })
    .await;
    let status = json!({"status": {"ready": 2, "selector": "app=f"}});
    expect(
        &h.patch(
            &format!("{fleets}/f/status"),
            "application/merge-patch+json",
            &status,
        )
        .await,
        200,
    );
    let scale = expect(&h.get(&format!("{fleets}/f/scale")).await, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"], json!({"replicas": 2, "selector": "app=f"}));
    let scaled = h
        .patch(
            &format!("{fleets}/f/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 5}}),
        )
        .await;
    assert_eq!(expect(&scaled, 200)["spec"]["replicas"], 5);
    let f = expect(&h.get(&format!("{fleets}/f")).await, 200);
    assert_eq!(f["spec"]["size"], 5);
}
