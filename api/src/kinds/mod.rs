//! The built-in kinds: one [`KindInfo`] per resource, with a [`Typed`] strategy over its k8s-openapi type.
//!
//! Adding a kind is adding an entry to [`builtin`] and, in the module for its group, the hooks that
//! default, validate and print it.

mod apiextensions;
mod apps;
mod cluster;
mod config;
mod networking;
mod pod;
mod service;
mod workload;

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Cause;
use crate::registry::{Decoded, KindInfo, Registry, Strategy, Subresource, UpdateScope};
use crate::table::Column;
use crate::validation::NameRule;

pub use apiextensions::{CLEANUP_FINALIZER, Custom, custom_kind};
pub use pod::{parse_quantity, pod_phase_reason, qos_class};
pub use service::{is_headless, needs_cluster_ip, needs_node_ports};

/// Hooks of one kind over its typed struct `K`. Every hook has a do-nothing default.
pub struct Typed<K> {
    /// Extra table columns after NAME (AGE is not added automatically: list it where kubectl shows it).
    pub columns: &'static [Column],
    /// The cells for `columns`, NAME excluded (it is added first).
    pub row: fn(&K, &Value, jiff::Timestamp) -> Vec<Value>,
    /// Fills defaults (on create and update).
    pub default: fn(&mut K),
    /// Resets what a client may not set on create (e.g. status) after defaulting.
    pub prepare_create: fn(&mut K),
    /// Adjusts an update of the main resource to the stored object (e.g. drops what a type change makes moot).
    pub prepare_update: fn(&mut K, &K),
    /// Checks the object (metadata is checked by the server).
    pub validate: fn(&K, &mut Vec<Cause>),
    /// Checks an update against the stored object (immutable fields).
    pub validate_update: fn(&K, &K, &mut Vec<Cause>),
    /// Checks a status update against the stored object.
    pub validate_status_update: fn(&K, &K, &mut Vec<Cause>),
    _k: PhantomData<fn() -> K>,
}

fn no_row<K>(_: &K, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![crate::table::age(crate::table::created(obj), now).into()]
}
fn nothing<K>(_: &mut K) {}
fn nothing2<K>(_: &mut K, _: &K) {}
fn no_check<K>(_: &K, _: &mut Vec<Cause>) {}
fn no_check2<K>(_: &K, _: &K, _: &mut Vec<Cause>) {}

impl<K> Default for Typed<K> {
    fn default() -> Self {
        Typed {
            columns: &[Column::AGE],
            row: no_row::<K>,
            default: nothing::<K>,
            prepare_create: nothing::<K>,
            prepare_update: nothing2::<K>,
            validate: no_check::<K>,
            validate_update: no_check2::<K>,
            validate_status_update: no_check2::<K>,
            _k: PhantomData,
        }
    }
}

fn decode<K: DeserializeOwned>(obj: &Value) -> Result<K, String> {
    K::deserialize(obj).map_err(|e| e.to_string())
}

/// Decodes like [`decode`], also collecting the paths of input fields the type ignores.
fn decode_tracking<K: DeserializeOwned>(obj: &Value) -> Result<(K, Vec<String>), String> {
    let mut unknown = vec![];
    let k = serde_ignored::deserialize(obj, |path| unknown.push(field_path(&path)))
        .map_err(|e| e.to_string())?;
    Ok((k, unknown))
}

/// A serde_ignored path as Kubernetes writes field paths: `spec.containers[0].bogus`.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

fn encode<K: Serialize>(k: &K) -> Result<Value, String> {
    serde_json::to_value(k).map_err(|e| e.to_string())
}

