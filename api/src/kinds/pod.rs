//! `v1 Pod`: defaulting, validation, the update rules and kubectl's table, plus the pod-spec hooks
//! shared by pod templates ([`default_pod_spec`], [`validate_pod_spec`]) and small helpers the other
//! kinds of this module reuse.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, EnvVar, Pod, PodCondition, PodSpec, PodStatus, Probe,
    ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use super::Typed;
use crate::error::Cause;
use crate::table::Column;
use crate::validation;

/// Field selectors pods support beyond `metadata.name`/`metadata.namespace`, with the value of an absent field.
pub const FIELDS: &[(&str, &str)] = &[
    ("spec.nodeName", ""),
    ("spec.restartPolicy", ""),
    ("spec.schedulerName", ""),
    ("spec.serviceAccountName", ""),
    ("spec.hostNetwork", "false"),
    ("status.phase", ""),
    ("status.podIP", ""),
    ("status.nominatedNodeName", ""),
];

const COLS: &[Column] = &[
    Column::text(
        "Ready",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    Column::text(
        "Status",
        "The aggregate status of the containers in this pod.",
    ),
    Column::text(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    Column::AGE,
    Column::wide(
        "IP",
        "The IP address of this pod, routable at least within the cluster; empty if not yet allocated.",
    ),
    Column::wide("Node", "The node this pod is scheduled to."),
    Column::wide(
        "Nominated Node",
        "The node this pod preempted other pods on and is waiting to be scheduled to.",
    ),
    Column::wide(
        "Readiness Gates",
        "How many of the pod's readiness gates hold.",
    ),
];

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The message Kubernetes gives when a pod update touches an immutable part of the spec.
const UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The hooks of `v1 Pod`.
pub fn pod() -> Typed<Pod> {
    Typed {
        columns: COLS,
        row: pod_row,
        default: default_pod,
        prepare_create: prepare_pod,
        validate: validate_pod,
        validate_update: validate_pod_update,
        ..Typed::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared with the other kinds.

/// `s` as a string, "" when absent.
pub(super) fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// Sets an absent or empty string field to `value`.
pub(super) fn default_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().unwrap_or("").is_empty() {
        *field = Some(value.to_string());
    }
}

/// A JSON-quoted string, as Kubernetes shows values in messages.
pub(super) fn quote(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("\"{v}\""))
}

/// A label map the way Go prints it (`map[a:b c:d]`), as Kubernetes shows it in messages.
pub(super) fn go_map(map: Option<&BTreeMap<String, String>>) -> String {
    let parts: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    format!("map[{}]", parts.join(" "))
}

/// A value is not among the ones that exist (`field.NotFound`).
pub(super) fn not_found(field: impl Into<String>, value: &str) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        message: format!("Not found: {}", quote(value)),
        field: field.into(),
    }
}

/// A list has more items than allowed (`field.TooMany`).
pub(super) fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooMany",
        message: format!("Too many: {actual}: must have at most {max} items"),
        field: field.into(),
    }
}

/// A required port protocol: one of SCTP, TCP, UDP.
pub(super) fn protocol(p: Option<&str>, path: &str, out: &mut Vec<Cause>) {
    match p.unwrap_or("") {
        "" => out.push(Cause::required(path)),
        p if PROTOCOLS.contains(&p) => {}
        p => out.push(Cause::not_supported(path, p, PROTOCOLS)),
    }
}

/// A number that may not be negative.
pub(super) fn non_negative(v: i64, path: &str, out: &mut Vec<Cause>) {
    if v < 0 {
        out.push(Cause::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// A DNS-1123 label field.
pub(super) fn dns_label(v: &str, path: &str, out: &mut Vec<Cause>) {
    if let Err(e) = validation::dns1123_label(v) {
        out.push(Cause::invalid(path, v, e));
    }
}

/// The age of a timestamp at `now` as kubectl prints it, `<unknown>` when absent.
pub(super) fn since(t: Option<&jiff::Timestamp>, now: jiff::Timestamp) -> String {
    match t {
        Some(t) => crate::table::human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

/// The CONTAINERS and IMAGES cells of a workload's pod template.
pub(super) fn container_cells(spec: Option<&PodSpec>) -> (String, String) {
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(&c.image)).collect();
    (names.join(","), images.join(","))
}

/// A resource quantity (`100m`, `1`, `1Gi`, `500Mi`, `1e3`, `1k`, `0.5`) in billionths of a unit,
/// rounded up as Kubernetes does; `None` when `q` is not a quantity.
pub fn parse_quantity(q: &str) -> Option<i128> {
    let (negative, rest) = match q.as_bytes().first()? {
        b'+' => (false, &q[1..]),
        b'-' => (true, &q[1..]),
        _ => (false, q),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let mut mantissa: i128 = 0;
    for d in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(d - b'0'))?;
    }
    let mut exp10 = 9 - i32::try_from(frac.len()).ok()?;
    let mut exp2 = 0u32;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        e if e.starts_with(['e', 'E']) && e.len() > 1 => {
            exp10 = exp10.checked_add(e[1..].parse::<i32>().ok()?)?
        }
        _ => return None,
    }
    let mut v = mantissa.checked_mul(1i128 << exp2)?;
    if exp10 >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp10.unsigned_abs())?)?;
    } else if exp10 < -38 {
        v = i128::from(v > 0);
    } else {
        let d = 10i128.pow(exp10.unsigned_abs());
        v = v / d + i128::from(v % d != 0);
    }
    Some(if negative { -v } else { v })
}

