//! `v1 ReplicationController`, plus the pod-template rules it shares with the `apps/v1` workloads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ReplicationController, ReplicationControllerSpec, ReplicationControllerStatus,
};
use serde_json::Value;

use super::Typed;
use super::pod::{self, container_cells, go_map, non_negative};
use crate::error::Cause;
use crate::selector::LabelSelector;
use crate::table::Column;
use crate::validation;

const RC_COLS: &[Column] = &[
    Column::int("Desired", "Number of replicas requested by the user."),
    Column::int("Current", "Number of replicas observed by the controller."),
    Column::int("Ready", "Number of ready replicas."),
    Column::AGE,
    Column::wide("Containers", "Names of each container in the template."),
    Column::wide(
        "Images",
        "Images referenced by each container in the template.",
    ),
    Column::wide(
        "Selector",
        "Label query over pods that should match the replicas count.",
    ),
];

/// The hooks of `v1 ReplicationController`.
pub fn replication_controller() -> Typed<ReplicationController> {
    Typed {
        columns: RC_COLS,
        row: rc_row,
        default: default_rc,
        prepare_create: prepare_rc,
        validate: validate_rc,
        validate_status_update: validate_rc_status,
        ..Typed::default()
    }
}

/// The labels of a pod template, if any.
pub(super) fn template_labels(t: &PodTemplateSpec) -> Option<&BTreeMap<String, String>> {
    t.metadata.as_ref().and_then(|m| m.labels.as_ref())
}

/// Fills the defaults of a pod template's spec.
pub(super) fn default_template(t: &mut PodTemplateSpec) {
    pod::default_pod_spec(t.spec.get_or_insert_with(Default::default));
}

