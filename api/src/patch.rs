//! Patches: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) applied to JSON objects.
//! Strategic merge and server-side apply are not served yet; [`PatchType::parse`] says so.

use serde_json::Value;

/// The patch formats of `PATCH` requests, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
}

impl PatchType {
    /// The patch type of a Content-Type (parameters ignored), or a message for a 415.
    pub fn parse(content_type: &str) -> Result<Self, String> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
                Err(format!(
                    "the media type {media:?} is not served yet: use application/merge-patch+json or application/json-patch+json (kubectl patch --type merge|json)"
                ))
            }
            other => Err(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (got {other:?})"
            )),
        }
    }
}

/// Applies `patch` (already parsed JSON) to `target`. Errors say what in the patch is wrong.
pub fn apply(kind: PatchType, target: &Value, patch: &Value) -> Result<Value, String> {
    let mut out = target.clone();
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err("a merge patch must be a JSON object".into());
            }
            json_patch::merge(&mut out, patch);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(&mut out, &ops)
                .map_err(|e| format!("the JSON patch could not be applied: {e}"))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        let p = json!({"metadata": {"labels": {"a": null, "c": "3"}}});
        let out = apply(PatchType::Merge, &t, &p).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert!(apply(PatchType::Merge, &t, &json!([1])).is_err());
    }

    #[test]
    fn json_patch_ops_and_failures() {
        let t = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        let p = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}, {"op": "add", "path": "/spec/list/-", "value": 9}]);
        let out = apply(PatchType::Json, &t, &p).unwrap();
        assert_eq!(out["spec"], json!({"replicas": 3, "list": [1, 2, 9]}));
        let bad = json!([{"op": "test", "path": "/spec/replicas", "value": 7}]);
        assert!(apply(PatchType::Json, &t, &bad).is_err());
        assert!(apply(PatchType::Json, &t, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::parse("application/merge-patch+json; charset=utf-8"),
            Ok(PatchType::Merge)
        );
        assert!(PatchType::parse("application/strategic-merge-patch+json").is_err());
        assert!(PatchType::parse("text/plain").is_err());
    }
}
