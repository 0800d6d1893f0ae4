//! `v1 Service`: defaulting, validation, the clusterIP update rule and kubectl's table. Cluster IPs,
//! node ports and IP families are allocated by the API server, not here.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::Typed;
use super::pod::{default_str, protocol, s};
use crate::error::Cause;
use crate::table::Column;
use crate::validation;

const COLS: &[Column] = &[
    Column::text(
        "Type",
        "How the Service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName.",
    ),
    Column::text(
        "Cluster-IP",
        "The IP address the Service is reachable at inside the cluster.",
    ),
    Column::text(
        "External-IP",
        "The addresses the Service is reachable at from outside the cluster.",
    ),
    Column::text("Port(s)", "The ports the Service exposes."),
    Column::AGE,
    Column::wide(
        "Selector",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const MAX_AFFINITY_SECONDS: i32 = 86400;

/// The hooks of `v1 Service`.
pub fn service() -> Typed<Service> {
    Typed {
        columns: COLS,
        row: service_row,
        default: default_service,
        prepare_create: prepare_service,
        prepare_update: prepare_service_update,
        validate: validate_service,
        validate_update: validate_service_update,
        ..Typed::default()
    }
}

fn type_of(spec: &ServiceSpec) -> &str {
    s(&spec.type_)
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn is_headless(spec: &ServiceSpec) -> bool {
    spec.cluster_ip.as_deref() == Some("None")
}

/// Whether the Service needs a cluster IP allocated: every type but ExternalName, unless headless.
pub fn needs_cluster_ip(spec: &ServiceSpec) -> bool {
    type_of(spec) != "ExternalName" && !is_headless(spec)
}

/// Whether the Service needs node ports allocated (types NodePort and LoadBalancer).
pub fn needs_node_ports(spec: &ServiceSpec) -> bool {
    matches!(type_of(spec), "NodePort" | "LoadBalancer")
}

/// Whether traffic from outside the cluster reaches the Service (what `externalTrafficPolicy` is about).
fn externally_accessible(spec: &ServiceSpec) -> bool {
    needs_node_ports(spec)
        || (type_of(spec) == "ClusterIP"
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()))
}

fn default_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.session_affinity, "None");
    match s(&spec.session_affinity) {
        "None" => spec.session_affinity_config = None,
        "ClientIP" => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .is_some_and(|c| c.timeout_seconds.is_some());
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(10800),
                    }),
                });
            }
        }
        _ => {}
    }
    default_str(&mut spec.type_, "ClusterIP");
    for p in spec.ports.iter_mut().flatten() {
        default_str(&mut p.protocol, "TCP");
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(n)) => *n == 0,
            Some(IntOrString::String(name)) => name.is_empty(),
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if externally_accessible(spec) {
        default_str(&mut spec.external_traffic_policy, "Cluster");
    }
    if spec.internal_traffic_policy.is_none() && type_of(spec) != "ExternalName" {
        spec.internal_traffic_policy = Some("Cluster".into());
    }
    if type_of(spec) == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
}

/// Drops what the Service's new type does not use when an update changes the type, as Kubernetes
/// does (NodePort to ClusterIP keeps no node ports; ExternalName keeps no cluster IP).
fn prepare_service_update(new: &mut Service, old: &Service) {
    let old_type = old.spec.as_ref().map(type_of).unwrap_or("ClusterIP");
    if let Some(spec) = new.spec.as_mut()
        && type_of(spec) != old_type
    {
        drop_type_dependent_fields(spec);
    }
}

fn drop_type_dependent_fields(spec: &mut ServiceSpec) {
    if !needs_node_ports(spec) {
        for p in spec.ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    if type_of(spec) == "ExternalName" {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        spec.ip_families = None;
        spec.ip_family_policy = None;
    }
}

fn prepare_service(svc: &mut Service) {
    svc.status = Some(ServiceStatus {
        load_balancer: Some(Default::default()),
        conditions: None,
    });
}

/// How Go prints the (protocol, port) key Kubernetes uses to find duplicate ports.
fn port_key(p: &ServicePort) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:\"{}\", AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        s(&p.protocol),
        p.port
    )
}

