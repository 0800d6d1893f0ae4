//! A simulated ("hollow") container runtime for scale tests: thousands of kubelets in one process,
//! each with one of these instead of containerd. It keeps sandboxes and containers in memory with
//! the CRI state machine (created → running → exited; sandboxes ready → not ready), hands out pod
//! IPs from the node's pod CIDR ([`ipam`]), and runs nothing. Never the default: a kubelet uses it
//! only when its runtime endpoint is `hollow://` ([`crate::cri::Runtime::connect`]), and no test
//! that claims real containers uses it. [`nodes`] runs many hollow kubelets in one process.
//!
//! What it simulates:
//! - Containers run until stopped, except those whose command (command and args together) is just
//!   `true` or `false` (or `/bin/true`, `/bin/false`): they exit at once with 0 or 1, so restart
//!   policies and crash-loop back-off can be exercised.
//! - ExecSync (exec probes, preStop hooks) succeeds in a running container with exit code 0 and no
//!   output. Exec, Attach and PortForward (streams) are refused: there is nothing to stream.
//! - NetworkReady is false until the kubelet hands it the node's pod CIDR
//!   ([`Hollow::set_pod_cidr`], in place of writing a CNI configuration). A sandbox gets the next free
//!   address of the CIDR, given back when the sandbox stops (as CNI's DEL does); a sandbox in the
//!   node's network namespace gets none (the kubelet reports the node's address).
//! - Images are "pulled" at once; creating a container from an image never pulled fails as it does on
//!   containerd.

pub mod ipam;
pub mod nodes;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_cri::v1 as cri;

use crate::Error;

/// A hollow node's resources, reported as its capacity instead of the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPUs.
    pub cpu: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: u64,
}

impl Default for Resources {
    /// 4 CPUs, 16 GiB of memory, 100 GiB of ephemeral storage.
    fn default() -> Resources {
        Resources {
            cpu: 4,
            memory: 16 << 30,
            ephemeral_storage: 100 << 30,
        }
    }
}

impl Resources {
    /// Resources from a CPU count and memory and storage quantities (`16Gi`, `100G`).
    pub fn parse(cpu: u64, memory: &str, ephemeral_storage: &str) -> Result<Resources, Error> {
        let bytes = |what: &str, q: &str| {
            crate::pods::spec::quantity(q)
                .filter(|v| *v >= 0.0)
                .map(|v| v as u64)
                .ok_or_else(|| {
                    Error::Config(format!("{what} {q:?} is not a quantity such as 16Gi"))
                })
        };
        Ok(Resources {
            cpu,
            memory: bytes("memory", memory)?,
            ephemeral_storage: bytes("ephemeral storage", ephemeral_storage)?,
        })
    }
}

/// The in-memory runtime of one hollow node.
pub struct Hollow {
    state: Mutex<State>,
    /// A random prefix, so container IDs differ between nodes (as real ones do).
    id_prefix: u64,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
    /// Image name → image ID.
    images: HashMap<String, String>,
    ipam: Option<ipam::Ipam>,
}

/// What a sandbox list and status report; nothing else of the config is kept.
struct Sandbox {
    metadata: Option<cri::PodSandboxMetadata>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    ready: bool,
    created_at: i64,
    /// Empty for a sandbox in the node's network namespace, or once stopped.
    ip: String,
}

/// What a container list and status report, and how it behaves when started.
struct Container {
    sandbox_id: String,
    metadata: Option<cri::ContainerMetadata>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    image: Option<cri::ImageSpec>,
    image_ref: String,
    log_path: String,
    /// Exits at once with this code when started (None: runs until stopped).
    exits_with: Option<i32>,
    state: cri::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
}

fn now() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

fn refused(call: &'static str, code: tonic::Code, message: String) -> Error {
    Error::Runtime {
        call,
        code,
        message,
    }
}

fn not_found(call: &'static str, what: &str, id: &str) -> Error {
    refused(
        call,
        tonic::Code::NotFound,
        format!("{what} {id:?}: not found"),
    )
}

fn matches(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The exit code of a command that exits at once (`true`, `false`), None for any other.
fn exits_with(config: &cri::ContainerConfig) -> Option<i32> {
    let mut argv = config.command.iter().chain(config.args.iter());
    let first = argv.next()?;
    if argv.next().is_some() {
        return None;
    }
    match first.rsplit('/').next() {
        Some("true") => Some(0),
        Some("false") => Some(1),
        _ => None,
    }
}

fn host_network(config: &cri::PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32)
}

fn sandbox_state(ready: bool) -> i32 {
    if ready {
        cri::PodSandboxState::SandboxReady as i32
    } else {
        cri::PodSandboxState::SandboxNotready as i32
    }
}

impl Default for Hollow {
    fn default() -> Hollow {
        Hollow::new()
    }
}

impl Hollow {
    /// An empty runtime, its network not ready until [`Hollow::set_pod_cidr`].
    pub fn new() -> Hollow {
        Hollow {
            state: Mutex::default(),
            id_prefix: rand::random::<u64>(),
            next_id: AtomicU64::new(1),
        }
    }

