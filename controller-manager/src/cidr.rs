//! [`CidrSet`]: the pod CIDRs of a cluster CIDR, each handed to at most one node.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Why a cluster CIDR or mask size is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrError(pub String);

/// The subnets of size `/mask` in an IPv4 cluster CIDR, and which are taken.
#[derive(Debug, Clone)]
pub struct CidrSet {
    base: u32,
    prefix: u8,
    mask: u8,
    taken: BTreeSet<u32>,
    /// Where the next search starts, so released subnets are not reused at once.
    next: u32,
}

/// Parses `a.b.c.d/n` into the network address and prefix length.
pub fn parse(cidr: &str) -> Result<(u32, u8), CidrError> {
    let bad = || {
        CidrError(format!(
            "{cidr:?} is not an IPv4 CIDR such as 10.244.0.0/16"
        ))
    };
    let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok((u32::from(ip) & mask, len))
}

impl CidrSet {
    /// The `/mask` subnets of `cluster_cidr` (e.g. `10.244.0.0/16` with 24: 256 subnets).
    pub fn new(cluster_cidr: &str, mask: u8) -> Result<CidrSet, CidrError> {
        let (base, prefix) = parse(cluster_cidr)?;
        if mask < prefix || mask > 30 {
            return Err(CidrError(format!(
                "--node-cidr-mask-size {mask} must be between the cluster CIDR's prefix length {prefix} and 30"
            )));
        }
        if mask - prefix > 20 {
            return Err(CidrError(format!(
                "--node-cidr-mask-size {mask} makes more than 2^20 subnets of {cluster_cidr}"
            )));
        }
        Ok(CidrSet {
            base,
            prefix,
            mask,
            taken: BTreeSet::new(),
            next: 0,
        })
    }

    /// How many subnets there are.
    pub fn capacity(&self) -> u32 {
        1 << (self.mask - self.prefix)
    }

    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, len) = parse(cidr).ok()?;
        if len != self.mask || ip < self.base {
            return None;
        }
        let index = (ip - self.base) >> (32 - self.mask);
        (index < self.capacity()).then_some(index)
    }

    fn cidr_of(&self, index: u32) -> String {
        let ip = Ipv4Addr::from(self.base + (index << (32 - self.mask)));
        format!("{ip}/{}", self.mask)
    }

    /// Marks `cidr` as taken (a node already has it). Returns false when it is not one of this set's
    /// subnets (another range, or another size), which is then left alone.
    pub fn occupy(&mut self, cidr: &str) -> bool {
        match self.index_of(cidr) {
            Some(i) => {
                self.taken.insert(i);
                true
            }
            None => false,
        }
    }

    /// Takes a free subnet, or None when all are taken.
    pub fn allocate(&mut self) -> Option<String> {
        let n = self.capacity();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.taken.insert(i) {
                self.next = (i + 1) % n;
                return Some(self.cidr_of(i));
            }
        }
        None
    }

    /// Frees `cidr`.
    pub fn release(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.taken.remove(&i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_each_subnet_once() {
        let mut s = CidrSet::new("10.244.0.0/22", 24).expect("set");
        assert_eq!(s.capacity(), 4);
        assert!(s.occupy("10.244.1.0/24"));
        let got: Vec<String> = std::iter::from_fn(|| s.allocate()).collect();
        assert_eq!(got, ["10.244.0.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
        assert_eq!(s.allocate(), None);
        s.release("10.244.2.0/24");
        assert_eq!(s.allocate().as_deref(), Some("10.244.2.0/24"));
    }

    #[test]
    fn foreign_and_bad_cidrs() {
        let mut s = CidrSet::new("10.244.0.0/16", 24).expect("set");
        assert!(!s.occupy("10.245.0.0/24"));
        assert!(!s.occupy("10.244.0.0/25"));
        assert!(!s.occupy("nonsense"));
        assert!(CidrSet::new("10.244.0.0/16", 8).is_err());
        assert!(CidrSet::new("10.244.0.0/16", 31).is_err());
        assert!(CidrSet::new("10.244.0.0", 24).is_err());
        assert!(CidrSet::new("10.244.0.0/33", 24).is_err());
        assert!(CidrSet::new("0.0.0.0/0", 24).is_err());
        // The network address is masked: 10.244.7.9/16 is 10.244.0.0/16.
        let mut s = CidrSet::new("10.244.7.9/16", 24).expect("set");
        assert_eq!(s.allocate().as_deref(), Some("10.244.0.0/24"));
    }
}
