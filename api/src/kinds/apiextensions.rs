//! `apiextensions.k8s.io/v1 CustomResourceDefinition`, and the kinds it defines: [`custom_kind`] makes
//! the [`KindInfo`] of a CRD's stored version, whose [`Custom`] strategy prunes, defaults and validates
//! objects against the version's `openAPIV3Schema` ([`crate::structural`]).

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames,
};
use serde_json::{Value, json};

use super::Typed;
use crate::error::Cause;
use crate::registry::{Decoded, KindInfo, ScalePaths, Strategy, Subresource, UpdateScope};
use crate::table::Column;
use crate::validation::{self, NameRule};

/// The finalizer that keeps a deleted CRD until its custom resources are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

const CRD_COLS: &[Column] = &[Column::new(
    "Created At",
    "date",
    0,
    "When the definition was created.",
)];

fn crd_row(_: &CustomResourceDefinition, obj: &Value, _: jiff::Timestamp) -> Vec<Value> {
    vec![crate::table::created(obj).unwrap_or("").into()]
}

/// The hooks of `apiextensions.k8s.io/v1 CustomResourceDefinition`.
pub fn crd() -> Typed<CustomResourceDefinition> {
    Typed {
        columns: CRD_COLS,
        row: crd_row,
        default: default_crd,
        prepare_create: prepare_crd,
        validate: validate_crd,
        validate_update: validate_crd_update,
        ..Typed::default()
    }
}

/// `singular` defaults to the lowercased kind, `listKind` to `<Kind>List`.
fn default_names(names: &mut CustomResourceDefinitionNames) {
    if names.singular.as_deref().unwrap_or("").is_empty() {
        names.singular = Some(names.kind.to_lowercase());
    }
    if names.list_kind.as_deref().unwrap_or("").is_empty() && !names.kind.is_empty() {
        names.list_kind = Some(format!("{}List", names.kind));
    }
}

fn default_crd(crd: &mut CustomResourceDefinition) {
    default_names(&mut crd.spec.names);
    if let Some(status) = crd.status.as_mut()
        && let Some(names) = status.accepted_names.as_mut()
    {
        default_names(names);
    }
}

/// A new CRD has no status yet (the server's CRD controller sets it) and holds the cleanup finalizer.
fn prepare_crd(crd: &mut CustomResourceDefinition) {
    crd.status = None;
    let finalizers = crd.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
        finalizers.push(CLEANUP_FINALIZER.into());
    }
}

fn validate_crd(crd: &CustomResourceDefinition, out: &mut Vec<Cause>) {
    let spec = &crd.spec;
    let names = &spec.names;
    let name = crd.metadata.name.as_deref().unwrap_or("");
    let expected = format!("{}.{}", names.plural, spec.group);
    if name != expected {
        out.push(Cause::invalid(
            "metadata.name",
            name,
            format!("must be spec.names.plural+\".\"+spec.group ({expected:?})"),
        ));
    }
    if !spec.group.contains('.') {
        out.push(Cause::invalid(
            "spec.group",
            &spec.group,
            "should be a domain with at least one dot",
        ));
    } else if let Err(e) = validation::dns1123_subdomain(&spec.group) {
        out.push(Cause::invalid("spec.group", &spec.group, e));
    }
    if spec.scope != "Namespaced" && spec.scope != "Cluster" {
        out.push(Cause::not_supported(
            "spec.scope",
            &spec.scope,
            &["Cluster", "Namespaced"],
        ));
    }
    for (field, value) in [
        ("spec.names.plural", names.plural.as_str()),
        (
            "spec.names.singular",
            names.singular.as_deref().unwrap_or(""),
        ),
    ] {
        if let Err(e) = validation::dns1035_label(value) {
            out.push(Cause::invalid(field, value, e));
        }
    }
    for (field, value) in [
        ("spec.names.kind", names.kind.as_str()),
        (
            "spec.names.listKind",
            names.list_kind.as_deref().unwrap_or(""),
        ),
    ] {
        if value.is_empty() {
            out.push(Cause::required(field));
        } else if !value.chars().all(|c| c.is_ascii_alphanumeric()) {
            out.push(Cause::invalid(
                field,
                value,
                "must be an alphanumeric identifier",
            ));
        }
    }
    for (i, s) in names.short_names.iter().flatten().enumerate() {
        if let Err(e) = validation::dns1035_label(s) {
            out.push(Cause::invalid(format!("spec.names.shortNames[{i}]"), s, e));
        }
    }
    if spec.versions.is_empty() {
        out.push(Cause::required("spec.versions"));
    }
    let storage = spec.versions.iter().filter(|v| v.storage).count();
    if !spec.versions.is_empty() && storage != 1 {
        out.push(Cause::invalid(
            "spec.versions",
            storage,
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in spec.versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        if let Err(e) = validation::dns1035_label(&v.name) {
            out.push(Cause::invalid(format!("{at}.name"), &v.name, e));
        }
        if spec.versions[..i].iter().any(|o| o.name == v.name) {
            out.push(Cause::duplicate(format!("{at}.name"), &v.name));
        }
        match v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => out.push(Cause::required(format!("{at}.schema.openAPIV3Schema"))),
            Some(schema) => {
                let schema = serde_json::to_value(schema).unwrap_or(Value::Null);
                out.extend(crate::structural::check_schema(
                    &schema,
                    &format!("{at}.schema.openAPIV3Schema"),
                ));
            }
        }
    }
}

fn validate_crd_update(
    new: &CustomResourceDefinition,
    old: &CustomResourceDefinition,
    out: &mut Vec<Cause>,
) {
    if new.spec.group != old.spec.group {
        out.push(Cause::immutable("spec.group", "field is immutable"));
    }
    if new.spec.scope != old.spec.scope {
        out.push(Cause::immutable("spec.scope", "field is immutable"));
    }
    if new.spec.names.plural != old.spec.names.plural {
        out.push(Cause::immutable("spec.names.plural", "field is immutable"));
    }
}

/// The schema of the version of `crd` that is stored and served, with that version's name.
fn stored_version(crd: &Value) -> Option<(&str, &Value)> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v["storage"] == true && v["served"] == true)
        .and_then(|v| Some((v["name"].as_str()?, v)))
}

