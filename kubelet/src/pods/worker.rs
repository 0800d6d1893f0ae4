//! One pod worker per pod: it reconciles the pod's spec against what the runtime has (sandbox, init
//! containers in order, app containers by restart policy with crash-loop back-off), reports the pod's
//! status, and on deletion stops the containers within the grace period (preStop hooks first), tears
//! the sandbox down and confirms the deletion.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio::sync::{Notify, watch};

use atoll_client::events::EventType;

use super::backoff::Backoff;
use super::env::{self, EnvContext, Sources};
use super::observe::{Observed, Record, State};
use super::probe;
use super::spec::{self, ContainerInputs, Qos, SandboxInputs};
use super::status::{self, StatusInputs, Waiting};
use super::volumes;
use super::{Context, Update};
use crate::Error;

/// How often a pod is synced when nothing happens to it.
const RESYNC: Duration = Duration::from_secs(10);
/// How soon a failed sync is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// The least time a container is given to stop, as Kubernetes does.
const MIN_GRACE: Duration = Duration::from_secs(2);
/// Exited containers kept per container name (the current one and the previous, for `--previous` logs).
const KEEP_EXITED: usize = 2;

/// What the worker does after a pass.
enum Next {
    /// Sync again after this long, or when told.
    Resync(Duration),
    /// The pod is gone and cleaned up: the worker ends.
    Done,
}

/// The worker of one pod.
pub struct Worker {
    ctx: Arc<Context>,
    uid: String,
    crash: Backoff,
    pulls: Backoff,
    pull_failures: HashMap<String, Duration>,
    waiting: HashMap<String, Waiting>,
    start_time: Option<Time>,
    posted: Option<serde_json::Value>,
    pod_ips: (String, Vec<String>),
    last_pod: Option<Arc<Pod>>,
    probes: probe::Table,
    probers: HashMap<String, tokio::task::JoinHandle<()>>,
    wake: Arc<Notify>,
    /// When the worker first saw the pod; None once the pod was reported Running.
    seen: Option<std::time::Instant>,
}

fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn nanos(d: i64) -> Duration {
    Duration::from_nanos(d.max(0) as u64)
}

fn reference(pod: &Pod, container: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: container.map(|c| format!("spec.containers{{{c}}}")),
    }
}

fn pod_id(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The grace period for stopping a pod: the deletion's, else the spec's, else 30 s.
fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64).max(MIN_GRACE)
}

impl Worker {
    /// A worker for the pod with `uid`.
    pub fn new(ctx: Arc<Context>, uid: String) -> Worker {
        let initial = ctx.config.crash_backoff;
        Worker {
            ctx,
            uid,
            crash: Backoff::with_initial(initial),
            pulls: Backoff::with_initial(initial),
            pull_failures: HashMap::new(),
            waiting: HashMap::new(),
            start_time: None,
            posted: None,
            pod_ips: (String::new(), Vec::new()),
            last_pod: None,
            probes: probe::Table::default(),
            probers: HashMap::new(),
            wake: Arc::new(Notify::new()),
            seen: Some(std::time::Instant::now()),
        }
    }

    /// Runs until the pod is gone from the API server and from the runtime. A pass's future is boxed
    /// for its duration only, so an idle worker stays small (thousands of them on a hollow node).
    pub async fn run(mut self, mut updates: watch::Receiver<Update>) {
        loop {
            let pod = updates.borrow_and_update().pod.clone();
            let next = match pod {
                Some(pod) => {
                    self.last_pod = Some(pod.clone());
                    let result = if pod.metadata.deletion_timestamp.is_some() {
                        Box::pin(self.terminate(&pod)).await
                    } else {
                        Box::pin(self.sync(&pod)).await
                    };
                    result.unwrap_or_else(|e| {
                        tracing::warn!(pod = %pod_id(&pod), "sync failed: {e}");
                        Next::Resync(RETRY)
                    })
                }
                None => match Box::pin(self.remove()).await {
                    Ok(()) => Next::Done,
                    Err(e) => {
                        tracing::warn!(uid = %self.uid, "cleaning up a removed pod: {e}");
                        Next::Resync(RETRY)
                    }
                },
            };
            match next {
                Next::Done => {
                    self.stop_probers(&[]);
                    return;
                }
                Next::Resync(after) => {
                    let wake = self.wake.clone();
                    tokio::select! {
                        changed = updates.changed() => if changed.is_err() {
                            self.stop_probers(&[]);
                            return;
                        },
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(after) => {}
                    }
                }
            }
        }
    }

