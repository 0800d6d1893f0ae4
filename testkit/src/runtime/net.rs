//! A private network namespace for the calling thread, and a node address in it.

use std::process::Command;

/// The dummy interface [`add_node_address`] puts node addresses on.
const NODE_LINK: &str = "atoll-node0";

/// Moves the calling thread into a new, private network namespace and brings its `lo` up.
///
/// Call it first: in a synchronous test, or before building a current-thread tokio runtime, or as
/// the first statement of a `#[tokio::test]` (whose default runtime runs on the test's thread); a
/// multi-thread runtime's workers already exist and stay outside. Threads and child processes
/// created afterwards from this thread inherit the namespace, so a registry, containerd, its shims
/// and the CNI plugins it runs all see only this namespace's loopback and the bridge and veths CNI
/// adds. The namespace disappears with the last process in it, taking every bridge, veth and
/// iptables/nftables rule the test's containerd and CNI made; nothing on the host is touched.
///
/// Panics when the namespace cannot be made (it needs CAP_SYS_ADMIN) or `ip` fails.
pub fn isolate_network() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): tests that run containers need root");
    ip(&["link", "set", "lo", "up"]);
}

/// Adds `cidr` (such as `"10.200.0.1/32"`) to a dummy interface `atoll-node0` (made on first use) in
/// the calling thread's network namespace, so a test has a node IP that is not loopback. Where the
/// kernel has no dummy driver, `atoll-node0` is a bridge without ports, which works the same for
/// local addresses.
///
/// Panics when the thread is still in the host's network namespace: call [`isolate_network`] first.
pub fn add_node_address(cidr: &str) {
    let own = std::fs::read_link("/proc/thread-self/ns/net").expect("read own network namespace");
    // The host's namespace, as init's or else (when init's is unreadable) the parent process's.
    let host = [1, std::os::unix::process::parent_id()]
        .iter()
        .find_map(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok());
    assert!(
        host.is_none_or(|host| host != own),
        "add_node_address changes interfaces: call isolate_network() first"
    );
    let exists = Command::new("ip")
        .args(["link", "show", NODE_LINK])
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        // Kernels built without the dummy driver (like this project's test machine) get a bridge
        // without ports instead, which holds local addresses just as well.
        let dummy = Command::new("ip")
            .args(["link", "add", NODE_LINK, "type", "dummy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !dummy {
            ip(&["link", "add", NODE_LINK, "type", "bridge"]);
        }
    }
    ip(&["addr", "add", cidr, "dev", NODE_LINK]);
    ip(&["link", "set", NODE_LINK, "up"]);
}

/// Runs `ip ARGS` and panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) must be installed: run deploy/install-deps");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
