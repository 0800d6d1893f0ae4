//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write names a field manager. The fields a write sets or changes are recorded as owned by
//! that manager (operation `Update`), and taken from the others. An apply (`Apply`) declares the
//! complete set of fields its manager wants: it merges them into the object, fails with a conflict
//! when another manager owns a field whose value it would change (unless forced, which takes the
//! field over), and removes the fields it owned before and no longer declares, when no one else owns
//! them. Field sets are written as Kubernetes' `FieldsV1`: `f:<field>`, `k:<keys>` for elements of
//! map lists, `v:<value>` for set lists, `.` for an element itself.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::strategic::TypeGraph;

/// One field path: `f:spec`, `f:containers`, `k:{"name":"web"}`, `f:image`.
pub type FieldPath = Vec<String>;
/// A set of field paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// How a list field is merged and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Metadata fields the server sets: no manager owns them.
const SERVER_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// The schema of `metadata`.
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Fields a writer of `subresource` does not own: identity and server-set metadata always; on the
/// main resource the status (written through its subresource); through `status`, all but the status.
fn ignored(path: &[String], subresource: &str) -> bool {
    if subresource == "status" {
        return path.first().is_none_or(|a| a != "f:status");
    }
    match path {
        [a] => a == "f:apiVersion" || a == "f:kind",
        [a, ..] if a == "f:status" => true,
        [m, f, ..] if m == "f:metadata" => f
            .strip_prefix("f:")
            .is_some_and(|f| SERVER_METADATA.contains(&f)),
        _ => false,
    }
}

impl TypeGraph {
    fn list_kind(&self, parent: &crate::strategic::Ty, field: &str) -> ListKind {
        if let Some((kind, keys)) = self.list_type_of(parent, field) {
            return match kind {
                "map" => ListKind::Map(keys.split(',').map(str::to_string).collect()),
                "set" => ListKind::Set,
                _ => ListKind::Atomic,
            };
        }
        if matches!(parent, crate::strategic::Ty::Struct(_)) {
            let (strategy, key) = self.strategy_of(parent, field);
            if strategy.split(',').any(|s| s == "merge") {
                return if key.is_empty() {
                    ListKind::Set
                } else {
                    ListKind::Map(vec![key.to_string()])
                };
            }
        }
        ListKind::Atomic
    }

    /// The field paths `config` sets that a writer of `subresource` ("" for the main resource) owns,
    /// with list elements identified as they are in `object` (where defaults may have filled key
    /// fields the config left out).
    pub fn fields_of(
        &self,
        root: &str,
        config: &Value,
        object: &Value,
        subresource: &str,
    ) -> FieldSet {
        let mut out = FieldSet::new();
        self.collect(&self.root_ty(root), config, object, &mut vec![], &mut out);
        out.retain(|p| !ignored(p, subresource));
        out
    }

