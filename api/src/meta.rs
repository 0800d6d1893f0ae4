//! Accessors for the `metadata` of objects held as JSON, used by the generic REST code.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, "" when absent.
pub fn str_field<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    str_field(obj, "name")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    str_field(obj, "namespace")
}

/// `metadata.resourceVersion`.
pub fn resource_version(obj: &Value) -> &str {
    str_field(obj, "resourceVersion")
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    str_field(obj, "uid")
}

/// The `metadata` object, created when missing (and replaced when it is not an object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(map) = obj else {
        unreachable!("made an object above")
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// Sets `metadata.<field>`, or removes it when `value` is `None`.
pub fn set(obj: &mut Value, field: &str, value: Option<Value>) {
    let m = meta_mut(obj);
    match value {
        Some(v) => {
            m.insert(field.to_string(), v);
        }
        None => {
            m.remove(field);
        }
    }
}

/// `metadata.labels` as a map (empty when absent).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj.pointer("/metadata/labels"))
}

/// A JSON object of strings as a map; non-string values are skipped.
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, `Z`).
pub fn timestamp(now: jiff::Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_metadata() {
        let mut o = json!({"kind": "Pod"});
        assert_eq!(name(&o), "");
        set(&mut o, "name", Some("web".into()));
        set(&mut o, "labels", Some(json!({"app": "x", "n": 1})));
        assert_eq!(name(&o), "web");
        assert_eq!(labels(&o).len(), 1);
        set(&mut o, "name", None);
        assert_eq!(name(&o), "");
        assert!(!is_deleting(&o));
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t: jiff::Timestamp = "2024-05-01T10:11:12.5Z".parse().unwrap();
        assert_eq!(timestamp(t), "2024-05-01T10:11:12Z");
    }
}
