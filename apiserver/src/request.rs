//! What a request asks for: the route its path names, and its query parameters.

use std::sync::Arc;

use atoll_api::{ApiError, KindInfo, Registry};

/// The target of a request path.
#[derive(Debug)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz` (with the check name, if any).
    Health(&'static str),
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/api/v1` or `/apis/<group>/<version>`.
    GroupVersion(String, String),
    /// `/apis/<group>`.
    Group(String),
    /// `/openapi/v3` (None) or one of its documents (`api/v1`, `apis/apps/v1`).
    OpenApi(Option<String>),
    /// A resource, collection or subresource.
    Resource(Target),
    /// Nothing is served here.
    NotFound,
}

/// A resource request: kind, namespace, name and subresource.
#[derive(Debug, Clone)]
pub struct Target {
    /// The kind the resource serves.
    pub kind: Arc<KindInfo>,
    /// Namespace from the path (namespaced kinds; None for all namespaces).
    pub namespace: Option<String>,
    /// Object name, for single-object requests.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `binding`, …).
    pub sub: Option<String>,
}

impl Target {
    /// The etcd key of the named object.
    pub fn key(&self) -> String {
        object_key(
            &self.kind,
            self.namespace.as_deref().unwrap_or(""),
            self.name.as_deref().unwrap_or(""),
        )
    }
    /// The name ("" for collections).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// The etcd key of an object: `/registry/<resource>/<namespace>/<name>` or `/registry/<resource>/<name>`.
pub fn object_key(kind: &KindInfo, namespace: &str, name: &str) -> String {
    if kind.namespaced {
        format!("{}{namespace}/{name}", kind.key_prefix())
    } else {
        format!("{}{name}", kind.key_prefix())
    }
}

/// Parses a request path against the registry.
pub fn route(registry: &Registry, path: &str) -> Result<Route, ApiError> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let decoded: Vec<String> = parts
        .iter()
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    Ok(match parts.as_slice() {
        ["version"] => Route::Version,
        ["healthz", rest @ ..] => Route::Health(health_name(rest)),
        ["livez", rest @ ..] => Route::Health(health_name(rest)),
        ["readyz", rest @ ..] => Route::Health(if rest.is_empty() {
            "ready"
        } else {
            "ready-check"
        }),
        ["openapi", "v3"] => Route::OpenApi(None),
        ["openapi", "v3", rest @ ..] => Route::OpenApi(Some(rest.join("/"))),
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["api", v] => Route::GroupVersion(String::new(), v.to_string()),
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::GroupVersion(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => resource(registry, "", v, rest)?,
        ["apis", g, v, rest @ ..] => resource(registry, g, v, rest)?,
        _ => Route::NotFound,
    })
}

fn health_name(rest: &[&str]) -> &'static str {
    if rest.is_empty() {
        "live"
    } else {
        "live-check"
    }
}

/// Subresources of namespaces themselves (everything else after `namespaces/<ns>/` is a resource).
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

fn resource(
    registry: &Registry,
    group: &str,
    version: &str,
    parts: &[&str],
) -> Result<Route, ApiError> {
    let mut namespace = None;
    let mut parts = parts;
    if parts.first() == Some(&"namespaces")
        && parts.len() >= 3
        && !NAMESPACE_SUBRESOURCES.contains(&parts[2])
    {
        namespace = Some(parts[1].to_string());
        parts = &parts[2..];
    }
    let (plural, name, sub) = match parts {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Ok(Route::NotFound),
    };
    let Some(kind) = registry.get(group, version, plural) else {
        return Ok(Route::NotFound);
    };
    if !kind.namespaced && namespace.is_some() {
        return Ok(Route::NotFound);
    }
    if kind.namespaced && namespace.is_none() && name.is_some() {
        return Ok(Route::NotFound);
    }
    if let Some(n) = &name
        && let Err(e) = atoll_api::validation::path_segment(n)
    {
        return Err(ApiError::bad_request(format!(
            "invalid resource name {n:?}: {e}"
        )));
    }
    Ok(Route::Resource(Target {
        kind: kind.clone(),
        namespace,
        name,
        sub,
    }))
}

/// Query parameters the REST verbs understand.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// `watch=true|1`.
    pub watch: bool,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch` (`Exact`, `NotOlderThan`).
    pub resource_version_match: Option<String>,
    /// `limit` (0: no limit).
    pub limit: i64,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `labelSelector`.
    pub label_selector: String,
    /// `fieldSelector`.
    pub field_selector: String,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`.
    pub propagation_policy: Option<String>,
    /// `orphanDependents` (deprecated form of the propagation policy).
    pub orphan_dependents: Option<bool>,
    /// `includeObject` for Tables: `None`, `Metadata` (default) or `Object`.
    pub include_object: Option<String>,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation`: `Strict`, `Warn` or `Ignore`.
    pub field_validation: Option<String>,
    /// `hash` of an OpenAPI document.
    pub hash: Option<String>,
    /// `force` (server-side apply takes fields other managers own).
    pub force: bool,
    /// The raw query string, for subresources that read parameters of their own (`pods/log`).
    pub raw: String,
}

