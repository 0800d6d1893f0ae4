//! containerd with the CRI plugin, private to one test: its own directories, sockets, mount
//! namespace and cgroup parent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_cri::v1::StatusRequest;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

use super::cri::cri_channel;
use super::registry::Registry;
use atoll_cluster::reap;

/// How long containerd may take to answer CRI.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many lines of containerd's log a failing test prints.
const LOG_TAIL: usize = 40;

/// How long dropping may spend on each cleanup step.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A containerd with the CRI plugin, running for one test.
///
/// Its root, state, gRPC and ttrpc sockets, CNI config directory and log live in a temporary
/// directory. It runs in a private mount namespace (`unshare -m --propagation slave`) with its own
/// tmpfs over `/run/netns`, `/run/containerd`, `/run/runc` and `/var/lib/cni`, so every mount, pod
/// network namespace bind mount, shim socket and libcni cache entry it makes is invisible outside
/// and disappears with it. (Those four directories are created on the host when missing, and stay,
/// empty.) It runs in the calling thread's network namespace: call
/// [`isolate_network`](super::isolate_network) first so that CNI's bridge, veths and iptables rules
/// go away with the test too.
///
/// Images come from `registry` over plain http; the sandbox image is its `pause:3.9`. Pods are
/// expected to use a cgroup parent under [`cgroup_root`](Self::cgroup_root).
///
/// Dropping it (after printing the end of containerd's log when the thread is panicking) kills every
/// process in the cgroup root, containerd and every process in its mount
/// namespace (shims, runc, CNI plugins) and any shim naming its socket, then removes the cgroup root
/// in every hierarchy and the temporary directory.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    cni_conf_dir: PathBuf,
    cgroup_root: String,
    /// containerd's private mount namespace, once it has one, held open until cleanup is done.
    mount_ns: Option<reap::PinnedNamespace>,
}

