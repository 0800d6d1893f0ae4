//! The node's own objects: registration of the Node (labels, capacity, addresses, `nodeInfo`), its
//! status (conditions Ready, MemoryPressure, DiskPressure, PIDPressure) posted when it changes and at
//! least every minute, and the `kube-node-lease` Lease renewed every 10 s as the heartbeat the node
//! lifecycle controller watches.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use crate::cri::Runtime;
use crate::host::{self, Host, System};
use crate::{Config, Error, KUBELET_VERSION};

/// The namespace holding node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a node Lease is valid without renewal (Kubernetes: 40 s).
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// What the node agent learns from the Node object that other parts need: its pod CIDR (the
/// configured one while the Node has none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    /// `spec.podCIDR`, once assigned.
    pub pod_cidr: Option<String>,
}

/// The runtime's readiness, as the Ready condition reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeHealth {
    /// Empty when ready; otherwise why not, in Kubernetes' words.
    pub problems: Vec<String>,
    /// `containerd://1.6.20`.
    pub version: String,
}

/// The node's labels: the well-known ones plus the operator's.
pub fn labels(config: &Config) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "kubernetes.io/hostname".to_string(),
            config.node_name.clone(),
        ),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        ),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "beta.kubernetes.io/arch".to_string(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        ),
    ]);
    labels.extend(config.node_labels.clone());
    labels
}

/// The node's addresses: InternalIP and Hostname.
pub fn addresses(node_ip: IpAddr, hostname: &str) -> Vec<NodeAddress> {
    vec![
        NodeAddress {
            type_: "InternalIP".into(),
            address: node_ip.to_string(),
        },
        NodeAddress {
            type_: "Hostname".into(),
            address: hostname.into(),
        },
    ]
}

