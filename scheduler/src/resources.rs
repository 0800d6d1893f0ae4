//! Resource amounts: Kubernetes quantity parsing, what a pod requests and what a node offers.
//!
//! Everything is integer: cpu in millicores, memory and ephemeral storage in bytes, pods as a
//! count. Extended resources (`example.com/gpu`, `hugepages-2Mi`, ...) are kept as `(name, value)`
//! lists sorted by name, next to the fixed [`Resources`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Requested or allocatable amounts, in integer units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods.
    pub pods: i64,
}

impl Resources {
    /// Adds `other` to `self`, field by field (saturating).
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.pods = self.pods.saturating_add(other.pods);
    }

    /// Subtracts `other` from `self`, field by field (saturating).
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        self.pods = self.pods.saturating_sub(other.pods);
    }

    /// Field-wise maximum of `self` and `other`, stored in `self`.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
    }
}

/// Extended (scalar) resource amounts: `(name, value)` sorted by name, names unique.
pub type Extended = Vec<(String, i64)>;

/// The amount of `name` in a sorted [`Extended`] list (0 when absent).
pub fn extended_get(list: &[(String, i64)], name: &str) -> i64 {
    match list.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) => list[i].1,
        Err(_) => 0,
    }
}

/// Adds `delta` to `name` in a sorted [`Extended`] list, inserting it when absent and dropping
/// entries that reach 0.
pub fn extended_add(list: &mut Extended, name: &str, delta: i64) {
    match list.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) => {
            list[i].1 = list[i].1.saturating_add(delta);
            if list[i].1 == 0 {
                list.remove(i);
            }
        }
        Err(i) => {
            if delta != 0 {
                list.insert(i, (name.to_string(), delta));
            }
        }
    }
}

/// Whether Kubernetes treats `name` as a scalar resource the fit filter checks: extended resources
/// (a domain-prefixed name outside `requests.`), prefixed native resources and huge pages.
pub fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-") || (name.contains('/') && !name.starts_with("requests."))
}

/// Parses a Kubernetes quantity ("100m", "1.5", "2", "128Mi", "1G", "1e3", "0.5Ki") to its value
/// times 1000, rounded up. None if malformed.
///
/// Values too large for an `i64` saturate at `i64::MAX` (`i64::MIN` for negative ones); negative
/// values are rounded away from zero.
pub fn parse_milli(q: &str) -> Option<i64> {
    parse_scaled(q, 3)
}

/// Parses a quantity to an integer, rounded up (memory/storage bytes, pod counts).
///
/// Same rules as [`parse_milli`], without the factor 1000.
pub fn parse_units(q: &str) -> Option<i64> {
    parse_scaled(q, 0)
}

/// The most significant digits kept from a quantity's number (the rest only rounds up).
const MAX_DIGITS: u32 = 36;

/// Parses `q` and returns `ceil(|value| * 10^scale)` with the value's sign.
fn parse_scaled(q: &str, scale: i32) -> Option<i64> {
    let s = q.trim().as_bytes();
    if s.is_empty() {
        return None;
    }
    let mut pos = 0;
    let mut negative = false;
    match s[0] {
        b'-' => {
            negative = true;
            pos += 1;
        }
        b'+' => pos += 1,
        _ => {}
    }
    // Mantissa digits: integer part, optional '.', fraction part.
    let mut mantissa: u128 = 0;
    let mut kept: u32 = 0;
    let mut exp10: i32 = 0;
    let mut dropped_nonzero = false;
    let mut any_digit = false;
    let mut in_fraction = false;
    while pos < s.len() {
        let c = s[pos];
        if c == b'.' && !in_fraction {
            in_fraction = true;
            pos += 1;
            continue;
        }
        if !c.is_ascii_digit() {
            break;
        }
        any_digit = true;
        let d = u128::from(c - b'0');
        if mantissa == 0 && d == 0 {
            // Leading zero: not significant.
            if in_fraction {
                exp10 -= 1;
            }
        } else if kept < MAX_DIGITS {
            mantissa = mantissa * 10 + d;
            kept += 1;
            if in_fraction {
                exp10 -= 1;
            }
        } else {
            // Beyond the kept precision: only matters for rounding up.
            if d != 0 {
                dropped_nonzero = true;
            }
            if !in_fraction {
                exp10 += 1;
            }
        }
        pos += 1;
    }
    if !any_digit {
        return None;
    }
    if dropped_nonzero {
        mantissa += 1;
    }
    let (suffix10, suffix2) = parse_suffix(&s[pos..])?;
    let exp10 = exp10.checked_add(suffix10)?.checked_add(scale)?;
    let magnitude = scaled_ceil(mantissa, exp10, suffix2);
    Some(match magnitude {
        Some(m) if negative => -(m as i64),
        Some(m) => m as i64,
        None if negative => i64::MIN,
        None => i64::MAX,
    })
}

