//! Pod addresses for a hollow node: handed out from the node's pod CIDR the way CNI's host-local
//! does it (the network address, the gateway `.1` and the broadcast address are never given; the
//! search goes on from the last address given, so a freed address is not reused at once).

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The free and used addresses of one IPv4 pod CIDR.
#[derive(Debug, Clone)]
pub struct Ipam {
    cidr: String,
    base: u32,
    size: u32,
    used: HashSet<u32>,
    next: u32,
}

impl Ipam {
    /// The addresses of `cidr` (`10.244.3.0/24`); IPv4 only, with room for at least one pod.
    pub fn new(cidr: &str) -> Result<Ipam, String> {
        let bad = || {
            format!(
                "pod CIDR {cidr:?}: the hollow runtime needs an IPv4 CIDR such as 10.244.3.0/24"
            )
        };
        let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        if !(1..=30).contains(&len) {
            return Err(bad());
        }
        let size = 1u32 << (32 - len);
        Ok(Ipam {
            cidr: cidr.to_string(),
            base: u32::from(ip) & !(size - 1),
            size,
            used: HashSet::new(),
            next: 2,
        })
    }

    /// The CIDR it hands addresses out of.
    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    /// The next free address (None: all are taken).
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        // Offsets 2 ..= size - 2: not the network, the gateway or the broadcast address.
        let usable = self.size - 3;
        for _ in 0..usable {
            let offset = self.next;
            self.next = if offset + 1 >= self.size - 1 {
                2
            } else {
                offset + 1
            };
            if self.used.insert(offset) {
                return Some(Ipv4Addr::from(self.base + offset));
            }
        }
        None
    }

    /// Marks an address as given (one of a sandbox that outlived a change of CIDR); no-op for one
    /// outside the CIDR.
    pub fn reserve(&mut self, ip: &str) {
        if let Some(offset) = self.offset(ip) {
            self.used.insert(offset);
        }
    }

    fn offset(&self, ip: &str) -> Option<u32> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        let offset = u32::from(ip).wrapping_sub(self.base);
        (offset < self.size).then_some(offset)
    }

    /// Gives an address back (no-op for one outside the CIDR or not given).
    pub fn release(&mut self, ip: &str) {
        if let Some(offset) = self.offset(ip) {
            self.used.remove(&offset);
        }
    }

    /// How many addresses are given out.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_host_address_once_and_reuses_freed_ones_last() {
        let mut ipam = Ipam::new("10.244.3.0/29").unwrap();
        let got: Vec<String> = std::iter::from_fn(|| ipam.allocate())
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.244.3.2",
                "10.244.3.3",
                "10.244.3.4",
                "10.244.3.5",
                "10.244.3.6"
            ],
            "not .0 (network), .1 (gateway) or .7 (broadcast)"
        );
        assert_eq!(ipam.allocate(), None, "full");
        ipam.release("10.244.3.4");
        ipam.release("10.9.9.9");
        assert_eq!(ipam.in_use(), 4);
        assert_eq!(ipam.allocate(), Some("10.244.3.4".parse().unwrap()));
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        assert!(Ipam::new("fd00::/64").is_err());
        assert!(Ipam::new("10.0.0.0/31").is_err());
        assert!(Ipam::new("10.0.0.0").is_err());
        let ipam = Ipam::new("10.244.3.77/24").unwrap();
        assert_eq!(ipam.base, u32::from(Ipv4Addr::new(10, 244, 3, 0)));
    }
}
