//! Removing a local cluster: its processes (by pid file, and every process of a node's containerd,
//! shims and containers by command line and cgroup), the kubelets' mounts, the cgroups, the network
//! namespaces and the bridge. Idempotent: what is already gone is skipped, so it also cleans up
//! after a crash.

use std::time::Duration;

use crate::layout::Layout;
use crate::{net, process, progress, reap};

/// How long each kind of process is given to go.
const GRACE: Duration = Duration::from_secs(10);

/// The control plane's components, in the order they are stopped.
const CONTROL_PLANE: [&str; 5] = [
    "controller-manager",
    "scheduler",
    "apiserver",
    "registry",
    "etcd",
];

/// Removes everything of the cluster `layout` describes; returns what could not be removed.
pub async fn run(layout: &Layout) -> Vec<String> {
    let mut left = vec![];
    for n in layout.all_nodes().into_iter().rev() {
        for name in [
            format!("proxy-{}", n.name),
            format!("kubelet-{}", n.name),
            format!("containerd-{}", n.name),
        ] {
            if let Some(pid) = process::live_pid(&layout.pid_file(&name)) {
                process::terminate(pid, GRACE).await;
            }
            let _ = std::fs::remove_file(layout.pid_file(&name));
        }
        // Shims, runc and containers outlive containerd: find them by the node's containerd
        // directory in their command line, and by the node's cgroup.
        let dir = format!("{}/", n.containerd_dir().display());
        let cgroup = n.cgroup_root.clone();
        let stray = tokio::task::spawn_blocking(move || {
            reap::kill_until_gone(GRACE, || {
                let mut pids = reap::cgroup_pids(&cgroup);
                pids.extend(
                    reap::processes()
                        .into_iter()
                        .filter(|p| p.cmdline.iter().any(|a| a.contains(&dir)))
                        .map(|p| p.pid),
                );
                pids
            })
        })
        .await
        .unwrap_or_default();
        if !stray.is_empty() {
            left.push(format!("processes of {}: {stray:?}", n.name));
        }
        let root = n.kubelet_root();
        if is_mount_point(&root) {
            let ok = std::process::Command::new("umount")
                .args(["-R", "-l"])
                .arg(&root)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                left.push(format!("mounts under {}", root.display()));
            }
        }
    }
    for name in CONTROL_PLANE {
        if let Some(pid) = process::live_pid(&layout.pid_file(name)) {
            progress::step(&format!("stopping {name} ({pid})"));
            process::terminate(pid, GRACE).await;
        }
        let _ = std::fs::remove_file(layout.pid_file(name));
    }
    let cgroup = layout.cgroup_root();
    let cgroups = tokio::task::spawn_blocking(move || reap::remove_cgroup(&cgroup, GRACE))
        .await
        .unwrap_or_default();
    if !cgroups.is_empty() {
        left.push(format!("cgroups {cgroups:?}"));
    }
    left.extend(net::remove(layout));
    left
}

/// Whether `path` is a mount point (`mountpoint -q`, util-linux).
fn is_mount_point(path: &std::path::Path) -> bool {
    std::process::Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}
