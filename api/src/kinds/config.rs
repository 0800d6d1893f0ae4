//! Configuration kinds: `v1 ConfigMap`, `v1 Secret` and `v1 ServiceAccount`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use serde_json::Value;

use super::Typed;
use super::pod::{default_str, s};
use crate::error::Cause;
use crate::table::Column;

const CONFIG_MAP_COLS: &[Column] = &[
    Column::int("Data", "The number of keys in data and binaryData."),
    Column::AGE,
];

const SECRET_COLS: &[Column] = &[
    Column::text(
        "Type",
        "Used to facilitate programmatic handling of secret data.",
    ),
    Column::int("Data", "The number of keys in data."),
    Column::AGE,
];

const SERVICE_ACCOUNT_COLS: &[Column] = &[
    Column::int(
        "Secrets",
        "The number of secrets listed for this service account.",
    ),
    Column::AGE,
];

/// Total size limit of the data of one ConfigMap or Secret.
const MAX_DATA_BYTES: usize = 1024 * 1024;
const IMMUTABLE: &str = "field is immutable when `immutable` is set";

fn age(obj: &Value, now: jiff::Timestamp) -> Value {
    crate::table::age(crate::table::created(obj), now).into()
}

/// What is wrong with a ConfigMap or Secret key (empty when it is valid): `[-._a-zA-Z0-9]+`, at most
/// 253 characters, not `.` or `..` nor starting with `..`.
pub(super) fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = vec![];
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string());
    }
    match key {
        "." => errs.push("must not be '.'".into()),
        ".." => errs.push("must not be '..'".into()),
        k if k.starts_with("..") => errs.push("must not start with '..'".into()),
        _ => {}
    }
    errs
}

fn too_long(field: &str) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        message: format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
        field: field.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// ConfigMap.

/// The hooks of `v1 ConfigMap`.
pub fn config_map() -> Typed<ConfigMap> {
    Typed {
        columns: CONFIG_MAP_COLS,
        row: config_map_row,
        validate: validate_config_map,
        validate_update: validate_config_map_update,
        ..Typed::default()
    }
}

fn validate_config_map(cm: &ConfigMap, out: &mut Vec<Cause>) {
    let data = cm.data.as_ref();
    let binary = cm.binary_data.as_ref();
    let mut total = 0;
    for (k, v) in data.into_iter().flatten() {
        for msg in config_key_errors(k) {
            out.push(Cause::invalid(format!("data[{k}]"), k, msg));
        }
        if binary.is_some_and(|b| b.contains_key(k)) {
            out.push(Cause::invalid(
                format!("data[{k}]"),
                k,
                "duplicate of key present in binaryData",
            ));
        }
        total += v.len();
    }
    for (k, v) in binary.into_iter().flatten() {
        for msg in config_key_errors(k) {
            out.push(Cause::invalid(format!("binaryData[{k}]"), k, msg));
        }
        if data.is_some_and(|d| d.contains_key(k)) {
            out.push(Cause::invalid(
                format!("binaryData[{k}]"),
                k,
                "duplicate of key present in data",
            ));
        }
        total += v.0.len();
    }
    if total > MAX_DATA_BYTES {
        out.push(too_long("[]"));
    }
}

fn validate_config_map_update(new: &ConfigMap, old: &ConfigMap, out: &mut Vec<Cause>) {
    if old.immutable != Some(true) {
        return;
    }
    if new.immutable != Some(true) {
        out.push(Cause::forbidden("immutable", IMMUTABLE));
    }
    if new.data.clone().unwrap_or_default() != old.data.clone().unwrap_or_default() {
        out.push(Cause::forbidden("data", IMMUTABLE));
    }
    if new.binary_data.clone().unwrap_or_default() != old.binary_data.clone().unwrap_or_default() {
        out.push(Cause::forbidden("binaryData", IMMUTABLE));
    }
}

fn config_map_row(cm: &ConfigMap, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let n = cm.data.as_ref().map_or(0, BTreeMap::len)
        + cm.binary_data.as_ref().map_or(0, BTreeMap::len);
    vec![n.into(), age(obj, now)]
}

// ---------------------------------------------------------------------------------------------
// Secret.

/// The hooks of `v1 Secret`.
pub fn secret() -> Typed<Secret> {
    Typed {
        columns: SECRET_COLS,
        row: secret_row,
        default: default_secret,
        validate: validate_secret,
        validate_update: validate_secret_update,
        ..Typed::default()
    }
}

/// `type` defaults to `Opaque`; `stringData` is merged into `data` (overriding it) and dropped.
fn default_secret(secret: &mut Secret) {
    default_str(&mut secret.type_, "Opaque");
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}

