//! Replication: one controller serving ReplicationControllers (selector map) and apps/v1 ReplicaSets
//! (label selector), through [`Replicated`]. For each owner it claims its pods (adopting matching
//! orphans, releasing pods that stop matching), creates or deletes pods to match `spec.replicas`
//! (creations in growing batches that stop at the first error; the least useful pods deleted first,
//! see [`ranking`]), and writes the status. [`expectations`] keep a slow pod cache from causing double
//! creates or deletes.

pub mod expectations;
pub mod ranking;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use atoll_api::selector::LabelSelector;
use atoll_client::events::{EventType, Recorder};
use atoll_client::lean::Lean;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Context;
use crate::controller::{self, ReconcileError, Requeue};
use crate::informer::{Object, Store, key};
use crate::podutil;
use crate::queue::Queue;
use expectations::Expectations;

/// At most this many pods are created or deleted by one reconcile (Kubernetes' `BurstReplicas`).
pub const BURST: usize = 500;
/// Workers per kind (Kubernetes' `--concurrent-replicaset-syncs` / `--concurrent-rc-syncs`).
pub const WORKERS: usize = 5;

/// A kind whose objects keep a number of pod replicas: ReplicationController or ReplicaSet.
pub trait Replicated:
    Object + Resource<Scope = k8s_openapi::NamespaceResourceScope> + Serialize
{
    /// The controller's name in metrics and logs.
    const CONTROLLER: &'static str;
    /// The component its events are reported by.
    const COMPONENT: &'static str;
    /// `spec.replicas` (default 1).
    fn replicas(&self) -> i32;
    /// The pod selector; an error says why it is unusable.
    fn selector(&self) -> Result<LabelSelector, String>;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// The status as stored.
    fn status_value(&self) -> Value;
}

impl Replicated for ReplicationController {
    const CONTROLLER: &'static str = "replicationcontroller";
    const COMPONENT: &'static str = "replication-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> Result<LabelSelector, String> {
        let map = self.spec.as_ref().and_then(|s| s.selector.clone());
        Ok(LabelSelector::from_map(&map.unwrap_or_default()))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

impl Replicated for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset";
    const COMPONENT: &'static str = "replicaset-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> Result<LabelSelector, String> {
        match &self.spec {
            Some(s) => LabelSelector::from_api(&s.selector),
            None => Ok(LabelSelector::default()),
        }
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

/// Whether `selector` selects `labels`; an empty selector selects nothing (it would take every pod in
/// the namespace, and the API server never stores one).
fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    !selector.is_empty() && selector.matches(labels.unwrap_or(&EMPTY))
}

/// Why creating or deleting pods failed: the `ReplicaFailure` condition's reason, and the error.
type Failure = (&'static str, ReconcileError);

/// The controller of one kind.
struct Replication<K: Replicated> {
    client: kube::Client,
    owners: Store<K>,
    pods: Store<Pod>,
    queue: Queue,
    expectations: Expectations,
    recorder: Recorder,
}

/// Starts the replication controller for kind `K`: registers its handlers now, runs its workers once
/// the pod and owner caches are synced.
pub fn start<K: Replicated>(ctx: &Context) -> impl Future<Output = ()> + Send + 'static {
    let owners = ctx.informers.get::<K>();
    let pods = ctx.informers.get::<Pod>();
    let this = Arc::new(Replication {
        client: ctx.client.clone(),
        owners: owners.store(),
        pods: pods.store(),
        queue: ctx.metrics.queue(K::CONTROLLER),
        expectations: Expectations::default(),
        recorder: Recorder::new(ctx.client.clone(), K::COMPONENT, None),
    });
    let on_owner = this.clone();
    owners.on_change(move |old, new| on_owner.owner_changed(old, new));
    let on_pod = this.clone();
    pods.on_change(move |old, new| on_pod.pod_changed(old, new));
    let metrics = ctx.metrics.clone();
    async move {
        owners.synced().await;
        pods.synced().await;
        let queue = this.queue.clone();
        controller::run(K::CONTROLLER, queue, WORKERS, &metrics, |key| {
            let this = this.clone();
            async move { this.reconcile(key).await }
        })
        .await
    }
}

