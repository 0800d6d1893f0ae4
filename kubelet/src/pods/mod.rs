//! The pods of this node: a watch on the pods bound to it feeds one [`worker::Worker`] per pod; a
//! relist of the runtime every second (the "PLEG") wakes the worker of a pod whose containers
//! changed state; sandboxes of pods the API server no longer has are removed.

pub mod atomic;
pub mod backoff;
pub mod env;
pub mod mounts;
pub mod observe;
pub mod probe;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use atoll_client::events::Recorder;

use crate::Config;
use crate::cri::{Runtime, labels};

/// How often the runtime is relisted for container state changes.
const RELIST: Duration = Duration::from_secs(1);

/// What every pod worker shares.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// The container runtime.
    pub runtime: Runtime,
    /// The kubelet's configuration.
    pub config: Config,
    /// Events as `kubelet` on this node.
    pub recorder: Recorder,
    /// The node's address (pods' `hostIP`).
    pub node_ip: String,
    /// The host's resolvers, for sandboxes' DNS.
    pub host_dns: cri::DnsConfig,
    /// The node's allocatable memory in bytes.
    pub node_memory: u64,
    /// The node's CPUs.
    pub node_cpu: f64,
    /// The kubelet's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The pods the kubelet runs, for the server's `/pods`.
    pub pods: PodSet,
}

/// The pods bound to this node that the kubelet runs, as the API server last sent them; shared with
/// the kubelet server, which lists them on `/pods`.
#[derive(Clone, Default)]
pub struct PodSet(Arc<std::sync::RwLock<BTreeMap<String, Arc<Pod>>>>);

impl PodSet {
    /// The pods, ordered by UID.
    pub fn list(&self) -> Vec<Arc<Pod>> {
        self.0
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn put(&self, uid: &str, pod: Arc<Pod>) {
        if let Ok(mut m) = self.0.write() {
            m.insert(uid.to_string(), pod);
        }
    }

    pub(crate) fn remove(&self, uid: &str) {
        if let Ok(mut m) = self.0.write() {
            m.remove(uid);
        }
    }
}

/// What a worker is told: the pod as the API server has it now (None: gone), and a counter bumped
/// to wake it when only the runtime changed.
#[derive(Clone, Default)]
pub struct Update {
    /// The pod, or None once it is gone from the API server.
    pub pod: Option<Arc<Pod>>,
    /// Bumped when the runtime's state of the pod changed.
    pub pokes: u64,
}

struct Handle {
    updates: watch::Sender<Update>,
    task: JoinHandle<()>,
}

/// Runs the pods bound to this node.
pub struct PodManager {
    ctx: Arc<Context>,
    workers: HashMap<String, Handle>,
    /// Runtime state fingerprints by pod UID, from the last relist.
    fingerprints: HashMap<String, Vec<(String, i32)>>,
    /// Whether the first full list of pods arrived (before that, unknown sandboxes are not orphans).
    synced: bool,
    cleaning: HashSet<String>,
}

impl PodManager {
    /// A manager sharing `ctx` with its workers.
    pub fn new(ctx: Arc<Context>) -> PodManager {
        PodManager {
            ctx,
            workers: HashMap::new(),
            fingerprints: HashMap::new(),
            synced: false,
            cleaning: HashSet::new(),
        }
    }

