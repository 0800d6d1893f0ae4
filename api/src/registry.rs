//! The kind registry: every served resource is one [`KindInfo`] entry with its [`Strategy`].
//! The API server's REST verbs, watch, tables and discovery are written once over this table.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::Cause;
use crate::table::Column;
use crate::validation::NameRule;

/// A subresource a kind offers besides the main resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `<resource>/status`: GET, PUT and PATCH of `.status` only.
    Status,
    /// `<resource>/scale`: an `autoscaling/v1 Scale` view of `.spec.replicas`.
    Scale,
    /// `pods/binding`: assign a pod to a node.
    Binding,
    /// `pods/eviction`: a `policy/v1 Eviction` deletes the pod gracefully (as `kubectl drain` does).
    Eviction,
    /// `pods/log`: a container's output, read from (and streamed by) the kubelet of the pod's node.
    Log,
    /// `pods/exec`: run a command in a container, its streams relayed from the kubelet (an HTTP upgrade).
    Exec,
    /// `pods/attach`: attach to a running container's streams (an HTTP upgrade).
    Attach,
    /// `pods/portforward`: forward connections to the pod's ports (an HTTP upgrade).
    PortForward,
}

impl Subresource {
    /// The URL segment.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
        }
    }
}

/// Where the `scale` subresource reads and writes an object's replicas (JSON pointers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// The desired replicas, e.g. `/spec/replicas`.
    pub spec_replicas: String,
    /// The observed replicas, e.g. `/status/replicas`.
    pub status_replicas: String,
    /// A label selector string in the object (custom resources' `labelSelectorPath`); None: the
    /// selector is derived from `spec.selector` (built-in workloads).
    pub label_selector: Option<String>,
}

impl ScalePaths {
    /// The built-in workloads' paths: `spec.replicas`, `status.replicas`, selector from `spec.selector`.
    pub fn builtin() -> ScalePaths {
        ScalePaths {
            spec_replicas: "/spec/replicas".into(),
            status_replicas: "/status/replicas".into(),
            label_selector: None,
        }
    }

    /// A JSON pointer from a CRD's dotted path (`.spec.replicas` → `/spec/replicas`).
    pub fn pointer(dotted: &str) -> String {
        dotted
            .trim_start_matches('.')
            .split('.')
            .fold(String::new(), |mut p, step| {
                p.push('/');
                p.push_str(&step.replace('~', "~0").replace('/', "~1"));
                p
            })
    }
}

/// Which rules an update follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateScope {
    /// An update of the main resource: update validation (immutable fields) applies.
    Spec,
    /// A status update: status validation applies.
    Status,
    /// A server-internal change (binding, scale): only the object's own validity is checked.
    System,
}

/// An object decoded through its kind's type: the result, what is invalid about it, and the fields
/// of the input the type does not know (as paths like `spec.containers[0].bogus`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object, defaulted, in the kind's exact shape.
    pub obj: Value,
    /// Validation problems (none: valid).
    pub causes: Vec<Cause>,
    /// Input fields the kind does not declare; they are not in `obj`.
    pub unknown: Vec<String>,
}

/// Per-kind behaviour over JSON objects; implemented once per k8s-openapi type by [`crate::kinds::Typed`].
/// Each call decodes the object through the kind's type once, so the result has the kind's exact shape.
pub trait Strategy: Send + Sync {
    /// Fills defaults, resets what clients may not set on create (e.g. status) and validates.
    /// `Err` says why the object does not decode as the kind.
    fn create(&self, obj: Value) -> Result<Decoded, String>;
    /// Fills defaults and validates an update of `old` under `scope`.
    fn update(&self, new: Value, old: &Value, scope: UpdateScope) -> Result<Decoded, String>;
    /// The kind's OpenAPI schema (a reference into the generator's definitions, which it adds).
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
    /// Table columns kubectl shows for this kind.
    fn columns(&self) -> &[Column];
    /// The cells of one object's row, in column order.
    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value>;
    /// Whether strategic merge patches apply (custom resources have no patch strategies: 415).
    fn strategic_merge(&self) -> bool {
        true
    }
}

