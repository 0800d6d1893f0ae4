//! What the proxy needs from Services and EndpointSlices, extracted once: [`ServiceInfo`] (a service's
//! virtual addresses, ports and policies) and [`EndpointInfo`] (an endpoint address with its
//! conditions and the ports its slice gives it). Rule generation works on these only.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// A transport protocol the proxy handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The protocol as Kubernetes spells it (`TCP`, `UDP`); others (SCTP) are not handled.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The protocol as nftables spells it.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A service's key: namespace and name.
pub type ServiceKey = (String, String);

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's name (empty for the only, unnamed port); endpoint ports are matched by it.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The port on the ClusterIP.
    pub port: u16,
    /// The NodePort, if the service has one.
    pub node_port: Option<u16>,
}

/// A service as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The IPv4 ClusterIP (None: headless, or IPv6 only).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The TCP and UDP ports.
    pub ports: Vec<PortInfo>,
    /// `sessionAffinity: ClientIP` with this timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`: NodePort traffic only to this node's endpoints.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic only to this node's endpoints.
    pub internal_local: bool,
}

impl ServiceInfo {
    /// The service's key.
    pub fn key(&self) -> ServiceKey {
        (self.namespace.clone(), self.name.clone())
    }

    /// Reads a Service; None for what the proxy does not serve (ExternalName, headless without
    /// NodePorts, no TCP/UDP ports).
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let cluster_ip = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .find_map(|ip| ip.parse::<Ipv4Addr>().ok());
        let with_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let ports: Vec<PortInfo> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInfo {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok()?,
                    node_port: p
                        .node_port
                        .filter(|_| with_node_ports)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n != 0),
                })
            })
            .collect();
        if ports.is_empty() || (cluster_ip.is_none() && ports.iter().all(|p| p.node_port.is_none()))
        {
            return None;
        }
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        Some(ServiceInfo {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            cluster_ip,
            ports,
            affinity_timeout,
            external_local: with_node_ports
                && spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        })
    }
}

/// One endpoint address of a service, as its EndpointSlices give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The address.
    pub ip: Ipv4Addr,
    /// `conditions.ready` (unset counts as ready).
    pub ready: bool,
    /// `conditions.serving` (unset: as ready).
    pub serving: bool,
    /// `conditions.terminating` (unset counts as not terminating).
    pub terminating: bool,
    /// The endpoint runs on this node.
    pub local: bool,
    /// The slice's ports: name → (protocol, port number).
    pub ports: BTreeMap<String, (Protocol, u16)>,
}

/// The endpoints of a service from all its IPv4 slices, for the node named `node`. An address in
/// several slices (as during a controller's move) counts once, with the ports of all of them.
pub fn endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> Vec<EndpointInfo> {
    let mut out: BTreeMap<Ipv4Addr, EndpointInfo> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ports: BTreeMap<String, (Protocol, u16)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    (
                        Protocol::parse(p.protocol.as_deref())?,
                        u16::try_from(p.port?).ok()?,
                    ),
                ))
            })
            .collect();
        for ep in &slice.endpoints {
            // Kubernetes uses the first address only: the others are the same endpoint.
            let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let info = out.entry(ip).or_insert_with(|| EndpointInfo {
                ip,
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(ready),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                local: ep.node_name.as_deref() == Some(node),
                ports: BTreeMap::new(),
            });
            for (name, port) in &ports {
                info.ports.entry(name.clone()).or_insert(*port);
            }
        }
    }
    out.into_values().collect()
}

/// A service port's target on one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The endpoint's address.
    pub ip: Ipv4Addr,
    /// The port on it (the slice's port of the service port's name, so named target ports are
    /// resolved as the EndpointSlice controller resolved them per pod).
    pub port: u16,
}

/// Which endpoints a service port may use, as Kubernetes' topology rules say: the ready ones, or when
/// none is ready the serving terminating ones; each for the whole cluster and for this node alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortEndpoints {
    /// The port has any endpoint at all (ready or not), anywhere.
    pub any: bool,
    /// What cluster-wide traffic uses.
    pub cluster: Vec<Target>,
    /// What node-local traffic uses.
    pub local: Vec<Target>,
}

/// The endpoints of `port` among `eps`.
pub fn port_endpoints(port: &PortInfo, eps: &[EndpointInfo]) -> PortEndpoints {
    let with_port: Vec<(&EndpointInfo, Target)> = eps
        .iter()
        .filter_map(|e| {
            let (proto, p) = e.ports.get(&port.name)?;
            (*proto == port.protocol).then_some((e, Target { ip: e.ip, port: *p }))
        })
        .collect();
    let usable = |local_only: bool| -> Vec<Target> {
        let candidates: Vec<&(&EndpointInfo, Target)> = with_port
            .iter()
            .filter(|(e, _)| !local_only || e.local)
            .collect();
        let ready: Vec<Target> = candidates
            .iter()
            .filter(|(e, _)| e.ready)
            .map(|(_, t)| *t)
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        candidates
            .iter()
            .filter(|(e, _)| e.serving && e.terminating)
            .map(|(_, t)| *t)
            .collect()
    };
    PortEndpoints {
        any: !with_port.is_empty(),
        cluster: usable(false),
        local: usable(true),
    }
}
