//! The garbage collector's dependency graph, as Kubernetes' graph builder keeps it: one node per
//! object uid, edges from `ownerReferences`. An owner referenced but not (or no longer) observed is a
//! virtual node, kept while dependents still point at it. Each change returns the [`Work`] it calls
//! for: uids to check for deletion, owners whose dependents are to be orphaned.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::discovery::parse_api_version;

/// The finalizer that makes the collector orphan an owner's dependents.
pub const ORPHAN: &str = "orphan";
/// The finalizer that makes the collector delete an owner's dependents first.
pub const FOREGROUND: &str = "foregroundDeletion";

/// Where an object is: kind, namespace, name and uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// apiVersion, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind, e.g. `ReplicaSet`.
    pub kind: String,
    /// Namespace ("" for cluster-scoped objects). For a virtual node: its first dependent's.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl Identity {
    /// The API group ("" for core or an apiVersion that does not parse).
    pub fn group(&self) -> &str {
        parse_api_version(&self.api_version).map_or("", |(g, _)| g)
    }
}

/// An object as a monitor observed it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Where it is.
    pub identity: Identity,
    /// Its owner references.
    pub owners: Vec<OwnerReference>,
    /// Whether it has a deletionTimestamp.
    pub deleting: bool,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

/// One object in the graph.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Where it is.
    pub identity: Identity,
    /// False for a virtual node: referenced as an owner but not observed.
    pub observed: bool,
    /// Its owner references (as last observed).
    pub owners: Vec<OwnerReference>,
    /// The uids of objects naming it as owner.
    pub dependents: BTreeSet<String>,
    /// Being deleted with the `foregroundDeletion` finalizer: its dependents go first.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer: its dependents are to be orphaned.
    pub orphaning: bool,
}

/// What a change to the graph calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Uids to look at for deletion (attempt-to-delete).
    pub delete: Vec<String>,
    /// Uids of owners whose dependents are to be orphaned (attempt-to-orphan).
    pub orphan: Vec<String>,
}

/// The dependency graph.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

/// Whether a dependent's reference disagrees with the observed owner it points at (so the dependent
/// must be checked: Kubernetes treats such a reference as absent, or as invalid when a cluster-scoped
/// dependent names a namespaced owner).
fn disagrees(owner: &Node, r: &OwnerReference, dependent_ns: &str) -> bool {
    let group = parse_api_version(&r.api_version).map_or("", |(g, _)| g);
    owner.observed
        && (owner.identity.name != r.name
            || owner.identity.kind != r.kind
            || owner.identity.group() != group
            || (!owner.identity.namespace.is_empty() && owner.identity.namespace != dependent_ns))
}

impl Graph {
    /// The node of `uid`.
    pub fn node(&self, uid: &str) -> Option<Node> {
        self.nodes.get(uid).cloned()
    }

