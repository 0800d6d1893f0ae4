//! Discovery: aggregated (`apidiscovery.k8s.io` v2 and v2beta1) and legacy (`/api`, `/apis`,
//! `/api/v1`, `/apis/<g>/<v>`), all derived from the kind registry; and `/version`.

use atoll_api::{KindInfo, Registry, Subresource};
use serde_json::{Value, json};

/// The Kubernetes version Atoll reports (kubectl picks its matching binary from `minor`).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-atoll.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// The aggregated discovery version a client accepts (`v2` or `v2beta1`), if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let params: Vec<(&str, &str)> = range
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        if get("as") == Some("APIGroupDiscoveryList") && get("g") == Some("apidiscovery.k8s.io") {
            match get("v") {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => {}
            }
        }
    }
    None
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn sub_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "binding" | "eviction" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "finalize" => &["update"],
        _ => &["get", "patch", "update"],
    }
}

/// Subresource names with their response kinds (group, version, kind).
fn subresources(k: &KindInfo) -> Vec<(&'static str, (&'static str, &'static str, String))> {
    let mut out: Vec<(&'static str, (&'static str, &'static str, String))> = k
        .subresources
        .iter()
        .map(|s| match s {
            Subresource::Status => ("status", ("", "", k.kind.clone())),
            Subresource::Scale => ("scale", ("autoscaling", "v1", "Scale".to_string())),
            Subresource::Binding => ("binding", ("", "v1", "Binding".to_string())),
            Subresource::Eviction => ("eviction", ("policy", "v1", "Eviction".to_string())),
            Subresource::Log => ("log", ("", "", k.kind.clone())),
            Subresource::Exec => ("exec", ("", "v1", "PodExecOptions".to_string())),
            Subresource::Attach => ("attach", ("", "v1", "PodAttachOptions".to_string())),
            Subresource::PortForward => (
                "portforward",
                ("", "v1", "PodPortForwardOptions".to_string()),
            ),
        })
        .collect();
    if k.group.is_empty() && k.plural == "namespaces" {
        out.push(("finalize", ("", "", k.kind.clone())));
    }
    out
}

fn aggregated_resource(k: &KindInfo) -> Value {
    let subs: Vec<Value> = subresources(k)
        .into_iter()
        .map(|(name, (g, v, kind))| {
            let (g, v) = if kind == k.kind { (k.group.as_str(), k.version.as_str()) } else { (g, v) };
            json!({"subresource": name, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": sub_verbs(name)})
        })
        .collect();
    let mut r = json!({
        "resource": k.plural,
        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": VERBS,
    });
    if !k.short_names.is_empty() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        r["categories"] = json!(k.categories);
    }
    if !subs.is_empty() {
        r["subresources"] = Value::Array(subs);
    }
    r
}

/// The aggregated discovery document for the core group (`core == true`) or all other groups.
pub fn aggregated(registry: &Registry, core: bool, version: &str) -> Value {
    let items: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .kinds()
                        .iter()
                        .filter(|k| k.group == group && k.version == *v)
                        .map(|k| aggregated_resource(k))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `GET /apis`.
pub fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_entry(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`, if served.
pub fn group(registry: &Registry, name: &str) -> Option<Value> {
    registry
        .groups()
        .iter()
        .find(|(g, _)| g == name && !g.is_empty())
        .map(|(g, v)| {
            let mut e = group_entry(g, v);
            e["kind"] = "APIGroup".into();
            e["apiVersion"] = "v1".into();
            e
        })
}

/// `GET /api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<_> = registry
        .kinds()
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = vec![];
    for k in kinds {
        let mut r = json!({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind, "verbs": VERBS});
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for (name, (g, v, kind)) in subresources(k) {
            let mut s = json!({"name": format!("{}/{name}", k.plural), "singularName": "", "namespaced": k.namespaced, "kind": kind, "verbs": sub_verbs(name)});
            if !g.is_empty() || !v.is_empty() {
                s["group"] = g.into();
                s["version"] = v.into();
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_aggregated_versions() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(kubectl), Some("v2"));
        assert_eq!(
            aggregated_version(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
            ),
            Some("v2beta1")
        );
        assert_eq!(aggregated_version("application/json"), None);
    }

    #[test]
    fn documents_list_every_kind() {
        let reg = atoll_api::kinds::builtin();
        let core = aggregated(&reg, true, "v2");
        let res = &core["items"][0]["versions"][0]["resources"];
        let pods = res
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(
            pods["subresources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["subresource"] == "binding")
        );
        let apis = aggregated(&reg, false, "v2");
        assert!(
            apis["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "apps")
        );
        let v1 = resource_list(&reg, "", "v1").unwrap();
        assert!(v1["resources"].as_array().unwrap().iter().any(|r| r["name"] == "replicationcontrollers/scale" && r["group"] == "autoscaling"));
        assert!(resource_list(&reg, "nope", "v1").is_none());
    }
}
