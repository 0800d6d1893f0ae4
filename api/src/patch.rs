//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch
//! ([`crate::strategic`]) applied to JSON objects. Server-side apply is not served yet;
//! [`PatchType::parse`] says so.

use serde_json::Value;

use crate::strategic::TypeGraph;

/// The patch formats of `PATCH` requests, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
}

impl PatchType {
    /// The patch type of a Content-Type (parameters ignored), or a message for a 415.
    pub fn parse(content_type: &str) -> Result<Self, String> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Err(format!(
                "server-side apply ({media:?}) is served on the main resource only, not on subresources"
            )),
            other => Err(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            )),
        }
    }
}

/// Applies `patch` (already parsed JSON) to `target`, whose schema is `root` in `types` (used by
/// strategic merge patches). Errors say what in the patch is wrong.
pub fn apply(
    kind: PatchType,
    target: &Value,
    patch: &Value,
    types: &TypeGraph,
    root: &str,
) -> Result<Value, String> {
    let mut out = target.clone();
    match kind {
        PatchType::Strategic => return types.apply(root, target, patch),
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
        let out = apply(PatchType::Merge, &t, &p, &TypeGraph::default(), "").unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert!(apply(PatchType::Merge, &t, &json!([1]), &TypeGraph::default(), "").is_err());
    }

    #[test]
    fn json_patch_ops_and_failures() {
        let t = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        let p = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}, {"op": "add", "path": "/spec/list/-", "value": 9}]);
        let out = apply(PatchType::Json, &t, &p, &TypeGraph::default(), "").unwrap();
        assert_eq!(out["spec"], json!({"replicas": 3, "list": [1, 2, 9]}));
        let bad = json!([{"op": "test", "path": "/spec/replicas", "value": 7}]);
        assert!(apply(PatchType::Json, &t, &bad, &TypeGraph::default(), "").is_err());
        assert!(
            apply(
                PatchType::Json,
                &t,
                &json!({"op": "add"}),
                &TypeGraph::default(),
                ""
            )
            .is_err()
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::parse("application/merge-patch+json; charset=utf-8"),
            Ok(PatchType::Merge)
        );
        assert_eq!(
            PatchType::parse("application/strategic-merge-patch+json"),
            Ok(PatchType::Strategic)
        );
        assert!(PatchType::parse("application/apply-patch+yaml").is_err());
        assert!(PatchType::parse("text/plain").is_err());
    }
}
