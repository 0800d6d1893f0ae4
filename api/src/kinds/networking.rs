//! Service backends: `v1 Endpoints` and `discovery.k8s.io/v1 EndpointSlice`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::Typed;
use super::pod::{default_str, dns_label, protocol, s, too_many};
use crate::error::Cause;
use crate::table::Column;
use crate::validation;

const ENDPOINTS_COLS: &[Column] = &[
    Column::text("Endpoints", "The addresses and ports of the endpoints."),
    Column::AGE,
];

const SLICE_COLS: &[Column] = &[
    Column::text(
        "AddressType",
        "The type of addresses carried by this EndpointSlice: IPv4, IPv6 or FQDN.",
    ),
    Column::text("Ports", "The ports exposed by the endpoints."),
    Column::text("Endpoints", "The addresses of the endpoints."),
    Column::AGE,
];

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_SLICE_ADDRESSES: usize = 100;
const MAX_SLICE_PORTS: usize = 20000;
/// How many entries kubectl lists before `+ N more...`.
const SHOWN: usize = 3;

fn age(obj: &Value, now: jiff::Timestamp) -> Value {
    crate::table::age(crate::table::created(obj), now).into()
}

/// An endpoint IP may not be unspecified, loopback or link-local.
fn non_special_ip(ip: IpAddr, raw: &str, path: &str, out: &mut Vec<Cause>) {
    let (link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (v4.is_link_local(), o[0] == 224 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (
                v6.is_unicast_link_local(),
                o[0] == 0xff && o[1] & 0x0f == 0x02,
            )
        }
    };
    let why = if ip.is_unspecified() {
        format!("may not be unspecified ({raw})")
    } else if ip.is_loopback() {
        "may not be in the loopback range (127.0.0.0/8, ::1/128)".into()
    } else if link_local {
        "may not be in the link-local range (169.254.0.0/16, fe80::/10)".into()
    } else if link_local_multicast {
        "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)".into()
    } else {
        return;
    };
    out.push(Cause::invalid(path, raw, why));
}

// ---------------------------------------------------------------------------------------------
// Endpoints.

/// The hooks of `v1 Endpoints`.
pub fn endpoints() -> Typed<Endpoints> {
    Typed {
        columns: ENDPOINTS_COLS,
        row: endpoints_row,
        default: default_endpoints,
        validate: validate_endpoints,
        ..Typed::default()
    }
}

/// Ports default to protocol TCP.
fn default_endpoints(ep: &mut Endpoints) {
    for p in ep
        .subsets
        .iter_mut()
        .flatten()
        .flat_map(|s| s.ports.iter_mut().flatten())
    {
        default_str(&mut p.protocol, "TCP");
    }
}

fn validate_endpoints(ep: &Endpoints, out: &mut Vec<Cause>) {
    for (i, ss) in ep.subsets.iter().flatten().enumerate() {
        let path = format!("subsets[{i}]");
        let addresses = ss.addresses.as_deref().unwrap_or(&[]);
        let not_ready = ss.not_ready_addresses.as_deref().unwrap_or(&[]);
        if addresses.is_empty() && not_ready.is_empty() {
            out.push(
                Cause::required(&path).with_message(
                    "Required value: must specify `addresses` or `notReadyAddresses`",
                ),
            );
        }
        for (j, a) in addresses.iter().enumerate() {
            validate_address(a, &format!("{path}.addresses[{j}]"), out);
        }
        for (j, a) in not_ready.iter().enumerate() {
            validate_address(a, &format!("{path}.notReadyAddresses[{j}]"), out);
        }
        let ports = ss.ports.as_deref().unwrap_or(&[]);
        for (j, p) in ports.iter().enumerate() {
            validate_endpoint_port(p, ports.len() > 1, &format!("{path}.ports[{j}]"), out);
        }
    }
}

fn validate_address(a: &EndpointAddress, path: &str, out: &mut Vec<Cause>) {
    let ip_path = format!("{path}.ip");
    match a.ip.parse::<IpAddr>() {
        Ok(ip) => non_special_ip(ip, &a.ip, &ip_path, out),
        Err(_) => validation::ip(&a.ip, &ip_path, out),
    }
    if !s(&a.hostname).is_empty() {
        dns_label(s(&a.hostname), &format!("{path}.hostname"), out);
    }
    if let Some(node) = &a.node_name
        && let Err(e) = validation::dns1123_subdomain(node)
    {
        out.push(Cause::invalid(format!("{path}.nodeName"), node, e));
    }
}

fn validate_endpoint_port(p: &EndpointPort, require_name: bool, path: &str, out: &mut Vec<Cause>) {
    let name = s(&p.name);
    if name.is_empty() {
        if require_name {
            out.push(Cause::required(format!("{path}.name")));
        }
    } else {
        dns_label(name, &format!("{path}.name"), out);
    }
    validation::port(p.port, &format!("{path}.port"), out);
    protocol(p.protocol.as_deref(), &format!("{path}.protocol"), out);
}