impl Containerd {
    /// Writes the configuration, starts containerd and waits until its CRI runtime service reports
    /// RuntimeReady (NetworkReady stays false until a CNI conflist is in
    /// [`cni_conf_dir`](Self::cni_conf_dir)).
    pub fn start(registry: &Registry) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("atoll-containerd-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("containerd.sock");
        let cni_conf_dir = dir.path().join("cni-conf");
        std::fs::create_dir(&cni_conf_dir).expect("create the CNI config directory");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_toml(dir.path(), &registry.host()))
            .expect("write the containerd config");
        let log =
            std::fs::File::create(dir.path().join("containerd.log")).expect("containerd log file");
        let child = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/containerd/run"
        ))
        .arg(&config)
        .arg(dir.path().join("kubelet"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("unshare (util-linux) runs");
        // Built before the wait, so that a failed start is cleaned up like any other.
        let mut containerd = Containerd {
            child,
            dir,
            socket,
            cni_conf_dir,
            cgroup_root: unique_cgroup_root(),
            mount_ns: None,
        };
        containerd.wait_ready();
        containerd
    }

    /// Polls CRI Status until RuntimeReady is true; panics with the log when containerd exits or
    /// [`START_TIMEOUT`] passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("containerd exited ({status}); its log:\n{}", self.log());
            }
            if self.mount_ns.is_none() {
                self.mount_ns = self.private_mount_ns();
            }
            if self.mount_ns.is_some() && runtime_ready(&self.socket) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not become ready within {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// containerd's mount namespace once `unshare` has made it; never this process's own (which
    /// it still is for a moment after the spawn), so cleanup cannot mistake the host's for it, and
    /// only while the process is unreaped, so that its id cannot belong to another process.
    fn private_mount_ns(&mut self) -> Option<reap::PinnedNamespace> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return None;
        }
        let ns = reap::PinnedNamespace::of(self.child.id())?;
        (Some(&ns.link) != reap::mount_namespace(std::process::id()).as_ref()).then_some(ns)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The temporary directory with its config, root, state, sockets and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gRPC (and CRI) unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory for the kubelet's `--root-dir`: a shared mount whose later mounts (the
    /// kubelet's memory-backed emptyDirs) containerd and its containers see. Unmounted on drop.
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.path().join("kubelet")
    }

    /// The flags of an `atoll kubelet` for node `node` at `node_ip` on this containerd: pod CIDR
    /// 10.88.0.0/24, the runtime endpoint, [`kubelet_root`](Self::kubelet_root), the CNI directory
    /// and the cgroup root. Callers add `--kubeconfig` and the ports.
    pub fn kubelet_flags(&self, node: &str, node_ip: &str) -> Vec<String> {
        [
            "--node-name",
            node,
            "--node-ip",
            node_ip,
            "--pod-cidr",
            "10.88.0.0/24",
            "--container-runtime-endpoint",
            &self.endpoint(),
            "--root-dir",
            &self.kubelet_root().to_string_lossy(),
            "--cni-conf-dir",
            &self.cni_conf_dir.to_string_lossy(),
            "--cgroup-root",
            &self.cgroup_root,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The CRI endpoint as a kubelet flag names it: `unix:///…/containerd.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The directory containerd loads CNI configs from; it picks up files written there by itself.
    pub fn cni_conf_dir(&self) -> &Path {
        &self.cni_conf_dir
    }

    /// A cgroup parent unique to this containerd, `/atoll-test-<random>`: pass it to the kubelet as
    /// its cgroup root, or use cgroup parents below it in CRI calls. It is removed on drop.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL).collect();
            eprintln!(
                "containerd's log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let cgroup = self.cgroup_root.clone();
        // Containers first, while their shims are alive to reap them.
        reap::kill_until_gone(CLEANUP_TIMEOUT, || reap::cgroup_pids(&cgroup));
        // containerd, its shims, runc and CNI plugins: everything in its mount namespace, and (in
        // case that namespace was never seen) any shim that names its socket.
        // The namespace stays pinned until they are all gone: an inode number compared against
        // after its namespace died could already name another test's container's namespace.
        if self.mount_ns.is_none() {
            self.mount_ns = self.private_mount_ns();
        }
        let mount_ns = self.mount_ns.as_ref().map(|ns| ns.link.clone());
        let socket = self.socket.to_string_lossy().into_owned();
        let left = reap::kill_until_gone(CLEANUP_TIMEOUT, || {
            reap::processes()
                .into_iter()
                .filter(|p| {
                    (mount_ns.is_some() && p.mount_ns == mount_ns) || p.cmdline.contains(&socket)
                })
                .map(|p| p.pid)
                .collect()
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Unpinned: the namespace and every mount in it go away now.
        self.mount_ns = None;
        // A shim that was starting a container may have put one into the cgroup meanwhile.
        let strays = reap::kill_until_gone(CLEANUP_TIMEOUT, || reap::cgroup_pids(&cgroup));
        let cgroups = reap::remove_cgroup(&cgroup, CLEANUP_TIMEOUT);
        // The kubelet root's bind mount and whatever the kubelet left mounted under it.
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.kubelet_root())
            .stderr(Stdio::null())
            .status();
        if !left.is_empty() || !strays.is_empty() || !cgroups.is_empty() {
            eprintln!(
                "containerd cleanup incomplete: processes {left:?} {strays:?}, cgroups {cgroups:?}"
            );
        }
    }
}

/// `/atoll-test-<pid><time><counter>`, unique on this machine.
fn unique_cgroup_root() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "/atoll-test-{:x}{nanos:08x}{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the CRI runtime service on `socket` answers Status with RuntimeReady. Runs the call on a
/// thread of its own, so that it works whether or not the caller is inside a tokio runtime.
fn runtime_ready(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return false;
            };
            rt.block_on(async {
                let call = async {
                    let channel = cri_channel(socket).await.ok()?;
                    let status = RuntimeServiceClient::new(channel)
                        .status(StatusRequest { verbose: false })
                        .await
                        .ok()?;
                    let conditions = status.into_inner().status?.conditions;
                    Some(
                        conditions
                            .iter()
                            .any(|c| c.r#type == "RuntimeReady" && c.status),
                    )
                };
                tokio::time::timeout(Duration::from_secs(2), call)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(false)
            })
        })
        .join()
        .unwrap_or(false)
    })
}

/// The containerd configuration (see RUNTIME.md): everything under `dir`, CRI with runc through the
/// cgroupfs driver, overlayfs, the registry's pause image, and a plain-http mirror for it.
fn config_toml(dir: &Path, registry: &str) -> String {
    let port = registry.rsplit(':').next().unwrap_or_default();
    include_str!("../../../deploy/containerd/config.toml.in")
        .replace("@DIR@", &dir.display().to_string())
        .replace("@REGISTRY_PORT@", port)
        .replace("@REGISTRY@", registry)
}