fn condition(type_: &str, on: bool, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: if on { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The four conditions for a host and runtime, as Kubernetes words them.
pub fn conditions(host: &Host, runtime: &RuntimeHealth, now: &Time) -> Vec<NodeCondition> {
    let pressure = |type_: &str, on: bool, what: &str| {
        if on {
            condition(
                type_,
                true,
                &format!("KubeletHas{what}Pressure"),
                &format!("kubelet has {} pressure", what.to_lowercase()),
                now,
            )
        } else {
            let (reason, message) = match what {
                "Memory" => (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                "Disk" => ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                _ => (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            };
            condition(type_, false, reason, message, now)
        }
    };
    let ready = if runtime.problems.is_empty() {
        condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            now,
        )
    } else {
        condition(
            "Ready",
            false,
            "KubeletNotReady",
            &runtime.problems.join(", "),
            now,
        )
    };
    vec![
        pressure("MemoryPressure", host.memory_pressure(), "Memory"),
        pressure("DiskPressure", host.disk_pressure(), "Disk"),
        pressure("PIDPressure", host.pid_pressure(), "PID"),
        ready,
    ]
}

/// Keeps each condition's lastTransitionTime from `old` when its status did not change.
fn keep_transitions(new: &mut [NodeCondition], old: &[NodeCondition]) {
    for c in new {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

/// The node's status for these readings (conditions without their times are compared to decide
/// whether it changed).
pub fn status(
    config: &Config,
    node_ip: IpAddr,
    host: &Host,
    system: &System,
    runtime: &RuntimeHealth,
    now: &Time,
) -> NodeStatus {
    NodeStatus {
        capacity: Some(host.capacity(config.max_pods)),
        allocatable: Some(host.allocatable(config.max_pods)),
        addresses: Some(addresses(node_ip, &system.hostname)),
        conditions: Some(conditions(host, runtime, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                port: config.kubelet_port as i32,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: labels(config)
                .get("kubernetes.io/arch")
                .cloned()
                .unwrap_or_default(),
            boot_id: system.boot_id.clone(),
            container_runtime_version: runtime.version.clone(),
            kernel_version: system.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: system.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: system.os_image.clone(),
            system_uuid: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status with its volatile parts (heartbeat times, free memory rounding) left out, to tell a
/// real change from a heartbeat.
fn essence(status: &NodeStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conds {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastHeartbeatTime");
                c.remove("lastTransitionTime");
            }
        }
    }
    v
}

/// How often a node that is not Ready yet checks again.
const NOT_READY_CHECK: Duration = Duration::from_secs(1);

/// Registers the node and keeps its status and Lease current until the future is dropped. `facts`
/// receives what other parts need from the Node (its pod CIDR).
pub struct NodeAgent {
    client: kube::Client,
    config: Config,
    runtime: Runtime,
    node_ip: IpAddr,
    system: System,
    facts: watch::Sender<NodeFacts>,
}

impl NodeAgent {
    /// An agent for the node `config` names.
    pub fn new(
        client: kube::Client,
        config: Config,
        runtime: Runtime,
        facts: watch::Sender<NodeFacts>,
    ) -> NodeAgent {
        let node_ip = config.node_ip.unwrap_or_else(|| {
            if runtime.is_hollow() {
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            } else {
                host::default_node_ip()
            }
        });
        let system = System::of(&config.node_name, &runtime);
        NodeAgent {
            client,
            config,
            runtime,
            node_ip,
            system,
            facts,
        }
    }

    /// The address the node reports as its InternalIP.
    pub fn node_ip(&self) -> IpAddr {
        self.node_ip
    }

    /// Creates the Node if it is missing; an existing one (a restarted kubelet) gets the labels it
    /// should have and keeps everything else. Retries until the API server answers.
    pub async fn register(&self) -> Result<Node, Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_register(&nodes).await {
                Ok(node) => {
                    self.learn(&node);
                    return Ok(node);
                }
                Err(e) => {
                    tracing::warn!(
                        "registering node {}: {e}; retrying in {delay:?}",
                        self.config.node_name
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(7));
                }
            }
        }
    }

    async fn try_register(&self, nodes: &Api<Node>) -> Result<Node, kube::Error> {
        let name = &self.config.node_name;
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels(&self.config)),
                annotations: Some(BTreeMap::from([(
                    "volumes.kubernetes.io/controller-managed-attach-detach".into(),
                    "true".into(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: self.config.pod_cidr.clone(),
                pod_cidrs: self.config.pod_cidr.clone().map(|c| vec![c]),
                ..Default::default()
            }),
            status: None,
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(created) => {
                tracing::info!(node = %name, "registered the node");
                Ok(created)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let patch = json!({"metadata": {"labels": labels(&self.config)}});
                let existing = nodes
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                tracing::info!(node = %name, "node already registered; taking it over");
                Ok(existing)
            }
            Err(e) => Err(e),
        }
    }

    fn learn(&self, node: &Node) {
        let pod_cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| self.config.pod_cidr.clone());
        self.facts.send_if_modified(|f| {
            let changed = f.pod_cidr != pod_cidr;
            f.pod_cidr = pod_cidr;
            changed
        });
    }

    /// The runtime's health in the Ready condition's words.
    async fn runtime_health(&self) -> RuntimeHealth {
        let version = match self.runtime.version().await {
            Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
            Err(e) => {
                return RuntimeHealth {
                    problems: vec![format!("container runtime is down: {e}")],
                    version: String::new(),
                };
            }
        };
        let mut problems = Vec::new();
        match self.runtime.status().await {
            Ok(conditions) => {
                for c in conditions.iter().filter(|c| !c.status) {
                    let what = if c.r#type == "NetworkReady" {
                        "container runtime network not ready"
                    } else {
                        "container runtime not ready"
                    };
                    problems.push(format!(
                        "{what}: {}=false reason:{} message:{}",
                        c.r#type, c.reason, c.message
                    ));
                }
            }
            Err(e) => problems.push(format!("container runtime status check failed: {e}")),
        }
        if self.facts.borrow().pod_cidr.is_none() {
            problems.push("node has no pod CIDR assigned yet".into());
        }
        RuntimeHealth { problems, version }
    }

    /// Posts the node status every `config.status_interval` when it changed, and at least every
    /// `config.status_report_interval`; renews the Lease every `config.lease_renew_interval`.
    pub async fn run(self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let mut next_status = tokio::time::Instant::now();
        let mut lease_tick = tokio::time::interval(self.config.lease_renew_interval);
        let mut last_posted: Option<(serde_json::Value, tokio::time::Instant)> = None;
        let mut node_uid: Option<String> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_status) => {
                    // Until the node is Ready (a pod CIDR to learn, the runtime's network to come
                    // up), it is checked every second, so it turns Ready as soon as it is.
                    let mut period = self.config.status_interval;
                    match self.post_status(&nodes, &mut last_posted).await {
                        Ok((node, ready)) => {
                            node_uid = node.metadata.uid.or(node_uid);
                            if !ready {
                                period = period.min(NOT_READY_CHECK);
                            }
                        }
                        Err(e) => tracing::warn!("updating node status: {e}"),
                    }
                    next_status = tokio::time::Instant::now() + period;
                }
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_lease(&leases, node_uid.as_deref()).await {
                        tracing::warn!("renewing the node lease: {e}");
                    }
                }
            }
        }
    }

    /// Posts the status when due; returns the node and whether it is Ready.
    async fn post_status(
        &self,
        nodes: &Api<Node>,
        last_posted: &mut Option<(serde_json::Value, tokio::time::Instant)>,
    ) -> Result<(Node, bool), Error> {
        let node = match nodes.get_opt(&self.config.node_name).await? {
            Some(node) => node,
            None => {
                tracing::warn!(
                    "node {} was deleted; registering it again",
                    self.config.node_name
                );
                *last_posted = None;
                self.register().await?
            }
        };
        self.learn(&node);
        let host = Host::of(&self.config, &self.runtime);
        let health = self.runtime_health().await;
        let ready = health.problems.is_empty();
        let now = Time(jiff::Timestamp::now());
        let mut status = status(
            &self.config,
            self.node_ip,
            &host,
            &self.system,
            &health,
            &now,
        );
        let old = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if let Some(conds) = status.conditions.as_mut() {
            keep_transitions(conds, &old);
        }
        let essence = essence(&status);
        let due = match last_posted {
            Some((posted, at)) => {
                *posted != essence || at.elapsed() >= self.config.status_report_interval
            }
            None => true,
        };
        if !due {
            return Ok((node, ready));
        }
        let patch = json!({"status": status});
        let updated = nodes
            .patch_status(
                &self.config.node_name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await?;
        *last_posted = Some((essence, tokio::time::Instant::now()));
        Ok((updated, ready))
    }

    async fn renew_lease(&self, leases: &Api<Lease>, node_uid: Option<&str>) -> Result<(), Error> {
        let name = &self.config.node_name;
        let now = MicroTime(jiff::Timestamp::now());
        if leases.get_opt(name).await?.is_some() {
            let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(LEASE_NAMESPACE.into()),
                owner_references: node_uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid: uid.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            cpus: 2,
            memory: 4 << 30,
            memory_available: 2 << 30,
            disk: 100 << 30,
            disk_available: 50 << 30,
            pid_max: 32768,
            pids: 100,
        }
    }

    fn system() -> System {
        System::simulated("n1")
    }

    #[test]
    fn ready_when_the_runtime_is() {
        let now = Time(jiff::Timestamp::now());
        let ok = RuntimeHealth {
            problems: vec![],
            version: "containerd://1.6.20".into(),
        };
        let c = conditions(&host(), &ok, &now);
        let types: Vec<_> = c
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True")
            ]
        );
        assert_eq!(c[3].reason.as_deref(), Some("KubeletReady"));
        assert_eq!(c[0].reason.as_deref(), Some("KubeletHasSufficientMemory"));

        let down = RuntimeHealth {
            problems: vec!["container runtime network not ready: NetworkReady=false".into()],
            version: String::new(),
        };
        let c = conditions(&host(), &down, &now);
        assert_eq!(
            (c[3].status.as_str(), c[3].reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert!(
            c[3].message
                .as_deref()
                .unwrap_or("")
                .contains("network not ready")
        );
    }

    #[test]
    fn transitions_kept_when_status_stays() {
        let earlier = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let now = Time(jiff::Timestamp::from_second(2_000).unwrap());
        let ok = RuntimeHealth {
            problems: vec![],
            version: String::new(),
        };
        let old = conditions(&host(), &ok, &earlier);
        let mut new = conditions(&host(), &ok, &now);
        let mut pressured = host();
        pressured.memory_available = 0;
        new[0] = conditions(&pressured, &ok, &now)[0].clone();
        keep_transitions(&mut new, &old);
        assert_eq!(
            new[0].last_transition_time,
            Some(now.clone()),
            "MemoryPressure changed"
        );
        assert_eq!(new[3].last_transition_time, Some(earlier), "Ready did not");
        assert_eq!(new[3].last_heartbeat_time, Some(now));
    }

    #[test]
    fn heartbeat_alone_is_no_change() {
        let config = Config::for_tests("n1");
        let ok = RuntimeHealth {
            problems: vec![],
            version: String::new(),
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let sys = system();
        let a = status(
            &config,
            ip,
            &host(),
            &sys,
            &ok,
            &Time(jiff::Timestamp::from_second(1).unwrap()),
        );
        let b = status(
            &config,
            ip,
            &host(),
            &sys,
            &ok,
            &Time(jiff::Timestamp::from_second(99).unwrap()),
        );
        assert_eq!(essence(&a), essence(&b));
        let mut h = host();
        h.memory_available = 0;
        let c = status(
            &config,
            ip,
            &h,
            &sys,
            &ok,
            &Time(jiff::Timestamp::from_second(99).unwrap()),
        );
        assert_ne!(essence(&a), essence(&c));
    }
}
