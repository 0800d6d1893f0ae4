//! `apps/v1` workloads: `Deployment` and `ReplicaSet`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
    ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::Typed;
use super::pod::{container_cells, non_negative, quote, s};
use super::workload::{default_template, template_labels, validate_template};
use crate::error::Cause;
use crate::selector::LabelSelector;
use crate::table::Column;
use crate::validation;

const DEPLOYMENT_COLS: &[Column] = &[
    Column::text(
        "Ready",
        "Number of the pods ready out of the desired number of replicas.",
    ),
    Column::int(
        "Up-to-date",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    Column::int(
        "Available",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    Column::AGE,
    Column::wide("Containers", "Names of each container in the template."),
    Column::wide(
        "Images",
        "Images referenced by each container in the template.",
    ),
    Column::wide(
        "Selector",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
    ),
];

const REPLICA_SET_COLS: &[Column] = &[
    Column::int("Desired", "Number of desired pods."),
    Column::int(
        "Current",
        "Number of the most recently observed actual pods.",
    ),
    Column::int("Ready", "Number of pods that are ready."),
    Column::AGE,
    Column::wide("Containers", "Names of each container in the template."),
    Column::wide(
        "Images",
        "Images referenced by each container in the template.",
    ),
    Column::wide(
        "Selector",
        "Label query over pods that should match the replica count.",
    ),
];

fn age(obj: &Value, now: jiff::Timestamp) -> Value {
    crate::table::age(crate::table::created(obj), now).into()
}

// ---------------------------------------------------------------------------------------------
// Selectors.

/// A label selector the way Go's `%#v` prints it, as Kubernetes shows it in messages.
fn go_selector(sel: &ApiSelector) -> String {
    let labels = match &sel.match_labels {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    };
    let expressions = match &sel.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(exprs) => {
            let parts: Vec<String> = exprs
                .iter()
                .map(|e| {
                    let values = match &e.values {
                        None => "[]string(nil)".to_string(),
                        Some(v) => format!(
                            "[]string{{{}}}",
                            v.iter().map(|x| quote(x)).collect::<Vec<_>>().join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        quote(&e.key),
                        quote(&e.operator)
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", parts.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{expressions}}}")
}

/// A selector as Kubernetes prints it (`app=web,tier in (a,b)`, sorted by key), or `None` when invalid.
fn selector_string(sel: &ApiSelector) -> Option<String> {
    LabelSelector::from_api(sel).ok()?;
    let mut parts: Vec<(&str, String)> = vec![];
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push((k, format!("{k}={v}")));
    }
    for e in sel.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let k = &e.key;
        let text = match e.operator.as_str() {
            "In" => format!("{k} in ({})", values.join(",")),
            "NotIn" => format!("{k} notin ({})", values.join(",")),
            "Exists" => k.clone(),
            _ => format!("!{k}"),
        };
        parts.push((k, text));
    }
    parts.sort_by(|a, b| a.0.cmp(b.0));
    Some(
        parts
            .into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Checks the syntax of a `metav1.LabelSelector` at `path`.
fn validate_label_selector(sel: &ApiSelector, path: &str, out: &mut Vec<Cause>) {
    if let Some(labels) = &sel.match_labels {
        validation::labels(labels, &format!("{path}.matchLabels"), out);
    }
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    out.push(Cause::required(format!("{p}.values")).with_message(
                        "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    out.push(Cause::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => out.push(Cause::invalid(
                format!("{p}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        if let Err(err) = validation::qualified_name(&e.key) {
            out.push(Cause::invalid(format!("{p}.key"), &e.key, err));
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(err) = validation::label_value(v) {
                out.push(Cause::invalid(format!("{p}.values[{j}]"), v, err));
            }
        }
    }
}

/// The `spec.selector` and `spec.template` rules Deployments and ReplicaSets share.
fn validate_selector_and_template(
    sel: &ApiSelector,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
    out: &mut Vec<Cause>,
) {
    let missing = sel.match_labels.is_none() && sel.match_expressions.is_none();
    if missing {
        out.push(Cause::required("spec.selector"));
    } else {
        validate_label_selector(sel, "spec.selector", out);
        if sel.match_labels.as_ref().map_or(0, BTreeMap::len)
            + sel.match_expressions.as_ref().map_or(0, Vec::len)
            == 0
        {
            out.push(Cause::invalid(
                "spec.selector",
                go_selector(sel),
                "empty selector is invalid for deployment",
            ));
        }
    }
    let parsed = match LabelSelector::from_api(sel) {
        Ok(p) => p,
        Err(_) => {
            out.push(Cause::invalid(
                "spec.selector",
                go_selector(sel),
                "invalid label selector",
            ));
            return;
        }
    };
    let Some(template) = template else {
        out.push(Cause::required("spec.template"));
        return;
    };
    let empty = BTreeMap::new();
    let matches = if missing {
        Some(false)
    } else if parsed.is_empty() {
        None
    } else {
        Some(parsed.matches(template_labels(template).unwrap_or(&empty)))
    };
    validate_template(template, matches, "ReplicaSet", out);
}

/// `spec.selector` may not change (apps/v1); absent and empty lists and maps count as equal.
fn validate_selector_update(new: &ApiSelector, old: &ApiSelector, out: &mut Vec<Cause>) {
    let norm = |s: &ApiSelector| {
        (
            s.match_labels.clone().unwrap_or_default(),
            s.match_expressions.clone().unwrap_or_default(),
        )
    };
    if norm(new) != norm(old) {
        out.push(Cause::immutable("spec.selector", &go_selector(new)));
    }
}

// ---------------------------------------------------------------------------------------------
// Deployment.

/// The hooks of `apps/v1 Deployment`.
pub fn deployment() -> Typed<Deployment> {
    Typed {
        columns: DEPLOYMENT_COLS,
        row: deployment_row,
        default: default_deployment,
        prepare_create: |d| d.status = Some(DeploymentStatus::default()),
        validate: validate_deployment,
        validate_update: |new, old, out| {
            validate_selector_update(&spec_of(new).selector, &spec_of(old).selector, out);
        },
        validate_status_update: validate_deployment_status,
        ..Typed::default()
    }
}

fn spec_of(d: &Deployment) -> std::borrow::Cow<'_, DeploymentSpec> {
    match &d.spec {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(DeploymentSpec::default()),
    }
}

/// `replicas` 1, strategy RollingUpdate with 25% surge and unavailability, 10 old ReplicaSets kept,
/// a progress deadline of 600 seconds, and the pod template defaults.
fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(DeploymentSpec::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    super::pod::default_str(&mut strategy.type_, "RollingUpdate");
    if s(&strategy.type_) == "RollingUpdate" {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".into()));
        ru.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".into()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    default_template(&mut spec.template);
}

/// The value of an int-or-percent (`3` or `25%`) and whether it is a percentage.
fn int_or_percent(v: &IntOrString) -> (i64, bool) {
    match v {
        IntOrString::Int(n) => (i64::from(*n), false),
        IntOrString::String(s) => match s.strip_suffix('%') {
            Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                (n.parse().unwrap_or(i64::MAX), true)
            }
            _ => (s.parse().unwrap_or(0), false),
        },
    }
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn validate_int_or_percent(v: &IntOrString, path: &str, out: &mut Vec<Cause>) {
    match v {
        IntOrString::Int(n) => non_negative((*n).into(), path, out),
        IntOrString::String(s) => {
            if !int_or_percent(v).1 {
                out.push(Cause::invalid(
                    path,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
            }
        }
    }
}

fn validate_strategy(strategy: &DeploymentStrategy, out: &mut Vec<Cause>) {
    match s(&strategy.type_) {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                out.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let Some(ru) = &strategy.rolling_update else {
                out.push(
                    Cause::required("spec.strategy.rollingUpdate")
                        .with_message("Required value: this should be defaulted and never be nil"),
                );
                return;
            };
            let path = "spec.strategy.rollingUpdate";
            if let Some(v) = &ru.max_unavailable {
                validate_int_or_percent(v, &format!("{path}.maxUnavailable"), out);
            }
            if let Some(v) = &ru.max_surge {
                validate_int_or_percent(v, &format!("{path}.maxSurge"), out);
            }
            if let (Some(u), Some(s)) = (&ru.max_unavailable, &ru.max_surge)
                && int_or_percent(u).0 == 0
                && int_or_percent(s).0 == 0
            {
                out.push(Cause::invalid(
                    format!("{path}.maxUnavailable"),
                    show(u),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if let Some(u) = &ru.max_unavailable
                && let (value, true) = int_or_percent(u)
                && value > 100
            {
                out.push(Cause::invalid(
                    format!("{path}.maxUnavailable"),
                    show(u),
                    "must not be greater than 100%",
                ));
            }
        }
        other => out.push(Cause::not_supported(
            "spec.strategy",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

fn validate_deployment(d: &Deployment, out: &mut Vec<Cause>) {
    let spec = spec_of(d);
    non_negative(spec.replicas.unwrap_or(0).into(), "spec.replicas", out);
    validate_selector_and_template(&spec.selector, Some(&spec.template), out);
    if let Some(strategy) = &spec.strategy {
        validate_strategy(strategy, out);
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    non_negative(min_ready.into(), "spec.minReadySeconds", out);
    if let Some(limit) = spec.revision_history_limit {
        non_negative(limit.into(), "spec.revisionHistoryLimit", out);
    }
    if let Some(deadline) = spec.progress_deadline_seconds {
        non_negative(deadline.into(), "spec.progressDeadlineSeconds", out);
        if deadline <= min_ready {
            out.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
}

fn validate_deployment_status(new: &Deployment, _old: &Deployment, out: &mut Vec<Cause>) {
    let Some(st) = &new.status else { return };
    for (field, v) in [
        ("replicas", st.replicas),
        ("updatedReplicas", st.updated_replicas),
        ("readyReplicas", st.ready_replicas),
        ("availableReplicas", st.available_replicas),
        ("unavailableReplicas", st.unavailable_replicas),
        ("collisionCount", st.collision_count),
    ] {
        non_negative(v.unwrap_or(0).into(), &format!("status.{field}"), out);
    }
    non_negative(
        st.observed_generation.unwrap_or(0),
        "status.observedGeneration",
        out,
    );
}

fn deployment_row(d: &Deployment, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let spec = spec_of(d);
    let status = d.status.clone().unwrap_or_default();
    let (containers, images) = container_cells(spec.template.spec.as_ref());
    let selector = selector_string(&spec.selector).unwrap_or_else(|| "<invalid>".into());
    vec![
        format!(
            "{}/{}",
            status.ready_replicas.unwrap_or(0),
            spec.replicas.unwrap_or(1)
        )
        .into(),
        status.updated_replicas.unwrap_or(0).into(),
        status.available_replicas.unwrap_or(0).into(),
        age(obj, now),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet.

/// The hooks of `apps/v1 ReplicaSet`.
pub fn replica_set() -> Typed<ReplicaSet> {
    Typed {
        columns: REPLICA_SET_COLS,
        row: replica_set_row,
        default: default_replica_set,
        prepare_create: |rs| rs.status = Some(ReplicaSetStatus::default()),
        validate: validate_replica_set,
        validate_update: |new, old, out| {
            validate_selector_update(&rs_spec_of(new).selector, &rs_spec_of(old).selector, out);
        },
        validate_status_update: validate_replica_set_status,
        ..Typed::default()
    }
}

fn rs_spec_of(rs: &ReplicaSet) -> std::borrow::Cow<'_, ReplicaSetSpec> {
    match &rs.spec {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(ReplicaSetSpec::default()),
    }
}

/// `replicas` defaults to 1, and the pod template gets its defaults.
fn default_replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(ReplicaSetSpec::default);
    spec.replicas.get_or_insert(1);
    if let Some(t) = &mut spec.template {
        default_template(t);
    }
}

fn validate_replica_set(rs: &ReplicaSet, out: &mut Vec<Cause>) {
    let spec = rs_spec_of(rs);
    non_negative(spec.replicas.unwrap_or(0).into(), "spec.replicas", out);
    non_negative(
        spec.min_ready_seconds.unwrap_or(0).into(),
        "spec.minReadySeconds",
        out,
    );
    validate_selector_and_template(&spec.selector, spec.template.as_ref(), out);
}

fn validate_replica_set_status(new: &ReplicaSet, _old: &ReplicaSet, out: &mut Vec<Cause>) {
    let Some(st) = &new.status else { return };
    super::workload::validate_replica_counts(
        st.replicas,
        [
            st.fully_labeled_replicas,
            st.ready_replicas,
            st.available_replicas,
        ],
        st.observed_generation,
        out,
    );
}

fn replica_set_row(rs: &ReplicaSet, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let spec = rs_spec_of(rs);
    let status = rs.status.clone().unwrap_or_default();
    let (containers, images) =
        container_cells(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
    let selector = match selector_string(&spec.selector) {
        None => "<error>".to_string(),
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
    };
    vec![
        spec.replicas.unwrap_or(1).into(),
        status.replicas.into(),
        status.ready_replicas.unwrap_or(0).into(),
        age(obj, now),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<K: serde::de::DeserializeOwned>(v: Value) -> K {
        serde_json::from_value(v).expect("a valid object")
    }

    fn web_deployment() -> Deployment {
        from(json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
        }))
    }

    fn fields(out: &[Cause]) -> Vec<&str> {
        out.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn deployment_defaults() {
        let hooks = deployment();
        let mut d = web_deployment();
        (hooks.default)(&mut d);
        (hooks.prepare_create)(&mut d);
        let v = serde_json::to_value(&d).expect("json");
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(
            v["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(v["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(v["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(v["status"], json!({}));
        let mut out = vec![];
        (hooks.validate)(&d, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn deployment_validation() {
        let mut d: Deployment = from(
            json!({"spec": {"replicas": -2, "selector": {"matchLabels": {"app": "x"}},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
            "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        );
        default_deployment(&mut d);
        let mut out = vec![];
        validate_deployment(&d, &mut out);
        assert_eq!(
            fields(&out),
            [
                "spec.replicas",
                "spec.template.metadata.labels",
                "spec.strategy.rollingUpdate.maxUnavailable"
            ]
        );
        let mut d: Deployment = from(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        );
        default_deployment(&mut d);
        let mut out = vec![];
        validate_deployment(&d, &mut out);
        assert_eq!(
            fields(&out),
            ["spec.selector", "spec.template.metadata.labels"]
        );
        let mut d: Deployment = from(
            json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        );
        default_deployment(&mut d);
        let mut out = vec![];
        validate_deployment(&d, &mut out);
        assert_eq!(
            fields(&out),
            ["spec.selector.matchExpressions[0].values", "spec.selector"]
        );
    }

    #[test]
    fn selector_is_immutable() {
        let hooks = deployment();
        let old = web_deployment();
        let mut new = old.clone();
        new.spec.as_mut().expect("spec").selector.match_labels =
            Some([("app".to_string(), "web2".to_string())].into());
        let mut out = vec![];
        (hooks.validate_update)(&new, &old, &mut out);
        assert_eq!(
            out[0].message,
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
        let mut out = vec![];
        (hooks.validate_update)(&old, &old, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn deployment_row_like_kubectl() {
        let mut d = web_deployment();
        d.spec.as_mut().expect("spec").replicas = Some(3);
        d.status = Some(DeploymentStatus {
            ready_replicas: Some(2),
            updated_replicas: Some(3),
            available_replicas: Some(2),
            ..Default::default()
        });
        let obj = serde_json::to_value(&d).expect("json");
        let row = deployment_row(&d, &obj, "2024-01-01T00:00:10Z".parse().expect("time"));
        assert_eq!(
            row,
            vec![
                json!("2/3"),
                json!(3),
                json!(2),
                json!("10s"),
                json!("web"),
                json!("nginx"),
                json!("app=web")
            ]
        );
    }

    #[test]
    fn replica_sets() {
        let hooks = replica_set();
        let mut rs: ReplicaSet = from(
            json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
            "template": {"metadata": {"labels": {"app": "web", "tier": "a"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        );
        (hooks.default)(&mut rs);
        (hooks.prepare_create)(&mut rs);
        let mut out = vec![];
        (hooks.validate)(&rs, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let v = serde_json::to_value(&rs).expect("json");
        assert_eq!(v["status"], json!({"replicas": 0}));
        let row = replica_set_row(&rs, &v, "2024-01-01T00:00:10Z".parse().expect("time"));
        assert_eq!(
            row,
            vec![
                json!(1),
                json!(0),
                json!(0),
                json!("10s"),
                json!("web"),
                json!("nginx"),
                json!("app=web,tier in (a,b)")
            ]
        );
        let mut bad = rs.clone();
        bad.spec.as_mut().expect("spec").replicas = Some(-1);
        bad.spec.as_mut().expect("spec").template = None;
        let mut out = vec![];
        (hooks.validate)(&bad, &mut out);
        assert_eq!(fields(&out), ["spec.replicas", "spec.template"]);
        let mut out = vec![];
        let mut moved = rs.clone();
        moved
            .spec
            .as_mut()
            .expect("spec")
            .selector
            .match_expressions = None;
        (hooks.validate_update)(&moved, &rs, &mut out);
        assert_eq!(fields(&out), ["spec.selector"]);
    }
}
