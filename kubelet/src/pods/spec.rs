//! From a pod spec to what the runtime is asked for: the sandbox config (hostname, DNS, port
//! mappings, namespaces, cgroup parent), each container's config (command, env, working dir, cgroup
//! limits from resources, security context), the pod's QoS class and the spec hash that tells the
//! kubelet a running container no longer matches its spec.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};

use crate::cri::labels;

/// A pod's QoS class, which decides its cgroup parent and OOM score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Every container has equal cpu and memory requests and limits.
    Guaranteed,
    /// Some requests or limits, not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

impl Qos {
    /// The name `status.qosClass` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// The pod's QoS class, as Kubernetes computes it (the rule lives in `atoll-api`).
pub fn qos(pod: &Pod) -> Qos {
    match pod.spec.as_ref().map(atoll_api::kinds::qos_class) {
        Some("Guaranteed") => Qos::Guaranteed,
        Some("Burstable") => Qos::Burstable,
        _ => Qos::BestEffort,
    }
}

/// A quantity's value in units (`100m` → 0.1, `64Mi` → 67108864).
pub fn quantity(q: &str) -> Option<f64> {
    atoll_api::kinds::parse_quantity(q).map(|nanos| nanos as f64 / 1e9)
}

/// The pod's cgroup parent under `cgroup_root`: `<root>/kubepods/pod<uid>` for Guaranteed pods,
/// `<root>/kubepods/<qos>/pod<uid>` for the others (the cgroupfs layout Kubernetes uses).
pub fn cgroup_parent(cgroup_root: &str, qos: Qos, uid: &str) -> String {
    let root = cgroup_root.trim_end_matches('/');
    match qos {
        Qos::Guaranteed => format!("{root}/kubepods/pod{uid}"),
        Qos::Burstable => format!("{root}/kubepods/burstable/pod{uid}"),
        Qos::BestEffort => format!("{root}/kubepods/besteffort/pod{uid}"),
    }
}

/// A stable 64-bit FNV-1a hash, so container hashes survive a kubelet rebuilt with another compiler.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of a container's spec: a running container whose hash differs is replaced.
/// Resources are left out, as Kubernetes does (they may be resized in place).
pub fn container_hash(c: &Container) -> String {
    let mut c = c.clone();
    c.resources = None;
    format!("{:x}", fnv1a(&serde_json::to_vec(&c).unwrap_or_default()))
}

/// The identity labels of a pod's sandbox (and, with the container's name, of its containers).
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    HashMap::from([
        (
            labels::POD_NAME.to_string(),
            m.name.clone().unwrap_or_default(),
        ),
        (
            labels::POD_NAMESPACE.to_string(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (
            labels::POD_UID.to_string(),
            m.uid.clone().unwrap_or_default(),
        ),
    ])
}

/// Where a pod's container logs go: `<root>/pods/<namespace>_<name>_<uid>` (as `/var/log/pods`).
pub fn log_directory(logs_root: &std::path::Path, pod: &Pod) -> std::path::PathBuf {
    let m = &pod.metadata;
    logs_root.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    ))
}

/// Everything the sandbox config needs beyond the pod itself.
pub struct SandboxInputs<'a> {
    /// The pod's cgroup parent.
    pub cgroup_parent: String,
    /// Where container logs go.
    pub log_directory: String,
    /// The host's resolvers, for `dnsPolicy: Default` (and ClusterFirst while there is no cluster DNS).
    pub host_dns: &'a cri::DnsConfig,
    /// The sandbox's attempt (0 for the first).
    pub attempt: u32,
}

/// The sandbox config for a pod.
pub fn sandbox_config(pod: &Pod, inputs: &SandboxInputs) -> cri::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let m = &pod.metadata;
    let host_network = spec.host_network.unwrap_or(false);
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let dns_config = match spec.dns_policy.as_deref() {
        Some("None") => {
            let d = spec.dns_config.clone().unwrap_or_default();
            cri::DnsConfig {
                servers: d.nameservers.unwrap_or_default(),
                searches: d.searches.unwrap_or_default(),
                options: d
                    .options
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|o| {
                        Some(match o.value {
                            Some(v) => format!("{}:{v}", o.name?),
                            None => o.name?,
                        })
                    })
                    .collect(),
            }
        }
        _ => inputs.host_dns.clone(),
    };
    let privileged = all_containers(pod).any(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    let psc = spec.security_context.clone().unwrap_or_default();
    let namespace_options = cri::NamespaceOption {
        network: if host_network {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        } as i32,
        pid: if spec.host_pid.unwrap_or(false) {
            cri::NamespaceMode::Node
        } else if spec.share_process_namespace.unwrap_or(false) {
            cri::NamespaceMode::Pod
        } else {
            cri::NamespaceMode::Container
        } as i32,
        ipc: if spec.host_ipc.unwrap_or(false) {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        } as i32,
        ..Default::default()
    };
    let hostname = if host_network {
        crate::host::hostname()
    } else {
        spec.hostname
            .clone()
            .or_else(|| m.name.clone())
            .unwrap_or_default()
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt: inputs.attempt,
        }),
        hostname,
        log_directory: inputs.log_directory.clone(),
        dns_config: Some(dns_config),
        port_mappings,
        labels: pod_labels(pod),
        annotations: m
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: inputs.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options),
                run_as_user: psc.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.name, s.value))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// The cgroup limits for a container's resources, with the OOM score for its pod's QoS class.
