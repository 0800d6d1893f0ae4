//! Finding and killing what a node's containerd left running (by cgroup, mount namespace or command
//! line), and removing its cgroups: shared by `atoll down` and the test harness.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where the cgroup hierarchies are mounted.
const CGROUP_FS: &str = "/sys/fs/cgroup";

/// `/sys/fs/cgroup/<hierarchy>/<cgroup>` for every mounted hierarchy (v1 controllers, named ones and
/// the unified one) where that cgroup exists.
fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_FS) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path().join(cgroup.trim_start_matches('/')))
        .filter(|p| p.is_dir())
        .collect()
}

/// Every directory under `dir` (itself included), children before their parents.
fn depth_first(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                depth_first(&entry.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// The ids of the processes in `cgroup` and below, in any hierarchy.
pub fn cgroup_pids(cgroup: &str) -> Vec<i32> {
    let mut dirs = Vec::new();
    for root in cgroup_dirs(cgroup) {
        depth_first(&root, &mut dirs);
    }
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The directories of `cgroup` and below that still exist, in any hierarchy.
pub fn cgroup_leftovers(cgroup: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in cgroup_dirs(cgroup) {
        depth_first(&root, &mut dirs);
    }
    dirs
}

/// The mount namespace of process `pid`, as `mnt:[<inode>]`.
pub fn mount_namespace(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// A mount namespace held open, so that it outlives its processes and its inode number cannot be
/// given to a new namespace (the kernel reuses them) while cleanup compares against it.
pub struct PinnedNamespace {
    _pin: std::fs::File,
    /// `mnt:[<inode>]`, as [`mount_namespace`] reads it.
    pub link: PathBuf,
}

impl PinnedNamespace {
    /// Pins the mount namespace of process `pid`.
    pub fn of(pid: u32) -> Option<PinnedNamespace> {
        let pin = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
        // Read through the open file: the process may have changed namespaces since.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", pin.as_raw_fd())).ok()?;
        Some(PinnedNamespace { _pin: pin, link })
    }
}

/// A running process as [`processes`] sees it.
pub struct Process {
    /// Its id.
    pub pid: i32,
    /// Its arguments.
    pub cmdline: Vec<String>,
    /// Its mount namespace, as [`mount_namespace`] reads it.
    pub mount_ns: Option<PathBuf>,
}

/// Every process on the machine but this one (those that exit while being read are skipped).
pub fn processes() -> Vec<Process> {
    let own = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != own)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Process {
                pid,
                cmdline,
                mount_ns: mount_namespace(pid as u32),
            })
        })
        .collect()
}

/// Sends SIGKILL to each of `pids`; a process that is already gone is not an error.
pub fn kill_all(pids: &[i32]) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// Kills whatever `find` returns until it returns nothing, for at most `limit`. Returns what it
/// still found at the end (empty on success).
pub fn kill_until_gone(limit: Duration, mut find: impl FnMut() -> Vec<i32>) -> Vec<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let pids = find();
        if pids.is_empty() || Instant::now() > deadline {
            return pids;
        }
        kill_all(&pids);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes `cgroup` and everything below it in every hierarchy, children first, retrying while the
/// kernel still counts exiting tasks, for at most `limit`. Returns what is left (empty on success).
pub fn remove_cgroup(cgroup: &str, limit: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + limit;
    loop {
        for dir in cgroup_leftovers(cgroup) {
            let _ = std::fs::remove_dir(&dir);
        }
        let left = cgroup_leftovers(cgroup);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