// ---------------------------------------------------------------------------------------------
// Defaulting.

/// Fills the pod-spec defaults Kubernetes applies to pods and pod templates alike.
pub(crate) fn default_pod_spec(spec: &mut PodSpec) {
    default_str(&mut spec.dns_policy, "ClusterFirst");
    default_str(&mut spec.restart_policy, "Always");
    default_str(&mut spec.scheduler_name, "default-scheduler");
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context.get_or_insert_with(Default::default);
    // `serviceAccount` is the deprecated spelling of `serviceAccountName`; keep the two in step.
    if s(&spec.service_account_name).is_empty() && !s(&spec.service_account).is_empty() {
        spec.service_account_name = spec.service_account.clone();
    }
    if !s(&spec.service_account_name).is_empty() {
        spec.service_account = spec.service_account_name.clone();
    }
    let host_network = spec.host_network == Some(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

fn default_pull_policy(image: &str) -> &'static str {
    if image.is_empty() {
        return "IfNotPresent";
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last = name.rsplit_once('/').map_or(name, |(_, last)| last);
    let tag = last.split_once(':').map_or("", |(_, tag)| tag);
    if tag == "latest" || (tag.is_empty() && !digest) {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if s(&c.image_pull_policy).is_empty() {
        c.image_pull_policy = Some(default_pull_policy(s(&c.image)).into());
    }
    default_str(&mut c.termination_message_path, "/dev/termination-log");
    default_str(&mut c.termination_message_policy, "File");
    for p in c.ports.iter_mut().flatten() {
        default_str(&mut p.protocol, "TCP");
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            default_str(&mut f.api_version, "v1");
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

fn default_probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = &mut p.http_get {
        default_str(&mut h.path, "/");
        default_str(&mut h.scheme, "HTTP");
    }
}

fn default_volume(v: &mut Volume) {
    if *v
        == (Volume {
            name: v.name.clone(),
            ..Volume::default()
        })
    {
        v.empty_dir = Some(Default::default());
    }
    const MODE: i32 = 0o644;
    if let Some(x) = &mut v.secret {
        x.default_mode.get_or_insert(MODE);
    }
    if let Some(x) = &mut v.config_map {
        x.default_mode.get_or_insert(MODE);
    }
    if let Some(x) = &mut v.downward_api {
        x.default_mode.get_or_insert(MODE);
    }
    if let Some(x) = &mut v.projected {
        x.default_mode.get_or_insert(MODE);
    }
    if let Some(x) = &mut v.host_path {
        x.type_.get_or_insert_with(String::new);
    }
}

/// Pod-only defaults on top of [`default_pod_spec`]: `enableServiceLinks`, requests copied from
/// limits where a container sets only limits (not done for templates, as in Kubernetes), and what
/// Kubernetes' admission plugins add on create and update: the `not-ready` and `unreachable`
/// tolerations and the priority of pods without a (known) class.
fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec);
    spec.enable_service_links.get_or_insert(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(resources) = &mut c.resources
            && let Some(limits) = &resources.limits
        {
            let requests = resources.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let tolerates = |key: &str| {
        tolerations.iter().any(|t| {
            let (k, e) = (s(&t.key), s(&t.effect));
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let missing: Vec<&str> = [NOT_READY, UNREACHABLE]
        .into_iter()
        .filter(|k| !tolerates(k))
        .collect();
    for key in missing {
        tolerations.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(300),
            value: None,
        });
    }
    let priority = match s(&spec.priority_class_name) {
        "" => Some(0),
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        _ => None,
    };
    if let Some(p) = priority {
        spec.priority.get_or_insert(p);
    }
    default_str(&mut spec.preemption_policy, "PreemptLowerPriority");
}

/// A new pod starts Pending with its QoS class (and `SchedulingGated` while it has scheduling gates).
fn prepare_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    let gated = spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty());
    let conditions = gated.then(|| {
        vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("SchedulingGated".into()),
            message: Some("Scheduling is blocked due to non-empty scheduling gates".into()),
            ..Default::default()
        }]
    });
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        qos_class: Some(qos_class(spec).into()),
        conditions,
        ..Default::default()
    });
}

