//! This node's addresses for NodePorts: the local IPv4 addresses inside `--nodeport-addresses`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::Error;

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (a bare address is a /32).
    pub fn parse(s: &str) -> Result<Cidr, Error> {
        let bad = || Error::Config(format!("{s:?} is not an IPv4 CIDR (a.b.c.d/n)"));
        let (addr, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

/// The addresses NodePorts answer on, from the interfaces' addresses `local`: those inside one of
/// `cidrs`, or with no CIDRs every address but loopback ones.
pub fn node_ips(cidrs: &[Cidr], local: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
    local
        .iter()
        .copied()
        .filter(|ip| {
            if cidrs.is_empty() {
                !ip.is_loopback()
            } else {
                cidrs.iter().any(|c| c.contains(*ip))
            }
        })
        .collect()
}

/// The IPv4 addresses of this network namespace's interfaces that are up.
pub fn local_ips() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
                continue;
            }
            if let Some(v4) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                out.push(v4.ip());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Lets packets to 127.0.0.0/8 be routed (NAT'ed) so NodePorts answer on 127.0.0.1
/// (`net.ipv4.conf.all.route_localnet`, as kube-proxy sets it).
pub fn enable_route_localnet() -> Result<(), Error> {
    let path = "/proc/sys/net/ipv4/conf/all/route_localnet";
    std::fs::write(path, "1").map_err(|e| Error::Config(format!("setting {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_select_addresses() {
        let local: Vec<Ipv4Addr> = ["127.0.0.1", "10.0.0.5", "192.168.1.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let all = node_ips(&[], &local);
        assert_eq!(all.len(), 2);
        assert!(!all.contains(&Ipv4Addr::LOCALHOST));
        let some = node_ips(
            &[
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("127.0.0.1/32").unwrap(),
            ],
            &local,
        );
        assert_eq!(
            some.into_iter().collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::LOCALHOST]
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains(Ipv4Addr::LOCALHOST)
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }
}