    /// A new 64-hex-digit ID, as containerd's.
    fn id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:048x}", self.id_prefix, n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the node's pod CIDR; new sandboxes get addresses from it. Returns whether it changed
    /// (sandboxes that run keep their addresses, as with CNI).
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<bool, Error> {
        let mut s = self.lock();
        if s.ipam.as_ref().is_some_and(|i| i.cidr() == cidr) {
            return Ok(false);
        }
        let mut ipam = ipam::Ipam::new(cidr).map_err(Error::Config)?;
        for b in s.sandboxes.values() {
            ipam.reserve(&b.ip);
        }
        s.ipam = Some(ipam);
        Ok(true)
    }

    /// `hollow` and the kubelet's version.
    pub fn version(&self) -> Result<cri::VersionResponse, Error> {
        Ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "hollow".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }

    /// RuntimeReady always; NetworkReady once the pod CIDR is known.
    pub fn status(&self) -> Result<Vec<cri::RuntimeCondition>, Error> {
        let network = self.lock().ipam.is_some();
        Ok(vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                ..Default::default()
            },
            cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network,
                reason: if network { "" } else { "NetworkPluginNotReady" }.into(),
                message: if network {
                    ""
                } else {
                    "hollow network not ready: no pod CIDR yet"
                }
                .into(),
            },
        ])
    }

    /// Sandboxes carrying all of `selector` (all of them for an empty one).
    pub fn list_sandboxes(
        &self,
        selector: &HashMap<String, String>,
    ) -> Result<Vec<cri::PodSandbox>, Error> {
        let s = self.lock();
        Ok(s.sandboxes
            .iter()
            .filter(|(_, b)| matches(&b.labels, selector))
            .map(|(id, b)| cri::PodSandbox {
                id: id.clone(),
                metadata: b.metadata.clone(),
                state: sandbox_state(b.ready),
                created_at: b.created_at,
                labels: b.labels.clone(),
                annotations: b.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect())
    }

    /// Containers carrying all of `selector`.
    pub fn list_containers(
        &self,
        selector: &HashMap<String, String>,
    ) -> Result<Vec<cri::Container>, Error> {
        let s = self.lock();
        Ok(s.containers
            .iter()
            .filter(|(_, c)| matches(&c.labels, selector))
            .map(|(id, c)| cri::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.metadata.clone(),
                image: c.image.clone(),
                image_ref: c.image_ref.clone(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                image_id: c.image_ref.clone(),
            })
            .collect())
    }

    /// A new ready sandbox with the next free address of the pod CIDR (none in the node's network).
    pub fn run_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, Error> {
        let id = self.id();
        let mut s = self.lock();
        let ip = if host_network(&config) {
            String::new()
        } else {
            let ipam = s.ipam.as_mut().ok_or_else(|| {
                refused(
                    "RunPodSandbox",
                    tonic::Code::Unavailable,
                    "hollow network not ready: no pod CIDR yet".into(),
                )
            })?;
            let cidr = ipam.cidr().to_string();
            ipam.allocate()
                .ok_or_else(|| {
                    refused(
                        "RunPodSandbox",
                        tonic::Code::ResourceExhausted,
                        format!("no free address left in pod CIDR {cidr}"),
                    )
                })?
                .to_string()
        };
        s.sandboxes.insert(
            id.clone(),
            Sandbox {
                metadata: config.metadata,
                labels: config.labels,
                annotations: config.annotations,
                ready: true,
                created_at: now(),
                ip,
            },
        );
        Ok(id)
    }

    /// A sandbox's status.
    pub fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, Error> {
        let s = self.lock();
        let b = s
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("PodSandboxStatus", "sandbox", id))?;
        Ok(cri::PodSandboxStatus {
            id: id.into(),
            metadata: b.metadata.clone(),
            state: sandbox_state(b.ready),
            created_at: b.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: b.ip.clone(),
                additional_ips: vec![],
            }),
            labels: b.labels.clone(),
            annotations: b.annotations.clone(),
            ..Default::default()
        })
    }

    /// Stops a sandbox: its running containers are killed (exit 137) and its address given back.
    /// Stopping a stopped or missing sandbox is no error.
    pub fn stop_sandbox(&self, id: &str) -> Result<(), Error> {
        let mut s = self.lock();
        let State {
            sandboxes,
            containers,
            ipam,
            ..
        } = &mut *s;
        if let Some(b) = sandboxes.get_mut(id) {
            b.ready = false;
            if let Some(ipam) = ipam.as_mut() {
                ipam.release(&b.ip);
            }
            b.ip.clear();
        }
        let t = now();
        for c in containers
            .values_mut()
            .filter(|c| c.sandbox_id == id && c.state == cri::ContainerState::ContainerRunning)
        {
            c.state = cri::ContainerState::ContainerExited;
            c.finished_at = t;
            c.exit_code = 137;
        }
        Ok(())
    }

    /// Removes a sandbox (stopping it first) and its containers. Removing a missing one is no error.
    pub fn remove_sandbox(&self, id: &str) -> Result<(), Error> {
        self.stop_sandbox(id)?;
        let mut s = self.lock();
        s.sandboxes.remove(id);
        s.containers.retain(|_, c| c.sandbox_id != id);
        Ok(())
    }

    /// Creates a container in a ready sandbox, from an image pulled before.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, Error> {
        let id = self.id();
        let mut s = self.lock();
        match s.sandboxes.get(sandbox_id) {
            None => return Err(not_found("CreateContainer", "sandbox", sandbox_id)),
            Some(b) if !b.ready => {
                return Err(refused(
                    "CreateContainer",
                    tonic::Code::FailedPrecondition,
                    format!("sandbox {sandbox_id:?} is not ready"),
                ));
            }
            Some(_) => {}
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image_ref = s
            .images
            .get(&image)
            .cloned()
            .ok_or_else(|| not_found("CreateContainer", "image", &image))?;
        let exits_with = exits_with(&config);
        s.containers.insert(
            id.clone(),
            Container {
                sandbox_id: sandbox_id.into(),
                metadata: config.metadata,
                labels: config.labels,
                annotations: config.annotations,
                image: config.image,
                image_ref,
                log_path: config.log_path,
                exits_with,
                state: cri::ContainerState::ContainerCreated,
                created_at: now(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
            },
        );
        Ok(id)
    }

    /// Starts a created container; `true` and `false` exit at once.
    pub fn start_container(&self, id: &str) -> Result<(), Error> {
        let mut s = self.lock();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StartContainer", "container", id))?;
        if c.state != cri::ContainerState::ContainerCreated {
            return Err(refused(
                "StartContainer",
                tonic::Code::FailedPrecondition,
                format!("container {id:?} is not in the created state"),
            ));
        }
        let t = now();
        c.started_at = t;
        match c.exits_with {
            Some(code) => {
                c.state = cri::ContainerState::ContainerExited;
                c.finished_at = t;
                c.exit_code = code;
            }
            None => c.state = cri::ContainerState::ContainerRunning,
        }
        Ok(())
    }

    /// Stops a running container at once, whatever the grace period (exit 137, as after SIGKILL).
    /// A container that is not running is left as it is, as containerd does.
    pub fn stop_container(&self, id: &str) -> Result<(), Error> {
        let mut s = self.lock();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StopContainer", "container", id))?;
        if c.state == cri::ContainerState::ContainerRunning {
            c.state = cri::ContainerState::ContainerExited;
            c.finished_at = now();
            c.exit_code = 137;
        }
        Ok(())
    }

    /// Removes a container (a missing one is no error).
    pub fn remove_container(&self, id: &str) -> Result<(), Error> {
        self.lock().containers.remove(id);
        Ok(())
    }

    /// A container's status.
    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, Error> {
        let s = self.lock();
        let c = s
            .containers
            .get(id)
            .ok_or_else(|| not_found("ContainerStatus", "container", id))?;
        let reason = match (c.state, c.exit_code) {
            (cri::ContainerState::ContainerExited, 0) => "Completed",
            (cri::ContainerState::ContainerExited, _) => "Error",
            _ => "",
        };
        Ok(cri::ContainerStatus {
            id: id.into(),
            metadata: c.metadata.clone(),
            state: c.state as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.image.clone(),
            image_ref: c.image_ref.clone(),
            reason: reason.into(),
            labels: c.labels.clone(),
            annotations: c.annotations.clone(),
            log_path: c.log_path.clone(),
            ..Default::default()
        })
    }

    /// Every command in a running container succeeds at once, printing nothing.
    pub fn exec_sync(&self, id: &str) -> Result<cri::ExecSyncResponse, Error> {
        let s = self.lock();
        match s.containers.get(id) {
            None => Err(not_found("ExecSync", "container", id)),
            Some(c) if c.state != cri::ContainerState::ContainerRunning => Err(refused(
                "ExecSync",
                tonic::Code::FailedPrecondition,
                format!("container {id:?} is not running"),
            )),
            Some(_) => Ok(cri::ExecSyncResponse::default()),
        }
    }

    /// Streams (exec, attach, port-forward) are refused: nothing runs to stream from.
    pub fn stream(&self, call: &'static str) -> Result<String, Error> {
        Err(refused(
            call,
            tonic::Code::Unimplemented,
            format!("{call} is not supported by the hollow runtime (no processes run)"),
        ))
    }

    /// The image, once pulled.
    pub fn image_status(&self, image: &str) -> Result<Option<cri::Image>, Error> {
        let s = self.lock();
        Ok(s.images.get(image).map(|id| cri::Image {
            id: id.clone(),
            repo_tags: vec![image.into()],
            ..Default::default()
        }))
    }

    /// "Pulls" an image at once; returns its reference (`sha256:` and a digest of the name).
    pub fn pull_image(&self, image: &str) -> Result<String, Error> {
        let mut s = self.lock();
        let digest = image.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let id = format!("sha256:{digest:064x}");
        s.images.insert(image.into(), id.clone());
        Ok(id)
    }
}

#[cfg(test)]
mod tests;
