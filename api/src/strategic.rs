//! Strategic merge patch (`application/strategic-merge-patch+json`), as Kubernetes applies it:
//! maps merge; lists merge by their merge key (containers by `name`, ports by `containerPort`, …) or,
//! for primitive lists with the merge strategy, as sets; other lists are replaced. Directives:
//! `$patch: replace|delete|merge`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>`.
//!
//! Which field merges how comes from [`crate::patch_meta`]; what type a field has comes from the kinds'
//! OpenAPI schemas (generated from k8s-openapi), held in a [`TypeGraph`].

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::patch_meta::PATCH_FIELDS;

/// The types of the served kinds: schema name → its JSON schema, as schemars generates them.
#[derive(Debug, Clone, Default)]
pub struct TypeGraph {
    defs: Map<String, Value>,
    strategies: HashMap<(&'static str, &'static str), (&'static str, &'static str)>,
    lists: HashMap<(&'static str, &'static str), (&'static str, &'static str)>,
    roots: HashMap<String, String>,
    /// Each struct's fields with their types, resolved once.
    fields: HashMap<String, HashMap<String, Ty>>,
}

/// The type of values nothing is known about.
static OTHER: Ty = Ty::Other;

/// The schema name of `autoscaling/v1 Scale`, the type of every `scale` subresource.
pub const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// What a value of some field is, as far as merging goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A struct with named fields.
    Struct(String),
    /// A map with arbitrary keys.
    Map(Box<Ty>),
    /// A list.
    List(Box<Ty>),
    /// Anything else (scalars, opaque values).
    Other,
}

impl TypeGraph {
    /// A graph over the given schema definitions (`#/components/schemas/<name>` references).
    pub fn new(defs: Map<String, Value>) -> TypeGraph {
        let strategies = PATCH_FIELDS
            .iter()
            .map(|(t, f, s, k)| ((*t, *f), (*s, *k)))
            .collect();
        let lists = crate::patch_meta::LIST_TYPES
            .iter()
            .map(|(t, f, k, m)| ((*t, *f), (*k, *m)))
            .collect();
        let mut graph = TypeGraph {
            defs,
            strategies,
            lists,
            roots: HashMap::new(),
            fields: HashMap::new(),
        };
        let mut fields = HashMap::new();
        for (name, def) in &graph.defs {
            if let Some(Value::Object(props)) = def.get("properties") {
                let types = props
                    .iter()
                    .map(|(f, p)| (f.clone(), graph.resolve(p)))
                    .collect();
                fields.insert(name.clone(), types);
            }
        }
        graph.fields = fields;
        graph
    }

    /// The graph of every kind in `registry` (and Scale), with each kind's root schema.
    pub fn of_registry(registry: &crate::Registry) -> TypeGraph {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut roots = HashMap::new();
        for k in registry.kinds() {
            let schema = k.strategy.schema(&mut generator);
            if let Some(name) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
            {
                roots.insert(k.qualified(), name.to_string());
            }
        }
        generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
        TypeGraph {
            roots,
            ..TypeGraph::new(generator.take_definitions(true))
        }
    }

    /// The schema name of a kind's objects.
    pub fn root_of(&self, kind: &crate::KindInfo) -> Option<&str> {
        self.roots.get(&kind.qualified()).map(String::as_str)
    }

