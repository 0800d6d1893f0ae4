//! Rule generation: from services, their endpoints and this node's settings to the content of the
//! one nftables table the proxy owns (`ip atoll`), as `nft -f` commands. Pure: no I/O.
//!
//! The table's fixed part ([`Base`]) hooks into the kernel and dispatches through four verdict maps
//! keyed by `daddr . protocol . dport` (or `protocol . dport` for NodePorts), so a packet costs one
//! lookup whatever the number of services. A service without affinity is only map elements:
//!
//! ```text
//! nat-prerouting / nat-output ─▶ services: ip daddr . l4proto . dport vmap @service-ips ─▶ cluster-ip-<N>
//!                                          nodeport-ips + l4proto . dport vmap @service-nodeports ─▶ node-port-<N> or ext-<port>
//! cluster-ip-<N> (shared): masquerade mark outside the pod CIDR;
//!                          dnat ip to ip daddr . l4proto . dport . numgen random mod N map @service-endpoints
//! node-port-<N> (shared): masquerade mark; dnat through @nodeport-endpoints (key l4proto . dport . index)
//! ext-<port> (eTP Local): pods and the node → node-port-pick-<N>, others → node-port-local-pick-<M>
//! cl-/lo-/ep-<port>… (session affinity only): affinity sets, numgen vmap, per-endpoint dnat
//! filter-input/forward/output (new connections): @no-endpoint-services / @no-endpoint-nodeports ─▶ reject or drop
//! nat-postrouting: ct status dnat ip saddr . ip daddr @hairpin ─▶ masquerade mark; masquerading
//! ```
//!
//! Each service contributes a [`ServiceRules`]: its chains, affinity sets, map elements, the
//! [`Shared`] chains it uses and its endpoint addresses for the `hairpin` set (both shared by all
//! services, so [`crate::state::State`] makes and counts them). A change to one service becomes
//! [`update`]: only that service's chains, sets and elements, in an order the kernel accepts inside
//! one transaction. [`full`] replaces the whole table atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::model::{
    EndpointInfo, PortEndpoints, PortInfo, Protocol, ServiceInfo, Target, port_endpoints,
};

/// The table's family and name.
pub const TABLE: &str = "ip atoll";
/// The packet mark bit that asks for masquerading (as kube-proxy's 0x4000).
pub const MASQUERADE_MARK: &str = "0x4000";

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const CLUSTER_IPS: &str = "cluster-ips";
const NODEPORT_IPS: &str = "nodeport-ips";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";
const SERVICE_ENDPOINTS: &str = "service-endpoints";
const NODEPORT_ENDPOINTS: &str = "nodeport-endpoints";
const NODEPORT_LOCAL_ENDPOINTS: &str = "nodeport-local-endpoints";
const HAIRPIN: &str = "hairpin";
/// The protocols the shared chains DNAT (a port in the map's value needs the protocol known).
const PROTOCOLS: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

/// A chain shared by every service port with the same number of endpoints `n`: it picks one at
/// random through a named map (`… . numgen random mod n`), so a service needs no chain of its own.
/// Few chains refer to the big maps, which matters: the kernel checks every element of a map
/// against every rule using it when either is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shared {
    /// ClusterIP traffic: masquerade from outside the pod network, then `service-endpoints`.
    ClusterIp(usize),
    /// NodePort traffic (externalTrafficPolicy Cluster): masquerade, then `nodeport-endpoints`.
    NodePort(usize),
    /// A pick from `nodeport-endpoints` alone.
    NodePortPick(usize),
    /// A pick from `nodeport-local-endpoints` (this node's endpoints).
    NodePortLocalPick(usize),
}

impl Shared {
    /// The chain's name.
    pub fn name(&self) -> String {
        match self {
            Shared::ClusterIp(n) => format!("cluster-ip-{n}"),
            Shared::NodePort(n) => format!("node-port-{n}"),
            Shared::NodePortPick(n) => format!("node-port-pick-{n}"),
            Shared::NodePortLocalPick(n) => format!("node-port-local-pick-{n}"),
        }
    }

