//! The mounts the kubelet makes for pods: a tmpfs for each memory-backed emptyDir, and finding and
//! undoing every mount under a pod's directory (after a restart too, from `/proc/self/mountinfo`)
//! before the directory is removed.
//!
//! The runtime sees these mounts when it shares the kubelet's mount namespace or receives its
//! mounts under the root directory (`deploy/containerd/run` makes the kubelet root a shared mount
//! that containerd's private namespace is a slave of).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Mounts a tmpfs of at most `size` bytes on `dir`, unless one is mounted there already (a kubelet
/// restart keeps the pods' mounts).
pub fn tmpfs(dir: &Path, size: u64) -> Result<(), String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
        .contains(&dir)
    {
        return Ok(());
    }
    let options = format!("mode=0777,size={size}");
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", dir.display()))
}

/// Unmounts every mount under `dir` (deepest first), so that `dir` can be removed. A missing `dir`
/// has none.
pub fn unmount_under(dir: &Path) -> Result<(), String> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(());
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mut under: Vec<PathBuf> = mount_points(&info)
        .into_iter()
        .filter(|m| m.starts_with(&dir) && *m != dir)
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in under {
        nix::mount::umount2(&m, MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmounting {}: {e}", m.display()))?;
    }
    Ok(())
}

/// The mount points listed in a `mountinfo` text (field 5, with its octal escapes decoded).
fn mount_points(info: &str) -> Vec<PathBuf> {
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

/// Decodes mountinfo's `\\NNN` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(digits) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(n) = u8::from_str_radix(digits, 8)
        {
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points_with_escapes() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /var/lib/k/pods/u/volumes/kubernetes.io~empty-dir/my\\040cache rw - tmpfs tmpfs rw,size=1024k
";
        assert_eq!(
            mount_points(info),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/var/lib/k/pods/u/volumes/kubernetes.io~empty-dir/my cache"),
            ]
        );
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn mounts_and_unmounts_a_tmpfs() {
        // Needs root (as the kubelet does). The guard unmounts whatever is left when the test fails.
        struct Guard(tempfile::TempDir);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = unmount_under(self.0.path());
            }
        }
        let guard = Guard(tempfile::tempdir().unwrap());
        let dir = &guard.0;
        let vol = dir
            .path()
            .join("pods/u/volumes/kubernetes.io~empty-dir/cache");
        std::fs::create_dir_all(&vol).unwrap();
        tmpfs(&vol, 1 << 20).unwrap();
        tmpfs(&vol, 1 << 20).unwrap(); // again: already mounted, nothing done
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let vol = vol.canonicalize().unwrap();
        assert_eq!(mount_points(&info).iter().filter(|m| **m == vol).count(), 1);
        unmount_under(&dir.path().join("pods/u")).unwrap();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mount_points(&info).contains(&vol));
        std::fs::remove_dir_all(dir.path().join("pods")).unwrap();
    }
}