/// `host:port` as Go's `net.JoinHostPort` writes it (IPv6 in brackets).
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// kubectl's ENDPOINTS cell: up to three `ip:port` entries, then ` + N more...`; `<none>` when empty.
fn endpoints_cell(ep: &Endpoints) -> String {
    let subsets = ep.subsets.as_deref().unwrap_or(&[]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list: Vec<String> = vec![];
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addresses = ss.addresses.as_deref().unwrap_or(&[]);
        let ports: Vec<Option<i32>> = match ss.ports.as_deref() {
            None | Some([]) => vec![None],
            Some(ports) => ports.iter().map(|p| Some(p.port)).collect(),
        };
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == SHOWN {
                    more = true;
                    break;
                }
                list.push(match port {
                    Some(p) => join_host_port(&a.ip, p),
                    None => a.ip.clone(),
                });
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - SHOWN)
    } else if joined.is_empty() {
        "<none>".into()
    } else {
        joined
    }
}

fn endpoints_row(ep: &Endpoints, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![endpoints_cell(ep).into(), age(obj, now)]
}

// ---------------------------------------------------------------------------------------------
// EndpointSlice.

/// The hooks of `discovery.k8s.io/v1 EndpointSlice`.
pub fn endpoint_slice() -> Typed<EndpointSlice> {
    Typed {
        columns: SLICE_COLS,
        row: slice_row,
        default: default_slice,
        validate: validate_slice,
        validate_update: validate_slice_update,
        ..Typed::default()
    }
}

/// Ports default to name "" and protocol TCP.
fn default_slice(slice: &mut EndpointSlice) {
    for p in slice.ports.iter_mut().flatten() {
        p.name.get_or_insert_with(String::new);
        default_str(&mut p.protocol, "TCP");
    }
}

fn validate_fqdn(name: &str, path: &str, out: &mut Vec<Cause>) {
    if name.is_empty() {
        out.push(Cause::required(path));
        return;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if let Err(e) = validation::dns1123_subdomain(name) {
        out.push(Cause::invalid(path, name, e));
    } else if !name.contains('.') {
        out.push(Cause::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        ));
    } else if let Some((label, e)) = name
        .split('.')
        .find_map(|l| validation::dns1123_label(l).err().map(|e| (l, e)))
    {
        out.push(Cause::invalid(path, label, e));
    }
}

fn validate_slice(slice: &EndpointSlice, out: &mut Vec<Cause>) {
    let ty = slice.address_type.as_str();
    match ty {
        "" => out.push(Cause::required("addressType")),
        t if !ADDRESS_TYPES.contains(&t) => {
            out.push(Cause::not_supported("addressType", t, ADDRESS_TYPES))
        }
        _ => {}
    }
    if slice.endpoints.len() > MAX_SLICE_ENDPOINTS {
        out.push(too_many(
            "endpoints",
            slice.endpoints.len(),
            MAX_SLICE_ENDPOINTS,
        ));
    } else {
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let path = format!("endpoints[{i}]");
            let addr_path = format!("{path}.addresses");
            if ep.addresses.is_empty() {
                out.push(
                    Cause::required(&addr_path)
                        .with_message("Required value: must contain at least 1 address"),
                );
            } else if ep.addresses.len() > MAX_SLICE_ADDRESSES {
                out.push(too_many(
                    &addr_path,
                    ep.addresses.len(),
                    MAX_SLICE_ADDRESSES,
                ));
            }
            for (j, a) in ep.addresses.iter().enumerate() {
                let p = format!("{addr_path}[{j}]");
                match (ty, a.parse::<IpAddr>()) {
                    ("IPv4", Ok(ip @ IpAddr::V4(_))) | ("IPv6", Ok(ip @ IpAddr::V6(_))) => {
                        non_special_ip(ip, a, &p, out)
                    }
                    ("IPv4", _) => out.push(Cause::invalid(p, a, "must be a valid IPv4 address")),
                    ("IPv6", _) => out.push(Cause::invalid(p, a, "must be a valid IPv6 address")),
                    ("FQDN", _) => validate_fqdn(a, &p, out),
                    _ => {}
                }
            }
            if let Some(node) = &ep.node_name
                && let Err(e) = validation::dns1123_subdomain(node)
            {
                out.push(Cause::invalid(format!("{path}.nodeName"), node, e));
            }
            if let Some(topology) = &ep.deprecated_topology {
                validation::labels(topology, &format!("{path}.deprecatedTopology"), out);
            }
            if let Some(h) = &ep.hostname {
                dns_label(h, &format!("{path}.hostname"), out);
            }
        }
    }
    let ports = slice.ports.as_deref().unwrap_or(&[]);
    if ports.len() > MAX_SLICE_PORTS {
        out.push(too_many("ports", ports.len(), MAX_SLICE_PORTS));
        return;
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("ports[{i}]");
        let name = s(&p.name);
        if !name.is_empty() {
            dns_label(name, &format!("{path}.name"), out);
        }
        if !names.insert(name) {
            out.push(Cause::duplicate(format!("{path}.name"), name));
        }
        protocol(p.protocol.as_deref(), &format!("{path}.protocol"), out);
        if let Some(port) = p.port {
            validation::port(port, &format!("{path}.port"), out);
        }
    }
}

