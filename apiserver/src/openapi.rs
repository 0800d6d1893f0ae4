//! OpenAPI v3: `/openapi/v3` lists one document per group version; each document has the paths of
//! that group version's resources (with `x-kubernetes-group-version-kind` and the query parameters,
//! `fieldValidation` among them, that tell kubectl to validate on the server) and the schemas of its
//! kinds, generated from the k8s-openapi types. Built once at start-up.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use atoll_api::{KindInfo, Registry, Subresource};
use bytes::Bytes;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The served documents, by path (`api/v1`, `apis/apps/v1`), with their hashes.
pub struct OpenApi {
    docs: BTreeMap<String, (String, Bytes)>,
    root: Bytes,
}

impl OpenApi {
    /// Builds the documents for every group version in the registry.
    pub fn build(registry: &Registry) -> OpenApi {
        let mut docs = BTreeMap::new();
        for (group, versions) in registry.groups() {
            for version in versions {
                let kinds: Vec<&KindInfo> = registry
                    .kinds()
                    .iter()
                    .filter(|k| k.group == group && k.version == version)
                    .map(|k| k.as_ref())
                    .collect();
                let path = if group.is_empty() {
                    format!("api/{version}")
                } else {
                    format!("apis/{group}/{version}")
                };
                let bytes = Bytes::from(serde_json::to_vec(&document(&kinds)).unwrap_or_default());
                let mut h = DefaultHasher::new();
                bytes.hash(&mut h);
                let first = h.finish();
                path.hash(&mut h);
                let hash = format!("{first:016X}{:016X}", h.finish());
                docs.insert(path, (hash, bytes));
            }
        }
        let paths: Map<String, Value> = docs
            .iter()
            .map(|(path, (hash, _))| {
                (
                    path.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
                )
            })
            .collect();
        let root = Bytes::from(serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default());
        OpenApi { docs, root }
    }

    /// `GET /openapi/v3`.
    pub fn root(&self) -> Bytes {
        self.root.clone()
    }

    /// `GET /openapi/v3/<path>`, with whether `hash` names this version of it (then it may be cached forever).
    pub fn document(&self, path: &str, hash: Option<&str>) -> Option<(Bytes, bool)> {
        self.docs
            .get(path)
            .map(|(h, bytes)| (bytes.clone(), hash == Some(h.as_str())))
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

/// Parameters of writes: kubectl looks for `fieldValidation` to decide that the server validates.
fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present (All), the request is checked but not persisted.",
        ),
        query("fieldManager", "The name of the actor making the change."),
        query(
            "fieldValidation",
            "How to treat fields the type does not declare: Ignore, Warn (default) or Strict.",
        ),
    ]
}

fn response(schema: &Value) -> Value {
    json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}})
}

/// One operation: verb, GVK, parameters, body and response.
fn operation(
    action: &str,
    id: String,
    g: &Value,
    params: Vec<Value>,
    body: Option<Value>,
    schema: &Value,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": g,
        "parameters": params,
        "responses": response(schema),
    });
    if let Some(b) = body {
        op["requestBody"] = b;
    }
    op
}

/// A subresource that only takes POST (binding, eviction).
fn create_only(params: &[Value], id: String, g: &Value, schema: &Value) -> Value {
    json!({"parameters": params, "post": operation("post", id, g, write_params(), Some(json_body(schema)), schema)})
}

/// The query parameters of `pods/<name>/log`.
fn log_params() -> Vec<Value> {
    [
        (
            "container",
            "The container to read (default: the pod's only one).",
        ),
        ("follow", "Stream new output while the container runs."),
        (
            "previous",
            "Read the previous instance of a restarted container.",
        ),
        ("timestamps", "Prefix every line with its RFC 3339 time."),
        ("sinceSeconds", "Only lines newer than this many seconds."),
        ("sinceTime", "Only lines at or after this RFC 3339 time."),
        ("tailLines", "Only the last this many lines."),
        ("limitBytes", "Stop after this many bytes."),
    ]
    .iter()
    .map(|(name, what)| query(name, what))
    .collect()
}

/// The query parameters of `pods/<name>/exec` (`command: true`) and `pods/<name>/attach`.
fn stream_params(command: bool) -> Vec<Value> {
    let mut out = vec![];
    if command {
        out.push(query(
            "command",
            "The command to run, one argument per value.",
        ));
    }
    for (name, what) in [
        ("container", "The container (default: the pod's only one)."),
        ("stdin", "Pass the client's input to the process."),
        ("stdout", "Return the process's output."),
        ("stderr", "Return the process's error output."),
        ("tty", "Run the process on a terminal."),
    ] {
        out.push(query(name, what));
    }
    out
}