fn validate_secret(secret: &Secret, out: &mut Vec<Cause>) {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let mut total = 0;
    for (k, v) in data {
        for msg in config_key_errors(k) {
            out.push(Cause::invalid(format!("data[{k}]"), k, msg));
        }
        total += v.0.len();
    }
    if total > MAX_DATA_BYTES {
        out.push(too_long("data"));
    }
    let required =
        |key: &str, out: &mut Vec<Cause>| out.push(Cause::required(format!("data[{key}]")));
    match s(&secret.type_) {
        "kubernetes.io/service-account-token" => {
            let annotations = secret.metadata.annotations.as_ref();
            if annotations
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_none_or(String::is_empty)
            {
                out.push(Cause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        ty @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if ty == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match data.get(key) {
                None => required(key, out),
                Some(v) => {
                    if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&v.0) {
                        out.push(Cause::invalid(
                            format!("data[{key}]"),
                            "<secret contents redacted>",
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            required("username", out);
            required("password", out);
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            required("ssh-privatekey", out);
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !data.contains_key(key) {
                    required(key, out);
                }
            }
        }
        _ => {}
    }
}

/// `type` may not change; an immutable Secret keeps its data.
fn validate_secret_update(new: &Secret, old: &Secret, out: &mut Vec<Cause>) {
    if s(&new.type_) != s(&old.type_) {
        out.push(Cause::invalid("type", s(&new.type_), "field is immutable"));
    }
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            out.push(Cause::forbidden("immutable", IMMUTABLE));
        }
        if new.data.clone().unwrap_or_default() != old.data.clone().unwrap_or_default() {
            out.push(Cause::forbidden("data", IMMUTABLE));
        }
    }
}

fn secret_row(secret: &Secret, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        s(&secret.type_).into(),
        secret.data.as_ref().map_or(0, BTreeMap::len).into(),
        age(obj, now),
    ]
}

// ---------------------------------------------------------------------------------------------
// ServiceAccount.

/// The hooks of `v1 ServiceAccount`.
pub fn service_account() -> Typed<ServiceAccount> {
    Typed {
        columns: SERVICE_ACCOUNT_COLS,
        row: service_account_row,
        ..Typed::default()
    }
}

fn service_account_row(sa: &ServiceAccount, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        sa.secrets.as_ref().map_or(0, Vec::len).into(),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<K: serde::de::DeserializeOwned>(v: Value) -> K {
        serde_json::from_value(v).expect("a valid object")
    }

    fn now() -> jiff::Timestamp {
        "2024-01-01T01:00:00Z".parse().expect("time")
    }

    #[test]
    fn keys() {
        assert!(config_key_errors("app.properties").is_empty());
        assert!(config_key_errors("KEY_1-x").is_empty());
        assert_eq!(config_key_errors("."), ["must not be '.'"]);
        assert_eq!(config_key_errors("..x"), ["must not start with '..'"]);
        assert_eq!(config_key_errors("a/b").len(), 1);
        assert_eq!(
            config_key_errors(&"a".repeat(254)),
            ["must be no more than 253 characters"]
        );
    }

    #[test]
    fn config_maps() {
        let cm: ConfigMap =
            from(json!({"data": {"a": "1", "b/c": "2", "..": "x"}, "binaryData": {"a": "AA=="}}));
        let mut out = vec![];
        validate_config_map(&cm, &mut out);
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["data[..]", "data[a]", "data[b/c]", "binaryData[a]"]
        );
        let big: ConfigMap = from(json!({"data": {"a": "x".repeat(MAX_DATA_BYTES + 1)}}));
        let mut out = vec![];
        validate_config_map(&big, &mut out);
        assert_eq!(out[0].field, "[]");
        let old: ConfigMap = from(json!({"data": {"a": "1"}, "immutable": true}));
        let new: ConfigMap = from(json!({"data": {"a": "2"}, "immutable": true}));
        let mut out = vec![];
        validate_config_map_update(&new, &old, &mut out);
        assert_eq!(out[0].field, "data");
        let cm: ConfigMap = from(
            json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}}),
        );
        let obj = serde_json::to_value(&cm).expect("json");
        assert_eq!(
            config_map_row(&cm, &obj, now()),
            vec![json!(2), json!("60m")]
        );
    }

    #[test]
    fn secrets() {
        let hooks = secret();
        let mut sec: Secret =
            from(json!({"data": {"a": "eA=="}, "stringData": {"a": "y", "b": "z"}}));
        (hooks.default)(&mut sec);
        let v = serde_json::to_value(&sec).expect("json");
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["data"], json!({"a": "eQ==", "b": "eg=="}));
        assert!(v.get("stringData").is_none());
        assert_eq!(
            secret_row(&sec, &v, now()),
            vec![json!("Opaque"), json!(2), json!("<unknown>")]
        );
        let tls: Secret = from(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}));
        let mut out = vec![];
        validate_secret(&tls, &mut out);
        assert_eq!(out[0].field, "data[tls.key]");
        let mut out = vec![];
        validate_secret_update(&tls, &sec, &mut out);
        assert_eq!(
            out[0].message,
            "Invalid value: \"kubernetes.io/tls\": field is immutable"
        );
    }

    #[test]
    fn service_accounts() {
        let sa: ServiceAccount = from(json!({"secrets": [{"name": "a"}]}));
        assert_eq!(
            service_account_row(&sa, &json!({}), now()),
            vec![json!(1), json!("<unknown>")]
        );
    }
}
