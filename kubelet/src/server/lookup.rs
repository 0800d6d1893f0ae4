//! Finding a pod's container for the log server: [`Containers`] in front of the runtime (and the API
//! server, for why a container does not exist yet), [`Cri`] the real one, and [`pick`] the choice
//! of instance (current or previous) among those the runtime has.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;

use crate::Error;
use crate::cri::{Runtime, labels};
use crate::pods::observe::State;

/// One instance (attempt) of a container, as the runtime has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The runtime's container ID.
    pub id: String,
    /// The UID of the pod it belongs to.
    pub pod_uid: String,
    /// Its attempt (the restart count when it was created).
    pub attempt: u32,
    /// When it was created (nanoseconds since the epoch).
    pub created_at: i64,
    /// Its state.
    pub state: State,
    /// Its CRI log file.
    pub log_path: PathBuf,
}

/// Why a pod has no instance of a container to read, from the pod as the API server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Absent {
    /// The pod is not on this node.
    NoPod,
    /// The pod has no container of that name.
    NoContainer,
    /// The container waits to start, for this reason.
    Waiting(String),
    /// The container ended and nothing of it is left.
    Terminated,
    /// The status says it runs, but the runtime has no such container.
    Unavailable,
}

/// A streaming session the runtime serves on its streaming server.
#[derive(Debug, Clone, PartialEq)]
pub enum Session {
    /// Run a command in a container.
    Exec(cri::ExecRequest),
    /// Attach to a container's streams.
    Attach(cri::AttachRequest),
    /// Forward connections into a sandbox.
    PortForward(cri::PortForwardRequest),
}