pub fn linux_resources(
    r: Option<&ResourceRequirements>,
    qos: Qos,
    node_memory: u64,
) -> cri::LinuxContainerResources {
    let r = r.cloned().unwrap_or_default();
    let limits = r.limits.unwrap_or_default();
    let requests = r.requests.unwrap_or_default();
    let cpu = |m: &std::collections::BTreeMap<
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    >| { m.get("cpu").and_then(|q| quantity(&q.0)) };
    let memory_limit = limits
        .get("memory")
        .and_then(|q| quantity(&q.0))
        .map(|v| v as i64)
        .unwrap_or(0);
    let memory_request = requests
        .get("memory")
        .and_then(|q| quantity(&q.0))
        .map(|v| v as u64)
        .or(if memory_limit > 0 {
            Some(memory_limit as u64)
        } else {
            None
        })
        .unwrap_or(0);
    let cpu_request = cpu(&requests).or(cpu(&limits));
    // 1 CPU = 1024 shares; a container without a request gets the minimum (2), as in Kubernetes.
    let cpu_shares = cpu_request.map_or(2, |c| ((c * 1024.0).round() as i64).max(2));
    let (cpu_period, cpu_quota) = match cpu(&limits) {
        Some(c) if c > 0.0 => (100_000, ((c * 100_000.0).round() as i64).max(1_000)),
        _ => (100_000, 0),
    };
    let oom_score_adj = match qos {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let share = (1000 * memory_request)
                .checked_div(node_memory)
                .unwrap_or(0);
            (1000 - share as i64).clamp(3, 999)
        }
    };
    cri::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: memory_limit,
        oom_score_adj,
        ..Default::default()
    }
}

/// Expands `$(VAR)` references in `s` from `env` as Kubernetes does: `$$` escapes a `$`, and an
/// unknown reference is left as written.
pub fn expand(s: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Everything a container config needs beyond the pod and the container itself.
pub struct ContainerInputs {
    /// Environment, already resolved (valueFrom, envFrom) and expanded, in order.
    pub env: Vec<(String, String)>,
    /// Mounts from the pod's volumes and the kubelet's own files.
    pub mounts: Vec<cri::Mount>,
    /// The container's attempt (its restart count).
    pub attempt: u32,
    /// The pod's QoS class.
    pub qos: Qos,
    /// The node's memory, for the Burstable OOM score.
    pub node_memory: u64,
    /// Whether this is an init container.
    pub init: bool,
}

/// The container config for a container of a pod.
pub fn container_config(pod: &Pod, c: &Container, inputs: ContainerInputs) -> cri::ContainerConfig {
    let env_map: HashMap<String, String> = inputs.env.iter().cloned().collect();
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let mut labels = pod_labels(pod);
    labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    if inputs.init {
        labels.insert(labels::INIT_CONTAINER.into(), "true".into());
    }
    let mut annotations = HashMap::from([
        (labels::CONTAINER_HASH.to_string(), container_hash(c)),
        (
            "io.kubernetes.container.restartCount".to_string(),
            inputs.attempt.to_string(),
        ),
    ]);
    if let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        annotations.insert(
            "io.kubernetes.pod.terminationGracePeriod".into(),
            g.to_string(),
        );
    }
    let capabilities = sc.capabilities.clone().map(|caps| cri::Capability {
        add_capabilities: caps
            .add
            .unwrap_or_default()
            .into_iter()
            .map(cap_name)
            .collect(),
        drop_capabilities: caps
            .drop
            .unwrap_or_default()
            .into_iter()
            .map(cap_name)
            .collect(),
        add_ambient_capabilities: vec![],
    });
    let privileged = sc.privileged.unwrap_or(false);
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: inputs.attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &env_map))
            .collect(),
        args: c
            .args
            .iter()
            .flatten()
            .map(|s| expand(s, &env_map))
            .collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: inputs
            .env
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: inputs.mounts,
        labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, inputs.attempt),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(
                c.resources.as_ref(),
                inputs.qos,
                inputs.node_memory,
            )),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities,
                privileged,
                namespace_options: Some(cri::NamespaceOption {
                    network: if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.host_network)
                        .unwrap_or(false)
                    {
                        cri::NamespaceMode::Node
                    } else {
                        cri::NamespaceMode::Pod
                    } as i32,
                    pid: if pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false) {
                        cri::NamespaceMode::Node
                    } else if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.share_process_namespace)
                        .unwrap_or(false)
                    {
                        cri::NamespaceMode::Pod
                    } else {
                        cri::NamespaceMode::Container
                    } as i32,
                    ipc: if pod.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false) {
                        cri::NamespaceMode::Node
                    } else {
                        cri::NamespaceMode::Pod
                    } as i32,
                    ..Default::default()
                }),
                run_as_user: sc
                    .run_as_user
                    .or(psc.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: sc
                    .run_as_group
                    .or(psc.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                no_new_privs: !privileged && sc.allow_privilege_escalation == Some(false),
                ..Default::default()
            }),
        }),
        windows: None,
        cdi_devices: vec![],
        devices: vec![],
    }
}

/// CRI wants capability names as the kernel spells them without the prefix (`NET_ADMIN`), and
/// Kubernetes users write either form.
fn cap_name(c: String) -> String {
    c.strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(c)
        .to_uppercase()
}

#[cfg(test)]
mod tests;