/// A served resource: its names, scope, subresources, field selectors and strategy.
#[derive(Clone)]
pub struct KindInfo {
    /// API group; "" for core.
    pub group: String,
    /// API version within the group, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Resource name in URLs, e.g. `pods`.
    pub plural: String,
    /// Singular resource name, e.g. `pod`.
    pub singular: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names for kubectl, e.g. `po`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Subresources served.
    pub subresources: Vec<Subresource>,
    /// Where the `scale` subresource finds the replicas (with [`Subresource::Scale`]).
    pub scale: Option<ScalePaths>,
    /// Rule for `metadata.name`.
    pub name_rule: NameRule,
    /// Field selectors supported beyond `metadata.name` and `metadata.namespace`, each with the value an
    /// absent field has (e.g. `spec.unschedulable` is `false` when absent).
    pub fields: Vec<(String, String)>,
    /// Whether the kind has `.spec` (so `generation` is tracked).
    pub has_spec: bool,
    /// Defaulting, validation and printing.
    pub strategy: Arc<dyn Strategy>,
}

impl std::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindInfo")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .finish()
    }
}

impl KindInfo {
    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// The list kind, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    /// Whether `sub` is served.
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }
    /// `plural.group` (or `plural` for core), as used in messages and etcd keys.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// The etcd key prefix for this resource: `/registry/<resource>/`, the resource group-qualified
    /// outside the core group (`/registry/deployments.apps/`), so no two groups share keys.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.qualified())
    }
    /// The value of a field selector field on `obj`, or `None` if the field is not supported for this kind.
    pub fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        let default = self.field_default(field)?;
        Some(field_string(
            obj.pointer(&format!("/{}", field.replace('.', "/"))),
            default,
        ))
    }

    /// The value an absent field has for field selectors, or `None` if the field is not supported.
    pub fn field_default(&self, field: &str) -> Option<&str> {
        if field == "metadata.name" || field == "metadata.namespace" {
            return Some("");
        }
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, d)| d.as_str())
    }
}

/// A field's value as field selectors compare it: strings as they are, other values as JSON text,
/// `default` when absent or null.
pub fn field_string(v: Option<&Value>, default: &str) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => default.to_string(),
        Some(other) => other.to_string(),
    }
}

/// The table of served kinds, looked up by group, version and resource name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    kinds: Vec<Arc<KindInfo>>,
    by_resource: BTreeMap<(String, String, String), usize>,
}

impl Registry {
    /// Adds a kind. A later entry for the same group/version/resource replaces the earlier one.
    pub fn add(&mut self, info: KindInfo) {
        let key = (
            info.group.clone(),
            info.version.clone(),
            info.plural.clone(),
        );
        match self.by_resource.get(&key) {
            Some(&i) => self.kinds[i] = Arc::new(info),
            None => {
                self.by_resource.insert(key, self.kinds.len());
                self.kinds.push(Arc::new(info));
            }
        }
    }
    /// Looks a resource up by group, version and plural name.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<KindInfo>> {
        self.by_resource
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .map(|&i| &self.kinds[i])
    }
    /// Looks a kind up by apiVersion and Kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&Arc<KindInfo>> {
        self.kinds
            .iter()
            .find(|k| k.kind == kind && k.api_version() == api_version)
    }
    /// All kinds, in registration order.
    pub fn kinds(&self) -> &[Arc<KindInfo>] {
        &self.kinds
    }
    /// The served groups with their versions, in registration order (core group is "").
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = vec![];
        for k in &self.kinds {
            match out.iter_mut().find(|(g, _)| *g == k.group) {
                Some((_, versions)) => {
                    if !versions.contains(&k.version) {
                        versions.push(k.version.clone());
                    }
                }
                None => out.push((k.group.clone(), vec![k.version.clone()])),
            }
        }
        out
    }
}
