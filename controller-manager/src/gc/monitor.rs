//! The collector's monitors: one metadata-only list+watch per deletable resource, feeding the graph,
//! and the periodic rediscovery that starts monitors for resources the server begins serving and
//! stops those it no longer serves.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use atoll_client::lean::Lean;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, DynamicResourceScope};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::{Deserialize, Deserializer};

use super::Collector;
use super::graph::{Identity, Observed};
use crate::discovery::{self, Discovered, Meta, Served};

/// An object's metadata decoded without its managedFields ([`Lean`]), requested metadata-only
/// (`as=PartialObjectMetadata`): what a monitor watches.
#[derive(Debug, Clone)]
struct LeanMeta(Meta);

impl<'de> Deserialize<'de> for LeanMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Lean::<Meta>::deserialize(d).map(|l| LeanMeta(l.0))
    }
}

impl Resource for LeanMeta {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn metadata_api() -> bool {
        true
    }
    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        Meta::kind(dt)
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        Meta::group(dt)
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        Meta::version(dt)
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        Meta::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// Resources the collector ignores, as Kubernetes' default (group, resource).
const IGNORED: [(&str, &str); 2] = [("", "events"), ("events.k8s.io", "events")];

/// One running monitor.
pub struct Monitor {
    task: tokio::task::JoinHandle<()>,
    /// Set once its first list is in the graph.
    pub synced: Arc<AtomicBool>,
}

impl Monitor {
    /// Stops the monitor.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// The monitor key of a resource.
fn monitor_key(s: &Served) -> String {
    format!("{}/{}", s.resource.group, s.resource.plural)
}

/// Whether the collector tracks `s`: it can be listed, watched and deleted, and is not ignored.
fn deletable(s: &Served) -> bool {
    s.supports(&["list", "watch", "delete"])
        && !IGNORED
            .iter()
            .any(|(g, r)| s.resource.group == *g && s.resource.plural == *r)
}

/// Brings the monitors in line with what discovery found: starts missing ones, stops those of
/// resources no longer served (unless discovery of their group failed).
pub fn sync_monitors(gc: &Arc<Collector>, found: &Discovered) {
    let wanted: HashMap<String, &Arc<Served>> = found
        .resources
        .iter()
        .filter(|s| deletable(s))
        .map(|s| (monitor_key(s), s))
        .collect();
    let mut monitors = gc.lock_monitors();
    let stale: Vec<String> = monitors
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .filter(|k| {
            let group = k.split_once('/').map_or("", |(g, _)| g);
            !found.group_failed(group)
        })
        .cloned()
        .collect();
    for k in stale {
        if let Some(m) = monitors.remove(&k) {
            tracing::info!(resource = %k, "garbage collector: resource no longer served, monitor stopped");
            m.stop();
        }
    }
    for (k, served) in wanted {
        if monitors.contains_key(&k) {
            continue;
        }
        let synced = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(gc.clone(), served.clone(), synced.clone()));
        tracing::debug!(resource = %k, "garbage collector: monitor started");
        monitors.insert(k, Monitor { task, synced });
    }
}

/// The graph's view of one observed object (None without a uid).
fn observed(served: &Served, m: &LeanMeta) -> Option<Observed> {
    let meta = m.meta();
    let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
    Some(Observed {
        identity: Identity {
            api_version: served.resource.api_version.clone(),
            kind: served.resource.kind.clone(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid,
        },
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    })
}

/// Lists and watches `served` by metadata, feeding the graph, until stopped. After every (re)list,
/// objects that were not listed again are removed from the graph.
async fn run(gc: Arc<Collector>, served: Arc<Served>, synced: Arc<AtomicBool>) {
    let api: Api<LeanMeta> = Api::all_with(gc.client().clone(), &served.resource);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut known: HashSet<String> = HashSet::new();
    let mut listing: Vec<Observed> = vec![];
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(m)) => listing.extend(observed(&served, &m)),
            Ok(watcher::Event::InitDone) => {
                let listed: HashSet<String> =
                    listing.iter().map(|o| o.identity.uid.clone()).collect();
                for o in std::mem::take(&mut listing) {
                    gc.upsert(o);
                }
                for gone in known.difference(&listed) {
                    gc.remove(gone);
                }
                known = listed;
                synced.store(true, Ordering::SeqCst);
            }
            Ok(watcher::Event::Apply(m)) => {
                if let Some(o) = observed(&served, &m) {
                    known.insert(o.identity.uid.clone());
                    gc.upsert(o);
                }
            }
            Ok(watcher::Event::Delete(m)) => {
                if let Some(uid) = m.meta().uid.as_deref() {
                    known.remove(uid);
                    gc.remove(uid);
                }
            }
            Err(e) => {
                tracing::warn!(resource = %monitor_key(&served), "garbage collector watch: {e}")
            }
        }
    }
}

/// Rediscovers the served resources every `period`, keeping the monitors in line, forever.
pub async fn resync(gc: Arc<Collector>, period: std::time::Duration) {
    loop {
        match discovery::discover(gc.client()).await {
            Ok(found) => {
                for (gv, e) in &found.failed {
                    tracing::warn!(group_version = %gv, "garbage collector discovery: {e}");
                }
                sync_monitors(&gc, &found);
                gc.set_discovered(found);
            }
            Err(e) => tracing::warn!("garbage collector discovery failed: {e}"),
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_decode_metadata_without_managed_fields() {
        let json = serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "a", "uid": "u", "managedFields": [{"manager": "m", "operation": "Update"}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "o1"}]}});
        let m: LeanMeta = serde_json::from_value(json).expect("decodes");
        assert!(m.meta().managed_fields.is_none());
        assert_eq!(m.meta().owner_references.as_ref().map(Vec::len), Some(1));
        assert!(LeanMeta::metadata_api());
    }
}