/// Checks the pod template of a workload at `spec.template`: its labels match the selector (`matches`
/// is `None` when there is no selector to match), its metadata and pod spec are valid, and its pods
/// restart `Always` without a deadline. `owner` names the kind in messages, as Kubernetes does.
pub(super) fn validate_template(
    t: &PodTemplateSpec,
    matches: Option<bool>,
    owner: &str,
    out: &mut Vec<Cause>,
) {
    let labels = template_labels(t);
    if matches == Some(false) {
        out.push(Cause::invalid(
            "spec.template.metadata.labels",
            go_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    if let Some(l) = labels {
        validation::labels(l, "spec.template.labels", out);
    }
    if let Some(a) = t.metadata.as_ref().and_then(|m| m.annotations.as_ref()) {
        validation::annotations(a, "spec.template.annotations", out);
    }
    let empty = Default::default();
    let spec = t.spec.as_ref().unwrap_or(&empty);
    pod::validate_pod_spec(spec, "spec.template.spec", out);
    let restart = pod::s(&spec.restart_policy);
    if restart != "Always" {
        out.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["Always"],
        ));
    }
    if let Some(d) = spec.active_deadline_seconds {
        out.push(Cause::invalid(
            "spec.template.spec.activeDeadlineSeconds",
            d,
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        out.push(Cause::forbidden(
            "spec.template.spec.ephemeralContainers",
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// `replicas` defaults to 1; an empty selector (and empty object labels) to the template's labels,
/// and empty template labels to the selector.
fn default_rc(rc: &mut ReplicationController) {
    let spec = rc
        .spec
        .get_or_insert_with(ReplicationControllerSpec::default);
    if let Some(labels) = spec.template.as_ref().and_then(template_labels).cloned() {
        if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
            spec.selector = Some(labels.clone());
        }
        if rc.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
            rc.metadata.labels = Some(labels);
        }
    }
    if let Some(t) = &mut spec.template
        && template_labels(t).is_none_or(BTreeMap::is_empty)
        && let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty())
    {
        t.metadata.get_or_insert_with(Default::default).labels = Some(selector.clone());
    }
    spec.replicas.get_or_insert(1);
    if let Some(t) = &mut spec.template {
        default_template(t);
    }
}

fn prepare_rc(rc: &mut ReplicationController) {
    rc.status = Some(ReplicationControllerStatus::default());
}

fn validate_rc(rc: &ReplicationController, out: &mut Vec<Cause>) {
    let empty = ReplicationControllerSpec::default();
    let spec = rc.spec.as_ref().unwrap_or(&empty);
    non_negative(
        spec.min_ready_seconds.unwrap_or(0).into(),
        "spec.minReadySeconds",
        out,
    );
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty());
    if selector.is_none() {
        out.push(Cause::required("spec.selector"));
    }
    non_negative(spec.replicas.unwrap_or(0).into(), "spec.replicas", out);
    match &spec.template {
        None => out.push(Cause::required("spec.template")),
        Some(t) => {
            let empty_labels = BTreeMap::new();
            let matches = selector.map(|s| {
                LabelSelector::from_map(s).matches(template_labels(t).unwrap_or(&empty_labels))
            });
            validate_template(t, matches, "ReplicationController", out);
        }
    }
}

fn validate_rc_status(
    new: &ReplicationController,
    _old: &ReplicationController,
    out: &mut Vec<Cause>,
) {
    let Some(st) = &new.status else { return };
    validate_replica_counts(
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

/// Status counts of replicated workloads (ReplicationController, ReplicaSet) may not be negative:
/// `replicas`, then `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`, and `observedGeneration`.
pub(crate) fn validate_replica_counts(
    replicas: i32,
    counts: [Option<i32>; 3],
    observed_generation: Option<i64>,
    out: &mut Vec<Cause>,
) {
    non_negative(replicas.into(), "status.replicas", out);
    for (field, v) in ["fullyLabeledReplicas", "readyReplicas", "availableReplicas"]
        .into_iter()
        .zip(counts)
    {
        non_negative(v.unwrap_or(0).into(), &format!("status.{field}"), out);
    }
    non_negative(
        observed_generation.unwrap_or(0),
        "status.observedGeneration",
        out,
    );
}

fn rc_row(rc: &ReplicationController, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let empty = ReplicationControllerSpec::default();
    let spec = rc.spec.as_ref().unwrap_or(&empty);
    let status = rc.status.clone().unwrap_or_default();
    let (containers, images) =
        container_cells(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
    vec![
        spec.replicas.unwrap_or(1).into(),
        status.replicas.into(),
        status.ready_replicas.unwrap_or(0).into(),
        crate::table::age(crate::table::created(obj), now).into(),
        containers.into(),
        images.into(),
        crate::table::labels_string(spec.selector.as_ref()).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rc(v: Value) -> ReplicationController {
        serde_json::from_value(v).expect("a valid replication controller")
    }

    fn check(rc: &ReplicationController) -> Vec<Cause> {
        let mut out = vec![];
        validate_rc(rc, &mut out);
        out
    }

    #[test]
    fn defaults() {
        let hooks = replication_controller();
        let mut r = rc(
            json!({"metadata": {"name": "web"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        );
        (hooks.default)(&mut r);
        (hooks.prepare_create)(&mut r);
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(v["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(v["status"], json!({"replicas": 0}));
        assert!(check(&r).is_empty(), "{:?}", check(&r));
        let mut r = rc(
            json!({"spec": {"selector": {"app": "db"}, "template": {"spec": {"containers": [{"name": "db", "image": "pg"}]}}}}),
        );
        default_rc(&mut r);
        assert!(check(&r).is_empty());
    }

    #[test]
    fn validation_failures() {
        let mut r = rc(
            json!({"spec": {"replicas": -1, "selector": {"app": "a"}, "template": {"metadata": {"labels": {"app": "b"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}}}),
        );
        default_rc(&mut r);
        let out = check(&r);
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.replicas",
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image",
                "spec.template.spec.restartPolicy"
            ]
        );
        assert_eq!(
            out[1].message,
            "Invalid value: \"map[app:b]\": `selector` does not match template `labels`"
        );
        let out = check(&rc(json!({"spec": {}})));
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.selector", "spec.template"]);
    }

    #[test]
    fn rows() {
        let mut r = rc(
            json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}, {"name": "log", "image": "busybox"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}}),
        );
        default_rc(&mut r);
        let obj = serde_json::to_value(&r).expect("json");
        let row = rc_row(&r, &obj, "2024-01-01T00:02:00Z".parse().expect("time"));
        assert_eq!(
            row,
            vec![
                json!(3),
                json!(2),
                json!(1),
                json!("2m"),
                json!("web,log"),
                json!("nginx,busybox"),
                json!("app=web")
            ]
        );
    }
}