/// A streaming subresource (exec, attach, portforward): GET or POST that upgrades the connection
/// (WebSocket or SPDY/3.1) and relays it to the pod's kubelet.
fn connect(params: &[Value], name: &str, kind: &str, query: Vec<Value>) -> Value {
    let g = gvk("", "v1", kind);
    let op = |method: &str| {
        json!({
            "operationId": format!("connect{method}NamespacedPod{name}"),
            "x-kubernetes-action": "connect",
            "x-kubernetes-group-version-kind": g,
            "parameters": query,
            "responses": {"101": {"description": "Switching Protocols"}, "200": {"description": "OK", "content": {"*/*": {"schema": {"type": "string"}}}}},
        })
    };
    json!({"parameters": params, "get": op("Get"), "post": op("Post")})
}

fn json_body(schema: &Value) -> Value {
    json!({"content": {"*/*": {"schema": schema}}, "required": true})
}

fn patch_body() -> Value {
    let any = json!({"type": "object"});
    json!({"content": {
        "application/json-patch+json": {"schema": any},
        "application/merge-patch+json": {"schema": any},
    }, "required": true})
}

fn document(kinds: &[&KindInfo]) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut kind_schemas = vec![];
    for k in kinds {
        let schema_ref =
            serde_json::to_value(k.strategy.schema(&mut generator)).unwrap_or(Value::Null);
        if let Some(name) = schema_ref
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
        {
            kind_schemas.push((name.to_string(), gvk(&k.group, &k.version, &k.kind)));
        }
        add_paths(&mut paths, k, &schema_ref, &mut generator);
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true);
    for (name, g) in kind_schemas {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([g]));
        }
    }
    // The strategic-merge-patch facts of each field, as Kubernetes publishes them.
    for (ty, field, strategy, key) in atoll_api::patch_meta::PATCH_FIELDS {
        if let Some(Value::Object(prop)) = schemas
            .get_mut(*ty)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
        {
            prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if !key.is_empty() {
                prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Atoll", "version": concat!("v1.33.0-atoll.", env!("CARGO_PKG_VERSION"))},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn add_paths(
    paths: &mut Map<String, Value>,
    k: &KindInfo,
    schema: &Value,
    generator: &mut schemars::SchemaGenerator,
) {
    let g = gvk(&k.group, &k.version, &k.kind);
    let base = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    let collection = if k.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", k.plural)
    } else {
        format!("{base}/{}", k.plural)
    };
    let scope_params: Vec<Value> = if k.namespaced {
        vec![path_param("namespace")]
    } else {
        vec![]
    };
    let id =
        |verb: &str, suffix: &str| format!("{verb}{}{}{suffix}", k.group.replace('.', ""), k.kind);
    let list_params = vec![
        query(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        query(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        query("limit", "The maximum number of objects to return."),
        query("continue", "The token of the next page."),
        query("resourceVersion", "Where to start a watch or list."),
        query("watch", "Watch for changes."),
    ];
    let object_schema = json!({"type": "object"});
    paths.insert(
        collection.clone(),
        json!({
            "parameters": scope_params,
            "get": operation("list", id("list", ""), &g, list_params.clone(), None, &object_schema),
            "post": operation("post", id("create", ""), &g, write_params(), Some(json_body(schema)), schema),
            "delete": operation("deletecollection", id("deletecollection", ""), &g, list_params.clone(), None, &object_schema),
        }),
    );
    if k.namespaced {
        paths.insert(
            format!("{base}/{}", k.plural),
            json!({"get": operation("list", id("list", "ForAllNamespaces"), &g, list_params, None, &object_schema)}),
        );
    }
    let mut item_params = scope_params.clone();
    item_params.push(path_param("name"));
    let mut patch_params = write_params();
    patch_params.push(query(
        "force",
        "Force an apply request (server-side apply).",
    ));
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({
            "parameters": item_params,
            "get": operation("get", id("read", ""), &g, vec![], None, schema),
            "put": operation("put", id("replace", ""), &g, write_params(), Some(json_body(schema)), schema),
            "patch": operation("patch", id("patch", ""), &g, patch_params.clone(), Some(patch_body()), schema),
            "delete": operation("delete", id("delete", ""), &g, vec![query("gracePeriodSeconds", "Seconds before the object is deleted."), query("propagationPolicy", "Orphan, Background or Foreground.")], None, &object_schema),
        }),
    );
    for sub in &k.subresources {
        let sub_path = format!("{collection}/{{name}}/{}", sub.name());
        let entry = match sub {
            Subresource::Status => json!({
                "parameters": item_params,
                "get": operation("get", id("read", "Status"), &g, vec![], None, schema),
                "put": operation("put", id("replace", "Status"), &g, write_params(), Some(json_body(schema)), schema),
                "patch": operation("patch", id("patch", "Status"), &g, patch_params.clone(), Some(patch_body()), schema),
            }),
            Subresource::Scale => {
                let scale = serde_json::to_value(
                    generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>(),
                )
                .unwrap_or(Value::Null);
                let sg = gvk("autoscaling", "v1", "Scale");
                json!({
                    "parameters": item_params,
                    "get": operation("get", id("read", "Scale"), &sg, vec![], None, &scale),
                    "put": operation("put", id("replace", "Scale"), &sg, write_params(), Some(json_body(&scale)), &scale),
                    "patch": operation("patch", id("patch", "Scale"), &sg, patch_params.clone(), Some(patch_body()), &scale),
                })
            }
            Subresource::Binding => {
                let binding = serde_json::to_value(
                    generator.subschema_for::<k8s_openapi::api::core::v1::Binding>(),
                )
                .unwrap_or(Value::Null);
                create_only(
                    &item_params,
                    id("create", "Binding"),
                    &gvk("", "v1", "Binding"),
                    &binding,
                )
            }
            Subresource::Eviction => {
                let eviction = serde_json::to_value(
                    generator.subschema_for::<k8s_openapi::api::policy::v1::Eviction>(),
                )
                .unwrap_or(Value::Null);
                create_only(
                    &item_params,
                    id("create", "Eviction"),
                    &gvk("policy", "v1", "Eviction"),
                    &eviction,
                )
            }
            Subresource::Log => json!({
                "parameters": item_params,
                "get": {
                    "operationId": id("read", "Log"),
                    "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": g,
                    "parameters": log_params(),
                    "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                },
            }),
            Subresource::Exec => {
                connect(&item_params, "Exec", "PodExecOptions", stream_params(true))
            }
            Subresource::Attach => connect(
                &item_params,
                "Attach",
                "PodAttachOptions",
                stream_params(false),
            ),
            Subresource::PortForward => connect(
                &item_params,
                "Portforward",
                "PodPortForwardOptions",
                vec![query(
                    "ports",
                    "The pod ports to forward to (the client names them per stream).",
                )],
            ),
        };
        paths.insert(sub_path, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_per_group_version_with_kinds_and_field_validation() {
        let api = OpenApi::build(&atoll_api::kinds::builtin());
        let root: Value = serde_json::from_slice(&api.root()).unwrap();
        let url = root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="));
        assert!(root["paths"]["apis/apps/v1"].is_object());
        let hash = url.split("hash=").nth(1).unwrap();
        let (doc, immutable) = api.document("api/v1", Some(hash)).unwrap();
        assert!(immutable);
        let doc: Value = serde_json::from_slice(&doc).unwrap();
        let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(pod["properties"]["spec"].is_object());
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(doc["paths"]["/api/v1/nodes/{name}/status"].is_object());
        let containers =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert!(
            doc["components"]["schemas"]["io.k8s.api.core.v1.Container"]["properties"]["image"]
                .is_object()
        );
        assert!(api.document("apis/nope/v1", None).is_none());
    }

    /// The served documents agree with Kubernetes' own definitions on every kind's GVK and on the
    /// patch strategy and merge key of every field they both have.
    #[test]
    fn agrees_with_the_kubernetes_definitions() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/reference/k8s-v1.33-definitions.json"
        );
        let text = std::fs::read_to_string(path)
            .expect("the Kubernetes definitions in ../shared/reference");
        let reference: Value = serde_json::from_str(&text).unwrap();
        let reference = reference["$defs"].as_object().unwrap();
        let api = OpenApi::build(&atoll_api::kinds::builtin());
        let mut compared = 0;
        for (doc_path, (hash, _)) in &api.docs {
            let (doc, _) = api.document(doc_path, Some(hash)).unwrap();
            let doc: Value = serde_json::from_slice(&doc).unwrap();
            for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
                let Some(theirs) = reference.get(name) else {
                    continue;
                };
                if let Some(g) = schema.get("x-kubernetes-group-version-kind") {
                    assert!(
                        theirs["x-kubernetes-group-version-kind"]
                            .as_array()
                            .unwrap()
                            .contains(&g[0]),
                        "{name}: {g}"
                    );
                }
                for (field, prop) in theirs["properties"].as_object().into_iter().flatten() {
                    for ext in [
                        "x-kubernetes-patch-strategy",
                        "x-kubernetes-patch-merge-key",
                    ] {
                        if let Some(want) = prop.get(ext) {
                            assert_eq!(
                                schema["properties"][field].get(ext),
                                Some(want),
                                "{name}.{field} {ext}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared > 50, "only {compared} extensions compared");
    }
}