fn validate_service(svc: &Service, out: &mut Vec<Cause>) {
    let empty = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&empty);
    let ty = type_of(spec);
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let headless = is_headless(spec);
    match ty {
        "" => out.push(Cause::required("spec.type")),
        t if !TYPES.contains(&t) => out.push(Cause::not_supported("spec.type", t, TYPES)),
        _ => {}
    }
    if ports.is_empty() && !headless && ty != "ExternalName" {
        out.push(Cause::required("spec.ports"));
    }
    if ty == "ExternalName" {
        if !s(&spec.cluster_ip).is_empty()
            || spec.cluster_ips.as_ref().is_some_and(|ips| !ips.is_empty())
        {
            out.push(Cause::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
            out.push(Cause::forbidden(
                "spec.ipFamilies",
                "may not be set for ExternalName services",
            ));
        }
        if spec.ip_family_policy.is_some() {
            out.push(Cause::forbidden(
                "spec.ipFamilyPolicy",
                "may not be set for ExternalName services",
            ));
        }
        let name = s(&spec.external_name);
        let cname = name.strip_suffix('.').unwrap_or(name);
        if cname.is_empty() {
            out.push(Cause::required("spec.externalName"));
        } else if let Err(e) = validation::dns1123_subdomain(cname) {
            out.push(Cause::invalid("spec.externalName", cname, e));
        }
    } else {
        validate_cluster_ips(spec, out);
    }
    let mut names = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = s(&p.name);
        if name.is_empty() {
            if ports.len() > 1 {
                out.push(Cause::required(format!("{path}.name")));
            }
        } else {
            super::pod::dns_label(name, &format!("{path}.name"), out);
            if !names.insert(name) {
                out.push(Cause::duplicate(format!("{path}.name"), name));
            }
        }
        validation::port(p.port, &format!("{path}.port"), out);
        protocol(p.protocol.as_deref(), &format!("{path}.protocol"), out);
        match &p.target_port {
            Some(IntOrString::Int(n)) => validation::port(*n, &format!("{path}.targetPort"), out),
            Some(IntOrString::String(n)) => {
                validation::port_name(n, &format!("{path}.targetPort"), out)
            }
            None => {}
        }
        let node_port = p.node_port.unwrap_or(0);
        if node_port != 0 {
            if needs_node_ports(spec) {
                validation::port(node_port, &format!("{path}.nodePort"), out);
                if !node_ports.insert((s(&p.protocol), node_port)) {
                    out.push(Cause::duplicate(
                        format!("{path}.nodePort"),
                        &node_port.to_string(),
                    ));
                }
            } else if !ty.is_empty() {
                out.push(Cause::forbidden(
                    format!("{path}.nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            }
        }
        if !keys.insert((s(&p.protocol), p.port)) {
            out.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {}", port_key(p)),
                field: path,
            });
        }
    }
    if headless && matches!(ty, "NodePort" | "LoadBalancer") {
        out.push(Cause::invalid(
            "spec.clusterIPs[0]",
            "None",
            format!("may not be set to 'None' for {ty} services"),
        ));
    }
    if let Some(sel) = &spec.selector {
        validation::labels(sel, "spec.selector", out);
    }
    match s(&spec.session_affinity) {
        "" => out.push(Cause::required("spec.sessionAffinity")),
        "None" => {
            if spec.session_affinity_config.is_some() {
                out.push(Cause::forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        "ClientIP" => validate_affinity_config(spec.session_affinity_config.as_ref(), out),
        other => out.push(Cause::not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", "None"],
        )),
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        validation::ip(ip, &format!("spec.externalIPs[{i}]"), out);
    }
    if let Some(p) = spec
        .external_traffic_policy
        .as_deref()
        .filter(|p| !p.is_empty() && !["Cluster", "Local"].contains(p))
    {
        out.push(Cause::not_supported(
            "spec.externalTrafficPolicy",
            p,
            &["Cluster", "Local"],
        ));
    }
    if externally_accessible(spec) && s(&spec.external_traffic_policy).is_empty() {
        out.push(Cause::required("spec.externalTrafficPolicy"));
    }
    if let Some(p) = spec
        .internal_traffic_policy
        .as_deref()
        .filter(|p| !["Cluster", "Local"].contains(p))
    {
        out.push(Cause::not_supported(
            "spec.internalTrafficPolicy",
            p,
            &["Cluster", "Local"],
        ));
    }
}

/// `clusterIP` (as Kubernetes reports it, under `clusterIPs[0]`) and `clusterIPs` must be IPs, or `None`.
fn validate_cluster_ips(spec: &ServiceSpec, out: &mut Vec<Cause>) {
    let ip = s(&spec.cluster_ip);
    if !ip.is_empty() && ip != "None" {
        validation::ip(ip, "spec.clusterIPs[0]", out);
    }
    for (i, other) in spec.cluster_ips.iter().flatten().enumerate() {
        if i == 0 && other == ip {
            continue;
        }
        if other == "None" {
            if i != 0 {
                out.push(Cause::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    other,
                    "may not be set to 'None' for a secondary cluster IP",
                ));
            }
            continue;
        }
        validation::ip(other, &format!("spec.clusterIPs[{i}]"), out);
    }
}

fn validate_affinity_config(config: Option<&SessionAffinityConfig>, out: &mut Vec<Cause>) {
    const WHY: &str = "Required value: when session affinity type is ClientIP";
    let path = "spec.sessionAffinityConfig";
    match config {
        None => out.push(Cause::required(path).with_message(WHY)),
        Some(SessionAffinityConfig { client_ip: None }) => {
            out.push(Cause::required(format!("{path}.clientIP")).with_message(WHY))
        }
        Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: None,
            }),
        }) => {
            out.push(Cause::required(format!("{path}.clientIP.timeoutSeconds")).with_message(WHY));
        }
        Some(SessionAffinityConfig {
            client_ip:
                Some(ClientIPConfig {
                    timeout_seconds: Some(t),
                }),
        }) => {
            if *t <= 0 || *t > MAX_AFFINITY_SECONDS {
                out.push(Cause::invalid(
                    format!("{path}.clientIP.timeoutSeconds"),
                    t,
                    format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}"),
                ));
            }
        }
    }
}

