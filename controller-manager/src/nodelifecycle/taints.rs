//! Node taints and pod tolerations as the node lifecycle controller uses them: the taints it manages,
//! whether a pod tolerates them and for how long, and the one way it changes a node's taints
//! ([`swap_taints`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// The taint key of a node whose kubelet reports it not Ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint key of a node not heard from (Ready `Unknown`).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint key of a cordoned node (`spec.unschedulable`).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The NoExecute effect: pods that do not tolerate the taint are evicted.
pub const NO_EXECUTE: &str = "NoExecute";
/// The NoSchedule effect: no new pods that do not tolerate the taint are placed.
pub const NO_SCHEDULE: &str = "NoSchedule";

/// A taint with no value and no timeAdded.
pub fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        value: None,
        time_added: None,
    }
}

/// Whether two taints are the same taint (same key and effect), as Kubernetes' `MatchTaint`.
pub fn same(a: &Taint, b: &Taint) -> bool {
    a.key == b.key && a.effect == b.effect
}

/// The node's taints.
pub fn taints_of(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// Whether the node has a taint matching `t`.
pub fn has(node: &Node, t: &Taint) -> bool {
    taints_of(node).iter().any(|x| same(x, t))
}

/// The node's NoExecute taints.
pub fn no_execute(node: &Node) -> Vec<Taint> {
    taints_of(node)
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .cloned()
        .collect()
}

/// The NoSchedule taint for a node condition's status, as Kubernetes' TaintNodesByCondition maps them.
pub fn condition_taint_key(condition: &str, status: &str) -> Option<&'static str> {
    Some(match (condition, status) {
        ("Ready", "False") => NOT_READY,
        ("Ready", "Unknown") => UNREACHABLE,
        ("MemoryPressure", "True") => "node.kubernetes.io/memory-pressure",
        ("DiskPressure", "True") => "node.kubernetes.io/disk-pressure",
        ("NetworkUnavailable", "True") => "node.kubernetes.io/network-unavailable",
        ("PIDPressure", "True") => "node.kubernetes.io/pid-pressure",
        _ => return None,
    })
}

/// Whether the key is one of the NoSchedule taints managed from node conditions or `unschedulable`.
fn condition_managed(key: &str) -> bool {
    key == UNSCHEDULABLE
        || [
            ("Ready", "False"),
            ("Ready", "Unknown"),
            ("MemoryPressure", "True"),
            ("DiskPressure", "True"),
            ("NetworkUnavailable", "True"),
            ("PIDPressure", "True"),
        ]
        .iter()
        .any(|(c, s)| condition_taint_key(c, s) == Some(key))
}

/// The NoSchedule taints to add and to remove so that they mirror the node's conditions and
/// `spec.unschedulable` (Kubernetes' `doNoScheduleTaintingPass`).
pub fn no_schedule_diff(node: &Node) -> (Vec<Taint>, Vec<Taint>) {
    let mut wanted: Vec<Taint> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| condition_taint_key(&c.type_, &c.status))
        .map(|k| taint(k, NO_SCHEDULE))
        .collect();
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        wanted.push(taint(UNSCHEDULABLE, NO_SCHEDULE));
    }
    let have: Vec<&Taint> = taints_of(node)
        .iter()
        .filter(|t| t.effect == NO_SCHEDULE && condition_managed(&t.key))
        .collect();
    let add = wanted
        .iter()
        .filter(|w| !have.iter().any(|h| same(h, w)))
        .cloned()
        .collect();
    let remove = have
        .into_iter()
        .filter(|h| !wanted.iter().any(|w| same(h, w)))
        .cloned()
        .collect();
    (add, remove)
}

/// Whether the toleration tolerates the taint (Kubernetes' `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    let key = t.key.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// What the taint manager does with a pod on a node with NoExecute taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The pod tolerates every taint forever.
    Never,
    /// The pod does not tolerate a taint (or tolerates it for 0 s): delete it now.
    Now,
    /// Delete the pod after this long (its smallest `tolerationSeconds`).
    After(Duration),
}

/// When a pod with `tolerations` is evicted from a node with these NoExecute `taints`: for each taint
/// its first matching toleration counts, and the smallest `tolerationSeconds` among those wins; a
/// toleration without `tolerationSeconds` tolerates forever (Kubernetes' `GetMatchingTolerations` and
/// `getMinTolerationTime`).
pub fn eviction(taints: &[Taint], tolerations: &[Toleration]) -> Eviction {
    if taints.is_empty() {
        return Eviction::Never;
    }
    let mut min: Option<i64> = None;
    for taint in taints {
        let Some(used) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        if let Some(s) = used.toleration_seconds {
            if s <= 0 {
                return Eviction::Now;
            }
            min = Some(min.map_or(s, |m| m.min(s)));
        }
    }
    match min {
        None => Eviction::Never,
        Some(s) => Eviction::After(Duration::from_secs(s.unsigned_abs())),
    }
}

/// The taints `current` with `remove` taken out and `add` put in (a taint already there, by key and
/// effect, is kept as it is); NoExecute taints added get `timeAdded` = `now`. None when nothing changes.
pub fn swapped(
    current: &[Taint],
    add: &[Taint],
    remove: &[Taint],
    now: &Time,
) -> Option<Vec<Taint>> {
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !remove.iter().any(|r| same(r, t)))
        .cloned()
        .collect();
    let mut changed = out.len() != current.len();
    for a in add {
        if !out.iter().any(|t| same(t, a)) {
            let mut t = a.clone();
            if t.effect == NO_EXECUTE {
                t.time_added = Some(now.clone());
            }
            out.push(t);
            changed = true;
        }
    }
    changed.then_some(out)
}

