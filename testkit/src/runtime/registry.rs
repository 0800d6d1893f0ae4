//! A local plain-http image registry holding the test images.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::images::{deploy_dir, images_dir};
use crate::free_port;

/// A `docker-registry` on a free loopback port with its storage in a temporary directory, holding
/// `busybox:1.35` and `pause:3.9`. Killed and its directory removed on drop.
///
/// It listens on the loopback of the calling thread's network namespace: start it on the same
/// thread (after [`isolate_network`](super::isolate_network)) as the [`Containerd`](super::Containerd)
/// that pulls from it.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry, waits until `/v2/` answers, and pushes both test images into it with
    /// `deploy/images/push` (building them first when this machine has not yet).
    pub fn start() -> Registry {
        let images = images_dir();
        let dir = tempfile::Builder::new()
            .prefix("atoll-registry-")
            .tempdir()
            .expect("temp dir");
        let registry = Self::serve(dir);
        let out = Command::new(deploy_dir().join("images").join("push"))
            .arg(registry.host())
            .arg(&images)
            .output()
            .expect("run deploy/images/push");
        assert!(
            out.status.success(),
            "deploy/images/push to {} failed:\n{}\nregistry log:\n{}",
            registry.host(),
            String::from_utf8_lossy(&out.stderr),
            registry.log()
        );
        registry
    }

    /// Starts the registry on a free port; when another process takes the port first the registry
    /// exits, and it is started again on another one.
    fn serve(dir: tempfile::TempDir) -> Registry {
        let log_path = dir.path().join("registry.log");
        let config = dir.path().join("config.yml");
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(&config, config_yaml(&dir.path().join("data"), port))
                .expect("write the registry config");
            let log = std::fs::File::create(&log_path).expect("registry log file");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("docker-registry must be installed: run deploy/install-deps");
            if wait_up(
                &mut child,
                &format!("http://127.0.0.1:{port}/v2/"),
                &log_path,
            ) {
                return Registry { child, port, dir };
            }
        }
        panic!(
            "docker-registry exited five times on fresh ports; its last log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:<port>`: the registry host as image references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The full reference of an image in this registry: `image("busybox:1.35")` is
    /// `127.0.0.1:<port>/busybox:1.35`.
    pub fn image(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `url` until it answers (true) or `child` exits (false); kills it and panics after 20 s.
fn wait_up(child: &mut Child, url: &str, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let up = Command::new("curl")
            .args(["-sf", "--max-time", "1", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if up {
            return true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the registry did not answer within 20 s; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Filesystem storage under `data`, deletes allowed, no auth, no access log, loopback only.
fn config_yaml(data: &Path, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log: {{level: warn, accesslog: {{disabled: true}}}}\n\
         storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
         http: {{addr: 127.0.0.1:{port}, secret: atoll-test}}\n",
        data.display()
    )
}
