//! What several controllers ask of pods and owner references, as Kubernetes answers it.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The reference to the object's managing controller (the owner reference with `controller: true`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A controller owner reference to `owner`, blocking the owner's foreground deletion.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod's phase ("" when the status has none yet).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the pod is being deleted.
pub fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether the pod still counts for its controller: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !is_deleting(&pod.metadata)
}

/// The pod's `Ready` condition, if it is `True`: when it became so.
pub fn ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now` (Kubernetes'
/// `IsPodAvailable`): with 0, ready is available.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).expect("pod")
    }

    #[test]
    fn readiness_and_availability() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().expect("time");
        let ready = pod(json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:30Z"}]}));
        assert!(is_ready(&ready) && is_active(&ready));
        assert!(is_available(&ready, 0, now));
        assert!(is_available(&ready, 30, now));
        assert!(!is_available(&ready, 31, now));
        let not_ready = pod(json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "False"}]}));
        assert!(!is_ready(&not_ready) && !is_available(&not_ready, 0, now));
        assert!(!is_active(&pod(json!({"phase": "Failed"}))));
    }
}
