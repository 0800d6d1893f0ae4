//! [`Obj`]: a stored object as the read paths hold it: its JSON (with `resourceVersion`) and the few
//! facts selectors need, so lists and watches filter without parsing JSON again.

use std::collections::BTreeMap;
use std::sync::Arc;

use atoll_api::registry::field_string;
use atoll_api::selector::{FieldSelector, LabelSelector};
use atoll_api::{ApiError, KindInfo, meta};
use bytes::Bytes;
use serde_json::Value;

use crate::extract::Paths;

/// An object read from storage.
#[derive(Debug, Clone)]
pub struct Obj {
    /// Namespace ("" for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `mod_revision`, the resourceVersion.
    pub revision: i64,
    /// The object's JSON, `metadata.resourceVersion` included.
    pub json: Bytes,
    /// Labels, for label selectors.
    pub labels: BTreeMap<String, String>,
    /// Values of the kind's selectable fields, in `KindInfo::fields` order.
    pub fields: Vec<String>,
}

/// Turns stored bytes of one kind into [`Obj`]s: reads only the name, labels and selectable fields,
/// and splices the resourceVersion into the JSON instead of re-encoding it.
pub struct ObjReader {
    kind: Arc<KindInfo>,
    paths: Paths,
}

/// Paths read before the kind's fields.
const NAME: usize = 0;
const NAMESPACE: usize = 1;
const LABELS: usize = 2;
const RESOURCE_VERSION: usize = 3;
const FIRST_FIELD: usize = 4;

impl ObjReader {
    /// A reader for `kind`.
    pub fn new(kind: Arc<KindInfo>) -> Self {
        let fixed = [
            "metadata.name",
            "metadata.namespace",
            "metadata.labels",
            "metadata.resourceVersion",
        ];
        let paths = Paths::new(
            fixed
                .into_iter()
                .chain(kind.fields.iter().map(|(f, _)| f.as_str())),
        );
        ObjReader { kind, paths }
    }

    /// Builds an `Obj` from stored bytes (JSON without resourceVersion) and the revision that wrote them.
    pub fn read(&self, stored: &[u8], revision: i64) -> Result<Obj, String> {
        let values = self
            .paths
            .read(stored)
            .map_err(|e| format!("stored object is not JSON: {e}"))?;
        let json = match splice_resource_version(stored, revision) {
            Some(json) if values[RESOURCE_VERSION].is_none() => json,
            // Not in the shape this server writes: take the slow, certain way.
            _ => {
                let mut value: Value = serde_json::from_slice(stored)
                    .map_err(|e| format!("stored object is not JSON: {e}"))?;
                meta::set(
                    &mut value,
                    "resourceVersion",
                    Some(Value::String(revision.to_string())),
                );
                return Ok(Obj::from_value(&self.kind, &value, revision));
            }
        };
        let text = |i: usize| {
            values[i]
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let fields = self
            .kind
            .fields
            .iter()
            .enumerate()
            .map(|(i, (_, default))| field_string(values[FIRST_FIELD + i].as_ref(), default))
            .collect();
        Ok(Obj {
            namespace: text(NAMESPACE),
            name: text(NAME),
            revision,
            json: Bytes::from(json),
            labels: meta::string_map(values[LABELS].as_ref()),
            fields,
        })
    }
}

/// Inserts `"resourceVersion":"<rev>"` into the top-level `metadata` of JSON written by this server
/// (compact, keys in order: `apiVersion`, `kind`, `metadata`, …). None when the bytes are not in that shape.
pub fn splice_resource_version(stored: &[u8], revision: i64) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"metadata\":{";
    let at = stored.windows(KEY.len()).position(|w| w == KEY)?;
    // Only strings come before the top-level metadata, so no other object may open before it.
    if stored.first() != Some(&b'{') || stored[1..at].contains(&b'{') {
        return None;
    }
    let insert = at + KEY.len();
    let field = format!("\"resourceVersion\":\"{revision}\"");
    let mut out = Vec::with_capacity(stored.len() + field.len() + 1);
    out.extend_from_slice(&stored[..insert]);
    out.extend_from_slice(field.as_bytes());
    if stored.get(insert) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&stored[insert..]);
    Some(out)
}

