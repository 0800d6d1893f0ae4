//! Golden rulesets: each case renders services and endpoints and compares the `nft -f` text with a
//! file under `proxy/tests/golden/`. `UPDATE_GOLDEN=1 cargo test -p atoll-proxy` rewrites the files
//! (then read the diff).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;
use crate::model::{ServiceInfo, endpoints};

const NODE: &str = "node-a";

fn base() -> Base {
    Base {
        cluster_cidr: Some("10.244.0.0/16".into()),
        node_ips: BTreeSet::from(["192.168.1.10".parse().unwrap()]),
    }
}

fn service(spec: serde_json::Value) -> ServiceInfo {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": spec,
    }))
    .unwrap();
    ServiceInfo::from_service(&svc).unwrap()
}

/// A slice of `web` with endpoints `(ip, node, ready, serving, terminating)` and `ports`.
fn slice(eps: &[(&str, &str, bool, bool, bool)], ports: serde_json::Value) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = eps
        .iter()
        .map(|(ip, node, ready, serving, terminating)| {
            json!({
                "addresses": [ip],
                "nodeName": node,
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web-abcde",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}

fn rules(spec: serde_json::Value, slices: &[EndpointSlice]) -> ServiceRules {
    service_rules(&service(spec), &endpoints(slices, NODE), &base())
}

fn golden(name: &str, text: &str) {
    let path = format!("{}/tests/golden/{name}.nft", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (UPDATE_GOLDEN=1 writes it)"));
    assert_eq!(
        text, want,
        "ruleset differs from {path} (UPDATE_GOLDEN=1 rewrites it)"
    );
}

fn ready(ip: &str) -> (&str, &str, bool, bool, bool) {
    (ip, "node-b", true, true, false)
}

const HTTP: &str = r#"[{"name": "http", "protocol": "TCP", "port": 8080}]"#;

fn http_ports() -> serde_json::Value {
    serde_json::from_str(HTTP).unwrap()
}

#[test]
fn cluster_ip_spreads_over_ready_endpoints_by_named_port() {
    // targetPort "web" is named: the slice's port "http" (8080) is what the pods said it is.
    let r = rules(
        json!({"clusterIP": "10.96.0.10",
               "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
        &[slice(
            &[ready("10.244.1.2"), ready("10.244.2.3")],
            http_ports(),
        )],
    );
    golden("cluster_ip", &full(&base(), [&r]));
}

#[test]
fn no_endpoints_rejects_and_empty_base_is_valid() {
    let r = rules(
        json!({"clusterIP": "10.96.0.11", "type": "NodePort",
               "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        &[],
    );
    golden("no_endpoints", &full(&base(), [&r]));
    golden("empty", &full(&Base::default(), []));
}

#[test]
fn terminating_endpoints_only_when_none_is_ready() {
    let spec = json!({"clusterIP": "10.96.0.12", "ports": [{"name": "http", "port": 80}]});
    let mixed = rules(
        spec.clone(),
        &[slice(
            &[
                ready("10.244.1.2"),
                ("10.244.1.3", "node-b", false, true, true),
            ],
            http_ports(),
        )],
    );
    assert!(!mixed.chains.keys().any(|c| c.contains("10.244.1.3")));
    let only_terminating = rules(
        spec,
        &[slice(
            &[
                ("10.244.1.3", "node-b", false, true, true),
                ("10.244.1.4", "node-b", false, false, true),
            ],
            http_ports(),
        )],
    );
    golden("terminating", &full(&base(), [&only_terminating]));
}

#[test]
fn node_port_on_node_addresses_and_localhost() {
    let mut b = base();
    b.node_ips.insert("127.0.0.1".parse().unwrap());
    let r = service_rules(
        &service(json!({"clusterIP": "10.96.0.13", "type": "NodePort",
               "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})),
        &endpoints(&[slice(&[ready("10.244.1.2")], http_ports())], NODE),
        &b,
    );
    golden("node_port", &full(&b, [&r]));
}

#[test]
fn session_affinity_sets_with_timeout() {
    let r = rules(
        json!({"clusterIP": "10.96.0.14", "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
               "ports": [{"name": "http", "port": 80}]}),
        &[slice(
            &[ready("10.244.1.2"), ready("10.244.2.3")],
            http_ports(),
        )],
    );
    assert_eq!(r.sets.values().copied().collect::<Vec<_>>(), [60, 60]);
    golden("affinity", &full(&base(), [&r]));
}

#[test]
fn local_traffic_policies() {
    let local = ("10.244.0.5", NODE, true, true, false);
    // External Local with a local endpoint; internal Local with a local endpoint.
    let r = rules(
        json!({"clusterIP": "10.96.0.15", "type": "NodePort",
               "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
               "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        &[slice(&[local, ready("10.244.1.2")], http_ports())],
    );
    golden("local_policies", &full(&base(), [&r]));
    // Endpoints elsewhere only: both kinds of traffic are dropped, not rejected.
    let r = rules(
        json!({"clusterIP": "10.96.0.15", "type": "NodePort",
               "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
               "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        &[slice(&[ready("10.244.1.2")], http_ports())],
    );
    assert!(r.chains.is_empty(), "{:?}", r.chains);
    let verdicts: Vec<_> = r.elements.iter().filter_map(|e| e.value.clone()).collect();
    assert_eq!(verdicts, ["drop", "drop"]);
}

#[test]
fn udp_and_unnamed_port() {
    let r = rules(
        json!({"clusterIP": "10.96.0.16",
               "ports": [{"protocol": "UDP", "port": 53, "targetPort": 5353}]}),
        &[slice(
            &[ready("10.244.1.2")],
            json!([{"protocol": "UDP", "port": 5353}]),
        )],
    );
    golden("udp", &full(&base(), [&r]));
    assert_eq!(r.udp.len(), 1);
}

#[test]
fn update_touches_only_what_changed() {
    let spec = json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]});
    let two = rules(
        spec.clone(),
        &[slice(
            &[ready("10.244.1.2"), ready("10.244.2.3")],
            http_ports(),
        )],
    );
    let one = rules(spec.clone(), &[slice(&[ready("10.244.1.2")], http_ports())]);
    let none = rules(spec, &[]);
    assert_eq!(update(Some(&two), Some(&two)).unwrap(), "");
    // The sequences the kernel test applies: empty, new, remove endpoint, to no endpoints; and
    // empty, new, delete.
    let mut made = BTreeSet::new();
    golden("update_new_service", &step(None, Some(&two), &mut made));
    let after_new = made.clone();
    golden(
        "update_remove_endpoint",
        &step(Some(&two), Some(&one), &mut made),
    );
    golden(
        "update_to_no_endpoints",
        &step(Some(&one), Some(&none), &mut made),
    );
    made = after_new;
    golden("update_delete_service", &step(Some(&two), None, &mut made));
}

/// One service's incremental transaction as [`crate::state::State`] makes it: shared chains not
/// `made` yet, the service's update, then the hairpin set's changes.
fn step(
    old: Option<&ServiceRules>,
    new: Option<&ServiceRules>,
    made: &mut BTreeSet<Shared>,
) -> String {
    let wanted: BTreeSet<Shared> = new
        .iter()
        .flat_map(|n| n.shared.iter())
        .filter(|s| !made.contains(*s))
        .copied()
        .collect();
    let mut out = shared_chains(&base(), &wanted);
    made.extend(wanted);
    out.push_str(&update(old, new).unwrap());
    let ips = |r: Option<&ServiceRules>| r.map(|r| r.hairpin.clone()).unwrap_or_default();
    let added: Vec<_> = ips(new).difference(&ips(old)).copied().collect();
    let removed: Vec<_> = ips(old).difference(&ips(new)).copied().collect();
    out.push_str(&hairpin_update(&added, &removed));
    out
}

#[test]
fn affinity_timeout_change_needs_a_full_sync() {
    let spec = |t: u32| {
        json!({"clusterIP": "10.96.0.14", "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": t}},
               "ports": [{"name": "http", "port": 80}]})
    };
    let eps = [slice(&[ready("10.244.1.2")], http_ports())];
    assert!(update(Some(&rules(spec(60), &eps)), Some(&rules(spec(90), &eps))).is_none());
}

#[test]
fn stale_udp_endpoints_are_found() {
    let spec = json!({"clusterIP": "10.96.0.16", "ports": [{"protocol": "UDP", "port": 53}]});
    let ports = json!([{"protocol": "UDP", "port": 53}]);
    let two = rules(
        spec.clone(),
        &[slice(
            &[ready("10.244.1.2"), ready("10.244.2.3")],
            ports.clone(),
        )],
    );
    let one = rules(spec, &[slice(&[ready("10.244.1.2")], ports)]);
    let stale = stale_udp(Some(&two), Some(&one));
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].1, "10.244.2.3".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        stale[0].0.cluster,
        Some(("10.96.0.16".parse().unwrap(), 53))
    );
    assert_eq!(stale_udp(Some(&two), None).len(), 2);
}