    fn collect(
        &self,
        ty: &crate::strategic::Ty,
        config: &Value,
        object: &Value,
        path: &mut FieldPath,
        out: &mut FieldSet,
    ) {
        let Value::Object(cfg) = config else {
            out.insert(path.clone());
            return;
        };
        if cfg.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, v) in cfg {
            path.push(format!("f:{k}"));
            let child = self.field_ty(ty, k);
            let live = object.get(k).unwrap_or(&Value::Null);
            match (v, self.list_kind(ty, k)) {
                (Value::Array(items), ListKind::Set) => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
                (Value::Array(items), ListKind::Map(keys)) => {
                    let item_ty = crate::strategic::item_of(child);
                    let live_items = live.as_array().cloned().unwrap_or_default();
                    for item in items {
                        let found = find(&live_items, item, &keys)
                            .cloned()
                            .unwrap_or_else(|| item.clone());
                        path.push(element_key(&found, &keys));
                        path.push(".".into());
                        out.insert(path.clone());
                        path.pop();
                        self.collect(item_ty, item, &found, path, out);
                        path.pop();
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
                (Value::Object(_), _) => self.collect(child, v, live, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }

    /// Merges an applied configuration into `object`: maps field by field, map lists by their keys,
    /// set lists as sets; anything else is replaced.
    pub fn merge_applied(&self, root: &str, object: &Value, config: &Value) -> Value {
        self.merge_config(&self.root_ty(root), object, config)
    }

    fn merge_config(&self, ty: &crate::strategic::Ty, object: &Value, config: &Value) -> Value {
        let (Value::Object(o), Value::Object(c)) = (object, config) else {
            return config.clone();
        };
        let mut out = o.clone();
        for (k, v) in c {
            let child = self.field_ty(ty, k);
            let merged = match (out.get(k), v, self.list_kind(ty, k)) {
                (Some(Value::Array(live)), Value::Array(items), ListKind::Set) => {
                    let mut l = live.clone();
                    for i in items {
                        if !l.contains(i) {
                            l.push(i.clone());
                        }
                    }
                    Value::Array(l)
                }
                (Some(Value::Array(live)), Value::Array(items), ListKind::Map(keys)) => {
                    let item_ty = crate::strategic::item_of(child);
                    let mut l = live.clone();
                    for i in items {
                        match l.iter().position(|e| matches(e, i, &keys)) {
                            Some(p) => l[p] = self.merge_config(item_ty, &l[p], i),
                            None => l.push(i.clone()),
                        }
                    }
                    Value::Array(l)
                }
                (Some(existing), Value::Object(_), _) => self.merge_config(child, existing, v),
                _ => v.clone(),
            };
            out.insert(k.clone(), merged);
        }
        Value::Object(out)
    }

    /// Writes the FieldsV1 of every field of `v` into `node` (`depth` 0 is the object itself).
    fn trie(
        &self,
        ty: &crate::strategic::Ty,
        v: &Value,
        node: &mut Map<String, Value>,
        depth: usize,
    ) {
        let Value::Object(m) = v else { return };
        for (k, val) in m {
            let skip = match depth {
                0 => k == "apiVersion" || k == "kind" || k == "status",
                1 => {
                    matches!(ty, crate::strategic::Ty::Struct(n) if n == OBJECT_META)
                        && SERVER_METADATA.contains(&k.as_str())
                }
                _ => false,
            };
            if skip {
                continue;
            }
            let child = self.field_ty(ty, k);
            let mut sub = Map::new();
            match (val, self.list_kind(ty, k)) {
                (Value::Array(items), ListKind::Set) => {
                    for item in items {
                        sub.insert(format!("v:{item}"), json!({}));
                    }
                }
                (Value::Array(items), ListKind::Map(keys)) => {
                    let item_ty = crate::strategic::item_of(child);
                    for item in items {
                        let mut el = Map::new();
                        el.insert(".".into(), json!({}));
                        self.trie(item_ty, item, &mut el, depth + 2);
                        sub.insert(element_key(item, &keys), Value::Object(el));
                    }
                }
                (Value::Object(_), _) => self.trie(child, val, &mut sub, depth + 1),
                _ => {}
            }
            node.insert(format!("f:{k}"), Value::Object(sub));
        }
    }

    /// The leaf field paths whose value differs between `old` and `new` (all of `new`'s when `old` is
    /// absent); an element itself (`.`) counts when it is new. Identical subtrees are skipped whole.
    /// Only the fields a writer of `subresource` owns count (see [`TypeGraph::fields_of`]).
    pub fn changed_fields(
        &self,
        root: &str,
        old: Option<&Value>,
        new: &Value,
        subresource: &str,
    ) -> FieldSet {
        let mut out = FieldSet::new();
        self.changed(&self.root_ty(root), old, new, &mut vec![], &mut out);
        out.retain(|p| !ignored(p, subresource));
        out
    }

    fn changed(
        &self,
        ty: &crate::strategic::Ty,
        old: Option<&Value>,
        new: &Value,
        path: &mut FieldPath,
        out: &mut FieldSet,
    ) {
        if old == Some(new) {
            return;
        }
        let Value::Object(n) = new else {
            out.insert(path.clone());
            return;
        };
        if n.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, v) in n {
            let before = old.and_then(|o| o.get(k));
            if before == Some(v) {
                continue;
            }
            path.push(format!("f:{k}"));
            let child = self.field_ty(ty, k);
            match (v, self.list_kind(ty, k)) {
                (Value::Array(items), ListKind::Set) => {
                    let had = before.and_then(Value::as_array);
                    for item in items {
                        if !had.is_some_and(|h| h.contains(item)) {
                            path.push(format!("v:{item}"));
                            out.insert(path.clone());
                            path.pop();
                        }
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
                (Value::Array(items), ListKind::Map(keys)) => {
                    let item_ty = crate::strategic::item_of(child);
                    let had = before
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    for item in items {
                        let prior = had
                            .iter()
                            .find(|e| keys.iter().all(|key| e.get(key) == item.get(key)));
                        if prior == Some(item) {
                            continue;
                        }
                        path.push(element_key(item, &keys));
                        if prior.is_none() {
                            path.push(".".into());
                            out.insert(path.clone());
                            path.pop();
                        }
                        self.changed(item_ty, prior, item, path, out);
                        path.pop();
                    }
                    if items.is_empty() {
                        out.insert(path.clone());
                    }
                }
                (Value::Object(_), _) => self.changed(child, before, v, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
}

/// Whether a field differs between two objects; for an element itself (`.`), whether it exists in one only.
fn differs(a: &Value, b: &Value, path: &[String]) -> bool {
    if path.last().map(String::as_str) == Some(".") {
        value_at(a, path).is_some() != value_at(b, path).is_some()
    } else {
        value_at(a, path) != value_at(b, path)
    }
}

/// The element key of a map-list element: `k:{"name":"web"}` (keys in the order the schema gives).
fn element_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// Whether a live element is the one a config element names: every key the config gives matches.
fn matches(live: &Value, config: &Value, keys: &[String]) -> bool {
    let mut any = false;
    for k in keys {
        if let Some(v) = config.get(k) {
            any = true;
            if live.get(k) != Some(v) {
                return false;
            }
        }
    }
    any
}

fn find<'a>(items: &'a [Value], config: &Value, keys: &[String]) -> Option<&'a Value> {
    items.iter().find(|e| matches(e, config, keys))
}

/// The value a field path leads to in `obj`.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        if step == "." {
            continue;
        }
        cur = if let Some(f) = step.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = step.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array()?
                .iter()
                .find(|e| keys.iter().all(|(kk, kv)| e.get(kk) == Some(kv)))?
        } else if let Some(v) = step.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|e| **e == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the field a path leads to from `obj` (a map field, a map-list element or a set value).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let path: Vec<&String> = path.iter().filter(|s| *s != ".").collect();
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parents {
        let next = if let Some(f) = step.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = step.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|e| keys.iter().all(|(kk, kv)| e.get(kk) == Some(kv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
        if let Some(a) = cur.as_array_mut() {
            a.retain(|e| !keys.iter().all(|(kk, kv)| e.get(kk) == Some(kv)));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).unwrap_or(Value::Null);
        if let Some(a) = cur.as_array_mut() {
            a.retain(|e| *e != want);
        }
    }
}

/// A field set as `FieldsV1` JSON.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            let entry = node.entry(step.clone()).or_insert_with(|| json!({}));
            node = match entry {
                Value::Object(m) => m,
                _ => unreachable!("only objects are inserted"),
            };
        }
    }
    Value::Object(root)
}

/// A `FieldsV1` JSON as a field set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Value::Object(m) = v else { return };
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in m {
            path.push(k.clone());
            walk(child, path, out);
            path.pop();
        }
    }
    walk(v, &mut vec![], &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion the fields were set with.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: String,
    /// The subresource written through ("" for the main resource).
    pub subresource: String,
    /// The fields owned.
    pub fields: FieldSet,
}

/// Reads `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("Update")
                .to_string(),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: e
                .get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

/// Writes `metadata.managedFields` (entries without fields are dropped).
pub fn set_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version, "time": e.time,
                               "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)});
            if !e.subresource.is_empty() {
                v["subresource"] = e.subresource.clone().into();
            }
            v
        })
        .collect();
    let meta = crate::meta::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Who writes, and how: the entry a write updates.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager.
    pub manager: &'a str,
    /// apiVersion of the object.
    pub api_version: &'a str,
    /// Subresource ("" for the main resource).
    pub subresource: &'a str,
    /// Now, RFC 3339.
    pub time: &'a str,
}

