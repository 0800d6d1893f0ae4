//! The collector's workers, as Kubernetes' `attemptToDeleteItem` and `attemptToOrphanWorker`. Each
//! looks at the live objects before acting: owners are verified gone with a GET of the owner by name
//! (404, or another uid, is gone), writes carry a resourceVersion or uid precondition, and a
//! reference that cannot be resolved or is invalid makes the worker do nothing.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use serde_json::{Value, json};

use super::graph::{FOREGROUND, Identity, Node, ORPHAN};
use super::{Collector, absent, lock};
use crate::controller::{ReconcileError, Requeue};
use crate::discovery::{Meta, Served, parse_api_version};

/// When to look again at an owner that exists but no monitor has seen (yet).
const VIRTUAL_RECHECK: Duration = Duration::from_secs(30);
/// When to look again at work that needs every monitor synced.
const SYNC_RECHECK: Duration = Duration::from_secs(1);

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The served resource of `kind` in `api_version`'s group.
fn resolve(gc: &Collector, api_version: &str, kind: &str) -> Result<Arc<Served>, ReconcileError> {
    let found = gc
        .discovered()
        .ok_or_else(|| ReconcileError::Failed("resources not discovered yet".into()))?;
    let (group, _) = parse_api_version(api_version)
        .ok_or_else(|| ReconcileError::Failed(format!("invalid apiVersion {api_version:?}")))?;
    found.find(group, kind).cloned().ok_or_else(|| {
        ReconcileError::Failed(format!(
            "unable to get REST mapping for {api_version}, Kind={kind}"
        ))
    })
}

/// The namespace to address an object of `served` at ("" for cluster-scoped resources).
fn scope<'a>(served: &Served, namespace: &'a str) -> &'a str {
    if served.namespaced { namespace } else { "" }
}