/// What the kubelet server needs to know about the node's containers.
pub trait Containers: Send + Sync + 'static {
    /// The instances of container `container` of pod `namespace/pod`, in any order.
    fn instances(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> impl Future<Output = Result<Vec<Instance>, Error>> + Send;
    /// Whether the container with this ID still runs.
    fn running(&self, id: &str) -> impl Future<Output = Result<bool, Error>> + Send;
    /// Why there is no instance of the container to read.
    fn absent(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> impl Future<Output = Result<Absent, Error>> + Send;
    /// The ID of the newest ready sandbox of pod `namespace/pod` (None: it has none).
    fn sandbox(
        &self,
        namespace: &str,
        pod: &str,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;
    /// The URL on the runtime's streaming server where a client gets `session` (valid once).
    fn session(&self, session: Session) -> impl Future<Output = Result<String, Error>> + Send;
}

/// The instance a request reads: the newest one that started (`previous`: the one before the
/// newest), among the instances of the newest pod of that name. None: there is none.
pub fn pick(mut instances: Vec<Instance>, previous: bool) -> Option<Instance> {
    let newest_pod = instances
        .iter()
        .max_by_key(|i| i.created_at)
        .map(|i| i.pod_uid.clone())?;
    instances.retain(|i| i.pod_uid == newest_pod);
    instances.sort_by_key(|i| std::cmp::Reverse((i.attempt, i.created_at)));
    let mut it = instances.into_iter();
    if previous {
        return it.nth(1);
    }
    let newest = it.next()?;
    match newest.state {
        State::Running | State::Exited => Some(newest),
        // Created but not started: its output is that of the instance before, if any.
        State::Created | State::Unknown => it.next(),
    }
}

/// The containers of a CRI runtime, with the API server telling why one is missing.
#[derive(Clone)]
pub struct Cri {
    runtime: Runtime,
    client: kube::Client,
    node_name: String,
}

impl Cri {
    /// The containers of `runtime` on node `node_name`.
    pub fn new(runtime: Runtime, client: kube::Client, node_name: &str) -> Cri {
        Cri {
            runtime,
            client,
            node_name: node_name.to_string(),
        }
    }
}

fn state(s: i32) -> State {
    match cri::ContainerState::try_from(s) {
        Ok(cri::ContainerState::ContainerCreated) => State::Created,
        Ok(cri::ContainerState::ContainerRunning) => State::Running,
        Ok(cri::ContainerState::ContainerExited) => State::Exited,
        _ => State::Unknown,
    }
}

impl Containers for Cri {
    async fn instances(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Vec<Instance>, Error> {
        let selector = HashMap::from([
            (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
            (labels::POD_NAME.to_string(), pod.to_string()),
            (labels::CONTAINER_NAME.to_string(), container.to_string()),
        ]);
        let mut out = vec![];
        for c in self.runtime.list_containers_matching(selector).await? {
            let status = match self.runtime.container_status(&c.id).await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            out.push(Instance {
                pod_uid: c.labels.get(labels::POD_UID).cloned().unwrap_or_default(),
                attempt: c.metadata.map_or(0, |m| m.attempt),
                created_at: status.created_at,
                state: state(status.state),
                log_path: PathBuf::from(status.log_path),
                id: c.id,
            });
        }
        Ok(out)
    }

    async fn running(&self, id: &str) -> Result<bool, Error> {
        match self.runtime.container_status(id).await {
            Ok(s) => Ok(state(s.state) == State::Running),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn absent(&self, namespace: &str, pod: &str, container: &str) -> Result<Absent, Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let Some(pod) = pods.get_opt(pod).await? else {
            return Ok(Absent::NoPod);
        };
        Ok(absent_from(&pod, &self.node_name, container))
    }

    async fn sandbox(&self, namespace: &str, pod: &str) -> Result<Option<String>, Error> {
        let selector = HashMap::from([
            (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
            (labels::POD_NAME.to_string(), pod.to_string()),
        ]);
        Ok(self
            .runtime
            .list_sandboxes_matching(selector)
            .await?
            .into_iter()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at)
            .map(|s| s.id))
    }

    async fn session(&self, session: Session) -> Result<String, Error> {
        match session {
            Session::Exec(r) => self.runtime.exec(r).await,
            Session::Attach(r) => self.runtime.attach(r).await,
            Session::PortForward(r) => self.runtime.port_forward(r).await,
        }
    }
}

/// Why `pod` (as the API server has it) shows no instance of `container` on node `node`.
pub fn absent_from(pod: &Pod, node: &str, container: &str) -> Absent {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.node_name.as_deref() != Some(node) {
        return Absent::NoPod;
    }
    let in_spec = spec
        .containers
        .iter()
        .map(|c| &c.name)
        .any(|n| n == container)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == container)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == container);
    if !in_spec {
        return Absent::NoContainer;
    }
    let status = pod.status.clone().unwrap_or_default();
    let all: Vec<ContainerStatus> = [
        status.container_statuses,
        status.init_container_statuses,
        status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .collect();
    let Some(state) = all
        .into_iter()
        .find(|s| s.name == container)
        .and_then(|s| s.state)
    else {
        return Absent::Waiting("ContainerCreating".into());
    };
    if state.running.is_some() {
        Absent::Unavailable
    } else if state.terminated.is_some() {
        Absent::Terminated
    } else {
        Absent::Waiting(
            state
                .waiting
                .and_then(|w| w.reason)
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "ContainerCreating".into()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inst(id: &str, uid: &str, attempt: u32, created_at: i64, state: State) -> Instance {
        Instance {
            id: id.into(),
            pod_uid: uid.into(),
            attempt,
            created_at,
            state,
            log_path: PathBuf::new(),
        }
    }

    fn id(i: Option<Instance>) -> Option<String> {
        i.map(|i| i.id)
    }

    #[test]
    fn picks_the_newest_and_the_previous_instance() {
        let v = vec![
            inst("a0", "u", 0, 10, State::Exited),
            inst("a2", "u", 2, 30, State::Running),
            inst("a1", "u", 1, 20, State::Exited),
        ];
        assert_eq!(id(pick(v.clone(), false)).as_deref(), Some("a2"));
        assert_eq!(id(pick(v, true)).as_deref(), Some("a1"));
        // Created, not started: the current output is the previous instance's.
        let v = vec![
            inst("b1", "u", 1, 20, State::Created),
            inst("b0", "u", 0, 10, State::Exited),
        ];
        assert_eq!(id(pick(v.clone(), false)).as_deref(), Some("b0"));
        assert_eq!(id(pick(v, true)).as_deref(), Some("b0"));
        assert_eq!(
            pick(vec![inst("c", "u", 0, 1, State::Created)], false),
            None
        );
        assert_eq!(pick(vec![inst("c", "u", 0, 1, State::Running)], true), None);
        assert_eq!(pick(vec![], false), None);
        // An old pod of the same name (higher attempts) does not count.
        let v = vec![
            inst("old", "u1", 5, 10, State::Exited),
            inst("new", "u2", 0, 50, State::Running),
        ];
        assert_eq!(id(pick(v.clone(), false)).as_deref(), Some("new"));
        assert_eq!(pick(v, true), None);
    }

    #[test]
    fn tells_why_a_container_is_absent() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "spec": {"nodeName": "n1", "containers": [{"name": "c"}], "initContainers": [{"name": "i"}]},
                "status": status,
            }))
            .unwrap()
        };
        let p = pod(json!({}));
        assert_eq!(absent_from(&p, "n2", "c"), Absent::NoPod);
        assert_eq!(absent_from(&p, "n1", "x"), Absent::NoContainer);
        assert_eq!(
            absent_from(&p, "n1", "c"),
            Absent::Waiting("ContainerCreating".into())
        );
        let p = pod(
            json!({"containerStatuses": [{"name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}],
            "initContainerStatuses": [{"name": "i", "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0}}}]}),
        );
        assert_eq!(
            absent_from(&p, "n1", "c"),
            Absent::Waiting("ImagePullBackOff".into())
        );
        assert_eq!(absent_from(&p, "n1", "i"), Absent::Terminated);
    }
}