    /// Whether the graph knows the schema `name`.
    pub fn has(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    fn resolve(&self, schema: &Value) -> Ty {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            return match self.defs.get(name) {
                Some(def) if def.get("properties").is_some() => Ty::Struct(name.to_string()),
                Some(def) => self.resolve(def),
                None => Ty::Other,
            };
        }
        if let Some(first) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return self.resolve(first);
        }
        if let Some(items) = schema.get("items") {
            return Ty::List(Box::new(self.resolve(items)));
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            return Ty::Map(Box::new(self.resolve(values)));
        }
        Ty::Other
    }

    /// The type of a kind's objects.
    pub(crate) fn root_ty(&self, root: &str) -> Ty {
        if self.has(root) {
            Ty::Struct(root.to_string())
        } else {
            Ty::Other
        }
    }

    /// The list type (`atomic`, `set`, `map`) and map keys of a struct field, if the API declares them.
    pub(crate) fn list_type_of(
        &self,
        ty: &Ty,
        field: &str,
    ) -> Option<(&'static str, &'static str)> {
        match ty {
            Ty::Struct(name) => self.lists.get(&(name.as_str(), field)).copied(),
            _ => None,
        }
    }

    /// The patch strategy and merge key of a struct field.
    pub(crate) fn strategy_of(&self, ty: &Ty, field: &str) -> (&'static str, &'static str) {
        self.strategy(ty, field)
    }

    /// The type of a field of `ty`.
    pub(crate) fn field_ty<'a>(&'a self, ty: &'a Ty, field: &str) -> &'a Ty {
        self.field(ty, field)
    }

    fn field<'a>(&'a self, ty: &'a Ty, field: &str) -> &'a Ty {
        match ty {
            Ty::Struct(name) => self
                .fields
                .get(name)
                .and_then(|f| f.get(field))
                .unwrap_or(&OTHER),
            Ty::Map(inner) => inner,
            _ => &OTHER,
        }
    }

    fn strategy(&self, ty: &Ty, field: &str) -> (&'static str, &'static str) {
        match ty {
            Ty::Struct(name) => self
                .strategies
                .get(&(name.as_str(), field))
                .copied()
                .unwrap_or(("", "")),
            _ => ("", ""),
        }
    }

    /// Applies a strategic merge patch to `original`, an object of the schema `root`.
    pub fn apply(&self, root: &str, original: &Value, patch: &Value) -> Result<Value, String> {
        let (Value::Object(o), Value::Object(p)) = (original, patch) else {
            return Err("a strategic merge patch must be a JSON object".into());
        };
        let ty = if self.has(root) {
            Ty::Struct(root.to_string())
        } else {
            Ty::Other
        };
        Ok(self
            .merge_map(&ty, o.clone(), p)?
            .map(Value::Object)
            .unwrap_or_else(|| Value::Object(Map::new())))
    }

    /// Merges a map patch into `original`; None when the patch deletes the map.
    fn merge_map(
        &self,
        ty: &Ty,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>, String> {
        match patch.get("$patch").map(|v| v.as_str().unwrap_or("")) {
            None | Some("merge") => {}
            Some("replace") => return Ok(Some(clean_map(patch))),
            Some("delete") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "unknown patch type {other:?} in $patch: use replace, delete or merge"
                ));
            }
        }
        if let Some(keep) = patch.get("$retainKeys") {
            let keep: Vec<&str> = keep
                .as_array()
                .ok_or("$retainKeys must be a list")?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            original.retain(|k, _| keep.contains(&k.as_str()) || patch.contains_key(k));
        }
        let mut orders: BTreeMap<&str, &Value> = BTreeMap::new();
        let mut removals: BTreeMap<&str, &Value> = BTreeMap::new();
        for (k, v) in patch {
            if let Some(field) = k.strip_prefix("$setElementOrder/") {
                orders.insert(field, v);
            } else if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                removals.insert(field, v);
            }
        }
        for (k, v) in patch {
            if k.starts_with('$') {
                continue;
            }
            if v.is_null() {
                original.remove(k);
                continue;
            }
            let child = self.field(ty, k);
            let merged = match original.remove(k) {
                None => Some(clean(v)),
                Some(existing) => self.merge_value(ty, k, child, existing, v)?,
            };
            if let Some(m) = merged {
                original.insert(k.clone(), m);
            }
        }
        for (field, values) in removals {
            let values = values
                .as_array()
                .ok_or("$deleteFromPrimitiveList must be a list")?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|x| !values.contains(x));
            }
        }
        for (field, order) in orders {
            let order = order.as_array().ok_or("$setElementOrder must be a list")?;
            let (_, key) = self.strategy(ty, field);
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(list, order, key);
            }
        }
        Ok(Some(original))
    }

    /// Merges one field's value; None when the patch deletes it.
    fn merge_value(
        &self,
        parent: &Ty,
        field: &str,
        ty: &Ty,
        original: Value,
        patch: &Value,
    ) -> Result<Option<Value>, String> {
        match (original, patch) {
            (Value::Object(o), Value::Object(p)) => {
                Ok(self.merge_map(ty, o, p)?.map(Value::Object))
            }
            (Value::Array(o), Value::Array(p)) => {
                let (strategy, key) = self.strategy(parent, field);
                let item = match ty {
                    Ty::List(inner) => (**inner).clone(),
                    _ => Ty::Other,
                };
                if !strategy.split(',').any(|s| s == "merge") {
                    return Ok(Some(clean(patch)));
                }
                if p.iter()
                    .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
                {
                    let rest = p
                        .iter()
                        .filter(|e| e.get("$patch").is_none())
                        .map(clean)
                        .collect();
                    return Ok(Some(Value::Array(rest)));
                }
                if key.is_empty() {
                    let mut merged = o;
                    for x in p {
                        if !merged.contains(x) {
                            merged.push(clean(x));
                        }
                    }
                    return Ok(Some(Value::Array(merged)));
                }
                Ok(Some(Value::Array(self.merge_keyed(o, p, key, &item)?)))
            }
            (_, p) => Ok(Some(clean(p))),
        }
    }

    fn merge_keyed(
        &self,
        mut list: Vec<Value>,
        patch: &[Value],
        key: &str,
        item: &Ty,
    ) -> Result<Vec<Value>, String> {
        for pe in patch {
            let Value::Object(pm) = pe else {
                list.push(pe.clone());
                continue;
            };
            let id = pm.get(key);
            if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                list.retain(|e| e.get(key) != id || id.is_none());
                continue;
            }
            match list.iter().position(|e| id.is_some() && e.get(key) == id) {
                Some(i) => {
                    let existing = match list.remove(i) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    if let Some(m) = self.merge_map(item, existing, pm)? {
                        list.insert(i, Value::Object(m));
                    }
                }
                None => list.push(Value::Object(clean_map(pm))),
            }
        }
        Ok(list)
    }
}

