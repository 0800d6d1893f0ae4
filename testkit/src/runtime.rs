//! The node runtime for tests: containerd over CRI with CNI, images from a local registry, all of it
//! in private namespaces and directories that disappear with the test.
//!
//! A test that runs containers starts like this (synchronously, or before it builds a current-thread
//! tokio runtime, so that everything started afterwards inherits the private network namespace):
//!
//! ```no_run
//! use atoll_testkit::runtime::{self, Containerd, Registry};
//! runtime::isolate_network();
//! let registry = Registry::start(); // busybox:1.35 and pause:3.9 pushed
//! let containerd = Containerd::start(&registry);
//! // talk CRI to containerd.endpoint(), put a CNI conflist into containerd.cni_conf_dir(),
//! // give pods cgroup parents under containerd.cgroup_root()
//! ```
//!
//! Dropping [`Containerd`] kills every container, shim and containerd process it started and removes
//! their cgroups and files; dropping [`Registry`] stops the registry. The network namespace with the
//! bridges, veths and iptables rules CNI made goes away with the last process in it.

mod containerd;
mod cri;
mod images;
mod net;
mod registry;

pub use containerd::Containerd;
pub use cri::cri_channel;
pub use images::images_dir;
pub use net::{add_node_address, isolate_network};
pub use registry::Registry;
