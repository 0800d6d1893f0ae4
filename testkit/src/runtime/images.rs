//! The test images (busybox:1.35 and pause:3.9), built once per machine with deploy/images/build.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The files the image build reads: the script and the two binaries it packs.
const INPUTS: [&str; 2] = ["/bin/busybox", "/usr/bin/catatonit"];

/// The repository's `deploy/` directory.
pub(crate) fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("deploy")
}

/// A directory holding the OCI image layouts `busybox` (tag `1.35`) and `pause` (tag `3.9`), built
/// by `deploy/images/build` on first use.
///
/// The layouts are cached under the system temp directory, keyed by a hash of the build script and
/// the binaries it packs, so a machine builds them once (about half a second) and rebuilds them when
/// any of those change. Safe when several test processes ask at once: each builds into a directory of
/// its own and renames it into place; whoever comes second keeps the first one's identical result.
pub fn images_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_once).clone()
}

fn build_once() -> PathBuf {
    let script = deploy_dir().join("images").join("build");
    let mut hasher = DefaultHasher::new();
    for input in std::iter::once(script.as_path()).chain(INPUTS.iter().map(Path::new)) {
        input.hash(&mut hasher);
        std::fs::read(input).unwrap_or_default().hash(&mut hasher);
    }
    let key = format!("atoll-images-{:016x}", hasher.finish());
    let dir = std::env::temp_dir().join(&key);
    if is_complete(&dir) {
        return dir;
    }
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let tmp = std::env::temp_dir().join(format!(
        ".{key}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new(&script)
        .arg(&tmp)
        .output()
        .expect("run deploy/images/build");
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        panic!(
            "deploy/images/build failed (run deploy/install-deps?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // rename() onto a directory that another process completed meanwhile fails: keep theirs.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(is_complete(&dir), "could not move the images into {dir:?}");
    }
    dir
}

fn is_complete(dir: &Path) -> bool {
    ["busybox", "pause"]
        .iter()
        .all(|name| dir.join(name).join("index.json").is_file())
}
