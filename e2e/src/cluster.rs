//! A local cluster from `atoll up` in a private data directory, for tests of the whole system; it
//! is removed with `atoll down` when dropped, also when the test fails (then the end of every
//! component's log is printed first).

use std::path::PathBuf;
use std::process::Command;

use atoll_cluster::layout::Layout;

use crate::Env;

/// How many lines of each log a failing test prints.
const LOG_TAIL: usize = 15;

/// A cluster started by `atoll up --nodes N` in the calling thread's network namespace (call
/// `atoll_testkit::runtime::isolate_network` first: its bridge, node namespaces' links and ports are
/// then the test's alone).
pub struct LocalCluster {
    /// kubectl against the cluster (its `kubeconfig` is the cluster's admin kubeconfig).
    pub env: Env,
    data_dir: PathBuf,
}

impl LocalCluster {
    /// Runs `atoll up --nodes nodes` and waits for it (every node Ready); panics with its output
    /// when it fails.
    pub fn up(nodes: u32) -> LocalCluster {
        LocalCluster::up_with(nodes, &[])
    }

    /// The same with more `atoll up` flags (such as `--extra-args COMPONENT=FLAG`).
    pub fn up_with(nodes: u32, flags: &[&str]) -> LocalCluster {
        let env = Env::without_servers();
        let data_dir = env.path("cluster");
        let cluster = LocalCluster { env, data_dir };
        let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
        let out = Command::new(atoll_testkit::atoll_bin())
            .args(["up", "--nodes", &nodes.to_string(), "--deploy-dir", deploy])
            .args(flags)
            .arg("--data-dir")
            .arg(&cluster.data_dir)
            .output()
            .expect("atoll up runs");
        eprintln!("$ atoll up\n{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "atoll up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::copy(
            cluster.data_dir.join("admin.kubeconfig"),
            cluster.env.path("kubeconfig"),
        )
        .expect("the admin kubeconfig");
        cluster
    }

    /// The cluster's layout (names and addresses of its bridge, nodes and cgroups), as `atoll up`
    /// saved it.
    pub fn layout(&self) -> Layout {
        Layout::load(&self.data_dir)
            .ok()
            .flatten()
            .expect("the cluster's layout (cluster.json)")
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Runs `atoll down`; returns its output (it succeeded when `Ok`).
    pub fn down(&self) -> Result<String, String> {
        let out = Command::new(atoll_testkit::atoll_bin())
            .arg("down")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Prints the end of every component's log.
    fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("logs")) else {
            return;
        };
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(LOG_TAIL).collect();
            eprintln!(
                "--- {} (end)\n{}",
                e.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if let Err(e) = self.down() {
            eprintln!("atoll down failed: {e}");
        }
    }
}
