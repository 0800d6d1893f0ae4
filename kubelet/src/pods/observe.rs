//! What the runtime has for one pod: its sandboxes and its containers with their states, found by the
//! pod UID label, so a restarted kubelet sees exactly what its predecessor left running.

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use crate::Error;
use crate::cri::{Runtime, labels};

/// A container's state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Exited (or never could start).
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// One container of a pod, as the runtime has it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Runtime container ID.
    pub id: String,
    /// The sandbox it belongs to.
    pub sandbox_id: String,
    /// Its name in the pod spec.
    pub name: String,
    /// Its attempt (restart count when it was created).
    pub attempt: u32,
    /// Whether it is an init container.
    pub init: bool,
    /// Its state.
    pub state: State,
    /// Creation, start and finish times, in nanoseconds since the epoch (0: not yet).
    pub created_at: i64,
    /// When it started.
    pub started_at: i64,
    /// When it finished.
    pub finished_at: i64,
    /// Exit code (when exited).
    pub exit_code: i32,
    /// The runtime's reason (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// The runtime's message.
    pub message: String,
    /// The image's digest reference.
    pub image_ref: String,
    /// The spec hash it was created from.
    pub hash: String,
}

/// A sandbox of a pod.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Runtime sandbox ID.
    pub id: String,
    /// Its attempt.
    pub attempt: u32,
    /// Whether it is ready (running, with its network).
    pub ready: bool,
    /// When it was created (nanoseconds).
    pub created_at: i64,
}

/// Everything the runtime has for one pod.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Sandboxes, newest first.
    pub sandboxes: Vec<Sandbox>,
    /// Containers, in no particular order.
    pub containers: Vec<Record>,
}

impl Observed {
    /// Reads the pod's sandboxes and containers (with full statuses) from the runtime.
    pub async fn read(runtime: &Runtime, uid: &str) -> Result<Observed, Error> {
        let selector = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
        let mut sandboxes: Vec<Sandbox> = runtime
            .list_sandboxes_matching(selector.clone())
            .await?
            .into_iter()
            .map(|s| Sandbox {
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                ready: s.state == cri::PodSandboxState::SandboxReady as i32,
                created_at: s.created_at,
                id: s.id,
            })
            .collect();
        sandboxes.sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_at)));
        let mut containers = Vec::new();
        for c in runtime.list_containers_matching(selector).await? {
            let status = match runtime.container_status(&c.id).await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            containers.push(record(c, status));
        }
        Ok(Observed {
            sandboxes,
            containers,
        })
    }

    /// The newest sandbox, if it is ready.
    pub fn ready_sandbox(&self) -> Option<&Sandbox> {
        self.sandboxes.first().filter(|s| s.ready)
    }

    /// The newest container named `name` (init or not as `init` says), in any sandbox.
    pub fn latest<'a>(&'a self, name: &'a str, init: bool) -> Option<&'a Record> {
        self.of(name, init).next()
    }

    /// The containers named `name`, newest first.
    pub fn of<'a>(&'a self, name: &'a str, init: bool) -> impl Iterator<Item = &'a Record> + 'a {
        let mut v: Vec<&Record> = self
            .containers
            .iter()
            .filter(|c| c.name == name && c.init == init)
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        v.into_iter()
    }
}

fn record(c: cri::Container, s: cri::ContainerStatus) -> Record {
    let state = match cri::ContainerState::try_from(s.state) {
        Ok(cri::ContainerState::ContainerCreated) => State::Created,
        Ok(cri::ContainerState::ContainerRunning) => State::Running,
        Ok(cri::ContainerState::ContainerExited) => State::Exited,
        _ => State::Unknown,
    };
    Record {
        id: c.id,
        sandbox_id: c.pod_sandbox_id,
        name: c
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .unwrap_or_default(),
        attempt: c.metadata.map_or(0, |m| m.attempt),
        init: c
            .labels
            .get(labels::INIT_CONTAINER)
            .is_some_and(|v| v == "true"),
        state,
        created_at: s.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        reason: s.reason,
        message: s.message,
        image_ref: s.image_ref,
        hash: c
            .annotations
            .get(labels::CONTAINER_HASH)
            .cloned()
            .unwrap_or_default(),
    }
}
