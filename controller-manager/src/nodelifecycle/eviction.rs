//! The NoExecute taint manager (Kubernetes' taint eviction controller): a pod bound to a node with
//! NoExecute taints is deleted at once when it does not tolerate one of them, or after the smallest
//! `tolerationSeconds` of the tolerations it uses, counted from when this controller first saw it
//! due for eviction (on its own clock, as Kubernetes does). A toleration without `tolerationSeconds`
//! tolerates forever. A pending eviction is cancelled when the taints go or the pod comes to tolerate
//! them. Before deleting, the pod gets a `DisruptionTarget` condition saying why.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use atoll_client::events::{EventType, Recorder};
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Resource};
use tokio::time::Instant;

use super::podindex::{self, PodsByNode};
use super::podstatus;
use super::taints::{self, Eviction};
use crate::Context;
use crate::controller::{self, ReconcileError, Requeue};
use crate::informer::{self, Informer, Store, split_key};

/// The reason of the events and of the pod condition.
pub const REASON: &str = "TaintManagerEviction";

/// An eviction waiting for its pod's toleration to run out.
#[derive(Debug, Clone)]
struct Pending {
    uid: String,
    since: Instant,
}

/// The taint manager's state.
struct Manager {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    pending: Mutex<HashMap<String, Pending>>,
    recorder: Recorder,
}

/// Whether a pod change may change its eviction: it came or went, moved, changed tolerations or
/// started being deleted.
fn relevant(old: Option<&Pod>, new: Option<&Pod>) -> bool {
    match (old, new) {
        (Some(o), Some(n)) => {
            podindex::node_of(o) != podindex::node_of(n)
                || o.spec.as_ref().map(|s| &s.tolerations)
                    != n.spec.as_ref().map(|s| &s.tolerations)
                || o.metadata.deletion_timestamp != n.metadata.deletion_timestamp
                || o.metadata.uid != n.metadata.uid
        }
        _ => true,
    }
}

/// Starts the taint manager: pod changes queue the pod, a change of a node's NoExecute taints queues
/// every pod bound to it.
pub fn start(
    ctx: &Context,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
    by_node: PodsByNode,
) -> impl Future<Output = ()> + Send + 'static {
    let queue = ctx.metrics.queue("taint-eviction");
    {
        let q = queue.clone();
        pods.on_change(move |old, new| {
            if relevant(old, new)
                && let Some(p) = new.or(old)
            {
                q.add(informer::key(p));
            }
        });
    }
    {
        let q = queue.clone();
        nodes.on_change(move |old, new| {
            let Some(node) = new.or(old) else { return };
            let before = old.map(taints::no_execute).unwrap_or_default();
            let after = new.map(taints::no_execute).unwrap_or_default();
            if before != after {
                let name = node.metadata.name.as_deref().unwrap_or("");
                for key in by_node.pods(name) {
                    q.add(key);
                }
            }
        });
    }
    let manager = Arc::new(Manager {
        client: ctx.client.clone(),
        pods: pods.store(),
        nodes: nodes.store(),
        pending: Mutex::default(),
        recorder: Recorder::new(ctx.client.clone(), "taint-eviction-controller", None),
    });
    let metrics = ctx.metrics.clone();
    async move {
        nodes.synced().await;
        pods.synced().await;
        controller::run("taint-eviction", queue, 4, &metrics, |key| {
            let m = manager.clone();
            async move { m.reconcile(key).await }
        })
        .await
    }
}

impl Manager {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides about one pod: nothing, delete now, or look again when its toleration runs out.
    async fn reconcile(&self, key: String) -> Result<Requeue, ReconcileError> {
        let Some(pod) = self.pods.get_key(&key) else {
            self.pending().remove(&key);
            return Ok(None);
        };
        let node = podindex::node_of(&pod).and_then(|n| self.nodes.get("", n));
        let (Some(node), false) = (node, pod.metadata.deletion_timestamp.is_some()) else {
            self.pending().remove(&key);
            return Ok(None);
        };
        let no_execute = taints::no_execute(&node);
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match taints::eviction(&no_execute, tolerations) {
            Eviction::Never => {
                self.cancel(&key, &pod).await;
                Ok(None)
            }
            Eviction::Now => self.evict(&key, &pod).await,
            Eviction::After(toleration) => {
                let now = Instant::now();
                let since = {
                    let mut pending = self.pending();
                    let p = pending.entry(key.clone()).or_insert_with(|| Pending {
                        uid: uid.clone(),
                        since: now,
                    });
                    if p.uid != uid {
                        *p = Pending { uid, since: now };
                    }
                    p.since
                };
                let Some(due) = since.checked_add(toleration) else {
                    // Beyond any clock: as good as forever.
                    return Ok(None);
                };
                if due <= now {
                    self.evict(&key, &pod).await
                } else {
                    Ok(Some(due - now))
                }
            }
        }
    }

    /// Forgets a pending eviction, telling the pod.
    async fn cancel(&self, key: &str, pod: &Pod) {
        if self.pending().remove(key).is_some() {
            tracing::info!(pod = %key, "cancelling the pod's eviction");
            let message = format!("Cancelling deletion of Pod {key}");
            self.recorder
                .record(&pod.object_ref(&()), EventType::Normal, REASON, &message)
                .await;
        }
    }

    /// Marks the pod a disruption target and deletes it (only this very pod, by its UID).
    async fn evict(&self, key: &str, pod: &Pod) -> Result<Requeue, ReconcileError> {
        let (ns, name) = split_key(key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let target = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            ..Default::default()
        };
        if let Some(conditions) =
            podstatus::with_condition(pod, target, &Time(jiff::Timestamp::now()))
        {
            podstatus::write(&api, pod, &conditions).await?;
        }
        tracing::info!(pod = %key, "evicting the pod from its NoExecute-tainted node");
        let message = format!("Marking for deletion Pod {key}");
        self.recorder
            .record(&pod.object_ref(&()), EventType::Normal, REASON, &message)
            .await;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.pending().remove(key);
        Ok(None)
    }
}
