//! Setting one condition of a pod's status (Kubernetes' `UpdatePodCondition` + `UpdateStatus`), used to
//! mark pods on unhealthy nodes not Ready and to record why the taint manager deletes a pod.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// The pod's conditions with `wanted` put in place of the one of its type; its lastTransitionTime is
/// `now` if the status changes, else the old one. None when nothing changes.
pub fn with_condition(pod: &Pod, wanted: PodCondition, now: &Time) -> Option<Vec<PodCondition>> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut wanted = wanted;
    match conditions.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(old) => {
            wanted.last_transition_time = if old.status == wanted.status {
                old.last_transition_time.clone()
            } else {
                Some(now.clone())
            };
            if old.status == wanted.status
                && old.reason == wanted.reason
                && old.message == wanted.message
                && old.last_probe_time == wanted.last_probe_time
            {
                return None;
            }
            *old = wanted;
        }
        None => {
            wanted.last_transition_time = Some(now.clone());
            conditions.push(wanted);
        }
    }
    Some(conditions)
}

/// Writes `conditions` to the pod's status with its resourceVersion as precondition. A pod that is
/// gone is no error.
pub async fn write(
    api: &Api<Pod>,
    pod: &Pod,
    conditions: &[PodCondition],
) -> Result<(), kube::Error> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let patch = json!({
        "metadata": {"resourceVersion": pod.metadata.resource_version},
        "status": {"conditions": conditions},
    });
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_condition_changes_only_when_it_differs() {
        let now = Time("2026-01-02T00:00:00Z".parse().expect("time"));
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "PodScheduled", "status": "True"}]}}))
            .expect("pod");
        let not_ready = PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        };
        let c = with_condition(&pod, not_ready.clone(), &now).expect("changed");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].last_transition_time, Some(now.clone()));
        let mut again = pod.clone();
        if let Some(s) = again.status.as_mut() {
            s.conditions = Some(c);
        }
        assert_eq!(with_condition(&again, not_ready, &now), None);
        let target = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            ..Default::default()
        };
        let c = with_condition(&pod, target, &now).expect("added");
        assert_eq!(c.len(), 3);
    }
}
