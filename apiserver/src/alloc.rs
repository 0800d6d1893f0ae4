//! Service ClusterIP and NodePort allocation.
//!
//! Each allocated IP and port is a key in etcd (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`) whose value names the owning Service. Keys are claimed
//! and released in the same transaction as the Service write, so allocations are unique across the
//! cluster and survive restarts, and a failed write allocates nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use atoll_api::Cause;
use atoll_api::kinds::{needs_cluster_ip, needs_node_ports};
use k8s_openapi::api::core::v1::ServiceSpec;
use rand::Rng;
use serde_json::Value;

use crate::storage::Claims;

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// An IPv4 CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, bits) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected e.g. 10.96.0.0/12)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let bits: u8 = bits
            .parse()
            .map_err(|_| format!("{bits:?} is not a prefix length"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("prefix length {bits} must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - bits);
        Ok(Cidr {
            base: u32::from(ip) & mask,
            bits,
        })
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }
    /// Whether `ip` is usable for a Service: inside the range, not the network or broadcast address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.base && v < self.base + self.size() - 1
    }
    /// The first usable address, reserved for the `kubernetes` Service.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + i)
    }
}

/// Allocation ranges, from `--service-cluster-ip-range` and `--service-node-port-range`.
#[derive(Debug, Clone)]
pub struct Ranges {
    /// ClusterIP range.
    pub cluster_ips: Cidr,
    /// NodePort range (inclusive).
    pub node_ports: (u16, u16),
}

/// Parses a node port range `30000-32767`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range (expected e.g. 30000-32767)"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is not a valid port range"));
    }
    Ok((a, b))
}

/// The allocation keys a Service holds.
pub fn held(spec: Option<&Value>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let Some(spec) = spec else { return keys };
    if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str)
        && ip.parse::<Ipv4Addr>().is_ok()
    {
        keys.insert(format!("{IP_PREFIX}{ip}"));
    }
    for p in spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64)
            && n > 0
        {
            keys.insert(format!("{PORT_PREFIX}{n}"));
        }
    }
    keys
}

/// The claims and releases that take a Service from `old` to `new` allocations; `owner` is stored as holder.
pub fn claims(old: &BTreeSet<String>, new: &BTreeSet<String>, owner: &str) -> Claims {
    Claims {
        claim: new
            .difference(old)
            .map(|k| (k.clone(), owner.to_string()))
            .collect(),
        release: old.difference(new).cloned().collect(),
        unchanged: vec![],
    }
}

/// The field a taken allocation key belongs to, for the 422 message.
pub fn describe_taken(key: &str, spec: &Value) -> Cause {
    if let Some(ip) = key.strip_prefix(IP_PREFIX) {
        return Cause::already_allocated(
            "spec.clusterIPs",
            ip,
            "failed to allocate IP: provided IP is already allocated",
        );
    }
    let port = key.strip_prefix(PORT_PREFIX).unwrap_or(key);
    let index = spec
        .get("ports")
        .and_then(Value::as_array)
        .and_then(|ports| {
            ports.iter().position(|p| {
                p.get("nodePort")
                    .and_then(Value::as_i64)
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(port)
            })
        })
        .unwrap_or(0);
    Cause::already_allocated(
        format!("spec.ports[{index}].nodePort"),
        port,
        "provided port is already allocated",
    )
}

