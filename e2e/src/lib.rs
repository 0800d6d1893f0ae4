//! End-to-end test support: etcd and the `atoll apiserver` binary with a kubeconfig for clients
//! (the real kubectl, the official Python client), or a whole local cluster from `atoll up`
//! ([`LocalCluster`]). The tests are in `tests/`.

mod cluster;

pub use cluster::LocalCluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use atoll_testkit::{ApiProcess, Etcd};

/// etcd plus the `atoll apiserver` process, with a kubeconfig and a private HOME for kubectl.
pub struct Env {
    _api: Option<ApiProcess>,
    dir: tempfile::TempDir,
    _etcd: Option<Etcd>,
}

/// The directory of the versioned kubectl binaries (`kubectl.1.27` …) beside the dispatcher.
pub fn kubectl_dir() -> Option<PathBuf> {
    let real = std::fs::canonicalize("/usr/bin/kubectl").ok()?;
    Some(real.parent()?.to_path_buf())
}

impl Env {
    /// Starts etcd and `atoll apiserver` on free ports, with a kubeconfig in a private directory.
    pub fn start() -> Env {
        let etcd = Etcd::start();
        let dir = tempfile::Builder::new()
            .prefix("atoll-e2e-")
            .tempdir()
            .expect("temp dir");
        let log = std::fs::File::create(dir.path().join("apiserver.log")).expect("log file");
        let extra = [
            "--service-cluster-ip-range",
            "10.97.0.0/24",
            "--service-node-port-range",
            "31000-31099",
        ];
        let api = ApiProcess::start(
            &etcd,
            &dir.path().join("apiserver"),
            &extra,
            "info",
            Stdio::from(log),
        );
        atoll_testkit::write_kubeconfig(&dir.path().join("kubeconfig"), &api.base);
        Env {
            _api: Some(api),
            dir,
            _etcd: Some(etcd),
        }
    }

    /// A private directory for kubectl (its HOME) whose `kubeconfig` the caller writes.
    pub fn without_servers() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("atoll-e2e-")
            .tempdir()
            .expect("temp dir");
        Env {
            _api: None,
            dir,
            _etcd: None,
        }
    }

    /// A path in the environment's private directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command for `binary` with this environment's KUBECONFIG and HOME.
    pub fn command(&self, binary: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(binary);
        c.args(args)
            .env("KUBECONFIG", self.path("kubeconfig"))
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        c
    }

    /// Runs `binary` with `args`, echoing what it printed.
    pub fn run_with(&self, binary: &Path, args: &[&str]) -> Output {
        let out = self.command(binary, args).output().expect("kubectl runs");
        eprintln!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `/usr/bin/kubectl` and returns stdout; panics (with stderr) on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(Path::new("/usr/bin/kubectl"), args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `/usr/bin/kubectl` expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run_with(Path::new("/usr/bin/kubectl"), args);
        assert!(
            !out.status.success(),
            "kubectl {} should fail",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs kubectl until `check` accepts its output, for up to `secs` seconds; returns that output.
    pub fn wait_for(&self, args: &[&str], secs: u64, check: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let out = self
                .command(Path::new("/usr/bin/kubectl"), args)
                .output()
                .expect("kubectl");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && check(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kubectl {} never gave what was expected; last: {text}",
                args.join(" ")
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Starts `atoll <args> --kubeconfig <this environment's kubeconfig>` (a component such as the
    /// scheduler), logging to `<name>.log` in the private directory. It is killed on drop.
    pub fn component(&self, name: &str, args: &[&str]) -> Component {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("log file");
        let child = Command::new(atoll_testkit::atoll_bin())
            .args(args)
            .arg("--kubeconfig")
            .arg(self.path("kubeconfig"))
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start an atoll component");
        Component { child }
    }

    /// Starts `atoll kubelet` for node `node` at `node_ip` on `containerd`, its server and healthz on
    /// free ports; returns it and its healthz address.
    pub fn kubelet(
        &self,
        containerd: &atoll_testkit::runtime::Containerd,
        node: &str,
        node_ip: &str,
    ) -> (Component, String) {
        let healthz = format!("127.0.0.1:{}", atoll_testkit::free_port());
        let mut args = vec!["kubelet".to_string()];
        args.extend(containerd.kubelet_flags(node, node_ip));
        args.extend([
            "--port".to_string(),
            atoll_testkit::free_port().to_string(),
            format!("--healthz-bind-address={healthz}"),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (self.component("kubelet", &args), healthz)
    }

    /// Starts the scheduler (no leader election, metrics on a free port).
    pub fn scheduler(&self) -> Component {
        let metrics = format!(
            "--metrics-bind-address=127.0.0.1:{}",
            atoll_testkit::free_port()
        );
        self.component(
            "scheduler",
            &["scheduler", "--leader-elect=false", &metrics],
        )
    }

    /// Writes a file in the private directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, content).expect("manifest");
        p.to_string_lossy().into_owned()
    }
}

/// A running `atoll` component process, killed on drop.
pub struct Component {
    child: std::process::Child,
}

impl Component {
    /// Asks it to stop (SIGTERM) and waits until it has exited; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// Kills it now (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}
