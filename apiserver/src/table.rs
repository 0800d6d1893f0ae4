//! Building `meta.k8s.io` Tables and PartialObjectMetadata from objects, with each kind's columns.

use atoll_api::KindInfo;
use atoll_api::table::Column;
use serde_json::{Value, json};

/// The `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A Table of `objs`. `include_object`: `None`, `Metadata` (default) or `Object`. `with_columns` adds
/// the column definitions (watch events after the first leave them out, as Kubernetes does).
pub fn build(
    kind: &KindInfo,
    objs: &[Value],
    api_version: &str,
    include_object: Option<&str>,
    now: jiff::Timestamp,
    with_columns: bool,
) -> Value {
    let columns: Vec<Value> = if with_columns {
        std::iter::once(&Column::NAME)
            .chain(kind.strategy.columns())
            .map(Column::definition)
            .collect()
    } else {
        vec![]
    };
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": kind.strategy.row(o, now)});
            match include_object {
                Some("None") => {}
                Some("Object") => row["object"] = o.clone(),
                _ => row["object"] = partial_metadata(o),
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": api_version, "metadata": {}, "columnDefinitions": columns, "rows": rows})
}