/// `spec.clusterIP` may not change once set, unless the Service becomes or stops being ExternalName.
/// An empty `clusterIP` in the update keeps the allocated one (the server fills it in).
fn validate_service_update(new: &Service, old: &Service, out: &mut Vec<Cause>) {
    let empty = ServiceSpec::default();
    let n = new.spec.as_ref().unwrap_or(&empty);
    let o = old.spec.as_ref().unwrap_or(&empty);
    if type_of(n) == "ExternalName" || type_of(o) == "ExternalName" {
        return;
    }
    let (new_ip, old_ip) = (s(&n.cluster_ip), s(&o.cluster_ip));
    if !old_ip.is_empty() && !new_ip.is_empty() && new_ip != old_ip {
        out.push(Cause::invalid(
            "spec.clusterIP",
            new_ip,
            "field is immutable",
        ));
    }
}

fn ports_cell(ports: &[ServicePort]) -> String {
    let parts: Vec<String> = ports
        .iter()
        .map(|p| match p.node_port.unwrap_or(0) {
            0 => format!("{}/{}", p.port, s(&p.protocol)),
            n => format!("{}:{n}/{}", p.port, s(&p.protocol)),
        })
        .collect();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn external_ip_cell(svc: &Service, spec: &ServiceSpec) -> String {
    let external: Vec<String> = spec.external_ips.clone().unwrap_or_default();
    match type_of(spec) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            let lb: BTreeSet<String> = ingress
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.ip.clone()
                        .filter(|ip| !ip.is_empty())
                        .or_else(|| i.hostname.clone().filter(|h| !h.is_empty()))
                })
                .collect();
            let all: Vec<String> = lb.into_iter().chain(external).collect();
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(&spec.external_name).to_string(),
        _ => "<unknown>".into(),
    }
}