/// The element type of a list type.
pub(crate) fn item_of(ty: &Ty) -> &Ty {
    match ty {
        Ty::List(inner) => inner,
        _ => &OTHER,
    }
}

/// Orders `list` as `order` says (by merge key for maps, by value for primitives); elements the
/// order does not name keep their relative order after the named ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: &str) {
    let id = |v: &Value| {
        if key.is_empty() {
            Some(v.clone())
        } else {
            v.get(key).cloned()
        }
    };
    let position = |v: &Value| {
        id(v).and_then(|i| {
            order
                .iter()
                .position(|o| (if key.is_empty() { Some(o) } else { o.get(key) }) == Some(&i))
        })
    };
    let mut indexed: Vec<(usize, usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| (position(&v).unwrap_or(usize::MAX), i, v))
        .collect();
    indexed.sort_by_key(|(p, i, _)| (*p, *i));
    list.extend(indexed.into_iter().map(|(_, _, v)| v));
}

/// A patch value without directives, as it is stored when nothing was there to merge with.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none())
                .map(clean)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph() -> TypeGraph {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        generator.subschema_for::<k8s_openapi::api::core::v1::Pod>();
        generator.subschema_for::<k8s_openapi::api::apps::v1::Deployment>();
        TypeGraph::new(generator.take_definitions(true))
    }

    const POD: &str = "io.k8s.api.core.v1.Pod";

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
               "spec": {"containers": [
                   {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
                   {"name": "side", "image": "busybox"}]}})
    }

    #[test]
    fn merges_lists_by_key_and_maps_by_field() {
        let g = graph();
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y", "x"]},
            "spec": {"containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}});
        let out = g.apply(POD, &pod(), &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["x", "y"]),
            "primitive merge lists are sets"
        );
        let web = &out["spec"]["containers"][0];
        assert_eq!(web["image"], "nginx:2");
        assert_eq!(
            web["ports"],
            json!([{"containerPort": 80}]),
            "untouched fields stay"
        );
        assert_eq!(
            web["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            out["spec"]["containers"][1]["name"], "side",
            "other elements stay"
        );
    }

    #[test]
    fn directives() {
        let g = graph();
        let delete = json!({"spec": {"containers": [{"name": "side", "$patch": "delete"}]}});
        let out = g.apply(POD, &pod(), &delete).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        let replace = json!({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}});
        let out = g.apply(POD, &pod(), &replace).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let map_replace = json!({"metadata": {"labels": {"z": "9", "$patch": "replace"}}});
        assert_eq!(
            g.apply(POD, &pod(), &map_replace).unwrap()["metadata"]["labels"],
            json!({"z": "9"})
        );
        let order = json!({"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}], "containers": [{"name": "web", "image": "nginx:3"}]}});
        let out = g.apply(POD, &pod(), &order).unwrap();
        assert_eq!(out["spec"]["containers"][0]["name"], "side");
        assert_eq!(out["spec"]["containers"][1]["image"], "nginx:3");
        let remove = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
        assert_eq!(
            g.apply(POD, &pod(), &remove).unwrap()["metadata"]["finalizers"],
            json!([])
        );
        let retain =
            json!({"spec": {"$retainKeys": ["containers"], "containers": [{"name": "web"}]}});
        let mut p = pod();
        p["spec"]["hostNetwork"] = json!(true);
        assert!(
            g.apply(POD, &p, &retain).unwrap()["spec"]
                .get("hostNetwork")
                .is_none()
        );
        assert!(
            g.apply(POD, &pod(), &json!({"$patch": "sideways"}))
                .is_err()
        );
        assert!(g.apply(POD, &pod(), &json!([1])).is_err());
    }

    #[test]
    fn every_builtin_kind_has_a_root() {
        let reg = crate::kinds::builtin();
        let g = TypeGraph::of_registry(&reg);
        for k in reg.kinds() {
            let root = g
                .root_of(k)
                .unwrap_or_else(|| panic!("{} has no schema", k.kind));
            assert!(g.has(root), "{root}");
        }
        assert!(g.has(SCALE));
    }

    #[test]
    fn lists_without_a_merge_strategy_are_replaced() {
        let g = graph();
        let patch = json!({"spec": {"containers": [{"name": "web", "command": ["b"]}]}});
        let mut p = pod();
        p["spec"]["containers"][0]["command"] = json!(["a", "x"]);
        assert_eq!(
            g.apply(POD, &p, &patch).unwrap()["spec"]["containers"][0]["command"],
            json!(["b"])
        );
        let d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "old"}]}}}});
        let dp = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "new"}, {"name": "d", "image": "x"}]}}}});
        let out = g.apply("io.k8s.api.apps.v1.Deployment", &d, &dp).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