fn flag(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

impl Query {
    /// Parses a raw query string (a leading `&`, as kube-rs sends, is fine).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut q = Query {
            raw: raw.to_string(),
            ..Query::default()
        };
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            let v = v.into_owned();
            let int = |name: &str| -> Result<i64, ApiError> {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid value {v:?} for query parameter {name}: not an integer"
                    ))
                })
            };
            match k.as_ref() {
                "watch" => q.watch = flag(&v),
                "resourceVersion" => q.resource_version = Some(v).filter(|s| !s.is_empty()),
                "resourceVersionMatch" => {
                    q.resource_version_match = Some(v).filter(|s| !s.is_empty())
                }
                "limit" => q.limit = int("limit")?.max(0),
                "continue" => q.continue_token = Some(v).filter(|s| !s.is_empty()),
                "labelSelector" => q.label_selector = v,
                "fieldSelector" => q.field_selector = v,
                "timeoutSeconds" => q.timeout_seconds = Some(int("timeoutSeconds")?.max(0) as u64),
                "allowWatchBookmarks" => q.allow_bookmarks = flag(&v),
                "sendInitialEvents" => q.send_initial_events = Some(flag(&v)),
                "dryRun" => match v.as_str() {
                    "All" => q.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported dryRun value {other:?}: only \"All\" is supported"
                        )));
                    }
                },
                "gracePeriodSeconds" => q.grace_period_seconds = Some(int("gracePeriodSeconds")?),
                "propagationPolicy" => q.propagation_policy = Some(v),
                "orphanDependents" => q.orphan_dependents = Some(flag(&v)),
                "includeObject" => q.include_object = Some(v),
                "fieldManager" => q.field_manager = Some(v),
                "fieldValidation" => q.field_validation = Some(v),
                "hash" => q.hash = Some(v),
                "force" => q.force = flag(&v),
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resources() {
        let reg = atoll_api::kinds::builtin();
        let Route::Resource(t) = route(&reg, "/api/v1/namespaces/default/pods/web/status").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                t.kind.plural.as_str(),
                t.namespace.as_deref(),
                t.name(),
                t.sub.as_deref()
            ),
            ("pods", Some("default"), "web", Some("status"))
        );
        let Route::Resource(t) = route(&reg, "/api/v1/namespaces/kube-system").unwrap() else {
            panic!()
        };
        assert_eq!(
            (t.kind.plural.as_str(), t.name()),
            ("namespaces", "kube-system")
        );
        let Route::Resource(t) = route(&reg, "/api/v1/namespaces/x/status").unwrap() else {
            panic!()
        };
        assert_eq!(
            (t.kind.plural.as_str(), t.sub.as_deref()),
            ("namespaces", Some("status"))
        );
        let Route::Resource(t) = route(&reg, "/api/v1/pods").unwrap() else {
            panic!()
        };
        assert!(t.namespace.is_none() && t.name.is_none());
        let Route::Resource(t) =
            route(&reg, "/apis/apps/v1/namespaces/d/deployments/x/scale").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.key(), "/registry/deployments.apps/d/x");
        assert!(matches!(
            route(&reg, "/api/v1/namespaces/d/nodes/x").unwrap(),
            Route::NotFound
        ));
        assert!(matches!(
            route(&reg, "/api/v1/pods/x").unwrap(),
            Route::NotFound
        ));
        assert!(matches!(
            route(&reg, "/api/v1/widgets").unwrap(),
            Route::NotFound
        ));
    }

    #[test]
    fn parses_queries() {
        let q =
            Query::parse("&limit=500&watch=1&labelSelector=a%3Db&dryRun=All&timeoutSeconds=290")
                .unwrap();
        assert!(q.watch && q.dry_run);
        assert_eq!(q.limit, 500);
        assert_eq!(q.label_selector, "a=b");
        assert_eq!(q.timeout_seconds, Some(290));
        assert!(Query::parse("limit=x").is_err());
        assert!(Query::parse("dryRun=Some").is_err());
    }
}