/// Parses a quantity suffix to (power of ten, power of two).
fn parse_suffix(s: &[u8]) -> Option<(i32, u32)> {
    Some(match s {
        b"" => (0, 0),
        b"n" => (-9, 0),
        b"u" => (-6, 0),
        b"m" => (-3, 0),
        b"k" => (3, 0),
        b"M" => (6, 0),
        b"G" => (9, 0),
        b"T" => (12, 0),
        b"P" => (15, 0),
        b"E" => (18, 0),
        b"Ki" => (0, 10),
        b"Mi" => (0, 20),
        b"Gi" => (0, 30),
        b"Ti" => (0, 40),
        b"Pi" => (0, 50),
        b"Ei" => (0, 60),
        [b'e' | b'E', rest @ ..] if !rest.is_empty() => {
            let (neg, digits) = match rest {
                [b'-', d @ ..] => (true, d),
                [b'+', d @ ..] => (false, d),
                d => (false, d),
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let mut e: i32 = 0;
            for d in digits {
                // Exponents this large saturate the result anyway.
                e = e.saturating_mul(10).saturating_add(i32::from(d - b'0'));
            }
            e = e.min(100_000);
            (if neg { -e } else { e }, 0)
        }
        _ => return None,
    })
}

/// `ceil(mantissa * 10^exp10 * 2^exp2)` if it fits an `i64`.
fn scaled_ceil(mantissa: u128, exp10: i32, exp2: u32) -> Option<u64> {
    if mantissa == 0 {
        return Some(0);
    }
    let mut num = mantissa.checked_mul(1u128.checked_shl(exp2)?)?;
    let mut den: u128 = 1;
    if exp10 >= 0 {
        for _ in 0..exp10 {
            num = num.checked_mul(10)?;
            if num > i64::MAX as u128 {
                return None;
            }
        }
    } else {
        for _ in 0..exp10.unsigned_abs() {
            match den.checked_mul(10) {
                Some(d) if d <= num.saturating_mul(10) => den = d,
                // The value is below 1: it rounds up to 1.
                _ => return Some(1),
            }
        }
    }
    let v = num.div_ceil(den);
    if v > i64::MAX as u128 {
        None
    } else {
        Some(v as u64)
    }
}

/// Kubernetes' default cpu request for scoring a container that requests none (100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Kubernetes' default memory request for scoring a container that requests none (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;
/// The pod capacity assumed for a node that reports none.
pub const DEFAULT_MAX_PODS: i64 = 110;

/// Fixed and extended amounts, used while summing a pod's containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Amounts {
    base: Resources,
    ext: Extended,
}

impl Amounts {
    fn add(&mut self, other: &Amounts) {
        self.base.add(&other.base);
        for (name, v) in &other.ext {
            extended_add(&mut self.ext, name, *v);
        }
    }

    fn max_with(&mut self, other: &Amounts) {
        self.base.max_with(&other.base);
        for (name, v) in &other.ext {
            let cur = extended_get(&self.ext, name);
            if *v > cur {
                extended_add(&mut self.ext, name, v - cur);
            }
        }
    }

    /// Reads a resource list (requests, overhead, allocatable) into amounts.
    fn from_list(list: &BTreeMap<String, Quantity>) -> Amounts {
        let mut a = Amounts::default();
        for (name, q) in list {
            a.set(name, &q.0);
        }
        a
    }

    /// Sets one named resource from a quantity string (malformed quantities count as 0).
    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.base.milli_cpu = parse_milli(q).unwrap_or(0),
            "memory" => self.base.memory = parse_units(q).unwrap_or(0),
            "ephemeral-storage" => self.base.ephemeral_storage = parse_units(q).unwrap_or(0),
            "pods" => self.base.pods = parse_units(q).unwrap_or(0),
            _ if is_scalar_resource(name) => {
                let v = parse_units(q).unwrap_or(0);
                let cur = extended_get(&self.ext, name);
                extended_add(&mut self.ext, name, v - cur);
            }
            _ => {}
        }
    }
}