/// The live object `name` with `uid`; None when it is gone (404) or another object took its name.
async fn live(
    gc: &Collector,
    served: &Served,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Option<Meta>, ReconcileError> {
    let api = served.metadata(gc.client(), Some(namespace));
    let found = api.get_opt(name).await?;
    Ok(found.filter(|m| m.metadata.uid.as_deref() == Some(uid)))
}

fn has_finalizer(m: &Meta, f: &str) -> bool {
    m.metadata.finalizers.iter().flatten().any(|x| x == f)
}

/// Deletes the object `id` of `served` (uid precondition) with `policy`; gone already is success.
async fn delete(
    gc: &Collector,
    served: &Served,
    id: &Identity,
    policy: PropagationPolicy,
) -> Result<(), ReconcileError> {
    tracing::info!(kind = %id.kind, namespace = %id.namespace, name = %id.name, ?policy, "garbage collector: deleting object");
    let api = served.metadata(gc.client(), Some(scope(served, &id.namespace)));
    let dp = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(id.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&id.name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A JSON merge patch of `metadata` with `field` set (null when empty) and `latest`'s
/// resourceVersion as precondition.
async fn patch_meta(
    gc: &Collector,
    served: &Served,
    latest: &Meta,
    field: &str,
    value: Value,
) -> Result<(), ReconcileError> {
    let m = &latest.metadata;
    let (ns, name) = (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    );
    let api = served.metadata(gc.client(), Some(scope(served, &ns)));
    let patch = json!({"metadata": {field: value, "resourceVersion": m.resource_version}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the references to `uids` from the live object `latest`.
async fn remove_references(
    gc: &Collector,
    served: &Served,
    latest: &Meta,
    uids: &[&str],
) -> Result<(), ReconcileError> {
    let refs = latest.metadata.owner_references.clone().unwrap_or_default();
    let kept: Vec<&OwnerReference> = refs
        .iter()
        .filter(|r| !uids.contains(&r.uid.as_str()))
        .collect();
    if kept.len() == refs.len() {
        return Ok(());
    }
    tracing::info!(kind = %served.resource.kind, namespace = ?latest.metadata.namespace, name = ?latest.metadata.name, ?uids, "garbage collector: removing owner references");
    let value = if kept.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(&kept).map_err(|e| ReconcileError::Failed(e.to_string()))?
    };
    patch_meta(gc, served, latest, "ownerReferences", value).await
}

/// Removes `finalizer` from the live object of `node`.
async fn remove_finalizer(
    gc: &Collector,
    served: &Served,
    node: &Node,
    finalizer: &str,
) -> Result<(), ReconcileError> {
    let id = &node.identity;
    let Some(latest) = live(gc, served, scope(served, &id.namespace), &id.name, &id.uid).await?
    else {
        return Ok(());
    };
    if !has_finalizer(&latest, finalizer) {
        return Ok(());
    }
    tracing::info!(kind = %id.kind, namespace = %id.namespace, name = %id.name, finalizer, "garbage collector: removing finalizer");
    let kept: Vec<&String> = latest
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let value = if kept.is_empty() {
        Value::Null
    } else {
        json!(kept)
    };
    patch_meta(gc, served, &latest, "finalizers", value).await
}

/// What an owner reference points at.
enum Owner {
    /// Gone (or another object by that name).
    Dangling,
    /// There; `waiting` when it is in foreground deletion, waiting for its dependents.
    Live { waiting: bool },
    /// A namespaced owner of a cluster-scoped dependent: invalid, never resolves.
    Invalid,
}

/// Looks up owner `r` of a dependent in namespace `dependent_ns`, as Kubernetes' `isDangling`.
async fn owner(
    gc: &Collector,
    r: &OwnerReference,
    dependent_ns: &str,
) -> Result<Owner, ReconcileError> {
    let group = parse_api_version(&r.api_version)
        .map(|(g, _)| g)
        .ok_or_else(|| ReconcileError::Failed(format!("invalid apiVersion {:?}", r.api_version)))?;
    let known_absent = {
        let a = lock(&gc.absent);
        a.has(&absent::key("", group, &r.kind, &r.name, &r.uid))
            || a.has(&absent::key(dependent_ns, group, &r.kind, &r.name, &r.uid))
    };
    if known_absent {
        return Ok(Owner::Dangling);
    }
    let served = resolve(gc, &r.api_version, &r.kind)?;
    if dependent_ns.is_empty() && served.namespaced {
        return Ok(Owner::Invalid);
    }
    let ns = scope(&served, dependent_ns);
    match live(gc, &served, ns, &r.name, &r.uid).await? {
        Some(m) => Ok(Owner::Live {
            waiting: m.metadata.deletion_timestamp.is_some() && has_finalizer(&m, FOREGROUND),
        }),
        None => {
            lock(&gc.absent).add(absent::key(ns, group, &r.kind, &r.name, &r.uid));
            Ok(Owner::Dangling)
        }
    }
}

/// A dependent's owner references sorted as Kubernetes' `classifyReferences`.
#[derive(Default)]
struct Classes<'a> {
    solid: Vec<&'a OwnerReference>,
    dangling: Vec<&'a OwnerReference>,
    waiting: Vec<&'a OwnerReference>,
}

/// Classifies `refs` of a dependent in `namespace`; None when one of them is invalid.
async fn classify<'a>(
    gc: &Collector,
    namespace: &str,
    refs: &'a [OwnerReference],
) -> Result<Option<Classes<'a>>, ReconcileError> {
    let mut c = Classes::default();
    for r in refs {
        match owner(gc, r, namespace).await? {
            Owner::Dangling => c.dangling.push(r),
            Owner::Invalid => return Ok(None),
            Owner::Live { waiting: true } => c.waiting.push(r),
            Owner::Live { waiting: false } => c.solid.push(r),
        }
    }
    Ok(Some(c))
}

/// Looks at the object `uid`: deletes it when all its owners are gone, removes references to owners
/// that are gone, and lets an owner in foreground deletion go once its blocking dependents are gone.
pub async fn attempt_to_delete(gc: Arc<Collector>, uid: String) -> Result<Requeue, ReconcileError> {
    let Some(node) = gc.graph().node(&uid) else {
        return Ok(None);
    };
    let id = &node.identity;
    let served = resolve(&gc, &id.api_version, &id.kind)?;
    if served.namespaced && id.namespace.is_empty() {
        // A virtual owner first named by a cluster-scoped object (invalid): dependents in a namespace
        // look their owner up themselves.
        tracing::info!(kind = %id.kind, name = %id.name, %uid, "garbage collector: a cluster-scoped object names a namespaced owner; not looked up");
        for d in gc.graph().dependents(&uid) {
            if !d.identity.namespace.is_empty() {
                gc.attempt_to_delete.add(d.identity.uid);
            }
        }
        return Ok(None);
    }
    let ns = scope(&served, &id.namespace);
    let Some(latest) = live(&gc, &served, ns, &id.name, &uid).await? else {
        // Gone (or replaced): its dependents look at their owners.
        lock(&gc.absent).add(absent::key(ns, id.group(), &id.kind, &id.name, &uid));
        for d in &node.dependents {
            gc.attempt_to_delete.add(d.clone());
        }
        return Ok(None);
    };
    if latest.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&latest, FOREGROUND) {
            return deleting_dependents(&gc, &served, &node).await;
        }
        // Being deleted is a one-way trip: wait for its removal.
        return Ok(None);
    }
    if !node.observed {
        // There, but no monitor has seen it (yet): dependents in other namespaces may not see it
        // (they look it up themselves); look again later.
        if served.namespaced {
            for d in gc.graph().dependents(&uid) {
                if d.identity.namespace != id.namespace {
                    gc.attempt_to_delete.add(d.identity.uid);
                }
            }
        }
        return Ok(Some(VIRTUAL_RECHECK));
    }
    let refs = latest.metadata.owner_references.clone().unwrap_or_default();
    if refs.is_empty() {
        return Ok(None);
    }
    let Some(c) = classify(&gc, &id.namespace, &refs).await? else {
        tracing::info!(kind = %id.kind, name = %id.name, %uid, "garbage collector: a cluster-scoped object names a namespaced owner; left alone");
        return Ok(None);
    };
    if !c.solid.is_empty() {
        let gone: Vec<&str> = c
            .dangling
            .iter()
            .chain(&c.waiting)
            .map(|r| r.uid.as_str())
            .collect();
        if !gone.is_empty() {
            remove_references(&gc, &served, &latest, &gone).await?;
        }
        return Ok(None);
    }
    if !c.waiting.is_empty() && !node.dependents.is_empty() {
        let cycle = gc
            .graph()
            .dependents(&uid)
            .iter()
            .any(|d| d.deleting_dependents);
        if cycle {
            // A cycle of foreground deletions: stop blocking the waiting owners.
            unblock(&gc, &served, &latest, &c.waiting).await?;
        }
        delete(&gc, &served, id, PropagationPolicy::Foreground).await?;
        return Ok(None);
    }
    let policy = if has_finalizer(&latest, ORPHAN) {
        PropagationPolicy::Orphan
    } else if has_finalizer(&latest, FOREGROUND) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    delete(&gc, &served, id, policy).await?;
    Ok(None)
}

