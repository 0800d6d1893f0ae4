//! The node's cgroup directories that the kubelet owns: a pod's cgroup is removed after its sandbox,
//! in every hierarchy (cgroup v1 controllers and the unified v2 tree), deepest first.

use std::path::Path;

/// The mount point of the cgroup file systems.
const ROOT: &str = "/sys/fs/cgroup";

/// Removes the cgroup `path` (e.g. `/kubepods/besteffort/pod<uid>`) and any empty children from every
/// hierarchy. Directories still holding processes stay (the kernel refuses), which is logged.
pub fn remove(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let mut targets = vec![Path::new(ROOT).join(rel)];
    if let Ok(entries) = std::fs::read_dir(ROOT) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                targets.push(e.path().join(rel));
            }
        }
    }
    for t in targets.into_iter().filter(|t| t.is_dir()) {
        remove_tree(&t);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::debug!("removing cgroup {}: {e}", dir.display());
    }
}
