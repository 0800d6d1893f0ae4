//! The namespace controller, as Kubernetes' (pkg/controller/namespace): a namespace being deleted gets
//! everything in it deleted — every namespaced resource discovery says the server serves, with
//! deletecollection where served, else list and delete — and once nothing is left its `kubernetes`
//! finalizer is removed (`PUT .../finalize`), after which the API server removes it. Until then its
//! `status.conditions` say what blocks, with Kubernetes' condition types, reasons and messages.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};

use crate::Context;
use crate::controller::{self, ReconcileError, Requeue};
use crate::discovery::{self, Discovered, Served};

/// The finalizer of namespace content (in `spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";
/// How long Kubernetes expects content with finalizers to take (its `finalizerEstimateSeconds`).
const FINALIZER_ESTIMATE_SECS: i64 = 15;
/// The longest wait before looking at a namespace whose content is still going.
const MAX_RECHECK: Duration = Duration::from_secs(5);
/// Workers deleting namespaces concurrently.
const WORKERS: usize = 5;

/// The condition types, in the order Kubernetes writes them.
const CONDITION_TYPES: [&str; 5] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

/// Starts the namespace controller: registers its informer handler now, runs its workers once the
/// namespace cache is synced.
pub fn start(ctx: &Context) -> impl Future<Output = ()> + Send + 'static {
    let namespaces = ctx.informers.get::<Namespace>();
    let queue = ctx.metrics.queue("namespace");
    {
        let q = queue.clone();
        namespaces.on_change(move |_, new| {
            if let Some(ns) = new
                && ns.metadata.deletion_timestamp.is_some()
            {
                q.add(ns.name_any());
            }
        });
    }
    let metrics = ctx.metrics.clone();
    let client = ctx.client.clone();
    async move {
        namespaces.synced().await;
        controller::run("namespace", queue, WORKERS, &metrics, |name| {
            reconcile(client.clone(), name)
        })
        .await
    }
}

/// Deletes the content of namespace `name` if it is being deleted, then finalizes it.
async fn reconcile(client: Client, name: String) -> Result<Requeue, ReconcileError> {
    let api: Api<Namespace> = Api::all(client.clone());
    // A live read, as Kubernetes: the cache may still show a namespace that is long gone.
    let Some(ns) = api.get_opt(&name).await? else {
        return Ok(None);
    };
    if ns.metadata.deletion_timestamp.is_none() || !has_finalizer(&ns) {
        return Ok(None);
    }
    let outcome = delete_content(&client, &name).await;
    let ns = write_conditions(&api, ns, &outcome).await?;
    if let Some(e) = outcome.error() {
        return Err(ReconcileError::Failed(e));
    }
    if let Some(wait) = outcome.recheck() {
        tracing::debug!(namespace = %name, "content remains, looking again in {wait:?}");
        return Ok(Some(wait));
    }
    finalize(&api, ns).await
}

