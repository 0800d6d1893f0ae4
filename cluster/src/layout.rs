//! Where a local cluster keeps everything, and the names and addresses derived from it. Saved as
//! `<data-dir>/cluster.json` so that `atoll down` finds the same names after a crash.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The ports the control plane listens on (the API server and registry on the host network's
/// gateway address, the rest on loopback).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ports {
    /// The API server.
    pub api: u16,
    /// etcd's clients (its peer port is the next one).
    pub etcd: u16,
    /// The image registry.
    pub registry: u16,
    /// The scheduler's `/metrics` and `/healthz`.
    pub scheduler: u16,
    /// The controller manager's `/metrics` and `/healthz`.
    pub controller_manager: u16,
}

/// A local cluster's layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    /// The data directory (absolute).
    pub data_dir: PathBuf,
    /// Four hex digits from the data directory's path: the bridge, network namespaces and cgroups
    /// of two clusters with different data directories never share a name.
    pub id: String,
    /// How many nodes (hosts).
    pub nodes: u32,
    /// The hosts' network: the bridge has its first address, node `i` (from 1) the `i+1`-th.
    pub host_network: Ipv4Addr,
    /// The hosts' network prefix length.
    pub host_prefix: u8,
    /// The pod network the controller manager cuts node pod CIDRs from.
    pub cluster_cidr: String,
    /// The ports.
    pub ports: Ports,
    /// The repository's `deploy/` directory (containerd's config template and runner, image scripts).
    pub deploy_dir: PathBuf,
}

/// One node (a host of its own: a network namespace on the cluster's bridge).
#[derive(Debug, Clone)]
pub struct NodeLayout {
    /// The Node's name, `node-<i>`.
    pub name: String,
    /// Its address on the hosts' network.
    pub ip: Ipv4Addr,
    /// Its network namespace, `atoll<id>-<i>`.
    pub netns: String,
    /// The host end of its veth pair on the bridge, `atoll<id>v<i>`.
    pub veth: String,
    /// Its directory: containerd's state, the kubelet's root.
    pub dir: PathBuf,
    /// The cgroup its pods live under.
    pub cgroup_root: String,
}

/// A short stable hash of `path` (FNV-1a, 16 bits as hex).
fn short_id(path: &Path) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{:04x}", (h ^ (h >> 16)) & 0xffff)
}

/// Parses `a.b.c.d/len` into the network address and prefix length.
pub fn parse_cidr(cidr: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (addr, len) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr:?} is not a CIDR (like 10.99.0.0/24)"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("{cidr:?}: {addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (8..=30).contains(l))
        .with_context(|| format!("{cidr:?}: the prefix length must be 8 to 30"))?;
    let mask = u32::MAX << (32 - len);
    Ok((Ipv4Addr::from(u32::from(addr) & mask), len))
}

impl Layout {
    /// The layout for `nodes` nodes in `data_dir` (made absolute; it must exist).
    pub fn new(
        data_dir: &Path,
        nodes: u32,
        host_cidr: &str,
        cluster_cidr: &str,
        ports: Ports,
        deploy_dir: PathBuf,
    ) -> anyhow::Result<Layout> {
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("data directory {}", data_dir.display()))?;
        let (host_network, host_prefix) = parse_cidr(host_cidr)?;
        let room = (1u64 << (32 - host_prefix)) - 3;
        if nodes == 0 || u64::from(nodes) > room.min(99) {
            bail!(
                "--nodes {nodes}: between 1 and {} nodes fit in {host_cidr}",
                room.min(99)
            );
        }
        parse_cidr(cluster_cidr).context("--cluster-cidr")?;
        Ok(Layout {
            id: short_id(&data_dir),
            data_dir,
            nodes,
            host_network,
            host_prefix,
            cluster_cidr: cluster_cidr.to_string(),
            ports,
            deploy_dir,
        })
    }

    /// The saved layout of the cluster in `data_dir`, if one was started there.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Layout>> {
        let path = data_dir.join("cluster.json");
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).with_context(|| path.display().to_string())?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }

    /// Saves it as `<data-dir>/cluster.json`.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = self.data_dir.join("cluster.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| path.display().to_string())
    }

    /// The logs' directory.
    pub fn logs(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The log of component `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    /// The file holding the process id of component `name`.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.data_dir.join("pids").join(format!("{name}.pid"))
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// The bridge of the hosts' network.
    pub fn bridge(&self) -> String {
        format!("atoll{}", self.id)
    }

    /// The bridge's address: the control plane's address as the nodes see it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.host_network) + 1)
    }

    /// The API server's URL.
    pub fn api_url(&self) -> String {
        format!("http://{}:{}", self.gateway(), self.ports.api)
    }

    /// The registry's address (`host:port`), as containerd and the image push reach it.
    pub fn registry(&self) -> String {
        format!("{}:{}", self.gateway(), self.ports.registry)
    }

    /// The cgroup every node's pods live under.
    pub fn cgroup_root(&self) -> String {
        format!("/atoll-{}", self.id)
    }

    /// Node `i` (from 1).
    pub fn node(&self, i: u32) -> NodeLayout {
        let name = format!("node-{i}");
        NodeLayout {
            ip: Ipv4Addr::from(u32::from(self.host_network) + 1 + i),
            netns: format!("atoll{}-{i}", self.id),
            veth: format!("atoll{}v{i}", self.id),
            dir: self.data_dir.join("nodes").join(&name),
            cgroup_root: format!("{}/{name}", self.cgroup_root()),
            name,
        }
    }

    /// Every node.
    pub fn all_nodes(&self) -> Vec<NodeLayout> {
        (1..=self.nodes).map(|i| self.node(i)).collect()
    }
}

impl NodeLayout {
    /// containerd's directory (config, root, state, socket).
    pub fn containerd_dir(&self) -> PathBuf {
        self.dir.join("containerd")
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd_dir().join("containerd.sock")
    }

    /// The kubelet's root directory (a shared mount; see `deploy/containerd/run`).
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Ports {
        Ports {
            api: 6443,
            etcd: 23790,
            registry: 5000,
            scheduler: 10259,
            controller_manager: 10257,
        }
    }

    #[test]
    fn names_and_addresses() {
        let dir = std::env::temp_dir();
        let l = Layout::new(
            &dir,
            3,
            "10.99.0.0/24",
            "10.244.0.0/16",
            ports(),
            "d".into(),
        )
        .unwrap();
        assert_eq!(l.id.len(), 4);
        assert_eq!(l.gateway(), Ipv4Addr::new(10, 99, 0, 1));
        let n = l.node(3);
        assert_eq!(n.ip, Ipv4Addr::new(10, 99, 0, 4));
        assert_eq!(n.name, "node-3");
        assert!(n.veth.len() <= 15 && n.netns.starts_with("atoll"));
        assert_eq!(l.api_url(), "http://10.99.0.1:6443");
        assert_eq!(l.registry(), "10.99.0.1:5000");
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let dir = std::env::temp_dir();
        let err = Layout::new(
            &dir,
            3,
            "10.99.0.0/30",
            "10.244.0.0/16",
            ports(),
            "d".into(),
        );
        assert!(err.is_err());
        let err = Layout::new(
            &dir,
            0,
            "10.99.0.0/24",
            "10.244.0.0/16",
            ports(),
            "d".into(),
        );
        assert!(err.unwrap_err().to_string().contains("--nodes 0"));
        assert!(parse_cidr("10.99.0.0").is_err());
        assert_eq!(
            parse_cidr("10.99.0.7/24").unwrap(),
            (Ipv4Addr::new(10, 99, 0, 0), 24)
        );
    }
}