impl Ranges {
    /// Checks explicitly requested values against the ranges.
    pub fn validate(&self, spec: &ServiceSpec, out: &mut Vec<Cause>) {
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        {
            match ip.parse::<Ipv4Addr>() {
                Ok(addr) if self.cluster_ips.contains(addr) => {}
                Ok(_) => out.push(Cause::invalid(
                    "spec.clusterIPs",
                    ip,
                    format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", self.range_text()),
                )),
                Err(_) => {} // the kind's validation reports malformed IPs
            }
        }
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            if let Some(n) = p.node_port.filter(|n| *n != 0) {
                if !needs_node_ports(spec) {
                    continue;
                }
                let (lo, hi) = self.node_ports;
                if n < i32::from(lo) || n > i32::from(hi) {
                    out.push(Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        n,
                        format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    ));
                }
            }
        }
    }

    fn range_text(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.cluster_ips.base),
            self.cluster_ips.bits
        )
    }

    /// Fills `clusterIP`/`clusterIPs`, IP families and node ports the Service needs and lacks,
    /// keeping what `old` had. `taken` lists keys known to be allocated (to avoid picking them).
    pub fn assign(
        &self,
        spec: &mut ServiceSpec,
        old: Option<&ServiceSpec>,
        taken: &BTreeSet<String>,
    ) -> Result<(), String> {
        let mut rng = rand::rng();
        if needs_cluster_ip(spec) {
            if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
                let kept = old
                    .and_then(|o| o.cluster_ip.clone())
                    .filter(|ip| ip.parse::<Ipv4Addr>().is_ok());
                let ip = match kept {
                    Some(ip) => ip,
                    None => self.pick_ip(&mut rng, taken)?.to_string(),
                };
                spec.cluster_ip = Some(ip);
            }
            spec.cluster_ips = spec.cluster_ip.clone().map(|ip| vec![ip]);
            spec.ip_families = Some(vec!["IPv4".into()]);
            spec.ip_family_policy
                .get_or_insert_with(|| "SingleStack".into());
        } else if spec.cluster_ip.as_deref() == Some("None") {
            spec.cluster_ips = Some(vec!["None".into()]);
            spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
            spec.ip_family_policy
                .get_or_insert_with(|| "SingleStack".into());
        }
        if !needs_node_ports(spec) {
            for p in spec.ports.iter_mut().flatten() {
                p.node_port = None;
            }
            return Ok(());
        }
        let old_ports = old.and_then(|o| o.ports.as_ref());
        let mut used: BTreeSet<i32> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.node_port)
            .filter(|n| *n != 0)
            .collect();
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) != 0 {
                continue;
            }
            let kept = old_ports
                .into_iter()
                .flatten()
                .find(|o| o.port == p.port && o.protocol == p.protocol)
                .and_then(|o| o.node_port)
                .filter(|n| *n != 0 && !used.contains(n));
            let n = match kept {
                Some(n) => n,
                None => self.pick_port(&mut rng, taken, &used)?,
            };
            used.insert(n);
            p.node_port = Some(n);
        }
        Ok(())
    }

    fn pick_ip(&self, rng: &mut impl Rng, taken: &BTreeSet<String>) -> Result<Ipv4Addr, String> {
        let size = self.cluster_ips.size();
        // Offsets 0 (network), 1 (reserved for the kubernetes Service) and size-1 (broadcast) are never given out.
        let usable = size.saturating_sub(3);
        if usable == 0 {
            return Err("the service cluster IP range has no free addresses".into());
        }
        let start = rng.random_range(0..usable);
        for i in 0..usable {
            let ip = self.cluster_ips.nth(2 + (start + i) % usable);
            if !taken.contains(&format!("{IP_PREFIX}{ip}")) {
                return Ok(ip);
            }
        }
        Err(format!(
            "range is full: no free IP in {}",
            self.range_text()
        ))
    }

    fn pick_port(
        &self,
        rng: &mut impl Rng,
        taken: &BTreeSet<String>,
        used: &BTreeSet<i32>,
    ) -> Result<i32, String> {
        let (lo, hi) = (i32::from(self.node_ports.0), i32::from(self.node_ports.1));
        let n = hi - lo + 1;
        let start = rng.random_range(0..n);
        for i in 0..n {
            let port = lo + (start + i) % n;
            if !used.contains(&port) && !taken.contains(&format!("{PORT_PREFIX}{port}")) {
                return Ok(port);
            }
        }
        Err(format!("range is full: no free node port in {lo}-{hi}"))
    }
}

/// The key prefixes under which allocations live, for listing what is taken.
pub const PREFIXES: [&str; 2] = [IP_PREFIX, PORT_PREFIX];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ranges() -> Ranges {
        Ranges {
            cluster_ips: "10.96.0.0/28".parse().unwrap(),
            node_ports: (30000, 30002),
        }
    }

    #[test]
    fn parses_ranges() {
        assert!("10.96.0.0/12".parse::<Cidr>().is_ok());
        assert!("10.96.0.0".parse::<Cidr>().is_err());
        assert!("10.96.0.0/31".parse::<Cidr>().is_err());
        assert_eq!(parse_port_range("30000-32767"), Ok((30000, 32767)));
        assert!(parse_port_range("5-1").is_err());
    }

    #[test]
    fn assigns_free_values_and_keeps_old_ones() {
        let r = ranges();
        let mut taken = BTreeSet::new();
        for i in 2..14 {
            taken.insert(format!("{IP_PREFIX}10.96.0.{i}"));
        }
        taken.insert(format!("{PORT_PREFIX}30000"));
        let mut spec: ServiceSpec = serde_json::from_value(
            json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}),
        )
        .unwrap();
        r.assign(&mut spec, None, &taken).unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.14"));
        let ports: BTreeSet<i32> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.node_port)
            .collect();
        assert_eq!(ports, BTreeSet::from([30001, 30002]));
        let mut again: ServiceSpec = serde_json::from_value(
            json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}),
        )
        .unwrap();
        r.assign(&mut again, Some(&spec), &taken).unwrap();
        assert_eq!(again.ports, spec.ports);
        taken.insert(format!("{IP_PREFIX}10.96.0.14"));
        let mut full: ServiceSpec =
            serde_json::from_value(json!({"ports": [{"port": 80}]})).unwrap();
        assert!(
            r.assign(&mut full, None, &taken)
                .unwrap_err()
                .contains("range is full")
        );
    }

    #[test]
    fn claims_are_the_difference() {
        let old = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let new = BTreeSet::from(["b".to_string(), "c".to_string()]);
        let c = claims(&old, &new, "default/web");
        assert_eq!(c.claim, vec![("c".to_string(), "default/web".to_string())]);
        assert_eq!(c.release, vec!["a".to_string()]);
    }

    #[test]
    fn out_of_range_is_invalid() {
        let spec: ServiceSpec =
            serde_json::from_value(json!({"type": "NodePort", "clusterIP": "10.0.0.1", "ports": [{"port": 80, "nodePort": 40000}]})).unwrap();
        let mut out = vec![];
        ranges().validate(&spec, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].field, "spec.ports[0].nodePort");
    }
}