impl<K> Strategy for Typed<K>
where
    K: Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static,
{
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<K>()
    }
    fn create(&self, obj: Value) -> Result<Decoded, String> {
        let (mut k, unknown) = decode_tracking::<K>(&obj)?;
        (self.default)(&mut k);
        (self.prepare_create)(&mut k);
        let mut causes = vec![];
        (self.validate)(&k, &mut causes);
        Ok(Decoded {
            obj: encode(&k)?,
            causes,
            unknown,
        })
    }
    fn update(&self, new: Value, old: &Value, scope: UpdateScope) -> Result<Decoded, String> {
        let (mut k, unknown) = decode_tracking::<K>(&new)?;
        let old: K = decode(old)?;
        (self.default)(&mut k);
        if scope != UpdateScope::Status {
            (self.prepare_update)(&mut k, &old);
        }
        let mut causes = vec![];
        (self.validate)(&k, &mut causes);
        match scope {
            UpdateScope::Spec => (self.validate_update)(&k, &old, &mut causes),
            UpdateScope::Status => (self.validate_status_update)(&k, &old, &mut causes),
            UpdateScope::System => {}
        }
        Ok(Decoded {
            obj: encode(&k)?,
            causes,
            unknown,
        })
    }
    fn columns(&self) -> &[Column] {
        self.columns
    }
    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut cells = vec![Value::String(crate::table::name(obj).to_string())];
        match decode::<K>(obj) {
            Ok(k) => cells.extend((self.row)(&k, obj, now)),
            Err(_) => cells.extend(
                self.columns
                    .iter()
                    .map(|_| Value::String("<unknown>".into())),
            ),
        }
        cells
    }
}

/// Describes a kind for [`builtin`]; `strategy` is its [`Typed`] hooks.
struct Entry {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
    name_rule: NameRule,
    fields: &'static [(&'static str, &'static str)],
    has_spec: bool,
    strategy: Arc<dyn Strategy>,
}

impl Entry {
    fn into_info(self) -> KindInfo {
        KindInfo {
            group: self.group.into(),
            version: self.version.into(),
            kind: self.kind.into(),
            plural: self.plural.into(),
            singular: self.kind.to_lowercase(),
            namespaced: self.namespaced,
            short_names: self.short_names.iter().map(|s| s.to_string()).collect(),
            categories: self.categories.iter().map(|s| s.to_string()).collect(),
            subresources: self.subresources.to_vec(),
            scale: self
                .subresources
                .contains(&Subresource::Scale)
                .then(crate::registry::ScalePaths::builtin),
            name_rule: self.name_rule,
            fields: self
                .fields
                .iter()
                .map(|(f, d)| (f.to_string(), d.to_string()))
                .collect(),
            has_spec: self.has_spec,
            strategy: self.strategy,
        }
    }
}