    async fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        let recorder = self.ctx.recorder.clone();
        let object = reference(pod, container);
        let reason = reason.to_string();
        tokio::spawn(async move { recorder.record(&object, kind, &reason, &message).await });
    }

    /// One pass for a live pod.
    async fn sync(&mut self, pod: &Pod) -> Result<Next, Error> {
        let ctx = self.ctx.clone();
        let runtime = &ctx.runtime;
        let mut observed = Observed::read(runtime, &self.uid).await?;
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .or_else(|| Some(Time(jiff::Timestamp::now())));
        }
        let qos = spec::qos(pod);
        let mut wake = RESYNC;
        if is_terminal(pod) {
            self.stop_sandboxes(&observed).await?;
            return Ok(Next::Resync(RESYNC * 6));
        }
        let sandbox = match observed.ready_sandbox() {
            Some(s) => s.clone(),
            None => {
                let attempt = observed.sandboxes.first().map_or(0, |s| s.attempt + 1);
                if !observed.sandboxes.is_empty() {
                    self.event(
                        pod,
                        None,
                        EventType::Normal,
                        "SandboxChanged",
                        "Pod sandbox changed, it will be killed and re-created.".into(),
                    )
                    .await;
                    self.kill_containers(pod, &observed, MIN_GRACE).await;
                    self.stop_sandboxes(&observed).await?;
                }
                let config = self.sandbox_config(pod, qos, attempt);
                if let Err(e) = runtime.run_sandbox(config).await {
                    self.event(
                        pod,
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    )
                    .await;
                    return Ok(Next::Resync(RETRY * 2));
                }
                observed = Observed::read(runtime, &self.uid).await?;
                match observed.ready_sandbox() {
                    Some(s) => s.clone(),
                    None => return Ok(Next::Resync(RETRY)),
                }
            }
        };
        if self.pod_ips.0 != sandbox.id {
            let status = runtime.sandbox_status(&sandbox.id).await?;
            let mut ips: Vec<String> = status
                .network
                .iter()
                .map(|n| n.ip.clone())
                .filter(|ip| !ip.is_empty())
                .collect();
            ips.extend(
                status
                    .network
                    .iter()
                    .flat_map(|n| n.additional_ips.iter().map(|i| i.ip.clone())),
            );
            self.pod_ips = (sandbox.id.clone(), ips);
        }

        // Containers of the current sandbox only: those of an old sandbox are history.
        let current = |observed: &Observed, name: &str, init: bool| -> Option<Record> {
            observed
                .of(name, init)
                .find(|r| r.sandbox_id == sandbox.id)
                .cloned()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = restart_policy(pod).to_string();
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            match current(&observed, &c.name, true) {
                Some(r) if r.state == State::Exited && r.exit_code == 0 => {
                    self.waiting.remove(&c.name);
                    continue;
                }
                Some(r) if r.state == State::Running => {}
                Some(r) if r.state == State::Exited => {
                    if policy != "Never"
                        && let Some(after) = self
                            .restart(pod, c, true, &sandbox.id, qos, &observed, Some(&r))
                            .await
                    {
                        wake = wake.min(after);
                    }
                }
                latest => {
                    let prior = latest.or_else(|| observed.latest(&c.name, true).cloned());
                    if let Some(after) = self
                        .start(
                            pod,
                            c,
                            true,
                            &sandbox.id,
                            qos,
                            &observed,
                            prior.as_ref().map_or(0, |r| r.attempt + 1),
                        )
                        .await
                    {
                        wake = wake.min(after);
                    }
                }
            }
            initialized = false;
            break;
        }
        if initialized {
            for c in &spec.containers {
                match current(&observed, &c.name, false) {
                    Some(r) if r.state == State::Running => {
                        if let Some(message) = self.probes.get(&r.id).and_then(|v| v.unhealthy) {
                            self.event(
                                pod,
                                Some(&c.name),
                                EventType::Warning,
                                "Unhealthy",
                                message,
                            )
                            .await;
                            let why = if self.probes.get(&r.id).is_some_and(|v| !v.started) {
                                "startup"
                            } else {
                                "liveness"
                            };
                            self.event(
                                pod,
                                Some(&c.name),
                                EventType::Normal,
                                "Killing",
                                format!(
                                    "Container {} failed {why} probe, will be restarted",
                                    c.name
                                ),
                            )
                            .await;
                            self.stop_container(pod, c, &r.id, grace_period(pod)).await;
                            self.probes.remove(&r.id);
                            wake = RETRY.min(wake);
                        } else if r.hash != spec::container_hash(c) {
                            self.event(
                                pod,
                                Some(&c.name),
                                EventType::Normal,
                                "Killing",
                                format!(
                                    "Container {} definition changed, will be restarted",
                                    c.name
                                ),
                            )
                            .await;
                            self.stop_container(pod, c, &r.id, grace_period(pod)).await;
                            wake = RETRY.min(wake);
                        }
                    }
                    Some(r) if r.state == State::Exited => {
                        let restart =
                            policy == "Always" || (policy == "OnFailure" && r.exit_code != 0);
                        if restart
                            && let Some(after) = self
                                .restart(pod, c, false, &sandbox.id, qos, &observed, Some(&r))
                                .await
                        {
                            wake = wake.min(after);
                        }
                    }
                    latest => {
                        let prior = latest
                            .clone()
                            .or_else(|| observed.latest(&c.name, false).cloned());
                        if let Some(r) = &latest {
                            // Created but never started (a start that failed): replace it.
                            let _ = runtime.remove_container(&r.id).await;
                        }
                        let attempt = match (&latest, &prior) {
                            (Some(r), _) => r.attempt,
                            (None, Some(p)) => p.attempt + 1,
                            (None, None) => 0,
                        };
                        if let Some(after) = self
                            .start(pod, c, false, &sandbox.id, qos, &observed, attempt)
                            .await
                        {
                            wake = wake.min(after);
                        }
                    }
                }
            }
        }
        let observed = Observed::read(runtime, &self.uid).await?;
        if observed
            .containers
            .iter()
            .any(|r| r.state == State::Running)
        {
            self.refresh_volumes(pod).await;
        }
        self.run_probers(pod, &observed);
        self.collect_garbage(&observed).await;
        let status = self.post_status(pod, &observed, true, qos).await?;
        if matches!(status.as_deref(), Some("Succeeded" | "Failed")) {
            self.stop_sandboxes(&observed).await?;
        }
        Ok(Next::Resync(wake))
    }

    fn sandbox_config(&self, pod: &Pod, qos: Qos, attempt: u32) -> k8s_cri::v1::PodSandboxConfig {
        let cfg = &self.ctx.config;
        let log_directory = spec::log_directory(&cfg.root_dir.join("logs"), pod);
        if !self.ctx.runtime.is_hollow() {
            let _ = std::fs::create_dir_all(&log_directory);
        }
        spec::sandbox_config(
            pod,
            &SandboxInputs {
                cgroup_parent: spec::cgroup_parent(&cfg.cgroup_root, qos, &self.uid),
                log_directory: log_directory.display().to_string(),
                host_dns: &self.ctx.host_dns,
                attempt,
            },
        )
    }

    /// Restarts an exited container unless it is backing off; returns when to look again.
    #[allow(clippy::too_many_arguments)]
    async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        sandbox: &str,
        qos: Qos,
        observed: &Observed,
        exited: Option<&Record>,
    ) -> Option<Duration> {
        let r = exited?;
        let key = format!("{}/{}", if init { "init" } else { "app" }, c.name);
        let failed_at = nanos(r.finished_at);
        let wait = self.crash.remaining(&key, failed_at, now_since_epoch());
        if !wait.is_zero() {
            let delay = self.crash.delay(&key);
            let message = format!(
                "back-off {}s restarting failed container={} pod={}",
                delay.as_secs(),
                c.name,
                pod_id(pod)
            );
            if self.waiting.get(&c.name).map(|w| w.reason.as_str()) != Some("CrashLoopBackOff") {
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod_id(pod)
                    ),
                )
                .await;
            }
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message,
                },
            );
            return Some(wait);
        }
        self.crash.retried(&key, failed_at, now_since_epoch());
        self.start(pod, c, init, sandbox, qos, observed, r.attempt + 1)
            .await
    }

    /// Pulls (per policy), creates and starts a container; on failure records why it waits and
    /// returns when to try again.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        sandbox_id: &str,
        qos: Qos,
        observed: &Observed,
        attempt: u32,
    ) -> Option<Duration> {
        let _ = observed;
        let image = c.image.clone().unwrap_or_default();
        if let Err(after) = self.ensure_image(pod, c, &image).await {
            return Some(after);
        }
        let ctx = self.ctx.clone();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut sources = Sources::new(ctx.client.clone(), &namespace);
        let env_ctx = self.env_context();
        let prepared = async {
            let env = env::resolve(pod, c, &env_ctx, &mut sources)
                .await
                .map_err(|e| ("CreateContainerConfigError", e))?;
            let vols = self
                .prepare_volumes(pod, &sources, &env_ctx)
                .await
                .map_err(|e| ("FailedMount", e))?;
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            // A hollow runtime mounts nothing: no hosts file or termination log to write.
            let hollow = ctx.runtime.is_hollow();
            let hosts = if host_network || hollow {
                None
            } else {
                Some(
                    volumes::write_hosts(
                        &ctx.config.root_dir,
                        pod,
                        env_ctx.pod_ips.first().map(String::as_str),
                    )
                    .map_err(|e| ("FailedMount", e))?,
                )
            };
            let mounts = volumes::mounts(c, &vols, hosts.as_deref())
                .map_err(|e| ("CreateContainerConfigError", e))?;
            let mut mounts = mounts;
            if !hollow
                && let Some(m) = volumes::termination_log(&ctx.config.root_dir, pod, c, attempt)
                    .map_err(|e| ("CreateContainerConfigError", e))?
            {
                mounts.push(m);
            }
            Ok::<_, (&str, String)>((env, mounts))
        }
        .await;
        let (env, mounts) = match prepared {
            Ok(p) => p,
            Err((reason, message)) => {
                if reason == "FailedMount" {
                    self.event(
                        pod,
                        None,
                        EventType::Warning,
                        "FailedMount",
                        message.clone(),
                    )
                    .await;
                    self.waiting.insert(
                        c.name.clone(),
                        Waiting {
                            reason: "ContainerCreating".into(),
                            message: String::new(),
                        },
                    );
                } else {
                    self.event(
                        pod,
                        Some(&c.name),
                        EventType::Warning,
                        "Failed",
                        format!("Error: {message}"),
                    )
                    .await;
                    self.waiting.insert(
                        c.name.clone(),
                        Waiting {
                            reason: reason.into(),
                            message,
                        },
                    );
                }
                return Some(RETRY * 2);
            }
        };
        if let Some(problem) = self.check_non_root(c, pod, &image).await {
            self.event(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {problem}"),
            )
            .await;
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: problem,
                },
            );
            return Some(RETRY * 5);
        }
        let config = spec::container_config(
            pod,
            c,
            ContainerInputs {
                env,
                mounts,
                attempt,
                qos,
                node_memory: ctx.node_memory,
                init,
            },
        );
        let sandbox_config = self.sandbox_config(
            pod,
            qos,
            observed.sandboxes.first().map_or(0, |s| s.attempt),
        );
        let id = match ctx
            .runtime
            .create_container(sandbox_id, config, sandbox_config)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                let message = e.to_string();
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                )
                .await;
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message,
                    },
                );
                return Some(RETRY * 2);
            }
        };
        self.event(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Created",
            format!("Created container: {}", c.name),
        )
        .await;
        let started = ctx.runtime.start_container(&id).await;
        ctx.metrics.container_started(init, started.is_ok());
        if let Err(e) = started {
            let message = e.to_string();
            self.event(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {message}"),
            )
            .await;
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message,
                },
            );
            return Some(RETRY);
        }
        self.event(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Started",
            format!("Started container {}", c.name),
        )
        .await;
        self.waiting.remove(&c.name);
        None
    }

    /// What env and volume sources see of the node and this pod.
    fn env_context(&self) -> EnvContext<'_> {
        EnvContext {
            host_ip: &self.ctx.node_ip,
            pod_ips: &self.pod_ips.1,
            node_cpu: self.ctx.node_cpu,
            node_memory: self.ctx.node_memory,
        }
    }

    /// Sets up the pod's volumes (memory-backed ones on a tmpfs, except on a hollow runtime).
    async fn prepare_volumes(
        &self,
        pod: &Pod,
        sources: &Sources,
        env: &EnvContext<'_>,
    ) -> Result<HashMap<String, std::path::PathBuf>, String> {
        let ctx = &self.ctx;
        volumes::prepare(
            &ctx.config.root_dir,
            pod,
            sources,
            env,
            !ctx.runtime.is_hollow(),
        )
        .await
    }

    /// Rewrites the pod's configMap, secret, downwardAPI and projected volumes when their sources
    /// changed (each write is atomic; unchanged content is left alone).
    async fn refresh_volumes(&self, pod: &Pod) {
        if !pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(volumes::is_projected)
        {
            return;
        }
        let ctx = &self.ctx;
        let sources = Sources::new(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let env_ctx = self.env_context();
        if let Err(message) = self.prepare_volumes(pod, &sources, &env_ctx).await {
            self.event(pod, None, EventType::Warning, "FailedMount", message)
                .await;
        }
    }

    /// `runAsNonRoot` with no user set anywhere and an image running as root (or by name) is refused.
    async fn check_non_root(&self, c: &Container, pod: &Pod, image: &str) -> Option<String> {
        let sc = c.security_context.clone().unwrap_or_default();
        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        if !sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false) {
            return None;
        }
        match sc.run_as_user.or(psc.run_as_user) {
            Some(0) => return Some("container's runAsUser breaks non-root policy".into()),
            Some(_) => return None,
            None => {}
        }
        let user = self
            .ctx
            .runtime
            .image_status(image)
            .await
            .ok()
            .flatten()
            .map(|i| (i.uid.map(|u| u.value), i.username));
        match user {
            Some((Some(0), _)) | Some((None, _)) | None => {
                Some("container has runAsNonRoot and image will run as root".into())
            }
            Some((Some(_), _)) => None,
        }
    }

    /// Pulls the image when the policy says so; on failure records ErrImagePull / ImagePullBackOff.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
        image: &str,
    ) -> Result<(), Duration> {
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':') {
                "Always"
            } else {
                "IfNotPresent"
            }
            .into()
        });
        let runtime = &self.ctx.runtime;
        let present = match runtime.image_status(image).await {
            Ok(i) => i.is_some(),
            Err(e) => {
                tracing::warn!("image status of {image}: {e}");
                false
            }
        };
        if policy == "Never" {
            if present {
                return Ok(());
            }
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.event(
                pod,
                Some(&c.name),
                EventType::Warning,
                "ErrImageNeverPull",
                message.clone(),
            )
            .await;
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message,
                },
            );
            return Err(RETRY * 10);
        }
        if present && policy == "IfNotPresent" {
            if self
                .waiting
                .get(&c.name)
                .is_none_or(|w| w.reason != "CrashLoopBackOff")
            {
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                )
                .await;
            }
            return Ok(());
        }
        let key = image.to_string();
        let last_failure = self.pulls.delay(&key);
        if !last_failure.is_zero() {
            let wait = self
                .pulls
                .remaining(&key, self.pull_failed_at(&key), now_since_epoch());
            if !wait.is_zero() {
                let message = format!("Back-off pulling image \"{image}\"");
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "BackOff",
                    message.clone(),
                )
                .await;
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "ImagePullBackOff".into(),
                        message,
                    },
                );
                return Err(wait);
            }
        }
        self.event(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        )
        .await;
        let started = std::time::Instant::now();
        let sandbox = None;
        match runtime.pull_image(image, sandbox).await {
            Ok(_) => {
                self.pulls.forget(&key);
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                )
                .await;
                Ok(())
            }
            Err(e) => {
                let message = format!("Failed to pull image \"{image}\": {e}");
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    message.clone(),
                )
                .await;
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull".into(),
                )
                .await;
                let now = now_since_epoch();
                let delay = self.pulls.retried(&key, now, now);
                self.pull_failures.insert(key, now);
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "ErrImagePull".into(),
                        message,
                    },
                );
                Err(delay.min(RESYNC))
            }
        }
    }

    fn pull_failed_at(&self, key: &str) -> Duration {
        self.pull_failures.get(key).copied().unwrap_or_default()
    }

    /// Runs the container's preStop hook (exec) and stops it with `grace`.
    async fn stop_container(&self, pod: &Pod, c: &Container, id: &str, grace: Duration) {
        let started = std::time::Instant::now();
        if let Some(exec) = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
        {
            let cmd = exec.command.clone().unwrap_or_default();
            match self.ctx.runtime.exec_sync(id, cmd, grace).await {
                Ok(r) if r.exit_code != 0 => {
                    self.event(
                        pod,
                        Some(&c.name),
                        EventType::Warning,
                        "FailedPreStopHook",
                        format!("PreStopHook failed: exit code {}", r.exit_code),
                    )
                    .await;
                }
                Ok(_) => {}
                Err(e) => {
                    self.event(
                        pod,
                        Some(&c.name),
                        EventType::Warning,
                        "FailedPreStopHook",
                        format!("PreStopHook failed: {e}"),
                    )
                    .await
                }
            }
        }
        let left = grace.saturating_sub(started.elapsed()).max(MIN_GRACE);
        if let Err(e) = self.ctx.runtime.stop_container(id, left).await
            && !e.is_not_found()
        {
            tracing::warn!(pod = %pod_id(pod), container = %c.name, "stopping: {e}");
        }
    }

    /// Stops every running container of the pod, in parallel, each with its preStop hook.
    async fn kill_containers(&self, pod: &Pod, observed: &Observed, grace: Duration) {
        let spec = pod.spec.clone().unwrap_or_default();
        let all: Vec<(&Container, bool)> = spec
            .containers
            .iter()
            .map(|c| (c, false))
            .chain(spec.init_containers.iter().flatten().map(|c| (c, true)))
            .collect();
        let mut stops = Vec::new();
        for r in observed
            .containers
            .iter()
            .filter(|r| r.state == State::Running)
        {
            let c = all
                .iter()
                .find(|(c, init)| c.name == r.name && *init == r.init)
                .map(|(c, _)| (*c).clone())
                .unwrap_or_else(|| Container {
                    name: r.name.clone(),
                    ..Default::default()
                });
            let id = r.id.clone();
            stops.push(async move {
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {}", c.name),
                )
                .await;
                self.stop_container(pod, &c, &id, grace).await;
            });
        }
        futures::future::join_all(stops).await;
    }

    async fn stop_sandboxes(&self, observed: &Observed) -> Result<(), Error> {
        for s in observed.sandboxes.iter().filter(|s| s.ready) {
            self.ctx.runtime.stop_sandbox(&s.id).await?;
        }
        Ok(())
    }

    async fn remove_sandboxes(&self, observed: &Observed) -> Result<(), Error> {
        for s in &observed.sandboxes {
            self.ctx.runtime.stop_sandbox(&s.id).await?;
            self.ctx.runtime.remove_sandbox(&s.id).await?;
        }
        Ok(())
    }

    /// Removes exited containers beyond the newest [`KEEP_EXITED`] of each name, and those of
    /// sandboxes that are no longer current.
    async fn collect_garbage(&self, observed: &Observed) {
        let current = observed.sandboxes.first().map(|s| s.id.clone());
        let mut names: Vec<(&str, bool)> = observed
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.init))
            .collect();
        names.sort();
        names.dedup();
        for (name, init) in names {
            for old in observed
                .of(name, init)
                .skip(KEEP_EXITED)
                .filter(|r| r.state != State::Running)
            {
                let _ = self.ctx.runtime.remove_container(&old.id).await;
            }
        }
        for s in observed.sandboxes.iter().skip(1) {
            if Some(&s.id) != current.as_ref() && !s.ready {
                let _ = self.ctx.runtime.remove_sandbox(&s.id).await;
            }
        }
    }

    /// Starts a prober for every running container with probes, and stops those of containers that
    /// no longer run.
    fn run_probers(&mut self, pod: &Pod, observed: &Observed) {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ip = if host_network {
            self.ctx.node_ip.clone()
        } else {
            self.pod_ips.1.first().cloned().unwrap_or_default()
        };
        let running: Vec<&Record> = observed
            .containers
            .iter()
            .filter(|r| r.state == State::Running && !r.init)
            .collect();
        let keep: Vec<String> = running.iter().map(|r| r.id.clone()).collect();
        self.stop_probers(&keep);
        for r in running {
            let Some(c) = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == r.name))
            else {
                continue;
            };
            if !probe::has_probes(c) || self.probers.contains_key(&r.id) {
                continue;
            }
            self.probes.start(&r.id, c);
            let target = probe::Target {
                runtime: self.ctx.runtime.clone(),
                id: r.id.clone(),
                ip: ip.clone(),
                container: c.clone(),
            };
            let task = tokio::spawn(probe::run(target, self.probes.clone(), self.wake.clone()));
            self.probers.insert(r.id.clone(), task);
        }
    }

    /// Stops the probers of containers not in `keep`.
    fn stop_probers(&mut self, keep: &[String]) {
        let probes = self.probes.clone();
        self.probers.retain(|id, task| {
            let k = keep.contains(id);
            if !k {
                task.abort();
                probes.remove(id);
            }
            k
        });
    }

    /// Computes the status and posts it when it changed; returns the phase.
    async fn post_status(
        &mut self,
        pod: &Pod,
        observed: &Observed,
        sandbox_ready: bool,
        qos: Qos,
    ) -> Result<Option<String>, Error> {
        let verdicts: HashMap<String, probe::Verdict> = observed
            .containers
            .iter()
            .filter_map(|r| Some((r.id.clone(), self.probes.get(&r.id)?)))
            .collect();
        let messages = volumes::termination_messages(&self.ctx.config.root_dir, pod, observed);
        let inputs = StatusInputs {
            pod_ips: &self.pod_ips.1,
            host_ip: &self.ctx.node_ip,
            start_time: self.start_time.clone(),
            waiting: &self.waiting,
            probes: &verdicts,
            messages: &messages,
            sandbox_ready,
            qos,
            now: Time(jiff::Timestamp::now()),
        };
        let new = status::compute(pod, observed, &inputs, pod.status.as_ref());
        let phase = new.phase.clone();
        if phase.as_deref() == Some("Running")
            && let Some(seen) = self.seen.take()
        {
            self.ctx
                .metrics
                .pod_start_duration
                .observe(seen.elapsed().as_secs_f64());
        }
        let essence = status::essence(&new);
        let current = pod.status.as_ref().map(status::essence);
        // Unchanged, or posted already and the watch has not caught up yet.
        if current.as_ref() == Some(&essence) || self.posted.as_ref() == Some(&essence) {
            return Ok(phase);
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let patch = json!({"metadata": {"uid": self.uid}, "status": new});
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => self.posted = Some(essence),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(phase)
    }

    /// The pod is being deleted: stop everything within its grace period, then confirm.
    async fn terminate(&mut self, pod: &Pod) -> Result<Next, Error> {
        let observed = Observed::read(&self.ctx.runtime, &self.uid).await?;
        self.kill_containers(pod, &observed, grace_period(pod))
            .await;
        self.remove_sandboxes(&observed).await?;
        self.clean_node_state(pod);
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or(""), &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Next::Resync(RETRY))
    }

    /// The pod is gone from the API server: make sure nothing of it remains.
    async fn remove(&mut self) -> Result<(), Error> {
        let observed = Observed::read(&self.ctx.runtime, &self.uid).await?;
        if let Some(pod) = self.last_pod.clone() {
            self.kill_containers(&pod, &observed, grace_period(&pod))
                .await;
            self.remove_sandboxes(&observed).await?;
            self.clean_node_state(&pod);
        } else {
            self.remove_sandboxes(&observed).await?;
        }
        Ok(())
    }

    /// Removes the pod's directory, logs and cgroup (a hollow runtime made no cgroup).
    fn clean_node_state(&self, pod: &Pod) {
        let cfg = &self.ctx.config;
        let dir = volumes::pod_dir(&cfg.root_dir, &self.uid);
        // Memory-backed emptyDirs first: removing files would not free a mounted tmpfs.
        match super::mounts::unmount_under(&dir) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e) => tracing::warn!(pod = %pod_id(pod), "keeping the pod's directory: {e}"),
        }
        let _ = std::fs::remove_dir_all(spec::log_directory(&cfg.root_dir.join("logs"), pod));
        if self.ctx.runtime.is_hollow() {
            return;
        }
        crate::cgroups::remove(&spec::cgroup_parent(
            &cfg.cgroup_root,
            spec::qos(pod),
            &self.uid,
        ));
    }
}
