//! What the API server serves, read from legacy discovery (`/api`, `/apis` and each group version's
//! resource list), and API access to any served resource by metadata ([`Served::metadata`]). The
//! namespace controller and the garbage collector work over every served resource this way, so a
//! kind the server starts serving is covered without code naming it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::{Api, Client};

/// An object's metadata, of any served resource.
pub type Meta = PartialObjectMeta<DynamicObject>;

/// One served resource (no subresources): its coordinates, scope and verbs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// The verbs the server supports on it.
    pub verbs: Vec<String>,
}

impl Served {
    /// Whether the server supports every one of `verbs` on this resource.
    pub fn supports(&self, verbs: &[&str]) -> bool {
        verbs.iter().all(|v| self.verbs.iter().any(|s| s == v))
    }

    /// The group-qualified resource name as Kubernetes prints it: `pods.`, `deployments.apps`.
    pub fn group_resource(&self) -> String {
        format!("{}.{}", self.resource.plural, self.resource.group)
    }

    /// Metadata-only access (`as=PartialObjectMetadata`) to objects in `namespace`; all namespaces
    /// (list and watch only) when `namespace` is None. Cluster-scoped resources ignore `namespace`.
    pub fn metadata(&self, client: &Client, namespace: Option<&str>) -> Api<Meta> {
        match namespace {
            Some(ns) if self.namespaced => Api::namespaced_with(client.clone(), ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }

    /// Full-object access to objects in `namespace`, as [`Served::metadata`].
    pub fn dynamic(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if self.namespaced => Api::namespaced_with(client.clone(), ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// What discovery found: the served resources, one version per group and resource (the group's
/// preferred version first, as Kubernetes' `ServerPreferredResources`), and what failed.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// The served resources.
    pub resources: Vec<Arc<Served>>,
    /// Group versions whose resource list could not be read, with why.
    pub failed: BTreeMap<String, String>,
    /// Group versions the server listed that do not parse as `group/version`.
    pub unparsable: Vec<String>,
}

impl Discovered {
    /// The served resource of `kind` in `group` (any version).
    pub fn find(&self, group: &str, kind: &str) -> Option<&Arc<Served>> {
        self.resources
            .iter()
            .find(|s| s.resource.group == group && s.resource.kind == kind)
    }

    /// Whether discovery of `group` failed (so what it serves is unknown).
    pub fn group_failed(&self, group: &str) -> bool {
        self.failed
            .keys()
            .any(|gv| parse_api_version(gv).is_some_and(|(g, _)| g == group))
    }
}

/// Splits an apiVersion (`v1`, `apps/v1`) into group and version; None when it does not parse.
pub fn parse_api_version(api_version: &str) -> Option<(&str, &str)> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let bad = version.is_empty()
        || version.contains('/')
        || (group.is_empty() && api_version.contains('/'));
    (!bad).then_some((group, version))
}

/// Reads discovery. Fails only when `/api` or `/apis` cannot be read; a group version whose resource
/// list fails is recorded in [`Discovered::failed`] and the rest is still returned.
pub async fn discover(client: &Client) -> Result<Discovered, kube::Error> {
    let core = client.list_core_api_versions().await?;
    let groups = client.list_api_groups().await?;
    // (group, versions preferred first)
    let mut wanted: Vec<(String, Vec<String>)> = vec![(String::new(), core.versions)];
    for g in groups.groups {
        let preferred = g.preferred_version.map(|p| p.group_version);
        let mut versions: Vec<String> = g.versions.into_iter().map(|v| v.group_version).collect();
        if let Some(p) = preferred
            && let Some(i) = versions.iter().position(|v| *v == p)
        {
            let p = versions.remove(i);
            versions.insert(0, p);
        }
        wanted.push((g.name, versions));
    }
    let mut out = Discovered::default();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (group, versions) in wanted {
        for gv in versions {
            let Some((g, v)) = parse_api_version(&gv) else {
                out.unparsable.push(gv);
                continue;
            };
            if g != group {
                out.unparsable.push(gv);
                continue;
            }
            let list = if group.is_empty() {
                client.list_core_api_resources(v).await
            } else {
                client.list_api_group_resources(&gv).await
            };
            match list {
                Ok(list) => {
                    for s in served(&list, g, v) {
                        if seen.insert((g.to_string(), s.resource.plural.clone())) {
                            out.resources.push(Arc::new(s));
                        }
                    }
                }
                Err(e) => {
                    out.failed.insert(gv.clone(), e.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// The resources (not subresources) of one group version's resource list.
fn served(list: &APIResourceList, group: &str, version: &str) -> Vec<Served> {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    list.resources
        .iter()
        .filter(|r| !r.name.contains('/') && !r.name.is_empty() && !r.kind.is_empty())
        .map(|r| Served {
            resource: ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version: api_version.clone(),
                kind: r.kind.clone(),
                plural: r.name.clone(),
            },
            namespaced: r.namespaced,
            verbs: r.verbs.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_parse_as_kubernetes_does() {
        assert_eq!(parse_api_version("v1"), Some(("", "v1")));
        assert_eq!(parse_api_version("apps/v1"), Some(("apps", "v1")));
        assert_eq!(parse_api_version("a/b/c"), None);
        assert_eq!(parse_api_version("/v1"), None);
        assert_eq!(parse_api_version(""), None);
        assert_eq!(parse_api_version("apps/"), None);
    }
}