    /// The chain's rules.
    fn rules(&self, base: &Base) -> Vec<String> {
        let pick = |map: &str, key: &str, n: usize| -> Vec<String> {
            PROTOCOLS
                .iter()
                .map(|p| {
                    format!(
                        "meta l4proto {} dnat ip to {key} . numgen random mod {n} map @{map}",
                        p.nft()
                    )
                })
                .collect()
        };
        let service_key = "ip daddr . meta l4proto . th dport";
        let nodeport_key = "meta l4proto . th dport";
        let mut rules = Vec::new();
        match *self {
            Shared::ClusterIp(n) => {
                if let Some(cidr) = &base.cluster_cidr {
                    rules.push(format!("ip saddr != {cidr} jump {MARK_FOR_MASQUERADE}"));
                }
                rules.extend(pick(SERVICE_ENDPOINTS, service_key, n));
            }
            Shared::NodePort(n) => {
                rules.push(format!("jump {MARK_FOR_MASQUERADE}"));
                rules.extend(pick(NODEPORT_ENDPOINTS, nodeport_key, n));
            }
            Shared::NodePortPick(n) => rules.extend(pick(NODEPORT_ENDPOINTS, nodeport_key, n)),
            Shared::NodePortLocalPick(n) => {
                rules.extend(pick(NODEPORT_LOCAL_ENDPOINTS, nodeport_key, n))
            }
        }
        rules
    }
}

/// What the fixed part of the table depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base {
    /// The cluster's pod network (`10.244.0.0/16`): traffic to a ClusterIP from outside it is
    /// masqueraded. None: ClusterIP traffic is masqueraded only for hairpin.
    pub cluster_cidr: Option<String>,
    /// The node addresses NodePorts answer on (with `127.0.0.1` when localhost NodePorts are on).
    pub node_ips: BTreeSet<Ipv4Addr>,
}

/// An element of one of the table's sets or maps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    /// The set or map.
    pub set: &'static str,
    /// The key, in nft syntax (`10.96.0.10 . tcp . 80`).
    pub key: String,
    /// The value for maps (`goto svc-…`, `drop`), None in sets.
    pub value: Option<String>,
}

/// A UDP service port's virtual addresses and endpoint addresses, for flushing conntrack entries
/// to endpoints that went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFlow {
    /// The ClusterIP and port.
    pub cluster: Option<(Ipv4Addr, u16)>,
    /// The NodePort.
    pub node_port: Option<u16>,
    /// Every endpoint address traffic may go to.
    pub endpoints: BTreeSet<Ipv4Addr>,
}

/// One service's part of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chains by name, with their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Session affinity sets by name, with their timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// Elements of the shared maps and sets.
    pub elements: BTreeSet<Element>,
    /// UDP ports, for conntrack clean-up.
    pub udp: Vec<UdpFlow>,
    /// The shared chains its elements point at.
    pub shared: BTreeSet<Shared>,
    /// Endpoint addresses reached through the shared maps: traffic from one of them DNATed back to
    /// itself is masqueraded (hairpin), through the `hairpin` set shared by all services.
    pub hairpin: BTreeSet<Ipv4Addr>,
}

impl ServiceRules {
    /// How many rules and map elements this service programs.
    pub fn size(&self) -> usize {
        self.chains.values().map(Vec::len).sum::<usize>() + self.elements.len()
    }
}

/// The name part identifying one service port: `ns/name/proto/port` (the port's name, or its
/// number when unnamed).
fn port_id(svc: &ServiceInfo, port: &PortInfo) -> String {
    let id = if port.name.is_empty() {
        port.port.to_string()
    } else {
        port.name.clone()
    };
    format!(
        "{}/{}/{}/{id}",
        svc.namespace,
        svc.name,
        port.protocol.nft()
    )
}

/// The chain DNATing to one endpoint of a service port.
fn endpoint_chain(id: &str, t: &Target) -> String {
    format!("ep-{id}__{}/{}", t.ip, t.port)
}

/// The affinity set of one endpoint of a service port.
fn affinity_set(id: &str, t: &Target) -> String {
    format!("aff-{id}__{}/{}", t.ip, t.port)
}

