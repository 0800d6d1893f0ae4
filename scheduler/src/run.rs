//! The scheduler's loop: one task owns the cache and the queue; watches feed it, decisions come out
//! of it, and bindings, status updates and events are written by other tasks so the next pod is
//! decided without waiting for the previous write.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use atoll_client::Component;
use atoll_client::events::{EventType, Recorder};
use atoll_client::leader::LeaseConfig;
use atoll_client::lean::Lean;
use atoll_client::watch::forward;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::pod_info::{PodInfo, pod_key};
use crate::queue::Queue;

/// The scheduler name pods ask for when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pods whose `spec.schedulerName` is this (or empty, for the default name) are scheduled.
    pub scheduler_name: String,
    /// Run only while holding this Lease (None: always run).
    pub leader_election: Option<LeaseConfig>,
    /// Where to serve `/metrics` and `/healthz` (None: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// Binding writes in flight at most.
    pub max_binds_in_flight: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            leader_election: None,
            metrics_addr: None,
            max_binds_in_flight: 256,
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Leader election or the metrics endpoint failed.
    #[error(transparent)]
    Client(#[from] atoll_client::Error),
    /// A watch stream ended; the scheduler cannot go on blind.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// Runs the scheduler against the API server `client` talks to, until an error.
pub async fn run(client: kube::Client, config: Config) -> Result<(), Error> {
    run_until(client, config, std::future::pending()).await
}

/// Runs the scheduler until an error or until `shutdown` completes; then it gives up the leader
/// Lease, so another copy takes over at once instead of after the Lease expires.
pub async fn run_until(
    client: kube::Client,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let component = Component {
        lease: config.leader_election.clone(),
        metrics: config.metrics_addr.map(|addr| (addr, registry)),
        health: None,
    };
    let work = schedule(client.clone(), config, metrics);
    component.run(client, work, shutdown).await
}

/// What the watches report.
/// Objects are decoded without their managedFields, which the scheduler never reads.
enum Update {
    Pod(Box<watcher::Event<Lean<Pod>>>),
    Node(Box<watcher::Event<Lean<Node>>>),
    Service(Box<watcher::Event<Lean<Service>>>),
}

/// The result of a binding write.
struct Bound {
    key: String,
    result: Result<(), kube::Error>,
}

/// The scheduling loop (what runs while this copy leads).
async fn schedule(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    let (tx, mut updates) = mpsc::channel(4096);
    let pods = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let watches = [
        forward(
            Api::<Lean<Node>>::all(client.clone()),
            watcher::Config::default(),
            tx.clone(),
            |e| Update::Node(Box::new(e)),
        ),
        forward(
            Api::<Lean<Service>>::all(client.clone()),
            watcher::Config::default(),
            tx.clone(),
            |e| Update::Service(Box::new(e)),
        ),
        forward(Api::<Lean<Pod>>::all(client.clone()), pods, tx, |e| {
            Update::Pod(Box::new(e))
        }),
    ];
    let _stop_watches = AbortOnDrop(watches.iter().map(|w| w.abort_handle()).collect());
    let (bound_tx, mut bound) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        recorder: Recorder::new(client.clone(), &config.scheduler_name, None),
        client,
        binds: Arc::new(Semaphore::new(config.max_binds_in_flight.max(1))),
        config,
        cache: Cache::new(),
        queue: Queue::new(),
        pending: HashMap::new(),
        known_pods: Known::default(),
        known_nodes: Known::default(),
        known_services: Known::default(),
        rng: StdRng::from_os_rng(),
        metrics,
        bound_tx,
    };
    loop {
        // Take in everything the watches and binders reported, then decide a batch of pods.
        while let Ok(u) = updates.try_recv() {
            s.update(u);
        }
        while let Ok(b) = bound.try_recv() {
            s.bound(b);
        }
        s.queue.flush(Instant::now());
        if s.queue.has_active() {
            for _ in 0..64 {
                let Some(key) = s.queue.pop() else { break };
                s.schedule_one(key);
            }
            s.metrics.depths(s.queue.depths());
            tokio::task::yield_now().await;
            continue;
        }
        s.metrics.depths(s.queue.depths());
        let deadline = s.queue.next_deadline();
        tokio::select! {
            u = updates.recv() => match u {
                Some(u) => s.update(u),
                None => return Err(Error::WatchEnded("pod, node or service")),
            },
            Some(b) = bound.recv() => s.bound(b),
            _ = sleep_until(deadline) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Aborts the watch tasks when the loop ends (including when leadership is lost).
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// A pod waiting for a node, and since when.
struct Pending {
    info: Arc<PodInfo>,
    since: Instant,
}

/// The loop's state.
struct Scheduler {
    client: kube::Client,
    config: Config,
    recorder: Recorder,
    cache: Cache,
    queue: Queue,
    /// Unbound pods this scheduler is responsible for.
    pending: HashMap<String, Pending>,
    /// What each watch handed to the cache (to drop what a relist no longer shows).
    known_pods: Known,
    known_nodes: Known,
    known_services: Known,
    rng: StdRng,
    metrics: Arc<Metrics>,
    binds: Arc<Semaphore>,
    bound_tx: mpsc::UnboundedSender<Bound>,
}

/// `namespace/name`.
fn service_key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// The keys one watch handed to the cache, so that when the watch relists (after a gap) the ones
/// the new list no longer shows can be dropped.
#[derive(Default)]
struct Known {
    keys: HashSet<String>,
    /// Keys seen since the relist began.
    relisting: Option<HashSet<String>>,
}

impl Known {
    fn relist(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    fn seen(&mut self, key: &str) {
        if let Some(seen) = self.relisting.as_mut() {
            seen.insert(key.to_string());
        }
        self.keys.insert(key.to_string());
    }

    fn gone(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Ends a relist: the keys it did not show.
    fn relisted(&mut self) -> Vec<String> {
        match self.relisting.take() {
            Some(seen) => self.keys.difference(&seen).cloned().collect(),
            None => vec![],
        }
    }
}

impl Scheduler {
    fn update(&mut self, u: Update) {
        match u {
            Update::Pod(e) => match *e {
                watcher::Event::Init => self.known_pods.relist(),
                watcher::Event::InitApply(p) | watcher::Event::Apply(p) => self.pod_seen(p.0),
                watcher::Event::Delete(p) => self.pod_gone(&pod_key(&p.0)),
                watcher::Event::InitDone => {
                    for key in self.known_pods.relisted() {
                        self.pod_gone(&key);
                    }
                }
            },
            Update::Node(e) => match *e {
                watcher::Event::Init => self.known_nodes.relist(),
                watcher::Event::InitApply(n) | watcher::Event::Apply(n) => {
                    self.known_nodes.seen(&n.name_any());
                    self.cache.upsert_node(Arc::new(n.0));
                    self.queue.cluster_changed(Instant::now());
                }
                watcher::Event::Delete(n) => self.node_gone(&n.name_any()),
                watcher::Event::InitDone => {
                    for name in self.known_nodes.relisted() {
                        self.node_gone(&name);
                    }
                }
            },
            Update::Service(e) => match *e {
                watcher::Event::Init => self.known_services.relist(),
                watcher::Event::InitApply(svc) | watcher::Event::Apply(svc) => {
                    self.known_services.seen(&service_key(&svc.0));
                    self.cache.upsert_service(Arc::new(svc.0));
                }
                watcher::Event::Delete(svc) => self.service_gone(&service_key(&svc.0)),
                watcher::Event::InitDone => {
                    for key in self.known_services.relisted() {
                        self.service_gone(&key);
                    }
                }
            },
        }
    }

    fn service_gone(&mut self, key: &str) {
        self.known_services.gone(key);
        self.cache.remove_service(key);
    }

    fn node_gone(&mut self, name: &str) {
        self.known_nodes.gone(name);
        self.cache.remove_node(name);
    }

    /// A pod as the API shows it now.
    fn pod_seen(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        self.known_pods.seen(&key);
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let mine = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_SCHEDULER_NAME)
            == self.config.scheduler_name;
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let pod = Arc::new(pod);
        self.cache.upsert_pod(pod.clone());
        if bound || !mine || deleting {
            self.pending.remove(&key);
            self.queue.remove(&key);
            return;
        }
        let info = Arc::new(PodInfo::new(pod));
        let priority = info.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let (since, changed) = match self.pending.get(&key) {
            Some(p) => (p.since, p.info.pod.spec != info.pod.spec),
            None => (Instant::now(), false),
        };
        self.pending.insert(key.clone(), Pending { info, since });
        if changed {
            self.queue.pod_changed(&key, Instant::now());
        }
        // A pod whose binding is being written stays out of the queue; the binder's result decides.
        if !self.cache.is_assumed(&key) {
            self.queue.add(&key, priority, Instant::now());
        }
    }

    /// A pod was deleted: its resources are free, which may help unschedulable pods.
    fn pod_gone(&mut self, key: &str) {
        self.known_pods.gone(key);
        let was_placed = self.cache.is_placed(key);
        self.cache.remove_pod(key);
        self.pending.remove(key);
        self.queue.remove(key);
        if was_placed {
            self.queue.cluster_changed(Instant::now());
        }
    }

    /// Decides one pod: assumes it on the chosen node and starts the binding, or reports why it fits
    /// nowhere.
    fn schedule_one(&mut self, key: String) {
        let Some(p) = self.pending.get(&key) else {
            self.queue.remove(&key);
            return;
        };
        if self.cache.is_placed(&key) {
            self.queue.remove(&key);
            return;
        }
        let (info, since) = (p.info.clone(), p.since);
        let start = std::time::Instant::now();
        match self.cache.schedule(&info, &mut self.rng) {
            Ok(node) => {
                self.cache.assume(info.clone(), &node);
                self.metrics
                    .attempt("scheduled", start.elapsed().as_secs_f64());
                self.spawn_bind(key, info, node, since);
            }
            Err(fit) => {
                self.metrics
                    .attempt("unschedulable", start.elapsed().as_secs_f64());
                self.queue.unschedulable(&key, Instant::now());
                self.spawn_report_unschedulable(info, fit.to_string());
            }
        }
    }

    /// The binding write finished.
    fn bound(&mut self, b: Bound) {
        match b.result {
            Ok(()) => self.queue.remove(&b.key),
            Err(e) => {
                tracing::info!(pod = %b.key, "binding failed: {e}");
                self.metrics.attempt("error", 0.0);
                self.cache.forget(&b.key);
                self.queue.retry(&b.key, Instant::now());
                self.queue.cluster_changed(Instant::now());
            }
        }
    }

    fn spawn_bind(&self, key: String, info: Arc<PodInfo>, node: String, since: Instant) {
        let client = self.client.clone();
        let binds = self.binds.clone();
        let done = self.bound_tx.clone();
        let recorder = self.recorder.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let Ok(_permit) = binds.acquire_owned().await else {
                return;
            };
            let pod = &info.pod;
            let namespace = pod.namespace().unwrap_or_default();
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(pod.name_any()),
                    namespace: Some(namespace.clone()),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                },
                target: ObjectReference {
                    kind: Some("Node".into()),
                    api_version: Some("v1".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let api: Api<Pod> = Api::namespaced(client, &namespace);
            let result = api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &pod.name_any(),
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(|_| ());
            let ok = result.is_ok();
            let _ = done.send(Bound { key, result });
            if ok {
                metrics
                    .pod_scheduling_duration
                    .observe(since.elapsed().as_secs_f64());
                let message = format!(
                    "Successfully assigned {namespace}/{} to {node}",
                    pod.name_any()
                );
                recorder
                    .record(
                        &pod.object_ref(&()),
                        EventType::Normal,
                        "Scheduled",
                        &message,
                    )
                    .await;
            }
        });
    }

    /// Sets `PodScheduled=False` (reason `Unschedulable`) with Kubernetes' message, unless the pod
    /// already says so, and records a `FailedScheduling` event.
    fn spawn_report_unschedulable(&self, info: Arc<PodInfo>, message: String) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let pod = &info.pod;
            let said = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref() == Some(message.as_str())
                });
            if !said {
                let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
                let patch = json!({"status": {"conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": null,
                    "lastTransitionTime": jiff::Timestamp::now(),
                }]}});
                if let Err(e) = api
                    .patch_status(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await
                {
                    tracing::info!(pod = %pod.name_any(), "setting PodScheduled=False: {e}");
                }
            }
            recorder
                .record(
                    &pod.object_ref(&()),
                    EventType::Warning,
                    "FailedScheduling",
                    &message,
                )
                .await;
        });
    }
}
