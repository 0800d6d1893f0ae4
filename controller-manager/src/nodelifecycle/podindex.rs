//! Which pods are bound to which node, kept up to date from the pod informer's changes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

use crate::informer;

/// The pod keys (`namespace/name`) bound to each node. Cheap to clone: clones share the index.
#[derive(Clone, Default)]
pub struct PodsByNode(Arc<Mutex<HashMap<String, BTreeSet<String>>>>);

/// The node a pod is bound to, if any.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl PodsByNode {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in a pod change from the informer (`old` None: added; `new` None: deleted).
    pub fn update(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let mut map = self.lock();
        if let Some(old) = old
            && let Some(node) = node_of(old)
            && let Some(keys) = map.get_mut(node)
        {
            keys.remove(&informer::key(old));
            if keys.is_empty() {
                map.remove(node);
            }
        }
        if let Some(new) = new
            && let Some(node) = node_of(new)
        {
            map.entry(node.to_string())
                .or_default()
                .insert(informer::key(new));
        }
    }

    /// The keys of the pods bound to `node`.
    pub fn pods(&self, node: &str) -> Vec<String> {
        self.lock()
            .get(node)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"}, "spec": {"containers": [], "nodeName": node}
        }))
        .expect("pod")
    }

    #[test]
    fn follows_binding_moves_and_deletes() {
        let index = PodsByNode::default();
        let (a, b) = (pod("p", "n1"), pod("q", "n1"));
        index.update(None, Some(&a));
        index.update(None, Some(&b));
        assert_eq!(index.pods("n1"), vec!["ns/p", "ns/q"]);
        let moved = pod("p", "n2");
        index.update(Some(&a), Some(&moved));
        assert_eq!(index.pods("n1"), vec!["ns/q"]);
        assert_eq!(index.pods("n2"), vec!["ns/p"]);
        index.update(Some(&b), None);
        assert!(index.pods("n1").is_empty());
        index.update(None, Some(&pod("unbound", "")));
        assert!(index.pods("").is_empty());
    }
}