/// The QoS class Kubernetes gives a pod: `Guaranteed` when every container limits cpu and memory and
/// requests equal limits, `BestEffort` when nothing requests or limits cpu or memory, else `Burstable`.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let positive = |m: Option<&BTreeMap<String, Quantity>>| -> Vec<(&'static str, i128)> {
        let mut v = vec![];
        for name in ["cpu", "memory"] {
            if let Some(q) = m
                .and_then(|m| m.get(name))
                .and_then(|q| parse_quantity(&q.0))
                .filter(|q| *q > 0)
            {
                v.push((name, q));
            }
        }
        v
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.as_ref();
        for (name, q) in positive(r.and_then(|r| r.requests.as_ref())) {
            *requests.entry(name).or_default() += q;
        }
        let found = positive(r.and_then(|r| r.limits.as_ref()));
        if found.len() < 2 {
            guaranteed = false;
        }
        for (name, q) in found {
            *limits.entry(name).or_default() += q;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed
        && requests.iter().all(|(k, v)| limits.get(k) == Some(v))
        && requests.len() == limits.len()
    {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn validate_pod(pod: &Pod, out: &mut Vec<Cause>) {
    match &pod.spec {
        Some(spec) => validate_pod_spec(spec, "spec", out),
        None => out.push(Cause::required("spec.containers")),
    }
}

/// Checks a pod spec (of a pod or a template) whose fields are reported under `path`.
pub(crate) fn validate_pod_spec(spec: &PodSpec, path: &str, out: &mut Vec<Cause>) {
    let volumes = validate_volumes(
        spec.volumes.as_deref().unwrap_or(&[]),
        &format!("{path}.volumes"),
        out,
    );
    let mut names = BTreeSet::new();
    if spec.containers.is_empty() {
        out.push(Cause::required(format!("{path}.containers")));
    }
    let host_network = spec.host_network == Some(true);
    validate_containers(
        &spec.containers,
        false,
        &format!("{path}.containers"),
        &volumes,
        &mut names,
        host_network,
        out,
    );
    if let Some(init) = &spec.init_containers {
        validate_containers(
            init,
            true,
            &format!("{path}.initContainers"),
            &volumes,
            &mut names,
            host_network,
            out,
        );
    }
    match s(&spec.restart_policy) {
        "" => out.push(Cause::required(format!("{path}.restartPolicy"))),
        "Always" | "OnFailure" | "Never" => {}
        p => out.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            p,
            &["Always", "OnFailure", "Never"],
        )),
    }
    match s(&spec.dns_policy) {
        "" => out.push(Cause::required(format!("{path}.dnsPolicy"))),
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" => {}
        "None" => {
            if spec
                .dns_config
                .as_ref()
                .and_then(|c| c.nameservers.as_ref())
                .is_none_or(Vec::is_empty)
            {
                out.push(Cause::required(format!("{path}.dnsConfig")).with_message(
                    "Required value: must provide `dnsConfig` when `dnsPolicy` is None",
                ));
            }
        }
        p => out.push(Cause::not_supported(
            format!("{path}.dnsPolicy"),
            p,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    if let Some(sel) = &spec.node_selector {
        validation::labels(sel, &format!("{path}.nodeSelector"), out);
    }
    for (field, v) in [
        ("serviceAccountName", &spec.service_account_name),
        ("nodeName", &spec.node_name),
    ] {
        if !s(v).is_empty()
            && let Err(e) = validation::dns1123_subdomain(s(v))
        {
            out.push(Cause::invalid(format!("{path}.{field}"), s(v), e));
        }
    }
    if let Some(d) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&d)
    {
        out.push(Cause::invalid(
            format!("{path}.activeDeadlineSeconds"),
            d,
            format!("must be between 1 and {}, inclusive", i32::MAX),
        ));
    }
    for (field, v) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if !s(v).is_empty() {
            dns_label(s(v), &format!("{path}.{field}"), out);
        }
    }
    if let Some(t) = &spec.tolerations {
        validate_tolerations(t, &format!("{path}.tolerations"), out);
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        non_negative(g, &format!("{path}.terminationGracePeriodSeconds"), out);
    }
}

/// Checks the volumes; returns the names of the valid ones (what volume mounts may refer to).
fn validate_volumes(volumes: &[Volume], path: &str, out: &mut Vec<Cause>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let mut errs = vec![];
        validate_volume_source(v, &p, &mut errs);
        if v.name.is_empty() {
            errs.push(Cause::required(format!("{p}.name")));
        } else {
            dns_label(&v.name, &format!("{p}.name"), &mut errs);
        }
        if names.contains(&v.name) {
            errs.push(Cause::duplicate(format!("{p}.name"), &v.name));
        }
        if errs.is_empty() {
            names.insert(v.name.clone());
        }
        out.extend(errs);
    }
    names
}

