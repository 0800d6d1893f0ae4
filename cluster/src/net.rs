//! The hosts' network on one machine: a bridge in the current network namespace (the control
//! plane's), and per node a network namespace joined to it by a veth pair, with its own address and a
//! default route through the bridge. Pod CIDR routes (`route`) let pods on different nodes, and the
//! control plane, reach each other without NAT. Everything through `ip` (iproute2).

use std::process::Command;

use anyhow::{Context, bail};

use crate::layout::{Layout, NodeLayout};

/// Runs `ip ARGS`; an error carries its message.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2): run deploy/install-deps")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `ip ARGS` succeeds (for existence checks).
fn ip_ok(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Makes the bridge with the gateway address, if it is not there.
pub fn bridge(layout: &Layout) -> anyhow::Result<()> {
    let br = layout.bridge();
    if !ip_ok(&["link", "show", &br]) {
        ip(&["link", "add", &br, "type", "bridge"])?;
    }
    let addr = format!("{}/{}", layout.gateway(), layout.host_prefix);
    ip(&["addr", "replace", &addr, "dev", &br])?;
    ip(&["link", "set", &br, "up"])
}

/// Makes node `n`'s network namespace and joins it to the bridge, if it is not there.
pub fn node(layout: &Layout, n: &NodeLayout) -> anyhow::Result<()> {
    if !netns_exists(&n.netns) {
        ip(&["netns", "add", &n.netns])?;
    }
    if !ip_ok(&["link", "show", &n.veth]) {
        ip(&[
            "link", "add", &n.veth, "type", "veth", "peer", "name", "eth0", "netns", &n.netns,
        ])?;
    }
    ip(&["link", "set", &n.veth, "master", &layout.bridge(), "up"])?;
    let addr = format!("{}/{}", n.ip, layout.host_prefix);
    ip(&["-n", &n.netns, "addr", "replace", &addr, "dev", "eth0"])?;
    ip(&["-n", &n.netns, "link", "set", "lo", "up"])?;
    ip(&["-n", &n.netns, "link", "set", "eth0", "up"])?;
    let gw = layout.gateway().to_string();
    ip(&["-n", &n.netns, "route", "replace", "default", "via", &gw])?;
    // The node routes its pods' traffic to other nodes.
    ip(&[
        "netns",
        "exec",
        &n.netns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])
}

/// Routes `cidr` via `via`, in network namespace `netns` (None: the current one).
pub fn route(netns: Option<&str>, cidr: &str, via: &str) -> anyhow::Result<()> {
    let mut args = vec![];
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["route", "replace", cidr, "via", via]);
    ip(&args)
}

/// Removes the nodes' network namespaces and the bridge (with their routes); what is already gone
/// is skipped. Returns what could not be removed.
pub fn remove(layout: &Layout) -> Vec<String> {
    let mut left = vec![];
    for n in layout.all_nodes() {
        if netns_exists(&n.netns)
            && let Err(e) = ip(&["netns", "del", &n.netns])
        {
            left.push(e.to_string());
        }
        if ip_ok(&["link", "show", &n.veth])
            && let Err(e) = ip(&["link", "del", &n.veth])
        {
            left.push(e.to_string());
        }
    }
    let br = layout.bridge();
    if ip_ok(&["link", "show", &br])
        && let Err(e) = ip(&["link", "del", &br])
    {
        left.push(e.to_string());
    }
    left
}
