//! The cluster's processes: each started from a [`Spec`] (optionally inside a node's network
//! namespace, output appended to its log, its id in a pid file) and kept running by a
//! [`Supervised`] task that restarts it with back-off when it exits, until told to stop (SIGTERM,
//! then SIGKILL after a grace period).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::layout::Layout;
use crate::progress;

/// The first restart delay; it doubles up to [`MAX_BACKOFF`], and is reset after a process ran for
/// [`STABLE`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a process must run for its back-off to start over.
const STABLE: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How to start one component.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its name: the log is `<logs>/<name>.log`, the pid file `<pids>/<name>.pid`.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The network namespace (by name) it runs in; None: the current one.
    pub netns: Option<String>,
}

impl Spec {
    /// A spec for `program ARGS` named `name`.
    pub fn new(name: &str, program: impl Into<PathBuf>, args: &[&str]) -> Spec {
        Spec {
            name: name.to_string(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            netns: None,
        }
    }

    /// The same, run in network namespace `netns`.
    pub fn in_netns(mut self, netns: &str) -> Spec {
        self.netns = Some(netns.to_string());
        self
    }

    /// Starts it once: output appended to its log, its id written to its pid file.
    pub fn spawn(&self, layout: &Layout) -> anyhow::Result<tokio::process::Child> {
        let log_path = layout.log(&self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| log_path.display().to_string())?;
        // In a node's network namespace through nsenter(1), which joins it and then execs the
        // program (same process id), keeping the mount namespace (unlike `ip netns exec`).
        let mut cmd = match &self.netns {
            Some(ns) => {
                let path = Path::new("/run/netns").join(ns);
                if !path.exists() {
                    anyhow::bail!("network namespace {} does not exist", path.display());
                }
                let mut c = tokio::process::Command::new("nsenter");
                c.arg(format!("--net={}", path.display()))
                    .arg("--")
                    .arg(&self.program);
                c
            }
            None => tokio::process::Command::new(&self.program),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        if let Some(pid) = child.id() {
            write_pid(&layout.pid_file(&self.name), pid)?;
        }
        Ok(child)
    }
}

/// Writes `pid` to `path`, making its directory.
pub fn write_pid(path: &Path, pid: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::write(path, pid.to_string()).with_context(|| path.display().to_string())
}

/// The live process whose id is in `path`, if any.
pub fn live_pid(path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (pid > 0 && kill(Pid::from_raw(pid), None).is_ok()).then_some(pid)
}

/// Sends SIGTERM to `pid` (not a child of this process: a child would linger as a zombie), waits up
/// to `grace` for it to go, then SIGKILLs it. Returns at once for a process that is not there.
pub async fn terminate(pid: i32, grace: Duration) {
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while kill(pid, None).is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = kill(pid, Signal::SIGKILL);
}

/// A component kept running in the background.
pub struct Supervised {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Starts `spec` and restarts it with back-off whenever it exits, logging each restart.
    pub fn start(spec: Spec, layout: Layout) -> Supervised {
        let (tx, mut stop) = oneshot::channel::<()>();
        let name = spec.name.clone();
        let task = tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let started = tokio::time::Instant::now();
                let mut child = match spec.spawn(&layout) {
                    Ok(c) => c,
                    Err(e) => {
                        progress::note(&format!("{}: cannot start: {e:#}", spec.name));
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = &mut stop => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                };
                let status = tokio::select! {
                    status = child.wait() => status,
                    _ = &mut stop => {
                        if let Some(pid) = child.id() {
                            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                        }
                        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                        let _ = std::fs::remove_file(layout.pid_file(&spec.name));
                        return;
                    }
                };
                if started.elapsed() >= STABLE {
                    backoff = FIRST_BACKOFF;
                }
                let how = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                progress::note(&format!(
                    "{} exited ({how}); restarting in {backoff:?} (log: {})",
                    spec.name,
                    layout.log(&spec.name).display()
                ));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        Supervised {
            name,
            stop: Some(tx),
            task,
        }
    }

    /// Stops it (SIGTERM, SIGKILL after 10 s) and waits until it has.
    pub async fn stop(mut self) {
        let started = tokio::time::Instant::now();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        let took = started.elapsed();
        if took > Duration::from_secs(2) {
            progress::note(&format!("{} took {took:.1?} to stop", self.name));
        }
    }
}