    /// Watches this node's pods and runs them until the future is dropped.
    pub async fn run(mut self) {
        let pods: Api<Pod> = Api::all(self.ctx.client.clone());
        let selector = format!("spec.nodeName={}", self.ctx.config.node_name);
        let mut stream = watcher(pods, watcher::Config::default().fields(&selector)).boxed();
        let mut relist = tokio::time::interval(RELIST);
        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listing: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(watcher::Event::Init)) => listing = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        if let Some(seen) = listing.as_mut() && let Some(uid) = pod.metadata.uid.clone() {
                            seen.insert(uid);
                        }
                        self.apply(pod);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let seen = listing.take().unwrap_or_default();
                        let gone: Vec<String> = self.workers.keys().filter(|u| !seen.contains(*u)).cloned().collect();
                        for uid in gone {
                            self.gone(&uid);
                        }
                        self.synced = true;
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => self.apply(pod),
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            self.gone(uid);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("watching pods: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => return,
                },
                _ = relist.tick() => {
                    if let Err(e) = self.relist().await {
                        tracing::warn!("relisting the runtime: {e}");
                    }
                }
            }
        }
    }

    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        self.ctx.pods.put(&uid, pod.clone());
        self.workers.retain(|_, h| !h.task.is_finished());
        match self.workers.get(&uid) {
            Some(h) => {
                h.updates.send_modify(|u| u.pod = Some(pod));
            }
            None => {
                let (tx, rx) = watch::channel(Update {
                    pod: Some(pod),
                    pokes: 0,
                });
                let worker = worker::Worker::new(self.ctx.clone(), uid.clone());
                let task = tokio::spawn(worker.run(rx));
                self.workers.insert(uid, Handle { updates: tx, task });
            }
        }
    }

    fn gone(&mut self, uid: &str) {
        self.ctx.pods.remove(uid);
        if let Some(h) = self.workers.get(uid) {
            h.updates.send_modify(|u| u.pod = None);
        }
    }

    /// Removes the directories (volumes, with their mounts, and logs) of pods that have neither a
    /// worker nor anything in the runtime: pods deleted while the kubelet was down.
    fn remove_orphan_dirs(&self, in_runtime: &HashMap<String, Vec<(String, i32)>>) {
        let root = &self.ctx.config.root_dir;
        let orphan = |uid: &str| !self.workers.contains_key(uid) && !in_runtime.contains_key(uid);
        for entry in std::fs::read_dir(root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if orphan(&uid) {
                tracing::info!(uid = %uid, "removing the directory of a pod this node no longer runs");
                match mounts::unmount_under(&entry.path()) {
                    Ok(()) => {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                    Err(e) => tracing::warn!(uid = %uid, "keeping the pod's directory: {e}"),
                }
            }
        }
        for entry in std::fs::read_dir(root.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((_, uid)) = name.rsplit_once('_')
                && orphan(uid)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Sets the running-pod and container-state gauges from a relist.
    fn count(&self, sandboxes: &[cri::PodSandbox], containers: &[cri::Container]) {
        let ready = sandboxes
            .iter()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .count();
        let by_state = |state: cri::ContainerState| {
            containers
                .iter()
                .filter(|c| c.state == state as i32)
                .count()
        };
        self.ctx.metrics.runtime_counts(
            ready,
            &[
                ("created", by_state(cri::ContainerState::ContainerCreated)),
                ("running", by_state(cri::ContainerState::ContainerRunning)),
                ("exited", by_state(cri::ContainerState::ContainerExited)),
                ("unknown", by_state(cri::ContainerState::ContainerUnknown)),
            ],
        );
    }

    /// Relists the runtime: wakes workers whose pod's containers changed, and removes sandboxes of
    /// pods that have no worker.
    async fn relist(&mut self) -> Result<(), crate::Error> {
        let runtime = &self.ctx.runtime;
        let containers = runtime.list_containers().await?;
        let sandboxes = runtime.list_sandboxes().await?;
        let mut now: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        for c in &containers {
            if let Some(uid) = c.labels.get(labels::POD_UID) {
                now.entry(uid.clone())
                    .or_default()
                    .push((c.id.clone(), c.state));
            }
        }
        for s in &sandboxes {
            if let Some(uid) = s.labels.get(labels::POD_UID) {
                now.entry(uid.clone())
                    .or_default()
                    .push((s.id.clone(), s.state + 100));
            }
        }
        for v in now.values_mut() {
            v.sort();
        }
        self.count(&sandboxes, &containers);
        for (uid, fp) in &now {
            if self.fingerprints.get(uid) != Some(fp)
                && let Some(h) = self.workers.get(uid)
            {
                h.updates.send_modify(|u| u.pokes += 1);
            }
        }
        self.workers.retain(|_, h| !h.task.is_finished());
        if self.synced {
            let orphans: BTreeMap<String, Vec<String>> = sandboxes
                .iter()
                .filter_map(|s| Some((s.labels.get(labels::POD_UID)?.clone(), s.id.clone())))
                .filter(|(uid, _)| !self.workers.contains_key(uid) && !self.cleaning.contains(uid))
                .fold(BTreeMap::new(), |mut m, (uid, id)| {
                    m.entry(uid).or_default().push(id);
                    m
                });
            for (uid, ids) in orphans {
                tracing::info!(uid = %uid, "removing the sandboxes of a pod this node no longer runs");
                self.cleaning.insert(uid.clone());
                let runtime = runtime.clone();
                tokio::spawn(async move {
                    for id in ids {
                        if let Err(e) = runtime.stop_sandbox(&id).await {
                            tracing::warn!("stopping orphan sandbox {id}: {e}");
                        }
                        if let Err(e) = runtime.remove_sandbox(&id).await {
                            tracing::warn!("removing orphan sandbox {id}: {e}");
                        }
                    }
                });
            }
            self.cleaning.retain(|uid| now.contains_key(uid));
            self.remove_orphan_dirs(&now);
        }
        self.fingerprints = now;
        Ok(())
    }
}

/// The host's resolvers from `/etc/resolv.conf`, for sandboxes with `dnsPolicy: Default` (and, until
/// cluster DNS exists, ClusterFirst).
pub fn host_dns() -> cri::DnsConfig {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut dns = cri::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(str::to_string)),
            Some("search") => dns.searches = words.map(str::to_string).collect(),
            Some("options") => dns.options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    dns
}