/// The kind a stored CRD defines (its storage version, if served), or None if it defines none.
/// Objects of other served versions would need conversion, which is not done: only the storage
/// version is served.
pub fn custom_kind(crd: &Value) -> Option<KindInfo> {
    let spec = crd.get("spec")?;
    let group = spec["group"].as_str()?.to_string();
    let names = &spec["names"];
    let (version, v) = stored_version(crd)?;
    let kind = names["kind"].as_str()?.to_string();
    let plural = names["plural"].as_str()?.to_string();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let status = v.pointer("/subresources/status").is_some();
    let scale = v.pointer("/subresources/scale").and_then(|s| {
        Some(ScalePaths {
            spec_replicas: ScalePaths::pointer(s["specReplicasPath"].as_str()?),
            status_replicas: ScalePaths::pointer(s["statusReplicasPath"].as_str()?),
            label_selector: s["labelSelectorPath"].as_str().map(ScalePaths::pointer),
        })
    });
    let schema = v
        .pointer("/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    let reversed_group: Vec<&str> = group.rsplit('.').collect();
    let columns = printer_columns(v);
    Some(KindInfo {
        singular: names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        namespaced: spec["scope"] == "Namespaced",
        subresources: [
            status.then_some(Subresource::Status),
            scale.is_some().then_some(Subresource::Scale),
        ]
        .into_iter()
        .flatten()
        .collect(),
        scale,
        name_rule: NameRule::Subdomain,
        fields: vec![],
        has_spec: true,
        strategy: Arc::new(Custom {
            definition: format!("{}.{version}.{kind}", reversed_group.join(".")),
            schema,
            api_version: format!("{group}/{version}"),
            kind: kind.clone(),
            status_subresource: status,
            column_list: columns.iter().map(|(c, _)| c.clone()).collect(),
            columns,
        }),
        group,
        version: version.to_string(),
        kind,
        plural,
    })
}

/// The strategy of a custom kind: its version's schema decides which fields exist, their defaults
/// and what is valid.
pub struct Custom {
    /// The schema's name in OpenAPI documents (`<reversed group>.<version>.<Kind>`).
    definition: String,
    schema: Value,
    api_version: String,
    kind: String,
    /// With a status subresource, clients set the status only through it.
    status_subresource: bool,
    /// The Table columns after NAME, with the JSONPath of each (AGE alone when the CRD names none).
    columns: Vec<(Column, String)>,
    /// The same columns alone.
    column_list: Vec<Column>,
}

/// The version's `additionalPrinterColumns`, or the AGE column.
fn printer_columns(version: &Value) -> Vec<(Column, String)> {
    let defined: Vec<(Column, String)> = version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let text = |f: &str| c[f].as_str().unwrap_or("").to_string();
            let column = Column {
                name: text("name").into(),
                kind: text("type").into(),
                format: text("format").into(),
                priority: c["priority"].as_u64().unwrap_or(0).min(u8::MAX.into()) as u8,
                description: text("description").into(),
            };
            Some((column, c["jsonPath"].as_str()?.to_string()))
        })
        .collect();
    if defined.is_empty() {
        vec![(Column::AGE, ".metadata.creationTimestamp".into())]
    } else {
        defined
    }
}

/// The values a printer column's JSONPath selects: `.a.b`, `.a[0]`, `.a[*]`, `.a['b.c']` and
/// `.a[?(@.k=="v")]` steps, as CRDs' columns use them.
fn json_path<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![obj];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        let (step, next) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            (Step::Field(&r[..end]), &r[end..])
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return vec![];
            };
            (Step::parse(&r[..end]), &r[end + 1..])
        } else {
            return vec![];
        };
        current = current.into_iter().flat_map(|v| step.select(v)).collect();
        rest = next;
    }
    current
}