/// A container's requests, with Kubernetes' scoring defaults when `non_zero` and cpu or memory is
/// missing (not when explicitly 0).
fn container_requests(c: &Container, non_zero: bool) -> Amounts {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut a = requests.map(Amounts::from_list).unwrap_or_default();
    if non_zero {
        if !requests.is_some_and(|r| r.contains_key("cpu")) {
            a.base.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !requests.is_some_and(|r| r.contains_key("memory")) {
            a.base.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    a
}

/// The pod's requests, fixed and extended, as Kubernetes' `resourcehelper.PodRequests` counts them.
fn pod_amounts(spec: &PodSpec, non_zero: bool) -> Amounts {
    let mut reqs = Amounts::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Amounts::default();
    let mut init_max = Amounts::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            // A sidecar runs for the pod's whole life, next to the regular containers and the
            // init containers that start after it.
            reqs.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_max.max_with(&r);
    }
    reqs.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        reqs.add(&Amounts::from_list(overhead));
    }
    reqs.base.pods = 1;
    reqs
}

/// What a pod requests, the way Kubernetes counts it: per resource the max of (sum over
/// containers) and (max over init containers; restartable "sidecar" init containers with
/// restartPolicy Always are counted as Kubernetes 1.29+ does), plus spec.overhead; pods = 1.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    pod_amounts(spec, false).base
}

/// Like [`pod_requests`] but a container without a cpu/memory request counts 100m cpu / 200Mi
/// memory (Kubernetes' non-zero defaults used by scoring).
pub fn pod_non_zero_requests(spec: &PodSpec) -> Resources {
    pod_amounts(spec, true).base
}

/// The extended (scalar) resources a pod requests, counted like [`pod_requests`]; zero amounts
/// are left out.
pub fn pod_extended_requests(spec: &PodSpec) -> Extended {
    let mut ext = pod_amounts(spec, false).ext;
    ext.retain(|(_, v)| *v != 0);
    ext
}

/// The node's amounts: status.allocatable, falling back to status.capacity per resource.
fn node_amounts(node: &Node) -> Amounts {
    let status = node.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    let cap = status.and_then(|s| s.capacity.as_ref());
    let mut a = Amounts::default();
    let mut have_pods = false;
    // Capacity first, then allocatable overrides per resource.
    for list in [cap, alloc].into_iter().flatten() {
        for (name, q) in list {
            if name == "pods" {
                have_pods = true;
            }
            a.set(name, &q.0);
        }
    }
    if !have_pods {
        a.base.pods = DEFAULT_MAX_PODS;
    }
    a.ext.retain(|(_, v)| *v != 0);
    a
}

/// status.allocatable (falling back to status.capacity per resource); missing pods → 110, missing
/// others → 0.
pub fn node_allocatable(node: &Node) -> Resources {
    node_amounts(node).base
}

