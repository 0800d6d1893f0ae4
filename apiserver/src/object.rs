//! [`Obj`]: a stored object as the read paths hold it: its JSON (with `resourceVersion`) and the few
//! facts selectors need, so lists and watches filter without parsing JSON again.

use std::collections::BTreeMap;

use atoll_api::selector::{FieldSelector, LabelSelector};
use atoll_api::{ApiError, KindInfo, meta};
use bytes::Bytes;
use serde_json::Value;

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

impl Obj {
    /// Builds an `Obj` from stored bytes (JSON without resourceVersion) and the revision that wrote them.
    pub fn from_stored(kind: &KindInfo, stored: &[u8], revision: i64) -> Result<Obj, String> {
        let mut value: Value = serde_json::from_slice(stored)
            .map_err(|e| format!("stored object is not JSON: {e}"))?;
        meta::set(
            &mut value,
            "resourceVersion",
            Some(Value::String(revision.to_string())),
        );
        Ok(Self::from_value(kind, &value, revision))
    }

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

    fn field(&self, kind: &KindInfo, field: &str) -> String {
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
