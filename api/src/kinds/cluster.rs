//! Cluster-level kinds: `v1 Namespace`, `v1 Node`, `v1 Event` and `coordination.k8s.io/v1 Lease`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Event, Namespace, NamespaceSpec, NamespaceStatus, Node, NodeSpec, NodeStatus, Taint,
};
use serde_json::Value;

use super::Typed;
use super::pod::{quote, s, since};
use crate::error::Cause;
use crate::table::Column;
use crate::validation;

const NAMESPACE_COLS: &[Column] = &[
    Column::text(
        "Status",
        "The phase of the namespace: Active or Terminating.",
    ),
    Column::AGE,
];

const NODE_COLS: &[Column] = &[
    Column::text(
        "Status",
        "Whether the node is ready, and whether it accepts new pods.",
    ),
    Column::text(
        "Roles",
        "The roles of the node, from its node-role.kubernetes.io/<role> labels.",
    ),
    Column::AGE,
    Column::text("Version", "The kubelet version the node reports."),
    Column::wide("Internal-IP", "The node's first internal IP address."),
    Column::wide("External-IP", "The node's first external IP address."),
    Column::wide(
        "OS-Image",
        "The OS image the node reports (e.g. Debian GNU/Linux 13).",
    ),
    Column::wide(
        "Kernel-Version",
        "The kernel version the node reports (`uname -r`).",
    ),
    Column::wide(
        "Container-Runtime",
        "The container runtime version the node reports (e.g. containerd://2.0.0).",
    ),
];

const EVENT_COLS: &[Column] = &[
    Column::text("Last Seen", "When the event was last seen."),
    Column::text("Type", "Type of this event (Normal, Warning)."),
    Column::text(
        "Reason",
        "A short, machine understandable string that gives the reason for this event.",
    ),
    Column::text("Object", "The object this event is about."),
    Column::wide(
        "Subobject",
        "The part of the object the event is about, e.g. a container.",
    ),
    Column::wide("Source", "The component reporting this event."),
    Column::text("Message", "A human-readable description of the event."),
    Column::wide("First Seen", "When the event was first seen."),
    Column::new(
        "Count",
        "integer",
        1,
        "The number of times this event has occurred.",
    ),
    Column::wide("Name", "The name of the event object."),
];

const LEASE_COLS: &[Column] = &[
    Column::text("Holder", "The identity of the holder of the lease."),
    Column::AGE,
];

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

fn age(obj: &Value, now: jiff::Timestamp) -> Value {
    crate::table::age(crate::table::created(obj), now).into()
}

// ---------------------------------------------------------------------------------------------
// Namespace.

/// The hooks of `v1 Namespace`.
pub fn namespace() -> Typed<Namespace> {
    Typed {
        columns: NAMESPACE_COLS,
        row: namespace_row,
        default: default_namespace,
        prepare_create: prepare_namespace,
        validate: validate_namespace,
        ..Typed::default()
    }
}

/// Every namespace carries the `kubernetes.io/metadata.name` label with its name.
fn default_namespace(ns: &mut Namespace) {
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/metadata.name".into(), name);
    }
}

/// A new namespace is Active and holds the `kubernetes` finalizer until its content is deleted.
fn prepare_namespace(ns: &mut Namespace) {
    let finalizers = ns
        .spec
        .get_or_insert_with(NamespaceSpec::default)
        .finalizers
        .get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == "kubernetes") {
        finalizers.push("kubernetes".into());
    }
    ns.status = Some(NamespaceStatus {
        phase: Some("Active".into()),
        conditions: None,
    });
}