fn service_row(svc: &Service, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let empty = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&empty);
    let cluster_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .map(String::as_str)
        .unwrap_or(s(&spec.cluster_ip));
    let cluster_ip = if cluster_ip.is_empty() {
        "<none>"
    } else {
        cluster_ip
    };
    vec![
        type_of(spec).into(),
        cluster_ip.into(),
        external_ip_cell(svc, spec).into(),
        ports_cell(spec.ports.as_deref().unwrap_or(&[])).into(),
        crate::table::age(crate::table::created(obj), now).into(),
        crate::table::labels_string(spec.selector.as_ref()).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: Value) -> Service {
        serde_json::from_value(v).expect("a valid service")
    }

    fn check(s: &Service) -> Vec<Cause> {
        let mut out = vec![];
        validate_service(s, &mut out);
        out
    }

    #[test]
    fn defaults() {
        let mut s = svc(
            json!({"spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
        );
        default_service(&mut s);
        prepare_service(&mut s);
        let spec = s.spec.as_ref().expect("spec");
        assert_eq!(
            spec.ports.as_ref().expect("ports")[0].target_port,
            Some(IntOrString::Int(80))
        );
        assert_eq!(
            spec.ports.as_ref().expect("ports")[0].protocol.as_deref(),
            Some("TCP")
        );
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        assert_eq!(timeout, Some(10800));
        assert_eq!(
            serde_json::to_value(&s.status).expect("json"),
            json!({"loadBalancer": {}})
        );
        assert!(check(&s).is_empty());
        assert!(needs_node_ports(spec) && needs_cluster_ip(spec));
        let mut e = svc(json!({"spec": {"type": "ExternalName", "externalName": "example.com."}}));
        default_service(&mut e);
        assert_eq!(
            e.spec
                .as_ref()
                .and_then(|s| s.internal_traffic_policy.as_deref()),
            None
        );
        assert!(check(&e).is_empty(), "{:?}", check(&e));
        // A type change drops what the new type does not use; a new ClusterIP Service may not ask for one.
        let mut c =
            svc(json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}}));
        default_service(&mut c);
        assert!(
            !check(&c).is_empty(),
            "nodePort on a ClusterIP Service is refused"
        );
        let old =
            svc(json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}));
        prepare_service_update(&mut c, &old);
        assert_eq!(
            c.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .expect("ports")[0]
                .node_port,
            None
        );
        let mut e = svc(
            json!({"spec": {"type": "ExternalName", "externalName": "db.example.com", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"]}}),
        );
        default_service(&mut e);
        prepare_service_update(&mut e, &old);
        assert!(check(&e).is_empty(), "{:?}", check(&e));
    }

    #[test]
    fn validation_failures() {
        let s = svc(
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.300", "sessionAffinity": "None", "ports": [
                {"port": 0, "nodePort": 30080, "protocol": "XTP", "targetPort": "Not_A_Name"},
                {"name": "b", "port": 80, "protocol": "TCP"}
            ]}}),
        );
        let out = check(&s);
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        for want in [
            "spec.clusterIPs[0]",
            "spec.ports[0].name",
            "spec.ports[0].port",
            "spec.ports[0].protocol",
            "spec.ports[0].targetPort",
            "spec.ports[0].nodePort",
        ] {
            assert!(fields.contains(&want), "{want} missing from {out:?}");
        }
        let mut s = svc(
            json!({"spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        default_service(&mut s);
        assert_eq!(
            check(&s)[0].message,
            "Invalid value: \"None\": may not be set to 'None' for NodePort services"
        );
        let mut s = svc(json!({"spec": {"type": "ExternalName"}}));
        default_service(&mut s);
        assert_eq!(check(&s)[0].field, "spec.externalName");
        let mut s = svc(json!({"spec": {"clusterIP": "None"}}));
        default_service(&mut s);
        assert!(check(&s).is_empty() && is_headless(s.spec.as_ref().expect("spec")));
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let old = svc(
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}),
        );
        let mut new = old.clone();
        new.spec.as_mut().expect("spec").cluster_ip = Some("10.96.0.11".into());
        let mut out = vec![];
        validate_service_update(&new, &old, &mut out);
        assert_eq!(
            out[0].message,
            "Invalid value: \"10.96.0.11\": field is immutable"
        );
        let mut out = vec![];
        new.spec.as_mut().expect("spec").cluster_ip = None;
        validate_service_update(&new, &old, &mut out);
        new.spec.as_mut().expect("spec").type_ = Some("ExternalName".into());
        new.spec.as_mut().expect("spec").cluster_ip = Some("1.2.3.4".into());
        validate_service_update(&new, &old, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn rows() {
        let s = svc(json!({
            "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
            "status": {"loadBalancer": {}}
        }));
        let obj = serde_json::to_value(&s).expect("json");
        let now: jiff::Timestamp = "2024-01-01T00:00:30Z".parse().expect("time");
        let row = service_row(&s, &obj, now);
        assert_eq!(
            row,
            vec![
                json!("LoadBalancer"),
                json!("10.96.0.10"),
                json!("<pending>"),
                json!("80:30080/TCP,53/UDP"),
                json!("30s"),
                json!("app=web")
            ]
        );
        let e = svc(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}));
        let row = service_row(&e, &json!({}), now);
        assert_eq!(
            row[1..4],
            [json!("<none>"), json!("example.com"), json!("<none>")]
        );
    }
}
