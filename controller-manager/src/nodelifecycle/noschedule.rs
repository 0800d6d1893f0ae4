//! The NoSchedule taints that mirror node conditions (Kubernetes' TaintNodesByCondition): Ready
//! `False` → `node.kubernetes.io/not-ready`, Ready `Unknown` → `node.kubernetes.io/unreachable`,
//! MemoryPressure/DiskPressure/PIDPressure/NetworkUnavailable `True` → their taints, and
//! `spec.unschedulable` → `node.kubernetes.io/unschedulable`; each taken off when its condition goes.
//! Not rate limited: they only keep new pods away.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::taints;
use crate::Context;
use crate::controller::{self, ReconcileError, Requeue};
use crate::informer::{self, Informer, Store};

/// Starts the NoSchedule tainter: every node change queues the node.
pub fn start(
    ctx: &Context,
    nodes: Arc<Informer<Node>>,
) -> impl Future<Output = ()> + Send + 'static {
    let queue = ctx.metrics.queue("node-lifecycle-noschedule");
    {
        let q = queue.clone();
        nodes.on_change(move |_, new| {
            if let Some(n) = new {
                q.add(informer::key(n));
            }
        });
    }
    let metrics = ctx.metrics.clone();
    let api: Api<Node> = Api::all(ctx.client.clone());
    async move {
        nodes.synced().await;
        let store = nodes.store();
        controller::run("node-lifecycle-noschedule", queue, 2, &metrics, |key| {
            reconcile(api.clone(), store.clone(), key)
        })
        .await
    }
}

/// Brings one node's condition taints in line with its conditions.
async fn reconcile(
    api: Api<Node>,
    nodes: Store<Node>,
    key: String,
) -> Result<Requeue, ReconcileError> {
    let Some(node) = nodes.get_key(&key) else {
        return Ok(None);
    };
    let (add, remove) = taints::no_schedule_diff(&node);
    if add.is_empty() && remove.is_empty() {
        return Ok(None);
    }
    if taints::swap_taints(&api, &node, &add, &remove).await? {
        let keys = |t: &[k8s_openapi::api::core::v1::Taint]| {
            t.iter()
                .map(|t| t.key.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        tracing::info!(node = %key, added = %keys(&add), removed = %keys(&remove), "NoSchedule condition taints");
    }
    Ok(None)
}