impl<K: Replicated> Replication<K> {
    fn owner_changed(&self, old: Option<&K>, new: Option<&K>) {
        match (old, new) {
            (_, Some(owner)) => self.queue.add(key(owner)),
            (Some(owner), None) => {
                let k = key(owner);
                self.expectations.forget(&k);
                self.queue.add(k);
            }
            (None, None) => {}
        }
    }

    /// The key of the owner of kind `K` that controls `pod`, if it is in the cache.
    fn owner_key(&self, pod: &Pod) -> Option<String> {
        let r = podutil::controller_of(&pod.metadata)?;
        if r.kind != K::kind(&()) || r.api_version != K::api_version(&()) {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let owner = self.owners.get(ns, &r.name)?;
        (owner.meta().uid.as_deref() == Some(r.uid.as_str())).then(|| key(&*owner))
    }

    /// Queues every owner in the pod's namespace whose selector selects it (an orphan to adopt).
    fn queue_selecting(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        for owner in self.owners.list_namespace(ns) {
            if owner
                .selector()
                .is_ok_and(|s| selects(&s, pod.metadata.labels.as_ref()))
            {
                self.queue.add(key(&*owner));
            }
        }
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let old_owner = old.and_then(|p| self.owner_key(p));
        match new {
            Some(pod) => {
                let owner = self.owner_key(pod);
                if let Some(o) = &old_owner
                    && Some(o) != owner.as_ref()
                {
                    self.queue.add(o.clone());
                }
                match owner {
                    Some(o) => {
                        if podutil::is_deleting(&pod.metadata) {
                            // A pod being deleted is as good as gone for its controller.
                            self.expectations.deletion_observed(&o, &key(pod));
                        } else if old.is_none() {
                            self.expectations.creation_observed(&o);
                        }
                        self.queue.add(o);
                    }
                    None if podutil::controller_of(&pod.metadata).is_none()
                        && !podutil::is_deleting(&pod.metadata) =>
                    {
                        self.queue_selecting(pod)
                    }
                    None => {}
                }
            }
            None => {
                if let (Some(o), Some(pod)) = (old_owner, old) {
                    self.expectations.deletion_observed(&o, &key(pod));
                    self.queue.add(o);
                }
            }
        }
    }

    async fn reconcile(&self, key: String) -> Result<Requeue, ReconcileError> {
        let Some(owner) = self.owners.get_key(&key) else {
            self.expectations.forget(&key);
            return Ok(None);
        };
        let selector = match owner.selector() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(controller = K::CONTROLLER, %key, "unusable selector: {e}");
                return Ok(None);
            }
        };
        let satisfied = self.expectations.satisfied(&key);
        let owned = self.claim(&owner, &selector).await?;
        let active: Vec<Arc<Pod>> = owned
            .into_iter()
            .filter(|p| podutil::is_active(p))
            .collect();
        let failure = if satisfied && !podutil::is_deleting(owner.meta()) {
            self.manage(&owner, &key, &active).await.err()
        } else {
            None
        };
        let (ready, available) = self
            .update_status(&owner, &active, failure.as_ref())
            .await?;
        if let Some((_, e)) = failure {
            return Err(e);
        }
        let min_ready = owner.min_ready_seconds();
        Ok(if !satisfied {
            // Look again when the expectations expire, should an event never come.
            Some(expectations::TIMEOUT)
        } else if min_ready > 0 && ready != available {
            Some(Duration::from_secs(min_ready as u64))
        } else {
            None
        })
    }

    /// The owner's pods: those it controls and still selects, plus matching orphans it adopts; pods it
    /// controls but no longer selects are released.
    async fn claim(
        &self,
        owner: &K,
        selector: &LabelSelector,
    ) -> Result<Vec<Arc<Pod>>, ReconcileError> {
        let ns = owner.namespace().unwrap_or_default();
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let deleting = podutil::is_deleting(owner.meta());
        let (mut owned, mut adopt, mut release) = (vec![], vec![], vec![]);
        for pod in self.pods.list_namespace(&ns) {
            let matches = selects(selector, pod.metadata.labels.as_ref());
            match podutil::controller_of(&pod.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || deleting {
                        owned.push(pod);
                    } else {
                        release.push(pod);
                    }
                }
                Some(_) => {}
                None if matches && !deleting && !podutil::is_deleting(&pod.metadata) => {
                    adopt.push(pod)
                }
                None => {}
            }
        }
        let api: Api<Lean<Pod>> = Api::namespaced(self.client.clone(), &ns);
        if !adopt.is_empty() && self.can_adopt(owner).await? {
            let mine = podutil::controller_ref(owner);
            for pod in adopt {
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(mine.clone());
                match self.set_owners(&api, &pod, refs).await {
                    Ok(p) => owned.push(Arc::new(p.0)),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for pod in release {
            let refs: Vec<_> = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != uid)
                .cloned()
                .collect();
            match self.set_owners(&api, &pod, refs).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(owned)
    }

    /// Whether the owner, read afresh, is still the one cached and not being deleted: adopting for a
    /// stale or dying owner would steal pods from its successor.
    async fn can_adopt(&self, owner: &K) -> Result<bool, ReconcileError> {
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &owner.namespace().unwrap_or_default());
        let fresh = api.get(&owner.name_any()).await?;
        Ok(fresh.meta().uid == owner.meta().uid && !podutil::is_deleting(fresh.meta()))
    }

    /// Writes `refs` as the pod's ownerReferences, if the pod is still as cached.
    async fn set_owners(
        &self,
        api: &Api<Lean<Pod>>,
        pod: &Pod,
        refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    ) -> Result<Lean<Pod>, kube::Error> {
        let patch = json!({"metadata": {
            "resourceVersion": pod.metadata.resource_version,
            "ownerReferences": if refs.is_empty() { Value::Null } else { json!(refs) },
        }});
        api.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    }

    /// Creates or deletes pods so that `active` becomes `spec.replicas`. A failure comes with its
    /// condition reason (`FailedCreate` or `FailedDelete`).
    async fn manage(&self, owner: &K, key: &str, active: &[Arc<Pod>]) -> Result<(), Failure> {
        let want = owner.replicas().max(0) as usize;
        if active.len() < want {
            let n = (want - active.len()).min(BURST);
            self.create(owner, key, n)
                .await
                .map_err(|e| ("FailedCreate", e))
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST);
            let mut ranked = active.to_vec();
            ranking::least_useful_first(&mut ranked);
            ranked.truncate(n);
            self.delete(owner, key, ranked)
                .await
                .map_err(|e| ("FailedDelete", e))
        } else {
            Ok(())
        }
    }

    /// Creates `n` pods in batches of 1, 2, 4, … that stop at the first batch with an error.
    async fn create(&self, owner: &K, key: &str, n: usize) -> Result<(), ReconcileError> {
        let Some(template) = owner.template() else {
            return Err(ReconcileError::Failed(
                "spec.template is missing: no pods can be made".into(),
            ));
        };
        let ns = owner.namespace().unwrap_or_default();
        // Replies are decoded without their managedFields, which nothing here reads.
        let api: Api<Lean<Pod>> = Api::namespaced(self.client.clone(), &ns);
        let pod = Lean(pod_from_template(owner, template));
        let params = PostParams::default();
        self.expectations.expect_creations(key, n);
        let mut left = n;
        let mut batch = 1;
        while left > 0 {
            let size = batch.min(left);
            let results =
                futures::future::join_all((0..size).map(|_| api.create(&params, &pod))).await;
            left -= size;
            let mut error = None;
            for r in results {
                match r {
                    Ok(created) => self.event(
                        owner,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", created.name_any()),
                    ),
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        self.event(
                            owner,
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating: {}", api_message(&e)),
                        );
                        error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = error {
                // The pods not attempted will never be seen either.
                for _ in 0..left {
                    self.expectations.creation_observed(key);
                }
                return Err(e.into());
            }
            batch *= 2;
        }
        Ok(())
    }

    /// Deletes `pods` (at once, concurrently).
    async fn delete(
        &self,
        owner: &K,
        key: &str,
        pods: Vec<Arc<Pod>>,
    ) -> Result<(), ReconcileError> {
        let ns = owner.namespace().unwrap_or_default();
        let api: Api<Lean<Pod>> = Api::namespaced(self.client.clone(), &ns);
        self.expectations
            .expect_deletions(key, pods.iter().map(|p| crate::informer::key(&**p)));
        let results = futures::future::join_all(pods.iter().map(|p| {
            let params = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api = api.clone();
            let name = p.name_any();
            async move { api.delete(&name, &params).await }
        }))
        .await;
        let mut error = None;
        for (pod, r) in pods.iter().zip(results) {
            match r {
                Ok(_) => self.event(
                    owner,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name_any()),
                ),
                Err(e) => {
                    // The deletion will not be seen: stop waiting for it.
                    self.expectations
                        .deletion_observed(key, &crate::informer::key(&**pod));
                    if !is_not_found(&e) {
                        self.event(
                            owner,
                            EventType::Warning,
                            "FailedDelete",
                            format!("Error deleting: {}", api_message(&e)),
                        );
                        error.get_or_insert(e);
                    }
                }
            }
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Records an event on `owner` without waiting for it.
    fn event(&self, owner: &K, kind: EventType, reason: &'static str, message: String) {
        let recorder = self.recorder.clone();
        let object = owner.object_ref(&());
        tokio::spawn(async move { recorder.record(&object, kind, reason, &message).await });
    }

    /// Writes the status computed from `active` (and the failure of this sync, if any) when it differs
    /// from the stored one. Returns the ready and available counts.
    async fn update_status(
        &self,
        owner: &K,
        active: &[Arc<Pod>],
        failure: Option<&Failure>,
    ) -> Result<(i64, i64), ReconcileError> {
        let now = jiff::Timestamp::now();
        let template_labels = owner
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let fully_labeled = active
            .iter()
            .filter(|p| {
                let labels = p.metadata.labels.as_ref();
                template_labels
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .count() as i64;
        let ready = active.iter().filter(|p| podutil::is_ready(p)).count() as i64;
        let min_ready = owner.min_ready_seconds();
        let available = active
            .iter()
            .filter(|p| podutil::is_available(p, min_ready, now))
            .count() as i64;
        let current = owner.status_value();
        let conditions = conditions(&current, failure, now);
        let desired = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": owner.meta().generation.unwrap_or(0),
            "conditions": conditions,
        });
        if !same_status(&current, &desired) {
            let patch = json!({
                "metadata": {"resourceVersion": owner.meta().resource_version},
                "status": desired,
            });
            let api: Api<K> =
                Api::namespaced(self.client.clone(), &owner.namespace().unwrap_or_default());
            match api
                .patch_status(
                    &owner.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((ready, available))
    }
}

/// A new pod from the owner's template, controlled by the owner, named `<owner>-<random>`.
fn pod_from_template<K: Replicated>(owner: &K, template: &PodTemplateSpec) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![podutil::controller_ref(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The status conditions after a sync: a `ReplicaFailure` condition while creating or deleting fails,
/// none once it works again; other conditions are kept.
fn conditions(current: &Value, failure: Option<&Failure>, now: jiff::Timestamp) -> Value {
    let mut kept: Vec<Value> = current["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != "ReplicaFailure")
        .cloned()
        .collect();
    let existing = current["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "ReplicaFailure");
    if let Some((reason, e)) = failure {
        let condition = match existing {
            Some(c) => c.clone(),
            None => json!({
                "type": "ReplicaFailure",
                "status": "True",
                "reason": reason,
                "message": e.to_string(),
                "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }),
        };
        kept.push(condition);
    }
    if kept.is_empty() {
        Value::Null
    } else {
        Value::Array(kept)
    }
}

/// Whether the stored status already says what `desired` does (absent counts as zero, as the API
/// omits zero counts).
fn same_status(current: &Value, desired: &Value) -> bool {
    let n = |v: &Value, f: &str| v.get(f).and_then(Value::as_i64).unwrap_or(0);
    let counts = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ];
    let conditions = |v: &Value| match v.get("conditions") {
        Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()),
        _ => Value::Null,
    };
    counts.iter().all(|f| n(current, f) == n(desired, f))
        && conditions(current) == conditions(desired)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The API server's message for a failed request (its Status message), or the error itself.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}