/// Sets `blockOwnerDeletion: false` on the references to `owners`.
async fn unblock(
    gc: &Collector,
    served: &Served,
    latest: &Meta,
    owners: &[&OwnerReference],
) -> Result<(), ReconcileError> {
    let refs: Vec<OwnerReference> = latest
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|r| {
            let mut r = r.clone();
            if owners.iter().any(|o| o.uid == r.uid) && r.block_owner_deletion == Some(true) {
                r.block_owner_deletion = Some(false);
            }
            r
        })
        .collect();
    let value = serde_json::to_value(&refs).map_err(|e| ReconcileError::Failed(e.to_string()))?;
    patch_meta(gc, served, latest, "ownerReferences", value).await
}

/// An owner in foreground deletion: its blocking dependents (in the graph, confirmed live) are
/// deleted; once none is left, the `foregroundDeletion` finalizer goes.
async fn deleting_dependents(
    gc: &Collector,
    served: &Served,
    node: &Node,
) -> Result<Requeue, ReconcileError> {
    if !gc.synced() {
        return Ok(Some(SYNC_RECHECK));
    }
    let uid = &node.identity.uid;
    let blocking = gc.graph().blocking_dependents(uid);
    let mut waiting = vec![];
    for dep in blocking {
        let id = &dep.identity;
        let s = resolve(gc, &id.api_version, &id.kind)?;
        let Some(m) = live(gc, &s, scope(&s, &id.namespace), &id.name, &id.uid).await? else {
            continue;
        };
        let blocks = m
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == *uid && r.block_owner_deletion == Some(true));
        if blocks {
            waiting.push(dep);
        }
    }
    if waiting.is_empty() {
        remove_finalizer(gc, served, node, FOREGROUND).await?;
        return Ok(None);
    }
    for d in waiting {
        if !d.deleting_dependents {
            gc.attempt_to_delete.add(d.identity.uid);
        }
    }
    Ok(None)
}

/// An owner deleted with the `orphan` finalizer: the references to it are removed from all its
/// dependents, then the finalizer from it.
pub async fn attempt_to_orphan(gc: Arc<Collector>, uid: String) -> Result<Requeue, ReconcileError> {
    if !gc.synced() {
        return Ok(Some(SYNC_RECHECK));
    }
    let Some(node) = gc.graph().node(&uid) else {
        return Ok(None);
    };
    let id = &node.identity;
    let served = resolve(&gc, &id.api_version, &id.kind)?;
    let Some(latest) = live(&gc, &served, scope(&served, &id.namespace), &id.name, &uid).await?
    else {
        return Ok(None);
    };
    if latest.metadata.deletion_timestamp.is_none() || !has_finalizer(&latest, ORPHAN) {
        return Ok(None);
    }
    let mut errors = vec![];
    let dependents = gc.graph().dependents(&uid);
    for dep in dependents {
        let d = &dep.identity;
        let result = async {
            let s = resolve(&gc, &d.api_version, &d.kind)?;
            match live(&gc, &s, scope(&s, &d.namespace), &d.name, &d.uid).await? {
                Some(m) => remove_references(&gc, &s, &m, &[uid.as_str()]).await,
                None => Ok(()),
            }
        }
        .await;
        if let Err(e) = result {
            errors.push(format!("{}/{}: {e}", d.namespace, d.name));
        }
    }
    if !errors.is_empty() {
        return Err(ReconcileError::Failed(format!(
            "orphaning dependents of {}: {}",
            id.name,
            errors.join("; ")
        )));
    }
    remove_finalizer(&gc, &served, &node, ORPHAN).await?;
    Ok(None)
}