/// The extended (scalar) resources a node offers, with the same fallback as [`node_allocatable`].
pub fn node_extended_allocatable(node: &Node) -> Extended {
    node_amounts(node).ext
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("2"), Some(2000));
        assert_eq!(parse_milli("0.0001"), Some(1));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("1E3"), Some(1_000_000));
        assert_eq!(parse_milli("1e-3"), Some(1));
        assert_eq!(parse_milli("2e-4"), Some(1));
        assert_eq!(parse_milli("1n"), Some(1));
        assert_eq!(parse_milli("0"), Some(0));
        assert_eq!(parse_milli("0m"), Some(0));
        assert_eq!(parse_milli("+3"), Some(3000));
        assert_eq!(parse_milli("-3"), Some(-3000));
        assert_eq!(parse_milli(".5"), Some(500));
        assert_eq!(parse_milli("1."), Some(1000));
        assert_eq!(parse_units("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(parse_units("1G"), Some(1_000_000_000));
        assert_eq!(parse_units("1k"), Some(1000));
        assert_eq!(parse_units("1Ki"), Some(1024));
        assert_eq!(parse_units("0.5Ki"), Some(512));
        assert_eq!(parse_units("1.5Gi"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_units("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(parse_units("1Ei"), Some(1 << 60));
        assert_eq!(parse_units("100m"), Some(1));
        assert_eq!(parse_units("1500m"), Some(2));
        assert_eq!(parse_units("110"), Some(110));
        assert_eq!(parse_units(" 64Mi "), Some(64 << 20));
        assert_eq!(parse_units("000123"), Some(123));
        assert_eq!(
            parse_units("0.000000000000000000000000000000000000000001"),
            Some(1)
        );
        assert_eq!(
            parse_units("1.0000000000000000000000000000000000000000001"),
            Some(2)
        );
        assert_eq!(
            parse_units("123456789012345678901234567890"),
            Some(i64::MAX)
        );
        assert_eq!(parse_units("9Ei"), Some(i64::MAX));
        assert_eq!(parse_units("1e999999999999"), Some(i64::MAX));
        assert_eq!(parse_milli("9223372036854775807"), Some(i64::MAX));
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in [
            "", " ", "m", "abc", "1x", "1KI", "1K", "1mi", "1e", "1e+", "1e1.5", "--1", "1..5",
            "1.2.3", "1 m", "1Mi2", "e3", ".", "+", "1ee3", "0x10",
        ] {
            assert_eq!(parse_milli(bad), None, "{bad:?}");
            assert_eq!(parse_units(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sums_containers_and_takes_init_max() {
        let s = spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "ephemeral-storage": "1Gi"}}},
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "i2", "resources": {"requests": {"memory": "50Mi"}}},
            ],
        }));
        assert_eq!(
            pod_requests(&s),
            Resources {
                milli_cpu: 500,
                memory: 100 << 20,
                ephemeral_storage: 1 << 30,
                pods: 1
            }
        );
    }

    #[test]
    fn counts_sidecars_and_overhead() {
        // Sidecar s (200m) runs alongside the app (300m): 500m. The init container after it
        // needs 1000m + 200m. Overhead adds 50m.
        let s = spec(json!({
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "300m", "memory": "1Gi"}}}],
            "initContainers": [
                {"name": "before", "resources": {"requests": {"cpu": "400m", "memory": "2Gi"}}},
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m", "memory": "100Mi"}}},
                {"name": "after", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}},
            ],
            "overhead": {"cpu": "50m", "memory": "1Mi"},
        }));
        let r = pod_requests(&s);
        assert_eq!(r.milli_cpu, 1200 + 50);
        // memory: max(1Gi + 100Mi, 2Gi, 10Mi + 100Mi) + 1Mi
        assert_eq!(r.memory, (2 << 30) + (1 << 20));
        assert_eq!(r.pods, 1);

        // Sidecar only: added to the regular containers.
        let s = spec(json!({
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "300m"}}}],
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
            ],
        }));
        assert_eq!(pod_requests(&s).milli_cpu, 500);
    }

    #[test]
    fn non_zero_defaults_apply_to_missing_requests_only() {
        let s = spec(json!({
            "containers": [
                {"name": "a"},
                {"name": "b", "resources": {"requests": {"cpu": "0", "memory": "10Mi"}}},
            ],
        }));
        assert_eq!(
            pod_requests(&s),
            Resources {
                memory: 10 << 20,
                pods: 1,
                ..Default::default()
            }
        );
        assert_eq!(
            pod_non_zero_requests(&s),
            Resources {
                milli_cpu: 100,
                memory: (200 << 20) + (10 << 20),
                pods: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn extended_requests() {
        let s = spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"example.com/gpu": "1", "cpu": "1"}}},
                {"name": "b", "resources": {"requests": {"example.com/gpu": "2", "hugepages-2Mi": "4Mi", "storage": "1"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"example.com/gpu": "4"}}}],
        }));
        assert_eq!(
            pod_extended_requests(&s),
            vec![
                ("example.com/gpu".to_string(), 4),
                ("hugepages-2Mi".to_string(), 4 << 20)
            ]
        );
    }

    #[test]
    fn node_allocatable_falls_back_to_capacity() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {
                "capacity": {"cpu": "8", "memory": "16Gi", "ephemeral-storage": "100Gi", "example.com/gpu": "2"},
                "allocatable": {"cpu": "7500m", "memory": "15Gi"},
            },
        }))
        .unwrap();
        assert_eq!(
            node_allocatable(&node),
            Resources {
                milli_cpu: 7500,
                memory: 15 << 30,
                ephemeral_storage: 100 << 30,
                pods: 110
            }
        );
        assert_eq!(
            node_extended_allocatable(&node),
            vec![("example.com/gpu".to_string(), 2)]
        );
        let empty: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(
            node_allocatable(&empty),
            Resources {
                pods: 110,
                ..Default::default()
            }
        );
        let pods: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"}, "status": {"allocatable": {"pods": "20"}}
        }))
        .unwrap();
        assert_eq!(node_allocatable(&pods).pods, 20);
    }

    #[test]
    fn resources_add_sub() {
        let mut a = Resources {
            milli_cpu: 1,
            memory: 2,
            ephemeral_storage: 3,
            pods: 4,
        };
        let b = Resources {
            milli_cpu: 10,
            memory: 20,
            ephemeral_storage: 30,
            pods: 40,
        };
        a.add(&b);
        assert_eq!(
            a,
            Resources {
                milli_cpu: 11,
                memory: 22,
                ephemeral_storage: 33,
                pods: 44
            }
        );
        a.sub(&b);
        assert_eq!(
            a,
            Resources {
                milli_cpu: 1,
                memory: 2,
                ephemeral_storage: 3,
                pods: 4
            }
        );
    }
}