fn has_finalizer(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Removes `kubernetes` from `spec.finalizers` with the resourceVersion read.
async fn finalize(api: &Api<Namespace>, mut ns: Namespace) -> Result<Requeue, ReconcileError> {
    if let Some(f) = ns.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
        f.retain(|f| f != FINALIZER);
    }
    match api
        .replace_subresource("finalize", &ns.name_any(), &PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(None),
        Err(e) if code(&e) == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What one pass of deleting a namespace's content found.
#[derive(Debug, Default)]
struct Outcome {
    /// Discovery of some group versions failed (the failing ones named).
    discovery: Option<String>,
    /// Group versions that do not parse.
    parsing: Option<String>,
    /// Deleting or listing some resources failed.
    content: Vec<String>,
    /// Objects remaining, per group-qualified resource.
    remaining: BTreeMap<String, usize>,
    /// Remaining objects per finalizer they carry.
    finalizers: BTreeMap<String, usize>,
    /// Seconds until the remaining content is expected to go.
    estimate: i64,
}

impl Outcome {
    /// Why this pass cannot finalize the namespace, if it failed.
    fn error(&self) -> Option<String> {
        let errs: Vec<&str> = self
            .discovery
            .iter()
            .chain(&self.parsing)
            .chain(&self.content)
            .map(String::as_str)
            .collect();
        (!errs.is_empty()).then(|| errs.join("; "))
    }

    /// How long to wait before looking again, if content remains.
    fn recheck(&self) -> Option<Duration> {
        if self.remaining.is_empty() {
            return None;
        }
        // Kubernetes requeues after estimate/2 + 1 seconds; a namespace here never waits longer than
        // MAX_RECHECK, so it goes soon after its last content does.
        let secs = u64::try_from(self.estimate / 2 + 1).unwrap_or(1);
        Some(Duration::from_secs(secs).min(MAX_RECHECK))
    }

    /// The failure conditions (the ones not listed are "ok"), as Kubernetes' condition updater.
    fn failures(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = vec![];
        if let Some(d) = &self.discovery {
            out.push((CONDITION_TYPES[0], "DiscoveryFailed", d.clone()));
        }
        if let Some(p) = &self.parsing {
            out.push((CONDITION_TYPES[1], "GroupVersionParsingFailed", p.clone()));
        }
        if !self.content.is_empty() {
            out.push((
                CONDITION_TYPES[2],
                "ContentDeletionFailed",
                aggregate(&self.content),
            ));
        }
        if !self.remaining.is_empty() {
            let items: Vec<String> = self
                .remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            out.push((
                CONDITION_TYPES[3],
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", items.join(", ")),
            ));
        }
        if !self.finalizers.is_empty() {
            let items: Vec<String> = self
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            out.push((
                CONDITION_TYPES[4],
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    items.join(", ")
                ),
            ));
        }
        out
    }
}

/// Errors joined as Kubernetes' aggregate error prints them.
fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The reason and message of a condition type that reports no problem.
fn ok_condition(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "NamespaceDeletionDiscoveryFailure" => (
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        "NamespaceDeletionGroupVersionParsingFailure" => (
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        "NamespaceDeletionContentFailure" => (
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        "NamespaceContentRemaining" => ("ContentRemoved", "All content successfully removed"),
        _ => (
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        ),
    }
}

/// Sets the five conditions on `status`, keeping those whose status, reason and message are
/// unchanged (with their transition time). Returns whether anything changed.
fn update_conditions(status: &mut NamespaceStatus, outcome: &Outcome) -> bool {
    let failures = outcome.failures();
    let now = Time(jiff::Timestamp::now());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for kind in CONDITION_TYPES {
        let (st, reason, message) = match failures.iter().find(|(t, _, _)| *t == kind) {
            Some((_, reason, message)) => ("True", *reason, message.clone()),
            None => {
                let (reason, message) = ok_condition(kind);
                ("False", reason, message.to_string())
            }
        };
        let new = NamespaceCondition {
            type_: kind.to_string(),
            status: st.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time: Some(now.clone()),
        };
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            None => {
                conditions.push(new);
                changed = true;
            }
            Some(old)
                if old.status != new.status
                    || old.reason != new.reason
                    || old.message != new.message =>
            {
                *old = new;
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

/// Writes the conditions through `namespaces/{name}/status` when they changed; returns the namespace
/// as stored.
async fn write_conditions(
    api: &Api<Namespace>,
    mut ns: Namespace,
    outcome: &Outcome,
) -> Result<Namespace, ReconcileError> {
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    if !update_conditions(status, outcome) {
        return Ok(ns);
    }
    Ok(api
        .replace_status(&ns.name_any(), &PostParams::default(), &ns)
        .await?)
}

/// Deletes everything in namespace `ns` and reports what is left.
async fn delete_content(client: &Client, ns: &str) -> Outcome {
    let mut out = Outcome::default();
    let found = match discovery::discover(client).await {
        Ok(d) => d,
        Err(e) => {
            out.discovery = Some(format!("Discovery failed for some groups, 0 failing: {e}"));
            return out;
        }
    };
    note_discovery_problems(&found, &mut out);
    for served in &found.resources {
        if !served.namespaced || !served.supports(&["list", "delete"]) {
            continue;
        }
        match delete_resource(client, served, ns).await {
            Ok(left) => {
                out.estimate = out.estimate.max(left.estimate);
                if left.count > 0 {
                    out.remaining.insert(served.group_resource(), left.count);
                    for (f, n) in left.finalizers {
                        *out.finalizers.entry(f).or_default() += n;
                    }
                }
                if let Some(e) = left.unexpected {
                    out.content.push(e);
                }
            }
            Err(e) => out.content.push(e),
        }
    }
    out
}

fn note_discovery_problems(found: &Discovered, out: &mut Outcome) {
    if !found.failed.is_empty() {
        let each: Vec<String> = found
            .failed
            .iter()
            .map(|(gv, e)| format!("{gv}: {e}"))
            .collect();
        out.discovery = Some(format!(
            "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
            found.failed.len(),
            each.join(", ")
        ));
    }
    if !found.unparsable.is_empty() {
        out.parsing = Some(format!(
            "unable to parse group versions: {}",
            found.unparsable.join(", ")
        ));
    }
}

/// What is left of one resource in a namespace after deleting it.
#[derive(Debug, Default)]
struct Left {
    count: usize,
    finalizers: BTreeMap<String, usize>,
    estimate: i64,
    /// Objects remain that nothing explains (no finalizer, no grace period).
    unexpected: Option<String>,
}

/// Whether an error means the server does not serve this operation here (404 or 405).
fn unsupported(e: &kube::Error) -> bool {
    matches!(code(e), Some(404 | 405))
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Deletes every object of `served` in `ns` (background propagation, as Kubernetes) and lists what
/// remains.
async fn delete_resource(client: &Client, served: &Arc<Served>, ns: &str) -> Result<Left, String> {
    let api = served.metadata(client, Some(ns));
    let gr = served.group_resource();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let lp = ListParams::default();
    let mut collected = false;
    if served.supports(&["deletecollection"]) {
        match api.delete_collection(&dp, &lp).await {
            Ok(_) => collected = true,
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(format!("failed to delete {gr} in {ns}: {e}")),
        }
    }
    if !collected {
        let items = match api.list(&lp).await {
            Ok(l) => l.items,
            Err(e) if unsupported(&e) => return Ok(Left::default()),
            Err(e) => return Err(format!("failed to list {gr} in {ns}: {e}")),
        };
        let mut errs = vec![];
        for item in items {
            match api.delete(&item.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if unsupported(&e) => {}
                Err(e) => errs.push(format!("{e}")),
            }
        }
        if !errs.is_empty() {
            return Err(format!(
                "failed to delete {gr} in {ns}: {}",
                aggregate(&errs)
            ));
        }
    }
    let items = match api.list(&lp).await {
        Ok(l) => l.items,
        Err(e) if unsupported(&e) => return Ok(Left::default()),
        Err(e) => return Err(format!("failed to list {gr} in {ns}: {e}")),
    };
    let mut left = Left {
        count: items.len(),
        ..Left::default()
    };
    let now = jiff::Timestamp::now();
    let mut explained = 0;
    for item in &items {
        let m = &item.metadata;
        let finalizers = m.finalizers.as_deref().unwrap_or_default();
        for f in finalizers {
            *left.finalizers.entry(f.clone()).or_default() += 1;
        }
        let grace_left = m
            .deletion_timestamp
            .as_ref()
            .filter(|_| m.deletion_grace_period_seconds.unwrap_or(0) > 0)
            .map(|t| (t.0.as_second() - now.as_second()).max(1));
        if let Some(secs) = grace_left {
            left.estimate = left.estimate.max(secs);
            explained += 1;
        } else if !finalizers.is_empty() {
            left.estimate = left.estimate.max(FINALIZER_ESTIMATE_SECS);
            explained += 1;
        }
    }
    if explained < items.len() {
        // Deleted a moment ago and still listed (a lagging cache), or undeletable: try again soon.
        left.estimate = left.estimate.max(1);
        left.unexpected = Some(format!(
            "unexpected items still remain in namespace: {ns} for gvr: {}/{}, Resource={}",
            served.resource.group, served.resource.version, served.resource.plural
        ));
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_as_kubernetes_writes_them() {
        let mut out = Outcome::default();
        out.remaining.insert("pods.".into(), 2);
        out.remaining.insert("configmaps.".into(), 1);
        out.finalizers.insert("example.com/x".into(), 1);
        out.estimate = FINALIZER_ESTIMATE_SECS;
        let mut status = NamespaceStatus::default();
        assert!(update_conditions(&mut status, &out));
        let conds = status.conditions.clone().unwrap_or_default();
        assert_eq!(conds.len(), 5);
        let get = |t: &str| conds.iter().find(|c| c.type_ == t).cloned();
        let remaining = get("NamespaceContentRemaining").expect("remaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some(
                "Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances"
            )
        );
        let fin = get("NamespaceFinalizersRemaining").expect("finalizers");
        assert_eq!(
            fin.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances"
            )
        );
        let disc = get("NamespaceDeletionDiscoveryFailure").expect("discovery");
        assert_eq!(disc.status, "False");
        assert_eq!(disc.reason.as_deref(), Some("ResourcesDiscovered"));
        // The same outcome changes nothing (transition times are kept).
        assert!(!update_conditions(&mut status, &out));
        assert_eq!(out.recheck(), Some(MAX_RECHECK));
        assert!(Outcome::default().recheck().is_none());
    }
}
