//! `ApiError`: every failure the API can report, convertible to a Kubernetes `Status`.

use serde_json::{Value, json};

/// One reason a field is invalid, reported in `Status.details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: &'static str,
    /// Human-readable description of what is wrong.
    pub message: String,
    /// JSON path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }
    /// A field has an invalid value; `value` is shown in the message as Kubernetes does.
    pub fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        why: impl Into<String>,
    ) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: {}: {}",
                quote(&value.to_string()),
                why.into()
            ),
            field: field.into(),
        }
    }
    /// A field may not be changed after creation.
    pub fn immutable(field: impl Into<String>, what: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {what}: field is immutable"),
            field: field.into(),
        }
    }
    /// A value is not among the supported ones.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                quote(value),
                list.join(", ")
            ),
            field: field.into(),
        }
    }
    /// A value is a duplicate of another entry.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {}", quote(value)),
            field: field.into(),
        }
    }
    /// A field is not allowed here.
    pub fn forbidden(field: impl Into<String>, why: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {}", why.into()),
            field: field.into(),
        }
    }
    /// The value is already in use by another object.
    pub fn already_allocated(field: impl Into<String>, value: &str, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {why}", quote(value)),
            field: field.into(),
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// What kind of object a failure is about: filled into `Status.details`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// API group ("" for core).
    pub group: String,
    /// Resource (plural) or kind name as Kubernetes reports it.
    pub kind: String,
    /// Object name, if known.
    pub name: String,
}

/// A failed API call: HTTP code, Kubernetes reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Kubernetes `StatusReason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Message for people.
    pub message: String,
    /// Object the failure is about.
    pub subject: Option<Subject>,
    /// Field causes (for `Invalid`).
    pub causes: Vec<Cause>,
    /// Seconds a client should wait before retrying, for 429/504.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            subject: None,
            causes: vec![],
            retry_after: None,
        }
    }
    fn about(mut self, group: &str, resource: &str, name: &str) -> Self {
        self.subject = Some(Subject {
            group: group.into(),
            kind: resource.into(),
            name: name.into(),
        });
        self
    }
    /// `<resource>.<group> "<name>"` as Kubernetes prints it.
    fn qualified(group: &str, resource: &str) -> String {
        if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        }
    }
    /// 404: the object does not exist.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", Self::qualified(group, resource)),
        )
        .about(group, resource, name)
    }
    /// 409: create of an object that exists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{name}\" already exists",
                Self::qualified(group, resource)
            ),
        )
        .about(group, resource, name)
    }
    /// 409: a precondition (resourceVersion, uid) did not hold.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                Self::qualified(group, resource)
            ),
        )
        .about(group, resource, name)
    }
    /// 422: the object failed validation; `kind` is the Kind (e.g. `Pod`).
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let detail = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {detail}"),
        )
        .about(group, kind, name);
        e.causes = causes;
        e
    }
    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 405: the verb is not supported on this resource.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    /// 406: no acceptable representation.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }
    /// 415: the body's media type is not supported.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }
    /// 410: the requested resourceVersion is no longer available.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    /// 413: the body is too large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }
    /// 403: the request is not allowed.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = format!(
            "{} \"{name}\" is forbidden: {why}",
            Self::qualified(group, resource)
        );
        Self::new(403, "Forbidden", msg).about(group, resource, name)
    }
    /// 500: something failed inside the server.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    /// 503 / 504: storage is not answering.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }
    /// 504: the server gave up waiting.
    pub fn timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(504, "Timeout", message);
        e.retry_after = Some(1);
        e
    }

    /// The `meta/v1 Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if let Some(s) = &self.subject {
            if !s.name.is_empty() {
                details.insert("name".into(), s.name.clone().into());
            }
            if !s.group.is_empty() {
                details.insert("group".into(), s.group.clone().into());
            }
            details.insert("kind".into(), s.kind.clone().into());
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), causes.into());
        }
        if let Some(r) = self.retry_after {
            details.insert("retryAfterSeconds".into(), r.into());
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// Result type of API operations.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_matches_kubernetes() {
        let s = ApiError::not_found("", "pods", "web").to_status();
        assert_eq!(s["message"], "pods \"web\" not found");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "pods");
        let s = ApiError::not_found("apps", "deployments", "d").to_status();
        assert_eq!(s["message"], "deployments.apps \"d\" not found");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_every_cause() {
        let e = ApiError::invalid(
            "",
            "Pod",
            "x",
            vec![
                Cause::required("spec.containers"),
                Cause::invalid("metadata.name", "A_b", "must be lowercase"),
            ],
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"].as_array().map(Vec::len), Some(2));
        assert!(
            e.message.contains("spec.containers: Required value"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("metadata.name: Invalid value: \"A_b\""),
            "{}",
            e.message
        );
    }
}