    /// How many nodes there are (virtual ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<Node> {
        self.nodes
            .get(uid)
            .map(|n| {
                n.dependents
                    .iter()
                    .filter_map(|d| self.nodes.get(d).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The dependents of `uid` whose reference to it has `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<Node> {
        self.dependents(uid)
            .into_iter()
            .filter(|d| {
                d.owners
                    .iter()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
            })
            .collect()
    }

    /// Adds or updates an observed object.
    pub fn upsert(&mut self, obj: Observed) -> Work {
        let mut work = Work::default();
        let uid = obj.identity.uid.clone();
        let deleting_dependents = obj.deleting && obj.finalizers.iter().any(|f| f == FOREGROUND);
        let orphaning = obj.deleting && obj.finalizers.iter().any(|f| f == ORPHAN);
        let (old_owners, was_deleting_dependents, was_virtual) = match self.nodes.get(&uid) {
            Some(n) => (n.owners.clone(), n.deleting_dependents, !n.observed),
            None => (vec![], false, false),
        };
        let node = self.nodes.entry(uid.clone()).or_default();
        node.identity = obj.identity.clone();
        node.observed = true;
        node.owners = obj.owners.clone();
        node.deleting_dependents = deleting_dependents;
        node.orphaning = orphaning;
        let dependents: Vec<String> = node.dependents.iter().cloned().collect();
        // References that went or changed: owners waiting on their dependents look again.
        for old in &old_owners {
            let now = obj.owners.iter().find(|r| r.uid == old.uid);
            if now.is_none() {
                self.unlink(&old.uid, &uid);
            }
            if now != Some(old)
                && self
                    .nodes
                    .get(&old.uid)
                    .is_some_and(|o| o.deleting_dependents)
            {
                work.delete.push(old.uid.clone());
            }
        }
        for r in &obj.owners {
            if !old_owners.iter().any(|o| o.uid == r.uid) {
                self.link(r, &obj.identity, &mut work);
            }
        }
        if was_virtual {
            // Dependents that named this uid before it was observed may disagree with what it is.
            for d in &dependents {
                let Some(dep) = self.nodes.get(d) else {
                    continue;
                };
                let Some(owner) = self.nodes.get(&uid) else {
                    continue;
                };
                if dep
                    .owners
                    .iter()
                    .any(|r| r.uid == uid && disagrees(owner, r, &dep.identity.namespace))
                {
                    work.delete.push(d.clone());
                }
            }
        }
        if orphaning {
            work.orphan.push(uid.clone());
        }
        if deleting_dependents {
            if !was_deleting_dependents {
                work.delete.extend(dependents);
            }
            work.delete.push(uid);
        }
        work
    }

    /// Records that the object with `identity` references owner `r`.
    fn link(&mut self, r: &OwnerReference, dependent: &Identity, work: &mut Work) {
        match self.nodes.get_mut(&r.uid) {
            Some(owner) => {
                owner.dependents.insert(dependent.uid.clone());
                // A virtual owner is looked up where its first dependent is: a dependent elsewhere
                // looks its owner up itself.
                let elsewhere = !owner.observed && owner.identity.namespace != dependent.namespace;
                if elsewhere
                    || disagrees(owner, r, &dependent.namespace)
                    || owner.deleting_dependents
                {
                    work.delete.push(dependent.uid.clone());
                }
                if !owner.observed {
                    // Is the owner there at all (it may have gone already)? The worker looks.
                    work.delete.push(r.uid.clone());
                }
            }
            None => {
                let identity = Identity {
                    api_version: r.api_version.clone(),
                    kind: r.kind.clone(),
                    namespace: dependent.namespace.clone(),
                    name: r.name.clone(),
                    uid: r.uid.clone(),
                };
                let virtual_node = Node {
                    identity,
                    dependents: BTreeSet::from([dependent.uid.clone()]),
                    ..Node::default()
                };
                self.nodes.insert(r.uid.clone(), virtual_node);
                // Is the owner there at all? The worker looks.
                work.delete.push(r.uid.clone());
            }
        }
    }

    /// Forgets that `dependent` references `owner`; a virtual owner nobody references goes.
    fn unlink(&mut self, owner: &str, dependent: &str) {
        let Some(o) = self.nodes.get_mut(owner) else {
            return;
        };
        o.dependents.remove(dependent);
        if !o.observed && o.dependents.is_empty() {
            self.nodes.remove(owner);
        }
    }

    /// Removes an object observed deleted. Returns the work and, when it had dependents, its
    /// identity (a known-absent owner); it stays as a virtual node while dependents reference it.
    pub fn remove(&mut self, uid: &str) -> (Work, Option<Identity>) {
        let mut work = Work::default();
        let Some(node) = self.nodes.get(uid).cloned() else {
            return (work, None);
        };
        if !node.observed {
            return (work, None);
        }
        for r in &node.owners {
            self.unlink(&r.uid, uid);
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(|o| o.deleting_dependents)
            {
                work.delete.push(r.uid.clone());
            }
        }
        if node.dependents.is_empty() {
            self.nodes.remove(uid);
            return (work, None);
        }
        work.delete.extend(node.dependents.iter().cloned());
        if let Some(n) = self.nodes.get_mut(uid) {
            n.observed = false;
            n.owners.clear();
            n.deleting_dependents = false;
            n.orphaning = false;
        }
        (work, Some(node.identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, ns: &str, name: &str, uid: &str) -> Identity {
        Identity {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn owner_ref(kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            block_owner_deletion: Some(block),
            controller: None,
        }
    }

    fn obs(identity: Identity, owners: Vec<OwnerReference>) -> Observed {
        Observed {
            identity,
            owners,
            ..Observed::default()
        }
    }

    #[test]
    fn owners_seen_after_dependents_replace_their_virtual_nodes() {
        let mut g = Graph::default();
        let w = g.upsert(obs(
            id("Pod", "ns", "p", "p1"),
            vec![owner_ref("ConfigMap", "o", "o1", true)],
        ));
        assert_eq!(w.delete, vec!["o1".to_string()]);
        assert!(g.node("o1").is_some_and(|n| !n.observed));
        let w = g.upsert(obs(id("ConfigMap", "ns", "o", "o1"), vec![]));
        assert_eq!(w, Work::default());
        let o = g.node("o1").expect("owner");
        assert!(o.observed);
        assert_eq!(g.blocking_dependents("o1").len(), 1);
        // The owner goes: its dependent is checked, and it stays virtual while referenced.
        let (w, absent) = g.remove("o1");
        assert_eq!(w.delete, vec!["p1".to_string()]);
        assert_eq!(absent.map(|i| i.name), Some("o".into()));
        assert!(g.node("o1").is_some_and(|n| !n.observed));
        // A new dependent of the gone owner gets the owner looked at again.
        let w = g.upsert(obs(
            id("Pod", "ns", "p2", "p2"),
            vec![owner_ref("ConfigMap", "o", "o1", true)],
        ));
        assert_eq!(w.delete, vec!["o1".to_string()]);
        g.remove("p2");
        // The dependent drops the reference: the virtual node goes.
        g.upsert(obs(id("Pod", "ns", "p", "p1"), vec![]));
        assert!(g.node("o1").is_none());
        let (w, absent) = g.remove("p1");
        assert_eq!((w, absent), (Work::default(), None));
        assert!(g.is_empty());
    }

    #[test]
    fn deletion_finalizers_call_for_orphaning_or_deleting_dependents() {
        let mut g = Graph::default();
        g.upsert(obs(id("ConfigMap", "ns", "o", "o1"), vec![]));
        g.upsert(obs(
            id("Pod", "ns", "p", "p1"),
            vec![owner_ref("ConfigMap", "o", "o1", true)],
        ));
        let mut o = obs(id("ConfigMap", "ns", "o", "o1"), vec![]);
        o.deleting = true;
        o.finalizers = vec![FOREGROUND.into()];
        let w = g.upsert(o.clone());
        assert_eq!(w.delete, vec!["p1".to_string(), "o1".to_string()]);
        // Only the transition fans out to dependents.
        assert_eq!(g.upsert(o).delete, vec!["o1".to_string()]);
        // A blocking dependent that goes makes the owner look again.
        let (w, _) = g.remove("p1");
        assert_eq!(w.delete, vec!["o1".to_string()]);
        let mut o = obs(id("ConfigMap", "ns", "o", "o1"), vec![]);
        o.deleting = true;
        o.finalizers = vec![ORPHAN.into()];
        assert_eq!(g.upsert(o).orphan, vec!["o1".to_string()]);
    }

    #[test]
    fn references_that_disagree_with_the_owner_get_the_dependent_checked() {
        let mut g = Graph::default();
        g.upsert(obs(id("ConfigMap", "a", "o", "o1"), vec![]));
        // Same uid, other namespace: Kubernetes treats the owner as absent for this dependent.
        let w = g.upsert(obs(
            id("Pod", "b", "p", "p1"),
            vec![owner_ref("ConfigMap", "o", "o1", false)],
        ));
        assert_eq!(w.delete, vec!["p1".to_string()]);
        // Matching reference: nothing to do.
        let w = g.upsert(obs(
            id("Pod", "a", "q", "q1"),
            vec![owner_ref("ConfigMap", "o", "o1", false)],
        ));
        assert_eq!(w, Work::default());
    }
}