/// The rules of a chain that picks one of `targets` (non-empty): a client with affinity goes back
/// to its endpoint, others are spread at random through one verdict map lookup.
fn selection(id: &str, targets: &[Target], affinity: bool) -> Vec<String> {
    let mut rules = Vec::new();
    if affinity {
        for t in targets {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(id, t),
                endpoint_chain(id, t)
            ));
        }
    }
    if let [only] = targets {
        rules.push(format!("goto {}", endpoint_chain(id, only)));
    } else {
        let arms: Vec<String> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{i} : goto {}", endpoint_chain(id, t)))
            .collect();
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            targets.len(),
            arms.join(", ")
        ));
    }
    rules
}

/// The elements that spread one service port's traffic over `targets` through `map`: key
/// `prefix . index`, value the endpoint's address and port.
fn endpoint_elements(map: &'static str, prefix: &str, targets: &[Target], out: &mut ServiceRules) {
    for (i, t) in targets.iter().enumerate() {
        out.elements.insert(Element {
            set: map,
            key: format!("{prefix} . {i}"),
            value: Some(format!("{} . {}", t.ip, t.port)),
        });
        out.hairpin.insert(t.ip);
    }
}

/// The rules of one service, given its endpoints and the node's settings.
///
/// Without session affinity a service port is only map elements: its ClusterIP and NodePort
/// point at a [`Shared`] chain for its number of endpoints, which DNATs through a lookup in a
/// named map keyed by the packet's destination and a random index. Only an
/// `externalTrafficPolicy: Local` NodePort gets a chain of its own (`ext-…`). With affinity, the
/// port keeps per-endpoint chains and sets (`cl-`/`lo-`/`ep-…`).
pub fn service_rules(svc: &ServiceInfo, eps: &[EndpointInfo], base: &Base) -> ServiceRules {
    if svc.affinity_timeout.is_some() {
        return affinity_service_rules(svc, eps, base);
    }
    let mut out = ServiceRules::default();
    if let Some(ip) = svc.cluster_ip {
        out.elements.insert(Element {
            set: CLUSTER_IPS,
            key: ip.to_string(),
            value: None,
        });
    }
    for port in &svc.ports {
        let id = port_id(svc, port);
        let proto = port.protocol.nft();
        let pe = port_endpoints(port, eps);
        let nothing = if pe.any { "drop" } else { "goto reject-chain" };
        if let Some(ip) = svc.cluster_ip {
            let key = format!("{ip} . {proto} . {}", port.port);
            let internal = if svc.internal_local {
                &pe.local
            } else {
                &pe.cluster
            };
            if internal.is_empty() {
                out.elements.insert(Element {
                    set: NO_ENDPOINT_SERVICES,
                    key,
                    value: Some(nothing.into()),
                });
            } else {
                let shared = Shared::ClusterIp(internal.len());
                endpoint_elements(SERVICE_ENDPOINTS, &key, internal, &mut out);
                out.elements.insert(Element {
                    set: SERVICE_IPS,
                    key,
                    value: Some(format!("goto {}", shared.name())),
                });
                out.shared.insert(shared);
            }
        }
        if let Some(np) = port.node_port {
            let key = format!("{proto} . {np}");
            let external = if svc.external_local {
                &pe.local
            } else {
                &pe.cluster
            };
            if external.is_empty() {
                out.elements.insert(Element {
                    set: NO_ENDPOINT_NODEPORTS,
                    key,
                    value: Some(nothing.into()),
                });
                continue;
            }
            endpoint_elements(NODEPORT_ENDPOINTS, &key, &pe.cluster, &mut out);
            let target = if svc.external_local {
                // Pods and the node itself are not "external": they may use any endpoint, and
                // the node's own traffic is masqueraded so replies come back through it.
                let cluster = Shared::NodePortPick(pe.cluster.len());
                let local = Shared::NodePortLocalPick(pe.local.len());
                endpoint_elements(NODEPORT_LOCAL_ENDPOINTS, &key, &pe.local, &mut out);
                let chain = format!("ext-{id}");
                let mut rules = Vec::new();
                if let Some(cidr) = &base.cluster_cidr {
                    rules.push(format!("ip saddr {cidr} goto {}", cluster.name()));
                }
                rules.push(format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"));
                rules.push(format!("fib saddr type local goto {}", cluster.name()));
                rules.push(format!("goto {}", local.name()));
                out.shared.insert(cluster);
                out.shared.insert(local);
                out.chains.insert(chain.clone(), rules);
                chain
            } else {
                let shared = Shared::NodePort(pe.cluster.len());
                out.shared.insert(shared);
                shared.name()
            };
            out.elements.insert(Element {
                set: SERVICE_NODEPORTS,
                key,
                value: Some(format!("goto {target}")),
            });
        }
        if port.protocol == Protocol::Udp {
            out.udp.push(udp_flow(svc, port, &pe));
        }
    }
    out
}

fn udp_flow(svc: &ServiceInfo, port: &PortInfo, pe: &PortEndpoints) -> UdpFlow {
    UdpFlow {
        cluster: svc.cluster_ip.map(|ip| (ip, port.port)),
        node_port: port.node_port,
        endpoints: pe
            .cluster
            .iter()
            .chain(pe.local.iter())
            .map(|t| t.ip)
            .collect(),
    }
}

/// The rules of a service with session affinity: per-endpoint chains, each with its affinity set.
fn affinity_service_rules(svc: &ServiceInfo, eps: &[EndpointInfo], base: &Base) -> ServiceRules {
    let mut out = ServiceRules::default();
    let affinity = svc.affinity_timeout;
    if let Some(ip) = svc.cluster_ip {
        out.elements.insert(Element {
            set: CLUSTER_IPS,
            key: ip.to_string(),
            value: None,
        });
    }
    for port in &svc.ports {
        let id = port_id(svc, port);
        let proto = port.protocol.nft();
        let pe = port_endpoints(port, eps);
        let cluster_chain = format!("cl-{id}");
        let local_chain = format!("lo-{id}");
        let mut used: BTreeSet<Target> = BTreeSet::new();
        let mut want_cluster = false;
        let mut want_local = false;
        // Where traffic with no endpoint to go to ends: rejected when the port has none at all,
        // dropped when it has some but none this traffic may use (Local policies).
        let nothing = if pe.any { "drop" } else { "goto reject-chain" };

        if let Some(ip) = svc.cluster_ip {
            let key = format!("{ip} . {proto} . {}", port.port);
            let internal = if svc.internal_local {
                &pe.local
            } else {
                &pe.cluster
            };
            if internal.is_empty() {
                out.elements.insert(Element {
                    set: NO_ENDPOINT_SERVICES,
                    key,
                    value: Some(nothing.into()),
                });
            } else {
                let chain = format!("svc-{id}");
                let mut rules = Vec::new();
                if let Some(cidr) = &base.cluster_cidr {
                    rules.push(format!("ip saddr != {cidr} jump {MARK_FOR_MASQUERADE}"));
                }
                if svc.internal_local {
                    want_local = true;
                    rules.push(format!("goto {local_chain}"));
                } else {
                    want_cluster = true;
                    rules.push(format!("goto {cluster_chain}"));
                }
                out.elements.insert(Element {
                    set: SERVICE_IPS,
                    key,
                    value: Some(format!("goto {chain}")),
                });
                out.chains.insert(chain, rules);
            }
        }

        if let Some(np) = port.node_port {
            let key = format!("{proto} . {np}");
            let external = if svc.external_local {
                &pe.local
            } else {
                &pe.cluster
            };
            if external.is_empty() {
                out.elements.insert(Element {
                    set: NO_ENDPOINT_NODEPORTS,
                    key,
                    value: Some(nothing.into()),
                });
            } else {
                let chain = format!("ext-{id}");
                let mut rules = Vec::new();
                want_cluster = true;
                if svc.external_local {
                    // Pods and the node itself are not "external": they may use any endpoint, and
                    // the node's own traffic is masqueraded so replies come back through it.
                    if let Some(cidr) = &base.cluster_cidr {
                        rules.push(format!("ip saddr {cidr} goto {cluster_chain}"));
                    }
                    rules.push(format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"));
                    rules.push(format!("fib saddr type local goto {cluster_chain}"));
                    rules.push(format!("goto {local_chain}"));
                    want_local = true;
                } else {
                    rules.push(format!("jump {MARK_FOR_MASQUERADE}"));
                    rules.push(format!("goto {cluster_chain}"));
                }
                out.elements.insert(Element {
                    set: SERVICE_NODEPORTS,
                    key,
                    value: Some(format!("goto {chain}")),
                });
                out.chains.insert(chain, rules);
            }
        }

        if want_cluster {
            out.chains.insert(
                cluster_chain,
                selection(&id, &pe.cluster, affinity.is_some()),
            );
            used.extend(pe.cluster.iter().copied());
        }
        if want_local {
            out.chains
                .insert(local_chain, selection(&id, &pe.local, affinity.is_some()));
            used.extend(pe.local.iter().copied());
        }
        for t in &used {
            let mut rules = vec![format!("ip saddr {} jump {MARK_FOR_MASQUERADE}", t.ip)];
            if let Some(timeout) = affinity {
                let set = affinity_set(&id, t);
                rules.push(format!("update @{set} {{ ip saddr }}"));
                out.sets.insert(set, timeout);
            }
            rules.push(format!("meta l4proto {proto} dnat to {}:{}", t.ip, t.port));
            out.chains.insert(endpoint_chain(&id, t), rules);
        }
        if port.protocol == Protocol::Udp {
            out.udp.push(udp_flow(svc, port, &pe));
        }
    }
    out
}

/// The fixed chains with their hooks, in declaration order.
const BASE_CHAINS: &[(&str, Option<&str>)] = &[
    ("filter-input", Some("type filter hook input priority -10")),
    (
        "filter-forward",
        Some("type filter hook forward priority -10"),
    ),
    (
        "filter-output",
        Some("type filter hook output priority -10"),
    ),
    (
        "nat-prerouting",
        Some("type nat hook prerouting priority -100"),
    ),
    ("nat-output", Some("type nat hook output priority -100")),
    (
        "nat-postrouting",
        Some("type nat hook postrouting priority 100"),
    ),
    ("services", None),
    ("masquerading", None),
    (MARK_FOR_MASQUERADE, None),
    (REJECT_CHAIN, None),
];

/// The fixed sets and maps: name and type (`type …` or `typeof …`).
const BASE_SETS: &[(&str, &str)] = &[
    (CLUSTER_IPS, "ipv4_addr"),
    (NODEPORT_IPS, "ipv4_addr"),
    (
        SERVICE_IPS,
        "ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (SERVICE_NODEPORTS, "inet_proto . inet_service : verdict"),
    (
        NO_ENDPOINT_SERVICES,
        "ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (NO_ENDPOINT_NODEPORTS, "inet_proto . inet_service : verdict"),
    (
        SERVICE_ENDPOINTS,
        "typeof ip daddr . meta l4proto . tcp dport . numgen random mod 1 : ip daddr . tcp dport",
    ),
    (
        NODEPORT_ENDPOINTS,
        "typeof meta l4proto . tcp dport . numgen random mod 1 : ip daddr . tcp dport",
    ),
    (
        NODEPORT_LOCAL_ENDPOINTS,
        "typeof meta l4proto . tcp dport . numgen random mod 1 : ip daddr . tcp dport",
    ),
    (HAIRPIN, "ipv4_addr . ipv4_addr"),
];

/// The fixed chains' rules.
fn base_rules() -> Vec<(&'static str, String)> {
    let services_check =
        format!("ct state new ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}");
    let cluster_ips_check = format!("ct state new ip daddr @{CLUSTER_IPS} goto {REJECT_CHAIN}");
    vec![
        (
            "filter-input",
            format!(
                "ct state new ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
            ),
        ),
        ("filter-forward", services_check.clone()),
        ("filter-forward", cluster_ips_check.clone()),
        ("filter-output", services_check),
        ("filter-output", cluster_ips_check),
        ("nat-prerouting", "jump services".into()),
        ("nat-output", "jump services".into()),
        (
            "nat-postrouting",
            format!("ct status dnat ip saddr . ip daddr @{HAIRPIN} jump {MARK_FOR_MASQUERADE}"),
        ),
        ("nat-postrouting", "jump masquerading".into()),
        (
            "services",
            format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
        ),
        (
            "services",
            format!("ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        ),
        (
            "masquerading",
            format!("meta mark & {MASQUERADE_MARK} == 0 return"),
        ),
        (
            "masquerading",
            format!("meta mark set meta mark xor {MASQUERADE_MARK}"),
        ),
        ("masquerading", "masquerade fully-random".into()),
        (
            MARK_FOR_MASQUERADE,
            format!("meta mark set meta mark or {MASQUERADE_MARK}"),
        ),
        (
            REJECT_CHAIN,
            "meta l4proto tcp reject with tcp reset".into(),
        ),
        (REJECT_CHAIN, "reject".into()),
    ]
}

fn element_cmd(verb: &str, e: &Element, out: &mut String) {
    let _ = match (&e.value, verb) {
        (Some(v), "add") => writeln!(out, "add element {TABLE} {} {{ {} : {v} }}", e.set, e.key),
        _ => writeln!(out, "{verb} element {TABLE} {} {{ {} }}", e.set, e.key),
    };
}

fn set_decl(name: &str, timeout: u32, out: &mut String) {
    let _ = writeln!(
        out,
        "add set {TABLE} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"
    );
}

/// The transaction that replaces the whole table with `base` and `services`: the table is deleted
/// and made again inside one `nft -f` run, so the kernel switches from the old rules to the new
/// ones at once. Elements are written one command per set (parsing is most of `nft`'s time).
pub fn full<'a>(base: &Base, services: impl IntoIterator<Item = &'a ServiceRules>) -> String {
    let services: Vec<&ServiceRules> = services.into_iter().collect();
    let mut out = String::new();
    let _ = writeln!(out, "add table {TABLE}");
    let _ = writeln!(out, "delete table {TABLE}");
    let _ = writeln!(out, "add table {TABLE}");
    for (name, hook) in BASE_CHAINS {
        match hook {
            Some(h) => {
                let _ = writeln!(out, "add chain {TABLE} {name} {{ {h} ; }}");
            }
            None => {
                let _ = writeln!(out, "add chain {TABLE} {name}");
            }
        }
    }
    for (name, ty) in BASE_SETS {
        let kind = if ty.contains(':') { "map" } else { "set" };
        let ty = if ty.starts_with("typeof ") {
            ty.to_string()
        } else {
            format!("type {ty}")
        };
        let _ = writeln!(out, "add {kind} {TABLE} {name} {{ {ty} ; }}");
    }
    for (chain, rule) in base_rules() {
        let _ = writeln!(out, "add rule {TABLE} {chain} {rule}");
    }
    let shared: BTreeSet<Shared> = services
        .iter()
        .flat_map(|s| s.shared.iter())
        .copied()
        .collect();
    out.push_str(&shared_chains(base, &shared));
    for s in &services {
        for name in s.chains.keys() {
            let _ = writeln!(out, "add chain {TABLE} {name}");
        }
        for (name, timeout) in &s.sets {
            set_decl(name, *timeout, &mut out);
        }
    }
    let mut elements: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ip in &base.node_ips {
        elements
            .entry(NODEPORT_IPS)
            .or_default()
            .push(ip.to_string());
    }
    let hairpin: BTreeSet<Ipv4Addr> = services
        .iter()
        .flat_map(|s| s.hairpin.iter())
        .copied()
        .collect();
    for ip in hairpin {
        elements
            .entry(HAIRPIN)
            .or_default()
            .push(format!("{ip} . {ip}"));
    }
    for s in &services {
        for e in &s.elements {
            let item = match &e.value {
                Some(v) => format!("{} : {v}", e.key),
                None => e.key.clone(),
            };
            elements.entry(e.set).or_default().push(item);
        }
    }
    for (set, items) in elements {
        let _ = writeln!(out, "add element {TABLE} {set} {{ {} }}", items.join(", "));
    }
    for s in &services {
        for (name, rules) in &s.chains {
            for r in rules {
                let _ = writeln!(out, "add rule {TABLE} {name} {r}");
            }
        }
    }
    out
}

/// The commands that make the shared chains `shared` (not made yet) with their rules.
pub fn shared_chains(base: &Base, shared: &BTreeSet<Shared>) -> String {
    let mut out = String::new();
    for c in shared {
        let _ = writeln!(out, "add chain {TABLE} {}", c.name());
    }
    for c in shared {
        for r in c.rules(base) {
            let _ = writeln!(out, "add rule {TABLE} {} {r}", c.name());
        }
    }
    out
}

/// The commands that add addresses to and remove addresses from the `hairpin` set.
pub fn hairpin_update(add: &[Ipv4Addr], delete: &[Ipv4Addr]) -> String {
    let mut out = String::new();
    let items = |ips: &[Ipv4Addr]| -> String {
        ips.iter()
            .map(|ip| format!("{ip} . {ip}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !delete.is_empty() {
        let _ = writeln!(
            out,
            "delete element {TABLE} {HAIRPIN} {{ {} }}",
            items(delete)
        );
    }
    if !add.is_empty() {
        let _ = writeln!(out, "add element {TABLE} {HAIRPIN} {{ {} }}", items(add));
    }
    out
}

/// The commands that change one service's part of the table from `old` to `new` (None: absent),
/// touching nothing else; empty when nothing changed. None when the change cannot be made in place
/// (an affinity timeout changed): the caller then replaces the whole table.
pub fn update(old: Option<&ServiceRules>, new: Option<&ServiceRules>) -> Option<String> {
    let empty = ServiceRules::default();
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);
    for (name, timeout) in &new.sets {
        if old.sets.get(name).is_some_and(|t| t != timeout) {
            return None;
        }
    }
    let mut out = String::new();
    // 1. chains and sets that are new, empty, so anything may refer to them.
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(out, "add chain {TABLE} {name}");
    }
    for (name, timeout) in new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
        set_decl(name, *timeout, &mut out);
    }
    // 2. rules of new and changed chains.
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(before) if before == rules => continue,
            Some(_) => {
                let _ = writeln!(out, "flush chain {TABLE} {name}");
            }
            None => {}
        }
        for r in rules {
            let _ = writeln!(out, "add rule {TABLE} {name} {r}");
        }
    }
    // 3. map elements: the old ones out first, so a key that changes its verdict is re-added.
    for e in old.elements.difference(&new.elements) {
        element_cmd("delete", e, &mut out);
    }
    for e in new.elements.difference(&old.elements) {
        element_cmd("add", e, &mut out);
    }
    // 4. chains and sets no longer used: emptied first (they may refer to each other), then deleted.
    let gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain {TABLE} {name}");
    }
    for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        let _ = writeln!(out, "delete set {TABLE} {name}");
    }
    Some(out)
}

/// The commands that remove the table and everything in it (nothing else is ever made).
pub fn cleanup() -> String {
    format!("add table {TABLE}\ndelete table {TABLE}\n")
}

/// UDP endpoints that `old` sent to and `new` no longer does, as (flow, endpoint address): their
/// conntrack entries keep sending datagrams to a gone endpoint until flushed.
pub fn stale_udp(
    old: Option<&ServiceRules>,
    new: Option<&ServiceRules>,
) -> Vec<(UdpFlow, Ipv4Addr)> {
    let mut out = Vec::new();
    for flow in old.map(|o| o.udp.as_slice()).unwrap_or_default() {
        let kept = new
            .into_iter()
            .flat_map(|n| n.udp.iter())
            .find(|f| f.cluster == flow.cluster && f.node_port == flow.node_port);
        for ip in &flow.endpoints {
            if !kept.is_some_and(|k| k.endpoints.contains(ip)) {
                out.push((flow.clone(), *ip));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