fn validate_namespace(ns: &Namespace, out: &mut Vec<Cause>) {
    for (i, f) in ns
        .spec
        .iter()
        .flat_map(|s| s.finalizers.iter().flatten())
        .enumerate()
    {
        let path = format!("spec.finalizers[{i}]");
        if let Err(e) = validation::qualified_name(f) {
            out.push(Cause::invalid(path, f, e));
        } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            out.push(Cause::invalid(
                path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

fn namespace_row(ns: &Namespace, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let phase = ns.status.as_ref().map(|st| s(&st.phase)).unwrap_or("");
    vec![phase.into(), age(obj, now)]
}

// ---------------------------------------------------------------------------------------------
// Node.

/// The hooks of `v1 Node`.
pub fn node() -> Typed<Node> {
    Typed {
        columns: NODE_COLS,
        row: node_row,
        default: default_node,
        validate: validate_node,
        validate_update: validate_node_update,
        ..Typed::default()
    }
}

/// `status.allocatable` defaults to `status.capacity`.
fn default_node(node: &mut Node) {
    if let Some(status) = &mut node.status
        && status.allocatable.is_none()
        && status.capacity.is_some()
    {
        status.allocatable = status.capacity.clone();
    }
}

/// Whether `s` is an IPv4 or IPv6 CIDR such as `10.244.1.0/24`.
fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    if bits.is_empty() || !bits.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn cidr(v: &str, path: &str, out: &mut Vec<Cause>) {
    if !is_cidr(v) {
        out.push(Cause::invalid(
            path,
            v,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
}

fn validate_node(node: &Node, out: &mut Vec<Cause>) {
    let Some(spec) = &node.spec else { return };
    if !s(&spec.pod_cidr).is_empty() {
        cidr(s(&spec.pod_cidr), "spec.podCIDR", out);
    }
    for (i, c) in spec.pod_cidrs.iter().flatten().enumerate() {
        cidr(c, &format!("spec.podCIDRs[{i}]"), out);
    }
    if let Some(taints) = &spec.taints {
        validate_taints(taints, "spec.taints", out);
    }
}

fn validate_taints(taints: &[Taint], path: &str, out: &mut Vec<Cause>) {
    let mut seen = BTreeSet::new();
    for (i, t) in taints.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Err(e) = validation::qualified_name(&t.key) {
            out.push(Cause::invalid(format!("{p}.key"), &t.key, e));
        }
        if let Err(e) = validation::label_value(s(&t.value)) {
            out.push(Cause::invalid(format!("{p}.value"), s(&t.value), e));
        }
        match t.effect.as_str() {
            "" => out.push(Cause::required(format!("{p}.effect"))),
            e if TAINT_EFFECTS.contains(&e) => {}
            e => out.push(Cause::not_supported(
                format!("{p}.effect"),
                e,
                TAINT_EFFECTS,
            )),
        }
        if !seen.insert((t.effect.as_str(), t.key.as_str())) {
            out.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!(
                    "Duplicate value: core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:<nil>}}: taints must be unique by key and effect pair",
                    quote(&t.key),
                    quote(s(&t.value)),
                    quote(&t.effect)
                ),
                field: p,
            });
        }
    }
}

/// `spec.podCIDRs` (and `spec.podCIDR`) and `spec.providerID` may only go from unset to set.
fn validate_node_update(new: &Node, old: &Node, out: &mut Vec<Cause>) {
    let empty = NodeSpec::default();
    let n = new.spec.as_ref().unwrap_or(&empty);
    let o = old.spec.as_ref().unwrap_or(&empty);
    let cidrs = |spec: &NodeSpec| -> Vec<String> {
        match &spec.pod_cidrs {
            Some(c) if !c.is_empty() => c.clone(),
            _ => spec
                .pod_cidr
                .iter()
                .filter(|c| !c.is_empty())
                .cloned()
                .collect(),
        }
    };
    let old_cidrs = cidrs(o);
    if !old_cidrs.is_empty() && cidrs(n) != old_cidrs {
        out.push(Cause::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    if !s(&o.provider_id).is_empty() && s(&n.provider_id) != s(&o.provider_id) {
        out.push(Cause::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}

fn node_status_cell(node: &Node) -> String {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    let ready = conditions
        .into_iter()
        .flatten()
        .rfind(|c| c.type_ == "Ready");
    let mut parts = vec![match ready {
        Some(c) if c.status == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

fn node_roles(node: &Node) -> String {
    let mut roles = BTreeSet::new();
    for (k, v) in node.metadata.labels.iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.insert(v.clone());
        }
    }
    crate::table::join_or_none(roles)
}

fn node_row(node: &Node, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let empty = NodeStatus::default();
    let status = node.status.as_ref().unwrap_or(&empty);
    let info = status.node_info.clone().unwrap_or_default();
    let address = |ty: &str| {
        status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == ty)
            .map_or_else(|| "<none>".to_string(), |a| a.address.clone())
    };
    let or_unknown = |v: String| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v
        }
    };
    vec![
        node_status_cell(node).into(),
        node_roles(node).into(),
        age(obj, now),
        info.kubelet_version.into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        or_unknown(info.os_image).into(),
        or_unknown(info.kernel_version).into(),
        or_unknown(info.container_runtime_version).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Event.

/// The hooks of `v1 Event`.
pub fn event() -> Typed<Event> {
    Typed {
        columns: EVENT_COLS,
        row: event_row,
        validate: validate_event,
        ..Typed::default()
    }
}

const EVENT_FIELD_LIMIT: usize = 128;
const EVENT_MESSAGE_LIMIT: usize = 1024;

/// The checks Kubernetes applies to `v1` Events: the involved object's namespace agrees with the
/// event's, and events with an `eventTime` name their reporter, action and reason.
fn validate_event(ev: &Event, out: &mut Vec<Cause>) {
    let ns = s(&ev.metadata.namespace);
    let involved = s(&ev.involved_object.namespace);
    let mismatch = if ev.event_time.is_none() {
        if involved.is_empty() {
            !ns.is_empty() && ns != "default"
        } else {
            ns != involved
        }
    } else {
        (involved.is_empty() && ns != "default" && ns != "kube-system")
            || (!involved.is_empty() && ns != involved)
    };
    if mismatch {
        out.push(Cause::invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        ));
    }
    if ev.event_time.is_some() {
        let controller = s(&ev.reporting_component);
        if controller.is_empty() {
            out.push(Cause::required("reportingComponent"));
        } else if let Err(e) = validation::qualified_name(controller) {
            out.push(Cause::invalid("reportingComponent", controller, e));
        }
        for (field, v) in [
            ("reportingInstance", &ev.reporting_instance),
            ("action", &ev.action),
            ("reason", &ev.reason),
        ] {
            if s(v).is_empty() {
                out.push(Cause::required(field));
            } else if s(v).len() > EVENT_FIELD_LIMIT {
                out.push(Cause::invalid(
                    field,
                    "",
                    format!("can have at most {EVENT_FIELD_LIMIT} characters"),
                ));
            }
        }
        if s(&ev.message).len() > EVENT_MESSAGE_LIMIT {
            out.push(Cause::invalid(
                "message",
                "",
                format!("can have at most {EVENT_MESSAGE_LIMIT} characters"),
            ));
        }
    }
    match s(&ev.type_) {
        "" | "Normal" | "Warning" => {}
        t => out.push(Cause::not_supported("type", t, &["Normal", "Warning"])),
    }
}

fn event_source(ev: &Event) -> String {
    let first = |a: Option<&String>, b: &Option<String>| {
        a.filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| s(b).to_string())
    };
    let source = ev.source.as_ref();
    let component = first(
        source.and_then(|s| s.component.as_ref()),
        &ev.reporting_component,
    );
    let instance = first(source.and_then(|s| s.host.as_ref()), &ev.reporting_instance);
    match (component.is_empty(), instance.is_empty()) {
        (true, true) => String::new(),
        (_, true) => component,
        _ => format!("{component}, {instance}"),
    }
}

fn event_row(ev: &Event, _obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let first_seen = match &ev.first_timestamp {
        Some(t) => since(Some(&t.0), now),
        None => since(ev.event_time.as_ref().map(|t| &t.0), now),
    };
    let mut last_seen = match &ev.last_timestamp {
        Some(t) => since(Some(&t.0), now),
        None => first_seen.clone(),
    };
    let mut count = ev.count.unwrap_or(0);
    if let Some(series) = &ev.series {
        last_seen = since(series.last_observed_time.as_ref().map(|t| &t.0), now);
        count = series.count.unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = s(&ev.involved_object.kind).to_lowercase();
    let object = match s(&ev.involved_object.name) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    vec![
        last_seen.into(),
        s(&ev.type_).into(),
        s(&ev.reason).into(),
        object.into(),
        s(&ev.involved_object.field_path).into(),
        event_source(ev).into(),
        s(&ev.message).trim().into(),
        first_seen.into(),
        count.into(),
        s(&ev.metadata.name).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Lease.

/// The hooks of `coordination.k8s.io/v1 Lease`.
pub fn lease() -> Typed<Lease> {
    Typed {
        columns: LEASE_COLS,
        row: lease_row,
        validate: validate_lease,
        ..Typed::default()
    }
}

fn validate_lease(lease: &Lease, out: &mut Vec<Cause>) {
    let Some(spec) = &lease.spec else { return };
    if let Some(d) = spec.lease_duration_seconds
        && d <= 0
    {
        out.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.lease_transitions
        && t < 0
    {
        out.push(Cause::invalid(
            "spec.leaseTransitions",
            t,
            "must be greater than or equal to 0",
        ));
    }
    if !s(&spec.preferred_holder).is_empty() && s(&spec.holder_identity).is_empty() {
        out.push(Cause::forbidden(
            "spec.preferredHolder",
            "may only be specified if holderIdentity is set",
        ));
    }
}

fn lease_row(lease: &Lease, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let holder = lease
        .spec
        .as_ref()
        .map(|sp: &LeaseSpec| s(&sp.holder_identity))
        .unwrap_or("");
    vec![holder.into(), age(obj, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<K: serde::de::DeserializeOwned>(v: Value) -> K {
        serde_json::from_value(v).expect("a valid object")
    }

    fn now() -> jiff::Timestamp {
        "2024-01-01T01:00:00Z".parse().expect("time")
    }

    #[test]
    fn namespaces() {
        let hooks = namespace();
        let mut ns: Namespace = from(json!({"metadata": {"name": "team-a"}}));
        (hooks.default)(&mut ns);
        (hooks.prepare_create)(&mut ns);
        let v = serde_json::to_value(&ns).expect("json");
        assert_eq!(v["spec"], json!({"finalizers": ["kubernetes"]}));
        assert_eq!(v["status"], json!({"phase": "Active"}));
        assert_eq!(
            v["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(namespace_row(&ns, &v, now())[0], json!("Active"));
        let bad: Namespace = from(json!({"spec": {"finalizers": ["custom"]}}));
        let mut out = vec![];
        validate_namespace(&bad, &mut out);
        assert_eq!(out[0].field, "spec.finalizers[0]");
    }

    #[test]
    fn nodes() {
        let n: Node = from(json!({"spec": {"podCIDR": "10.244.0.0/33",
            "taints": [{"key": "a", "effect": "Sometimes"}, {"key": "bad key", "effect": "NoSchedule"}, {"key": "a", "effect": "Sometimes"}]}}));
        let mut out = vec![];
        validate_node(&n, &mut out);
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.podCIDR",
                "spec.taints[0].effect",
                "spec.taints[1].key",
                "spec.taints[2].effect",
                "spec.taints[2]"
            ]
        );
        let old: Node =
            from(json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}}));
        let new: Node =
            from(json!({"spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]}}));
        let mut out = vec![];
        validate_node_update(&new, &old, &mut out);
        validate_node_update(&old, &Node::default(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field, "spec.podCIDRs");
        let n: Node = from(json!({
            "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "containerd://2.0.0", "kernelVersion": "6.1.0",
                    "kubeProxyVersion": "", "kubeletVersion": "v1.33.0", "machineID": "", "operatingSystem": "linux", "osImage": "Debian", "systemUUID": ""}}
        }));
        let obj = serde_json::to_value(&n).expect("json");
        let row = node_row(&n, &obj, now());
        let want = [
            "Ready,SchedulingDisabled",
            "control-plane",
            "60m",
            "v1.33.0",
            "10.0.0.1",
            "<none>",
            "Debian",
            "6.1.0",
            "containerd://2.0.0",
        ];
        assert_eq!(row, want.map(Value::from).to_vec());
    }

    #[test]
    fn events() {
        let ev: Event = from(json!({
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "message": "Pulled image ", "type": "Normal", "count": 2,
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:59:00Z"
        }));
        let mut out = vec![];
        validate_event(&ev, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let row = event_row(&ev, &json!({}), now());
        let want = [
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{web}"),
            json!("kubelet, n1"),
            json!("Pulled image"),
            json!("60m"),
            json!(2),
            json!("web.1"),
        ];
        assert_eq!(row, want.to_vec());
        let mut bad = ev.clone();
        bad.involved_object.namespace = Some("other".into());
        bad.type_ = Some("Info".into());
        let mut out = vec![];
        validate_event(&bad, &mut out);
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["involvedObject.namespace", "type"]);
    }

    #[test]
    fn leases() {
        let l: Lease = from(
            json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 0}}),
        );
        let mut out = vec![];
        validate_lease(&l, &mut out);
        assert_eq!(out[0].field, "spec.leaseDurationSeconds");
        let obj = serde_json::to_value(&l).expect("json");
        assert_eq!(lease_row(&l, &obj, now()), vec![json!("n1"), json!("60m")]);
    }
}