/// How many times [`swap_taints`] tries when the node keeps changing underneath it.
const SWAP_ATTEMPTS: usize = 5;

/// Adds and removes taints on `node` (Kubernetes' `SwapNodeControllerTaint`): written with the node's
/// resourceVersion as precondition, starting from the given (cached) copy and re-reading the node on a
/// conflict. Returns whether the node was changed; a node that is gone is left alone.
pub async fn swap_taints(
    api: &Api<Node>,
    node: &Node,
    add: &[Taint],
    remove: &[Taint],
) -> Result<bool, kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut current = node.clone();
    let mut attempt = 1;
    loop {
        let now = Time(jiff::Timestamp::now());
        let Some(taints) = swapped(taints_of(&current), add, remove, &now) else {
            return Ok(false);
        };
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"taints": if taints.is_empty() { None } else { Some(taints) }},
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < SWAP_ATTEMPTS => {
                attempt += 1;
                match api.get_opt(&name).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(false),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).expect("toleration")
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    #[test]
    fn toleration_matching_as_kubernetes() {
        let t = Taint {
            value: Some("v".into()),
            ..taint(UNREACHABLE, NO_EXECUTE)
        };
        assert!(tolerates(&toleration(json!({"operator": "Exists"})), &t));
        assert!(tolerates(
            &toleration(json!({"key": UNREACHABLE, "operator": "Exists"})),
            &t
        ));
        assert!(tolerates(
            &toleration(json!({"key": UNREACHABLE, "value": "v"})),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": UNREACHABLE, "value": "w"})),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"})),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": NOT_READY, "operator": "Exists"})),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": UNREACHABLE, "operator": "Maybe"})),
            &t
        ));
    }

    #[test]
    fn eviction_time_is_the_smallest_matching_toleration() {
        let unreachable = taint(UNREACHABLE, NO_EXECUTE);
        let other = taint("dedicated", NO_EXECUTE);
        let defaults = [
            toleration(
                json!({"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            ),
            toleration(
                json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            ),
        ];
        assert_eq!(eviction(&[], &defaults), Eviction::Never);
        assert_eq!(
            eviction(std::slice::from_ref(&unreachable), &defaults),
            Eviction::After(Duration::from_secs(300))
        );
        // An untolerated taint: now, whatever else is tolerated.
        assert_eq!(
            eviction(&[unreachable.clone(), other.clone()], &defaults),
            Eviction::Now
        );
        assert_eq!(
            eviction(std::slice::from_ref(&unreachable), &[]),
            Eviction::Now
        );
        // Forever.
        let forever = [toleration(json!({"operator": "Exists"}))];
        assert_eq!(
            eviction(&[unreachable.clone(), other.clone()], &forever),
            Eviction::Never
        );
        // The smallest among the tolerations used; zero means now.
        let mixed = [
            toleration(json!({"key": "dedicated", "operator": "Exists", "tolerationSeconds": 20})),
            toleration(json!({"operator": "Exists", "tolerationSeconds": 60})),
        ];
        assert_eq!(
            eviction(&[unreachable.clone(), other.clone()], &mixed),
            Eviction::After(Duration::from_secs(20))
        );
        let zero = [toleration(
            json!({"operator": "Exists", "tolerationSeconds": 0}),
        )];
        assert_eq!(eviction(&[unreachable], &zero), Eviction::Now);
    }

    #[test]
    fn no_schedule_taints_mirror_conditions() {
        let n = node(json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": true, "taints": [
                {"key": NOT_READY, "effect": "NoSchedule"},
                {"key": "mine", "effect": "NoSchedule"},
                {"key": UNREACHABLE, "effect": "NoExecute"},
            ]},
            "status": {"conditions": [
                {"type": "Ready", "status": "Unknown"},
                {"type": "DiskPressure", "status": "True"},
                {"type": "MemoryPressure", "status": "False"},
            ]}
        }));
        let (add, remove) = no_schedule_diff(&n);
        let keys = |v: &[Taint]| v.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(&add),
            vec![
                UNREACHABLE,
                "node.kubernetes.io/disk-pressure",
                UNSCHEDULABLE
            ]
        );
        assert!(
            add.iter()
                .all(|t| t.effect == NO_SCHEDULE && t.time_added.is_none())
        );
        assert_eq!(keys(&remove), vec![NOT_READY]);
    }

    #[test]
    fn swapping_keeps_other_taints_and_stamps_no_execute() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let current = vec![taint("mine", NO_EXECUTE), taint(NOT_READY, NO_EXECUTE)];
        let out = swapped(
            &current,
            &[
                taint(UNREACHABLE, NO_EXECUTE),
                taint(UNREACHABLE, NO_SCHEDULE),
            ],
            &[taint(NOT_READY, NO_EXECUTE)],
            &now,
        )
        .expect("changed");
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], current[0]);
        assert_eq!(out[1].time_added, Some(now.clone()));
        assert_eq!(out[2].time_added, None);
        // Already so: nothing to write.
        assert_eq!(
            swapped(&out, &[taint(UNREACHABLE, NO_EXECUTE)], &[], &now),
            None
        );
        assert_eq!(
            swapped(&out, &[], &[taint(NOT_READY, NO_EXECUTE)], &now),
            None
        );
    }
}