impl Obj {
    /// Builds an `Obj` from an object whose resourceVersion is already `revision`.
    pub fn from_value(kind: &KindInfo, value: &Value, revision: i64) -> Obj {
        let fields = kind
            .fields
            .iter()
            .map(|(f, _)| kind.field_value(value, f).unwrap_or_default())
            .collect();
        Obj {
            namespace: meta::namespace(value).to_string(),
            name: meta::name(value).to_string(),
            revision,
            json: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            labels: meta::labels(value),
            fields,
        }
    }

    /// The same object with another resourceVersion (a deletion reports the last state at the delete's revision).
    pub fn at_revision(&self, kind: &KindInfo, revision: i64) -> Obj {
        match self.value() {
            Ok(mut v) => {
                meta::set(
                    &mut v,
                    "resourceVersion",
                    Some(Value::String(revision.to_string())),
                );
                Obj::from_value(kind, &v, revision)
            }
            Err(_) => Obj {
                revision,
                ..self.clone()
            },
        }
    }

    /// The object parsed.
    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.json)
            .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))
    }

    /// The value of a selectable field ("" when the kind has no such field).
    pub fn field(&self, kind: &KindInfo, field: &str) -> String {
        match field {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            f => kind
                .fields
                .iter()
                .position(|(name, _)| name == f)
                .and_then(|i| self.fields.get(i).cloned())
                .unwrap_or_default(),
        }
    }
}

/// What a list or watch selects: a namespace and label and field selectors.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only objects in this namespace (None: all).
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filter {
    /// Checks that every field in the selector is supported by `kind` (400 otherwise).
    pub fn check(&self, kind: &KindInfo) -> Result<(), ApiError> {
        for r in &self.fields.requirements {
            let known = r.field == "metadata.name"
                || r.field == "metadata.namespace"
                || kind.fields.iter().any(|(f, _)| *f == r.field);
            if !known {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {} (supported for {}: metadata.name, metadata.namespace{})",
                    r.field,
                    kind.plural,
                    kind.fields
                        .iter()
                        .map(|(f, _)| format!(", {f}"))
                        .collect::<String>()
                )));
            }
        }
        Ok(())
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, kind: &KindInfo, obj: &Obj) -> bool {
        if let Some(ns) = &self.namespace
            && *ns != obj.namespace
        {
            return false;
        }
        self.labels.matches(&obj.labels) && self.fields.matches(|f| obj.field(kind, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_like_a_full_parse() {
        let reg = atoll_api::kinds::builtin();
        let pods = reg.get("", "v1", "pods").unwrap().clone();
        let reader = ObjReader::new(pods.clone());
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d", "labels": {"a": "b"}},
                         "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Running"}});
        let stored = serde_json::to_vec(&pod).unwrap();
        let fast = reader.read(&stored, 42).unwrap();
        let mut with_rv = pod.clone();
        with_rv["metadata"]["resourceVersion"] = json!("42");
        let slow = Obj::from_value(&pods, &with_rv, 42);
        assert_eq!(fast.value().unwrap(), with_rv);
        assert_eq!((fast.name.as_str(), fast.namespace.as_str()), ("p", "d"));
        assert_eq!(fast.labels, slow.labels);
        assert_eq!(fast.fields, slow.fields);
        // Objects not in this server's shape take the full parse; a stored resourceVersion is replaced.
        let odd = br#"{"metadata":{"resourceVersion":"1","name":"x"},"kind":"Pod"}"#;
        assert_eq!(
            reader.read(odd, 7).unwrap().value().unwrap()["metadata"]["resourceVersion"],
            "7"
        );
        let empty_meta = br#"{"apiVersion":"v1","kind":"Pod","metadata":{}}"#;
        assert_eq!(
            reader.read(empty_meta, 3).unwrap().value().unwrap()["metadata"],
            json!({"resourceVersion": "3"})
        );
        assert!(reader.read(b"{oops", 1).is_err());
    }
}