fn validate_volume_source(v: &Volume, path: &str, out: &mut Vec<Cause>) {
    let sources: Vec<String> = match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m.keys().filter(|k| *k != "name").cloned().collect(),
        _ => vec![],
    };
    match sources.as_slice() {
        [] => out
            .push(Cause::required(path).with_message("Required value: must specify a volume type")),
        [_] => {}
        [_, rest @ ..] => {
            for k in rest {
                out.push(Cause::forbidden(
                    format!("{path}.{k}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if let Some(c) = &v.config_map
        && c.name.is_empty()
    {
        out.push(Cause::required(format!("{path}.configMap.name")));
    }
    if let Some(x) = &v.secret
        && s(&x.secret_name).is_empty()
    {
        out.push(Cause::required(format!("{path}.secret.secretName")));
    }
    if let Some(x) = &v.persistent_volume_claim
        && x.claim_name.is_empty()
    {
        out.push(Cause::required(format!(
            "{path}.persistentVolumeClaim.claimName"
        )));
    }
    if let Some(x) = &v.host_path
        && x.path.is_empty()
    {
        out.push(Cause::required(format!("{path}.hostPath.path")));
    }
}

fn validate_containers(
    containers: &[Container],
    init: bool,
    path: &str,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    host_network: bool,
    out: &mut Vec<Cause>,
) {
    let mut host_ports = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if c.name.is_empty() {
            out.push(Cause::required(format!("{p}.name")));
        } else {
            dns_label(&c.name, &format!("{p}.name"), out);
            if !names.insert(c.name.clone()) {
                out.push(Cause::duplicate(format!("{p}.name"), &c.name));
            }
        }
        let image = s(&c.image);
        if image.is_empty() {
            out.push(Cause::required(format!("{p}.image")));
        } else if image.trim() != image {
            out.push(Cause::invalid(
                format!("{p}.image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
        match (init, s(&c.restart_policy)) {
            (_, "") | (true, "Always") => {}
            (true, other) => out.push(Cause::not_supported(
                format!("{p}.restartPolicy"),
                other,
                &["Always"],
            )),
            (false, _) => out.push(Cause::forbidden(
                format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            )),
        }
        match s(&c.image_pull_policy) {
            "" => out.push(Cause::required(format!("{p}.imagePullPolicy"))),
            "Always" | "IfNotPresent" | "Never" => {}
            other => out.push(Cause::not_supported(
                format!("{p}.imagePullPolicy"),
                other,
                &["Always", "IfNotPresent", "Never"],
            )),
        }
        match s(&c.termination_message_policy) {
            "" => out.push(Cause::required(format!("{p}.terminationMessagePolicy"))),
            "File" | "FallbackToLogsOnError" => {}
            other => out.push(Cause::not_supported(
                format!("{p}.terminationMessagePolicy"),
                other,
                &["File", "FallbackToLogsOnError"],
            )),
        }
        validate_ports(c, &p, host_network, out);
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let hp = port.host_port.unwrap_or(0);
            if hp != 0 {
                let key = format!("{}/{}/{hp}", s(&port.host_ip), s(&port.protocol));
                if !host_ports.insert(key.clone()) {
                    out.push(Cause::duplicate(format!("{p}.ports[{j}].hostPort"), &key));
                }
            }
        }
        for (j, e) in c.env.iter().flatten().enumerate() {
            validate_env(e, &format!("{p}.env[{j}]"), out);
        }
        let mut mount_paths = BTreeSet::new();
        for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
            let mp = format!("{p}.volumeMounts[{j}]");
            if m.name.is_empty() {
                out.push(Cause::required(format!("{mp}.name")));
            }
            if !volumes.contains(&m.name) {
                out.push(not_found(format!("{mp}.name"), &m.name));
            }
            if m.mount_path.is_empty() {
                out.push(Cause::required(format!("{mp}.mountPath")));
            }
            if !mount_paths.insert(m.mount_path.as_str()) {
                out.push(Cause::invalid(
                    format!("{mp}.mountPath"),
                    &m.mount_path,
                    "must be unique",
                ));
            }
        }
        if let Some(r) = &c.resources {
            validate_resources(r, &format!("{p}.resources"), out);
        }
    }
}

fn validate_ports(c: &Container, path: &str, host_network: bool, out: &mut Vec<Cause>) {
    let mut names = BTreeSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let p = format!("{path}.ports[{i}]");
        let name = s(&port.name);
        if !name.is_empty() {
            let before = out.len();
            validation::port_name(name, &format!("{p}.name"), out);
            if out.len() == before && !names.insert(name) {
                out.push(Cause::duplicate(format!("{p}.name"), name));
            }
        }
        if port.container_port == 0 {
            out.push(Cause::required(format!("{p}.containerPort")));
        } else {
            validation::port(port.container_port, &format!("{p}.containerPort"), out);
        }
        let host_port = port.host_port.unwrap_or(0);
        if host_port != 0 {
            validation::port(host_port, &format!("{p}.hostPort"), out);
        }
        if host_network && host_port != port.container_port {
            out.push(Cause::invalid(
                format!("{p}.hostPort"),
                host_port,
                "must match `containerPort` when `hostNetwork` is true",
            ));
        }
        protocol(port.protocol.as_deref(), &format!("{p}.protocol"), out);
    }
}

fn validate_env(e: &EnvVar, path: &str, out: &mut Vec<Cause>) {
    if e.name.is_empty() {
        out.push(Cause::required(format!("{path}.name")));
    } else if !e.name.chars().all(|c| (' '..='~').contains(&c)) || e.name.contains('=') {
        out.push(Cause::invalid(
            format!("{path}.name"),
            &e.name,
            "a valid environment variable name must consist only of printable ASCII characters other than '='",
        ));
    }
    let Some(from) = &e.value_from else { return };
    let p = format!("{path}.valueFrom");
    let mut sources = 0;
    if let Some(f) = &from.field_ref {
        sources += 1;
        if s(&f.api_version).is_empty() {
            out.push(Cause::required(format!("{p}.fieldRef.apiVersion")));
        }
        if f.field_path.is_empty() {
            out.push(Cause::required(format!("{p}.fieldRef.fieldPath")));
        }
    }
    if let Some(r) = &from.resource_field_ref {
        sources += 1;
        if r.resource.is_empty() {
            out.push(Cause::required(format!("{p}.resourceFieldRef.resource")));
        }
    }
    let key_refs = [
        (
            "configMapKeyRef",
            from.config_map_key_ref.as_ref().map(|r| (&r.name, &r.key)),
        ),
        (
            "secretKeyRef",
            from.secret_key_ref.as_ref().map(|r| (&r.name, &r.key)),
        ),
    ];
    for (field, r) in key_refs {
        let Some((name, key)) = r else { continue };
        sources += 1;
        let kp = format!("{p}.{field}");
        if let Err(e) = validation::dns1123_subdomain(name) {
            out.push(Cause::invalid(format!("{kp}.name"), name, e));
        }
        if key.is_empty() {
            out.push(Cause::required(format!("{kp}.key")));
        } else {
            for msg in super::config::config_key_errors(key) {
                out.push(Cause::invalid(format!("{kp}.key"), key, msg));
            }
        }
    }
    if sources == 0 {
        out.push(Cause::invalid(&p, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
    } else if !s(&e.value).is_empty() {
        out.push(Cause::invalid(
            &p,
            "",
            "may not be specified when `value` is not empty",
        ));
    } else if sources > 1 {
        out.push(Cause::invalid(
            &p,
            "",
            "may not have more than one field specified at a time",
        ));
    }
}

const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

fn validate_resources(r: &ResourceRequirements, path: &str, out: &mut Vec<Cause>) {
    let parse = |kind: &str,
                 m: &Option<BTreeMap<String, Quantity>>,
                 out: &mut Vec<Cause>|
     -> BTreeMap<String, i128> {
        let mut parsed = BTreeMap::new();
        for (name, q) in m.iter().flatten() {
            let field = format!("{path}.{kind}[{name}]");
            match parse_quantity(&q.0) {
                None => out.push(Cause::invalid(field, &q.0, QUANTITY_FORMAT)),
                Some(v) if v < 0 => out.push(Cause::invalid(
                    field,
                    &q.0,
                    "must be greater than or equal to 0",
                )),
                Some(v) => {
                    parsed.insert(name.clone(), v);
                }
            }
        }
        parsed
    };
    let limits = parse("limits", &r.limits, out);
    let requests = parse("requests", &r.requests, out);
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name)
            && req > lim
        {
            let raw = |m: &Option<BTreeMap<String, Quantity>>| {
                m.as_ref()
                    .and_then(|m| m.get(name))
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            };
            out.push(Cause::invalid(
                format!("{path}.requests[{name}]"),
                raw(&r.requests),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    raw(&r.limits)
                ),
            ));
        }
    }
}

/// Checks pod tolerations (used for node taints' counterpart on pods).
fn validate_tolerations(tolerations: &[Toleration], path: &str, out: &mut Vec<Cause>) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let key = s(&t.key);
        if !key.is_empty()
            && let Err(e) = validation::qualified_name(key)
        {
            out.push(Cause::invalid(format!("{p}.key"), key, e));
        }
        let operator = s(&t.operator);
        if key.is_empty() && operator != "Exists" {
            out.push(Cause::invalid(
                format!("{p}.operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && s(&t.effect) != "NoExecute" {
            out.push(Cause::invalid(
                format!("{p}.effect"),
                s(&t.effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "" | "Equal" => {
                if let Err(e) = validation::label_value(s(&t.value)) {
                    out.push(Cause::invalid(format!("{p}.operator"), s(&t.value), e));
                }
            }
            "Exists" => {
                if !s(&t.value).is_empty() {
                    out.push(Cause::invalid(
                        format!("{p}.operator"),
                        s(&t.value),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => out.push(Cause::not_supported(
                format!("{p}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        match s(&t.effect) {
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => out.push(Cause::not_supported(
                format!("{p}.effect"),
                other,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
    }
}

fn validate_pod_update(new: &Pod, old: &Pod, out: &mut Vec<Cause>) {
    let empty = PodSpec::default();
    let n = new.spec.as_ref().unwrap_or(&empty);
    let o = old.spec.as_ref().unwrap_or(&empty);
    let init_len = |s: &PodSpec| s.init_containers.as_ref().map_or(0, Vec::len);
    if n.containers.len() != o.containers.len() {
        out.push(Cause::forbidden(
            "spec.containers",
            "pod updates may not add or remove containers",
        ));
        return;
    }
    if init_len(n) != init_len(o) {
        out.push(Cause::forbidden(
            "spec.initContainers",
            "pod updates may not add or remove containers",
        ));
        return;
    }
    match (n.active_deadline_seconds, o.active_deadline_seconds) {
        (Some(nd), _) if !(0..=i64::from(i32::MAX)).contains(&nd) => {
            let why = format!("must be between 0 and {}, inclusive", i32::MAX);
            out.push(Cause::invalid("spec.activeDeadlineSeconds", nd, why));
            return;
        }
        (Some(nd), Some(od)) if od < nd => {
            out.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                nd,
                "must be less than or equal to previous value",
            ));
            return;
        }
        (None, Some(_)) => {
            out.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                "null",
                "must not update from a positive integer to nil value",
            ));
            return;
        }
        _ => {}
    }
    let new_tolerations = n.tolerations.as_deref().unwrap_or(&[]);
    for old_t in o.tolerations.iter().flatten() {
        let kept = new_tolerations.iter().any(|t| {
            Toleration {
                toleration_seconds: t.toleration_seconds,
                ..old_t.clone()
            } == *t
        });
        if !kept {
            out.push(Cause::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // Put the old values of the mutable fields into the new spec: what remains must be unchanged.
    let mut munged = n.clone();
    for (c, oc) in munged.containers.iter_mut().zip(&o.containers) {
        c.image = oc.image.clone();
    }
    for (c, oc) in munged
        .init_containers
        .iter_mut()
        .flatten()
        .zip(o.init_containers.iter().flatten())
    {
        c.image = oc.image.clone();
    }
    munged.active_deadline_seconds = o.active_deadline_seconds;
    munged.tolerations = o.tolerations.clone();
    if o.termination_grace_period_seconds.is_some_and(|g| g < 0)
        && munged.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = o.termination_grace_period_seconds;
    }
    if munged != *o {
        out.push(Cause::forbidden("spec", UPDATE_FORBIDDEN));
    }
}

// ---------------------------------------------------------------------------------------------
// Printing.

/// What kubectl's pod printer derives from the statuses.
struct Summary {
    reason: String,
    ready: usize,
    total: usize,
    restarts: i64,
    last_restart: Option<jiff::Timestamp>,
}

fn finished_at(c: &ContainerStatus) -> Option<jiff::Timestamp> {
    c.last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0)
}

fn condition_true(status: &PodStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn summarize(pod: &Pod) -> Summary {
    let empty_spec = PodSpec::default();
    let empty_status = PodStatus::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty_spec);
    let status = pod.status.as_ref().unwrap_or(&empty_status);
    let phase = s(&status.phase);
    let mut reason = if s(&status.reason).is_empty() {
        phase.to_string()
    } else {
        s(&status.reason).to_string()
    };
    if status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && s(&c.reason) == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_specs = spec.init_containers.as_deref().unwrap_or(&[]);
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| c.name == name && s(&c.restart_policy) == "Always")
    };
    let total = spec.containers.len()
        + init_specs
            .iter()
            .filter(|c| s(&c.restart_policy) == "Always")
            .count();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut sidecar_last_restart: Option<jiff::Timestamp> = None;
    let mut initializing = false;
    for (i, c) in status.init_container_statuses.iter().flatten().enumerate() {
        restarts += i64::from(c.restart_count);
        last_restart = last_restart.max(finished_at(c));
        let sidecar = restartable(&c.name);
        if sidecar {
            sidecar_restarts += i64::from(c.restart_count);
            sidecar_last_restart = sidecar_last_restart.max(finished_at(c));
        }
        let state = c.state.clone().unwrap_or_default();
        let terminated = state.terminated.as_ref();
        let waiting_reason = state.waiting.as_ref().map(|w| s(&w.reason)).unwrap_or("");
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && c.started == Some(true) {
            if c.ready {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match (s(&t.reason), t.signal.unwrap_or(0)) {
                ("", 0) => format!("Init:ExitCode:{}", t.exit_code),
                ("", signal) => format!("Init:Signal:{signal}"),
                (r, _) => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    if !initializing || condition_true(status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(c.restart_count);
            last_restart = last_restart.max(finished_at(c));
            let state = c.state.clone().unwrap_or_default();
            let waiting = state.waiting.as_ref().map(|w| s(&w.reason)).unwrap_or("");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = &state.terminated {
                reason = match (s(&t.reason), t.signal.unwrap_or(0)) {
                    ("", 0) => format!("ExitCode:{}", t.exit_code),
                    ("", signal) => format!("Signal:{signal}"),
                    (r, _) => r.to_string(),
                };
            } else if c.ready && state.running.is_some() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            reason = if condition_true(status, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        if s(&status.reason) == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    Summary {
        reason,
        ready,
        total,
        restarts,
        last_restart,
    }
}

/// The STATUS kubectl shows for a pod: `status.reason` or the phase, refined by init containers
/// (`Init:1/2`, `Init:CrashLoopBackOff`), container waiting and terminated reasons (`Completed`,
/// `ErrImagePull`), `NotReady`, and `Terminating` once the pod is being deleted.
pub fn pod_phase_reason(pod: &Pod) -> String {
    summarize(pod).reason
}

fn pod_row(pod: &Pod, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let sum = summarize(pod);
    let restarts = match sum.last_restart {
        Some(t) if sum.restarts != 0 => format!("{} ({} ago)", sum.restarts, since(Some(&t), now)),
        _ => sum.restarts.to_string(),
    };
    let empty_spec = PodSpec::default();
    let empty_status = PodStatus::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty_spec);
    let status = pod.status.as_ref().unwrap_or(&empty_status);
    let or_none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    let ip = status
        .pod_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .map(|ip| ip.ip.as_str())
        .unwrap_or(s(&status.pod_ip));
    let gates = match spec.readiness_gates.as_deref() {
        None | Some([]) => "<none>".to_string(),
        Some(gates) => {
            let holding = gates
                .iter()
                .filter(|g| {
                    status
                        .conditions
                        .iter()
                        .flatten()
                        .find(|c| c.type_ == g.condition_type)
                        .is_some_and(|c| c.status == "True")
                })
                .count();
            format!("{holding}/{}", gates.len())
        }
    };
    vec![
        format!("{}/{}", sum.ready, sum.total).into(),
        sum.reason.into(),
        restarts.into(),
        crate::table::age(crate::table::created(obj), now).into(),
        or_none(ip).into(),
        or_none(s(&spec.node_name)).into(),
        or_none(s(&status.nominated_node_name)).into(),
        gates.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_from(v: Value) -> Pod {
        serde_json::from_value(v).expect("a valid pod")
    }

    fn web() -> Pod {
        pod_from(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}
        }))
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn defaults_and_create() {
        let hooks = pod();
        let mut p = web();
        (hooks.default)(&mut p);
        (hooks.prepare_create)(&mut p);
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.enable_service_links, Some(true));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(
            c.ports.as_ref().expect("ports")[0].protocol.as_deref(),
            Some("TCP")
        );
        let keys: Vec<&str> = spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| s(&t.key))
            .collect();
        assert_eq!(keys, [NOT_READY, UNREACHABLE]);
        let status = p.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
        let mut out = vec![];
        (hooks.validate)(&p, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn pull_policy_and_quantities() {
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(default_pull_policy("nginx@sha256:abc"), "IfNotPresent");
        assert_eq!(parse_quantity("100m"), Some(100_000_000));
        assert_eq!(parse_quantity("1"), parse_quantity("1000m"));
        assert_eq!(parse_quantity("1Gi"), Some(1_073_741_824 * 1_000_000_000));
        assert_eq!(parse_quantity("1e3"), parse_quantity("1k"));
        assert_eq!(parse_quantity("0.5"), parse_quantity("500m"));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("1Qi"), None);
    }

    #[test]
    fn qos_classes() {
        let mut p = pod_from(json!({"spec": {"containers": [{"name": "a", "image": "x",
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}}));
        default_pod(&mut p);
        assert_eq!(qos_class(p.spec.as_ref().expect("spec")), "Guaranteed");
        let p = pod_from(json!({"spec": {"containers": [{"name": "a", "image": "x",
            "resources": {"requests": {"cpu": "100m"}}}]}}));
        assert_eq!(qos_class(p.spec.as_ref().expect("spec")), "Burstable");
    }

    #[test]
    fn validation_failures() {
        let mut p = pod_from(json!({"spec": {
            "containers": [
                {"name": "a", "ports": [{"containerPort": 70000, "protocol": "XTP"}],
                 "env": [{"name": "A=B"}], "volumeMounts": [{"name": "missing", "mountPath": "/x"}],
                 "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
                {"name": "a", "image": "x"}
            ],
            "restartPolicy": "Sometimes",
            "tolerations": [{"key": "k", "operator": "Maybe"}]
        }}));
        default_pod(&mut p);
        let mut out = vec![];
        validate_pod(&p, &mut out);
        let f = fields(&out);
        for want in [
            "spec.containers[0].image",
            "spec.containers[0].ports[0].containerPort",
            "spec.containers[0].ports[0].protocol",
            "spec.containers[0].env[0].name",
            "spec.containers[0].volumeMounts[0].name",
            "spec.containers[0].resources.requests[cpu]",
            "spec.containers[1].name",
            "spec.restartPolicy",
            "spec.tolerations[0].operator",
        ] {
            assert!(f.contains(&want), "{want} missing from {out:?}");
        }
        let image = out
            .iter()
            .find(|c| c.field == "spec.containers[0].image")
            .expect("image cause");
        assert_eq!(image.message, "Required value");
        let mut out = vec![];
        validate_pod(&pod_from(json!({"spec": {"containers": []}})), &mut out);
        assert!(fields(&out).contains(&"spec.containers"));
    }

    #[test]
    fn update_rules() {
        let hooks = pod();
        let mut old = web();
        (hooks.default)(&mut old);
        (hooks.prepare_create)(&mut old);
        let mut new = old.clone();
        let spec = new.spec.as_mut().expect("spec");
        spec.containers[0].image = Some("nginx:1.27".into());
        spec.active_deadline_seconds = Some(100);
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                key: Some("k".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            });
        let mut out = vec![];
        (hooks.validate_update)(&new, &old, &mut out);
        assert!(out.is_empty(), "{out:?}");
        new.spec.as_mut().expect("spec").restart_policy = Some("Never".into());
        (hooks.validate_update)(&new, &old, &mut out);
        assert_eq!(fields(&out), ["spec"]);
        assert!(
            out[0]
                .message
                .starts_with("Forbidden: pod updates may not change fields other than")
        );
        // Replacing with the original manifest: defaulting re-adds what create added.
        let mut replaced = web();
        replaced.metadata.labels = Some([("replaced".to_string(), "yes".to_string())].into());
        (hooks.default)(&mut replaced);
        let mut out = vec![];
        (hooks.validate_update)(&replaced, &old, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let mut bound = old.clone();
        bound.spec.as_mut().expect("spec").node_name = Some("n1".into());
        let mut moved = bound.clone();
        moved.spec.as_mut().expect("spec").node_name = Some("n2".into());
        let mut out = vec![];
        (hooks.validate_update)(&moved, &bound, &mut out);
        assert_eq!(fields(&out), ["spec"]);
    }

    #[test]
    fn status_and_row() {
        let p = pod_from(json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "initContainers": [{"name": "i", "image": "x"}],
                     "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5",
                "initContainerStatuses": [{"name": "i", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [
                    {"name": "a", "image": "x", "imageID": "", "ready": true, "restartCount": 2, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:50:00Z"}}},
                    {"name": "b", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]}
        }));
        let obj = serde_json::to_value(&p).expect("json");
        let now: jiff::Timestamp = "2024-01-01T01:00:00Z".parse().expect("time");
        let row = pod_row(&p, &obj, now);
        assert_eq!(
            row,
            vec![
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3 (10m ago)"),
                json!("60m"),
                json!("10.0.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let init = pod_from(
            json!({"spec": {"initContainers": [{"name": "i", "image": "x"}, {"name": "j", "image": "x"}], "containers": [{"name": "a", "image": "x"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"running": {}}}]}}),
        );
        assert_eq!(pod_phase_reason(&init), "Init:0/2");
        let mut deleting = web();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(pod_phase_reason(&deleting), "Terminating");
    }
}