/// One step of a printer column's JSONPath.
enum Step<'p> {
    Field(&'p str),
    Index(usize),
    All,
    Filter(&'p str, String),
    Invalid,
}

impl<'p> Step<'p> {
    fn parse(inner: &'p str) -> Step<'p> {
        let inner = inner.trim();
        if inner == "*" {
            return Step::All;
        }
        if let Ok(i) = inner.parse() {
            return Step::Index(i);
        }
        if let Some(quoted) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            return Step::Field(quoted);
        }
        if let Some(cond) = inner.strip_prefix("?(@.").and_then(|s| s.strip_suffix(')'))
            && let Some((key, value)) = cond.split_once("==")
        {
            let value = value.trim().trim_matches(['"', '\'']).to_string();
            return Step::Filter(key.trim(), value);
        }
        Step::Invalid
    }

    fn select<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        match self {
            Step::Field(f) => v.get(*f).into_iter().collect(),
            Step::Index(i) => v.get(*i).into_iter().collect(),
            Step::All => match v {
                Value::Array(a) => a.iter().collect(),
                Value::Object(o) => o.values().collect(),
                _ => vec![],
            },
            Step::Filter(key, value) => v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| match e.get(*key) {
                    Some(Value::String(s)) => s == value,
                    Some(other) => {
                        serde_json::from_str::<Value>(value).ok().as_ref() == Some(other)
                    }
                    None => false,
                })
                .collect(),
            Step::Invalid => vec![],
        }
    }
}

/// A printer column's cell: dates as ages (as Kubernetes converts them), several values joined by
/// commas, nothing as null (`<none>`).
fn cell(column: &Column, values: &[&Value], now: jiff::Timestamp) -> Value {
    match values {
        [] => Value::Null,
        [one] if column.kind == "date" => match one.as_str() {
            Some(t) => crate::table::age(Some(t), now).into(),
            None => Value::Null,
        },
        [one] if column.kind != "string" => (*one).clone(),
        many => many
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
            .into(),
    }
}

impl Custom {
    fn check(&self, mut obj: Value) -> Result<Decoded, String> {
        if !obj.is_object() {
            return Err(format!("a {} must be a JSON object", self.kind));
        }
        let unknown = crate::structural::prune(&self.schema, &mut obj);
        crate::structural::apply_defaults(&self.schema, &mut obj);
        let causes = crate::structural::validate(&self.schema, &obj);
        obj["apiVersion"] = self.api_version.clone().into();
        obj["kind"] = self.kind.clone().into();
        Ok(Decoded {
            obj,
            causes,
            unknown,
        })
    }
}

impl Strategy for Custom {
    fn create(&self, mut obj: Value) -> Result<Decoded, String> {
        if self.status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        self.check(obj)
    }
    fn update(&self, new: Value, _old: &Value, _scope: UpdateScope) -> Result<Decoded, String> {
        self.check(new)
    }
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = self.schema.clone();
        if let Some(o) = schema.as_object_mut() {
            let (group, version) = self
                .api_version
                .split_once('/')
                .unwrap_or(("", &self.api_version));
            o.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": self.kind}]),
            );
            let props = o
                .entry("properties")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(props) = props {
                props.insert("apiVersion".into(), json!({"type": "string"}));
                props.insert("kind".into(), json!({"type": "string"}));
                let object_meta = generator
                    .subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
                );
                props.insert("metadata".into(), object_meta.to_value());
            }
        }
        if let Ok(s) = schemars::Schema::try_from(schema) {
            generator
                .definitions_mut()
                .insert(self.definition.clone(), s.to_value());
        }
        let reference = format!("#/components/schemas/{}", self.definition);
        schemars::Schema::try_from(json!({"$ref": reference})).unwrap_or_default()
    }
    fn columns(&self) -> &[Column] {
        &self.column_list
    }
    fn strategic_merge(&self) -> bool {
        false
    }
    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut cells = vec![Value::String(crate::table::name(obj).to_string())];
        for (column, path) in &self.columns {
            cells.push(cell(column, &json_path(obj, path), now));
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}},
            "spec": {"replicas": 3, "tags": ["p", "q"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        assert_eq!(json_path(&obj, ".spec.replicas"), vec![&json!(3)]);
        assert_eq!(json_path(&obj, "{.spec.tags[1]}"), vec![&json!("q")]);
        assert_eq!(json_path(&obj, ".spec.tags[*]").len(), 2);
        assert_eq!(
            json_path(&obj, ".metadata.labels['app.kubernetes.io/name']"),
            vec![&json!("x")]
        );
        assert_eq!(
            json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert!(json_path(&obj, ".spec.missing").is_empty());
        assert!(json_path(&obj, ".spec[bad").is_empty());
        let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().expect("time");
        let date = Column::new("Age", "date", 0, "");
        assert_eq!(
            cell(&date, &[&json!("2026-01-01T00:00:00Z")], now),
            json!("60m")
        );
        let int = Column::new("Replicas", "integer", 0, "");
        assert_eq!(cell(&int, &[&json!(3)], now), json!(3));
        assert_eq!(cell(&int, &[], now), Value::Null);
    }
}