/// `addressType` may not change.
fn validate_slice_update(new: &EndpointSlice, old: &EndpointSlice, out: &mut Vec<Cause>) {
    if new.address_type != old.address_type {
        out.push(Cause::invalid(
            "addressType",
            &new.address_type,
            "field is immutable",
        ));
    }
}

/// Up to three items, then ` + N more...`; `<unset>` when empty (kubectl's `listWithMoreString`).
fn list_with_more(items: Vec<String>) -> String {
    let count = items.len();
    let shown: Vec<String> = items.into_iter().take(SHOWN).collect();
    let joined = shown.join(",");
    if count > SHOWN {
        format!("{joined} + {} more...", count - SHOWN)
    } else if joined.is_empty() {
        "<unset>".into()
    } else {
        joined
    }
}

fn slice_row(slice: &EndpointSlice, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ports = slice
        .ports
        .iter()
        .flatten()
        .map(|p| match (p.port, p.name.as_deref()) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".into(),
        })
        .collect();
    let addresses = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    vec![
        slice.address_type.clone().into(),
        list_with_more(ports).into(),
        list_with_more(addresses).into(),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<K: serde::de::DeserializeOwned>(v: Value) -> K {
        serde_json::from_value(v).expect("a valid object")
    }

    fn fields(out: &[Cause]) -> Vec<&str> {
        out.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn endpoints_validation_and_defaults() {
        let mut ep: Endpoints = from(json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "127.0.0.1"}, {"ip": "nope"}], "ports": [{"port": 80}, {"name": "b", "port": 0, "protocol": "XTP"}]},
            {}
        ]}));
        default_endpoints(&mut ep);
        let mut out = vec![];
        validate_endpoints(&ep, &mut out);
        assert_eq!(
            fields(&out),
            [
                "subsets[0].addresses[1].ip",
                "subsets[0].addresses[2].ip",
                "subsets[0].ports[0].name",
                "subsets[0].ports[1].port",
                "subsets[0].ports[1].protocol",
                "subsets[1]"
            ]
        );
    }

    #[test]
    fn endpoints_rows() {
        let ep: Endpoints = from(
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]}),
        );
        assert_eq!(
            endpoints_cell(&ep),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        let ep: Endpoints =
            from(json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]}));
        assert_eq!(endpoints_cell(&ep), "[fd00::1]:80");
        assert_eq!(endpoints_cell(&Endpoints::default()), "<none>");
        let row = endpoints_row(
            &Endpoints::default(),
            &json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}}),
            "2024-01-01T00:00:05Z".parse().expect("time"),
        );
        assert_eq!(row, vec![json!("<none>"), json!("5s")]);
    }

    #[test]
    fn slices() {
        let mut slice: EndpointSlice = from(json!({"addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1", "fd00::1"]}, {"addresses": []}],
            "ports": [{"port": 80}, {"port": 81}]}));
        default_slice(&mut slice);
        let mut out = vec![];
        validate_slice(&slice, &mut out);
        assert_eq!(
            fields(&out),
            [
                "endpoints[0].addresses[1]",
                "endpoints[1].addresses",
                "ports[1].name"
            ]
        );
        let fqdn: EndpointSlice = from(
            json!({"addressType": "FQDN", "endpoints": [{"addresses": ["example.com", "localhost"]}]}),
        );
        let mut out = vec![];
        validate_slice(&fqdn, &mut out);
        assert_eq!(fields(&out), ["endpoints[0].addresses[1]"]);
        let mut out = vec![];
        validate_slice_update(&fqdn, &slice, &mut out);
        assert_eq!(fields(&out), ["addressType"]);
        let row = slice_row(
            &slice,
            &json!({}),
            "2024-01-01T00:00:05Z".parse().expect("time"),
        );
        assert_eq!(
            row,
            vec![
                json!("IPv4"),
                json!("80,81"),
                json!("10.0.0.1,fd00::1"),
                json!("<unknown>")
            ]
        );
        let bad: EndpointSlice = from(json!({"addressType": "IPX", "endpoints": []}));
        let mut out = vec![];
        validate_slice(&bad, &mut out);
        assert_eq!(
            out[0].message,
            "Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
        );
    }
}