/// Records an `Update`: the fields that changed from `old` to `new` move to the writer's entry.
pub fn record_update(
    graph: &TypeGraph,
    root: &str,
    old: Option<&Value>,
    new: &mut Value,
    w: &Writer,
) {
    if old.is_none() {
        // A create: the writer owns every field; build its FieldsV1 in one walk.
        let mut trie = Map::new();
        graph.trie(&graph.root_ty(root), new, &mut trie, 0);
        let mut entry = json!({"manager": w.manager, "operation": "Update", "apiVersion": w.api_version, "time": w.time,
                               "fieldsType": "FieldsV1", "fieldsV1": Value::Object(trie)});
        if !w.subresource.is_empty() {
            entry["subresource"] = w.subresource.into();
        }
        let fields_empty = entry["fieldsV1"].as_object().is_none_or(Map::is_empty);
        let meta = crate::meta::meta_mut(new);
        if fields_empty {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), json!([entry]));
        }
        return;
    }
    let changed = graph.changed_fields(root, old, new, w.subresource);
    let mut list = old.map(entries).unwrap_or_default();
    // Fields that no longer exist are owned by no one.
    for e in &mut list {
        e.fields
            .retain(|p| value_at(new, p).is_some() && !changed.contains(p));
    }
    match list.iter_mut().find(|e| {
        e.manager == w.manager && e.operation == "Update" && e.subresource == w.subresource
    }) {
        Some(e) => {
            if !changed.is_empty() {
                e.time = w.time.to_string();
            }
            e.fields.extend(changed);
        }
        None => list.push(Entry {
            manager: w.manager.into(),
            operation: "Update".into(),
            api_version: w.api_version.into(),
            time: w.time.into(),
            subresource: w.subresource.into(),
            fields: changed,
        }),
    }
    set_entries(new, &list);
}