/// The registry of every built-in kind Atoll serves.
pub fn builtin() -> Registry {
    use NameRule::*;
    use Subresource::*;
    let all: &[&str] = &["all"];
    let entries = vec![
        Entry {
            group: "",
            version: "v1",
            kind: "Namespace",
            plural: "namespaces",
            namespaced: false,
            short_names: &["ns"],
            categories: &[],
            subresources: &[Status],
            name_rule: Label,
            fields: &[("status.phase", "")],
            has_spec: false,
            strategy: Arc::new(cluster::namespace()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "Pod",
            plural: "pods",
            namespaced: true,
            short_names: &["po"],
            categories: all,
            subresources: &[Status, Binding, Eviction, Log, Exec, Attach, PortForward],
            name_rule: Subdomain,
            fields: pod::FIELDS,
            has_spec: true,
            strategy: Arc::new(pod::pod()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "Service",
            plural: "services",
            namespaced: true,
            short_names: &["svc"],
            categories: all,
            subresources: &[Status],
            name_rule: Rfc1035,
            fields: &[("spec.clusterIP", ""), ("spec.type", "")],
            has_spec: true,
            strategy: Arc::new(service::service()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "Endpoints",
            plural: "endpoints",
            namespaced: true,
            short_names: &["ep"],
            categories: &[],
            subresources: &[],
            name_rule: Subdomain,
            fields: &[],
            has_spec: false,
            strategy: Arc::new(networking::endpoints()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "ReplicationController",
            plural: "replicationcontrollers",
            namespaced: true,
            short_names: &["rc"],
            categories: all,
            subresources: &[Status, Scale],
            name_rule: Subdomain,
            fields: &[("status.replicas", "0")],
            has_spec: true,
            strategy: Arc::new(workload::replication_controller()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "Node",
            plural: "nodes",
            namespaced: false,
            short_names: &["no"],
            categories: &[],
            subresources: &[Status],
            name_rule: Subdomain,
            fields: &[("spec.unschedulable", "false")],
            has_spec: true,
            strategy: Arc::new(cluster::node()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "Event",
            plural: "events",
            namespaced: true,
            short_names: &["ev"],
            categories: &[],
            subresources: &[],
            name_rule: Subdomain,
            fields: &[
                ("involvedObject.kind", ""),
                ("involvedObject.namespace", ""),
                ("involvedObject.name", ""),
                ("involvedObject.uid", ""),
                ("involvedObject.apiVersion", ""),
                ("involvedObject.resourceVersion", ""),
                ("involvedObject.fieldPath", ""),
                ("reason", ""),
                ("reportingComponent", ""),
                ("source", ""),
                ("type", ""),
            ],
            has_spec: false,
            strategy: Arc::new(cluster::event()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "ConfigMap",
            plural: "configmaps",
            namespaced: true,
            short_names: &["cm"],
            categories: &[],
            subresources: &[],
            name_rule: Subdomain,
            fields: &[],
            has_spec: false,
            strategy: Arc::new(config::config_map()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "Secret",
            plural: "secrets",
            namespaced: true,
            short_names: &[],
            categories: &[],
            subresources: &[],
            name_rule: Subdomain,
            fields: &[("type", "")],
            has_spec: false,
            strategy: Arc::new(config::secret()),
        },
        Entry {
            group: "",
            version: "v1",
            kind: "ServiceAccount",
            plural: "serviceaccounts",
            namespaced: true,
            short_names: &["sa"],
            categories: &[],
            subresources: &[],
            name_rule: Subdomain,
            fields: &[],
            has_spec: false,
            strategy: Arc::new(config::service_account()),
        },
        Entry {
            group: "apps",
            version: "v1",
            kind: "Deployment",
            plural: "deployments",
            namespaced: true,
            short_names: &["deploy"],
            categories: all,
            subresources: &[Status, Scale],
            name_rule: Subdomain,
            fields: &[],
            has_spec: true,
            strategy: Arc::new(apps::deployment()),
        },
        Entry {
            group: "apps",
            version: "v1",
            kind: "ReplicaSet",
            plural: "replicasets",
            namespaced: true,
            short_names: &["rs"],
            categories: all,
            subresources: &[Status, Scale],
            name_rule: Subdomain,
            fields: &[("status.replicas", "0")],
            has_spec: true,
            strategy: Arc::new(apps::replica_set()),
        },
        Entry {
            group: "discovery.k8s.io",
            version: "v1",
            kind: "EndpointSlice",
            plural: "endpointslices",
            namespaced: true,
            short_names: &[],
            categories: &[],
            subresources: &[],
            name_rule: Subdomain,
            fields: &[("addressType", "")],
            has_spec: false,
            strategy: Arc::new(networking::endpoint_slice()),
        },
        Entry {
            group: "coordination.k8s.io",
            version: "v1",
            kind: "Lease",
            plural: "leases",
            namespaced: true,
            short_names: &[],
            categories: &[],
            subresources: &[],
            name_rule: Subdomain,
            fields: &[],
            has_spec: true,
            strategy: Arc::new(cluster::lease()),
        },
        Entry {
            group: "apiextensions.k8s.io",
            version: "v1",
            kind: "CustomResourceDefinition",
            plural: "customresourcedefinitions",
            namespaced: false,
            short_names: &["crd", "crds"],
            categories: &["api-extensions"],
            subresources: &[Status],
            name_rule: Subdomain,
            fields: &[],
            has_spec: true,
            strategy: Arc::new(apiextensions::crd()),
        },
    ];
    let mut registry = Registry::default();
    for e in entries {
        registry.add(e.into_info());
    }
    registry
}

#[cfg(test)]
mod tracking_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}], "extra": {"a": 1}}});
        let (_, unknown) = decode_tracking::<k8s_openapi::api::core::v1::Pod>(&pod).unwrap();
        assert_eq!(
            unknown,
            [
                "metadata.bogus",
                "spec.containers[0].imagePullPolicyy",
                "spec.extra"
            ]
        );
        let clean = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
        assert!(
            decode_tracking::<k8s_openapi::api::core::v1::Pod>(&clean)
                .unwrap()
                .1
                .is_empty()
        );
    }
}
