//! The garbage collector, as Kubernetes' (pkg/controller/garbagecollector): monitors ([`monitor`])
//! watch the metadata of every deletable resource into a dependency graph ([`graph`]); workers
//! ([`process`]) then delete dependents whose owners are all gone, remove references to owners that
//! are gone, orphan the dependents of owners deleted with the `orphan` finalizer, and delete the
//! dependents of owners deleted with `foregroundDeletion` before letting the owner go. Every decision
//! is checked against the live objects first; when in doubt, the collector does nothing and says so.

mod absent;
pub mod graph;
pub mod monitor;
mod process;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use kube::Client;

use crate::Context;
use crate::controller;
use crate::discovery::Discovered;
use crate::queue::Queue;
use absent::Absent;
use graph::{Graph, Observed, Work};
use monitor::Monitor;

/// How often the served resources are rediscovered, so that new kinds join the graph.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// Workers per queue (Kubernetes: `--concurrent-gc-syncs`, 20).
const WORKERS: usize = 10;

/// The collector's shared state: graph, monitors, discovery, absent owners and work queues.
pub struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    absent: Mutex<Absent>,
    discovered: RwLock<Option<Arc<Discovered>>>,
    monitors: Mutex<HashMap<String, Monitor>>,
    attempt_to_delete: Queue,
    attempt_to_orphan: Queue,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Collector {
    fn client(&self) -> &Client {
        &self.client
    }

    fn graph(&self) -> MutexGuard<'_, Graph> {
        lock(&self.graph)
    }

    fn lock_monitors(&self) -> MutexGuard<'_, HashMap<String, Monitor>> {
        lock(&self.monitors)
    }

    fn set_discovered(&self, d: Discovered) {
        *self.discovered.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(d));
    }

    fn discovered(&self) -> Option<Arc<Discovered>> {
        self.discovered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether resources have been discovered and every monitor has listed its resource.
    pub fn synced(&self) -> bool {
        self.discovered().is_some()
            && self
                .lock_monitors()
                .values()
                .all(|m| m.synced.load(Ordering::SeqCst))
    }

    fn enqueue(&self, work: Work) {
        for uid in work.delete {
            self.attempt_to_delete.add(uid);
        }
        for uid in work.orphan {
            self.attempt_to_orphan.add(uid);
        }
    }

    fn upsert(&self, obj: Observed) {
        let work = self.graph().upsert(obj);
        self.enqueue(work);
    }

    fn remove(&self, uid: &str) {
        let (work, gone) = self.graph().remove(uid);
        if let Some(id) = gone {
            lock(&self.absent).add(absent::key(
                &id.namespace,
                id.group(),
                &id.kind,
                &id.name,
                &id.uid,
            ));
        }
        self.enqueue(work);
    }

    fn stop_monitors(&self) {
        for (_, m) in self.lock_monitors().drain() {
            m.stop();
        }
    }
}

/// Stops the monitors when the collector is dropped (the controller manager stops or loses its lease).
struct StopMonitors(Arc<Collector>);

impl Drop for StopMonitors {
    fn drop(&mut self) {
        self.0.stop_monitors();
    }
}

/// Starts the garbage collector: discovery and monitors at once, workers once every monitor has
/// listed its resource.
pub fn start(ctx: &Context) -> impl Future<Output = ()> + Send + 'static {
    let gc = Arc::new(Collector {
        client: ctx.client.clone(),
        graph: Mutex::default(),
        absent: Mutex::default(),
        discovered: RwLock::default(),
        monitors: Mutex::default(),
        attempt_to_delete: ctx.metrics.queue("garbage_collector_attempt_to_delete"),
        attempt_to_orphan: ctx.metrics.queue("garbage_collector_attempt_to_orphan"),
    });
    let metrics = ctx.metrics.clone();
    async move {
        let _stop = StopMonitors(gc.clone());
        let resync = monitor::resync(gc.clone(), RESYNC_PERIOD);
        let workers = async {
            while !gc.synced() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::info!(
                objects = gc.graph().len(),
                "garbage collector: all resource monitors have synced"
            );
            let deleter = controller::run(
                "garbage_collector_attempt_to_delete",
                gc.attempt_to_delete.clone(),
                WORKERS,
                &metrics,
                |uid| process::attempt_to_delete(gc.clone(), uid),
            );
            let orphaner = controller::run(
                "garbage_collector_attempt_to_orphan",
                gc.attempt_to_orphan.clone(),
                WORKERS,
                &metrics,
                |uid| process::attempt_to_orphan(gc.clone(), uid),
            );
            futures::join!(deleter, orphaner);
        };
        futures::join!(resync, workers);
    }
}