/// Recomputes the field set of `manager`'s Apply entry against `obj` as stored (after defaulting,
/// list elements are identified by all their keys, defaulted ones included).
pub fn settle_applied(
    graph: &TypeGraph,
    root: &str,
    obj: &mut Value,
    config: &Value,
    manager: &str,
    subresource: &str,
) {
    let fields = graph.fields_of(root, config, obj, subresource);
    let mut list = entries(obj);
    if let Some(e) = list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
    {
        e.fields = fields;
    }
    set_entries(obj, &list);
}

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owning manager.
    pub manager: String,
    /// The field, as Kubernetes prints it (`.spec.containers[name="web"].image`).
    pub field: String,
}

/// A field path as Kubernetes prints it in conflicts.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for step in path {
        if let Some(f) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = step.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(a, b)| format!("{a}={b}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = step.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// Applies `config` as `w.manager` to `live` (None: the object does not exist yet). Returns the new
/// object with its managedFields, or the conflicts (none when `force`, which takes the fields over).
pub fn apply(
    graph: &TypeGraph,
    root: &str,
    live: Option<&Value>,
    config: &Value,
    w: &Writer,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let base = live.unwrap_or(&empty);
    let mut merged = graph.merge_applied(root, base, config);
    let applied = graph.fields_of(root, config, &merged, w.subresource);
    let mut list = live.map(entries).unwrap_or_default();
    let previous: FieldSet = list
        .iter()
        .find(|e| {
            e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource
        })
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut conflicts = vec![];
    for e in list.iter_mut().filter(|e| {
        !(e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource)
    }) {
        let taken: Vec<FieldPath> = e
            .fields
            .iter()
            .filter(|p| applied.contains(*p) && differs(base, &merged, p))
            .cloned()
            .collect();
        if force {
            e.fields.retain(|p| !taken.contains(p));
        } else {
            conflicts.extend(taken.iter().map(|p| Conflict {
                manager: e.manager.clone(),
                field: display(p),
            }));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    // Fields this manager applied before and now leaves out go, unless someone else owns them.
    let others: FieldSet = list
        .iter()
        .filter(|e| {
            !(e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource)
        })
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut dropped: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !applied.contains(*p) && !others.contains(*p))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut merged, p);
    }
    list.retain(|e| {
        !(e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource)
    });
    list.push(Entry {
        manager: w.manager.into(),
        operation: "Apply".into(),
        api_version: w.api_version.into(),
        time: w.time.into(),
        subresource: w.subresource.into(),
        fields: applied,
    });
    set_entries(&mut merged, &list);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> TypeGraph {
        TypeGraph::of_registry(&crate::kinds::builtin())
    }
    const POD: &str = "io.k8s.api.core.v1.Pod";
    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            subresource: "",
            time: "2026-01-01T00:00:00Z",
        }
    }
    fn cfg(image: &str, extra_label: Option<&str>) -> Value {
        let mut c = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}});
        if let Some(l) = extra_label {
            c["metadata"]["labels"][l] = json!("yes");
        }
        c
    }

    #[test]
    fn fields_v1_round_trips_and_names_elements_by_key() {
        let g = graph();
        let c = cfg("nginx", None);
        let set = g.fields_of(POD, &c, &c, "");
        let v1 = to_fields_v1(&set);
        assert!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."].is_object(),
            "{v1}"
        );
        assert!(v1["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:image"].is_object());
        assert!(v1["f:metadata"]["f:labels"]["f:app"].is_object());
        assert!(
            v1["f:metadata"].get("f:name").is_none(),
            "identity fields are owned by no one"
        );
        assert_eq!(from_fields_v1(&v1), set);
        assert_eq!(
            display(&[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"web\"}".into(),
                "f:image".into()
            ]),
            ".spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn a_create_owns_what_the_path_walk_finds() {
        let g = graph();
        let mut pod = cfg("nginx", Some("x"));
        pod["metadata"]["finalizers"] = json!(["a", "b"]);
        pod["metadata"]["uid"] = json!("u");
        pod["spec"]["containers"][0]["env"] = json!([{"name": "E", "value": "1"}]);
        pod["spec"]["volumes"] = json!([]);
        pod["status"] = json!({"phase": "Pending"});
        let mut created = pod.clone();
        record_update(&g, POD, None, &mut created, &w("maker"));
        let fast = entries(&created).remove(0).fields;
        assert_eq!(fast, g.changed_fields(POD, None, &pod, ""));
        assert!(fast.contains(&vec![
            "f:metadata".to_string(),
            "f:finalizers".into(),
            "v:\"a\"".into()
        ]));
        assert!(
            !fast
                .iter()
                .any(|p| p.first().map(String::as_str) == Some("f:status"))
        );
    }

    #[test]
    fn apply_creates_updates_conflicts_and_removes() {
        let g = graph();
        let first = apply(
            &g,
            POD,
            None,
            &cfg("nginx:1", Some("extra")),
            &w("alice"),
            false,
        )
        .unwrap();
        assert_eq!(entries(&first)[0].manager, "alice");
        // Another manager changes the image with an update: it now owns that field.
        let mut updated = first.clone();
        updated["spec"]["containers"][0]["image"] = json!("nginx:2");
        record_update(&g, POD, Some(&first), &mut updated, &w("bob"));
        let owners = entries(&updated);
        assert!(owners.iter().any(|e| {
            e.manager == "bob"
                && e.fields
                    .iter()
                    .any(|p| p.last().map(String::as_str) == Some("f:image"))
        }));
        // alice applying her old image conflicts with bob ...
        let err = apply(
            &g,
            POD,
            Some(&updated),
            &cfg("nginx:1", Some("extra")),
            &w("alice"),
            false,
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "bob".into(),
                field: ".spec.containers[name=\"web\"].image".into()
            }]
        );
        // ... unless she forces it; and the label she no longer applies is removed.
        let forced = apply(
            &g,
            POD,
            Some(&updated),
            &cfg("nginx:1", None),
            &w("alice"),
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["containers"][0]["image"], "nginx:1");
        assert!(forced["metadata"]["labels"].get("extra").is_none());
        assert!(
            entries(&forced).iter().all(|e| e.manager != "bob"),
            "bob owns nothing any more"
        );
        // Applying the same config again changes nothing and conflicts with no one.
        let again = apply(
            &g,
            POD,
            Some(&forced),
            &cfg("nginx:1", None),
            &w("alice"),
            false,
        )
        .unwrap();
        assert_eq!(again["spec"], forced["spec"]);
    }
}
