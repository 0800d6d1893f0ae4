//! Local clusters on one machine. `atoll up` ([`up`]) starts a supervisor in the background
//! (`atoll up --supervise`, [`supervise`]) and shows its progress until the cluster is up. The
//! supervisor starts etcd, the API server, the scheduler, the controller manager and an image
//! registry in the current network namespace, and per node a host of its own: a network namespace
//! on the cluster's bridge ([`net`]) with its own containerd, kubelet and service proxy; it routes every node's pod
//! CIDR to that node ([`routes`]), restarts whatever exits ([`process::Supervised`]), and on
//! SIGTERM stops everything and removes what it made ([`teardown`]). `atoll down` ([`down`]) asks
//! it to, and cleans up after a crash too.

pub mod layout;
pub mod net;
pub mod process;
pub mod progress;
pub mod reap;
pub mod routes;
pub mod teardown;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use layout::{Layout, NodeLayout, Ports};
use process::{Spec, Supervised};

/// What `atoll up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The data directory (made if missing).
    pub data_dir: PathBuf,
    /// How many nodes.
    pub nodes: u32,
    /// The hosts' network.
    pub host_cidr: String,
    /// The pod network.
    pub cluster_cidr: String,
    /// The ports.
    pub ports: Ports,
    /// The repository's `deploy/` directory.
    pub deploy_dir: PathBuf,
    /// The `atoll` binary the components run as.
    pub atoll: PathBuf,
    /// Extra flags by component (`apiserver`, `scheduler`, `controller-manager`, `kubelet`, `proxy`).
    pub extra_args: Vec<(String, String)>,
}

/// The components whose flags `--extra-args` may add to.
pub const COMPONENTS: [&str; 5] = [
    "apiserver",
    "scheduler",
    "controller-manager",
    "kubelet",
    "proxy",
];

/// Parses `COMPONENT=FLAG` (such as `controller-manager=--node-monitor-grace-period=20s`).
pub fn parse_extra_arg(text: &str) -> anyhow::Result<(String, String)> {
    let (component, flag) = text
        .split_once('=')
        .with_context(|| format!("--extra-args {text:?}: expected COMPONENT=FLAG"))?;
    if !COMPONENTS.contains(&component) {
        bail!(
            "--extra-args {text:?}: unknown component {component:?} (one of {})",
            COMPONENTS.join(", ")
        );
    }
    Ok((component.to_string(), flag.to_string()))
}

impl UpOptions {
    /// `spec` with the extra flags given for `component`.
    fn with_extra(&self, component: &str, mut spec: Spec) -> Spec {
        spec.args.extend(
            self.extra_args
                .iter()
                .filter(|(c, _)| c == component)
                .map(|(_, f)| f.clone()),
        );
        spec
    }

    fn layout(&self) -> anyhow::Result<Layout> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| self.data_dir.display().to_string())?;
        Layout::new(
            &self.data_dir,
            self.nodes,
            &self.host_cidr,
            &self.cluster_cidr,
            self.ports,
            self.deploy_dir.clone(),
        )
    }
}

/// `atoll up`: starts the supervisor (this binary with `supervisor_args`) in the background unless
/// one runs already, prints its progress, and returns once the cluster is up (Err when it failed).
pub fn up(opts: &UpOptions, supervisor_args: &[String]) -> anyhow::Result<()> {
    let layout = opts.layout()?;
    if let Some(pid) = process::live_pid(&layout.pid_file("up")) {
        println!(
            "up: the cluster in {} is already running (supervisor {pid}; `atoll down --data-dir {}` stops it)",
            layout.data_dir.display(),
            layout.data_dir.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(layout.logs())?;
    let log_path = layout.log("up");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| log_path.display().to_string())?;
    let from = log.metadata()?.len();
    let mut cmd = std::process::Command::new(&opts.atoll);
    cmd.args(supervisor_args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: a Ctrl-C meant for this command does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = std::cell::RefCell::new(cmd.spawn().context("starting the supervisor")?);
    // The supervisor is alive while it has not exited (it is our child until then).
    let alive = || {
        child
            .try_borrow_mut()
            .map(|mut c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(true)
    };
    progress::follow(&log_path, from, alive).map_err(|why| anyhow::anyhow!(why))
}

/// Runs the supervisor until SIGTERM or SIGINT: starts the cluster, reports ready (or failed, after
/// removing what it started), keeps it running, then stops it and removes everything it made.
pub async fn supervise(opts: UpOptions) -> anyhow::Result<()> {
    let layout = opts.layout()?;
    if let Some(old) = Layout::load(&layout.data_dir)? {
        // Left by a supervisor that crashed: clean up first.
        teardown::run(&old).await;
    }
    layout.save()?;
    std::fs::create_dir_all(layout.logs())?;
    process::write_pid(&layout.pid_file("up"), std::process::id())?;
    let mut running: Vec<Supervised> = Vec::new();
    let mut stop = Box::pin(atoll_client::terminated());
    let started = tokio::select! {
        r = start(&opts, &layout, &mut running) => Some(r),
        _ = &mut stop => None,
    };
    let failure = match started {
        Some(Ok(routes)) => {
            progress::ready();
            stop.await;
            drop(routes);
            progress::step("stopping the cluster");
            None
        }
        Some(Err(e)) => {
            progress::note(&format!("{e:#}"));
            progress::step("removing what was started");
            Some(e)
        }
        None => {
            progress::step("stopping the cluster (asked to while starting)");
            None
        }
    };
    for component in running.into_iter().rev() {
        component.stop().await;
    }
    teardown::run(&layout).await;
    let _ = std::fs::remove_file(layout.pid_file("up"));
    if let Some(e) = failure {
        progress::failed(&format!("{e:#}"));
        bail!("{e:#}");
    }
    progress::step("stopped");
    Ok(())
}

/// `atoll down`: stops the supervisor of the cluster in `data_dir` and removes whatever is left of
/// it (also after a crash); `purge` also deletes the data directory.
pub async fn down(data_dir: &Path, purge: bool) -> anyhow::Result<()> {
    let Some(layout) = Layout::load(data_dir)? else {
        println!("down: no cluster in {}", data_dir.display());
        return Ok(());
    };
    if let Some(pid) = process::live_pid(&layout.pid_file("up")) {
        progress::step(&format!("stopping the supervisor ({pid})"));
        process::terminate(pid, Duration::from_secs(120)).await;
    }
    let left = teardown::run(&layout).await;
    if purge {
        std::fs::remove_dir_all(&layout.data_dir)
            .with_context(|| layout.data_dir.display().to_string())?;
        progress::step(&format!("removed {}", layout.data_dir.display()));
    }
    if !left.is_empty() {
        bail!("could not remove: {}", left.join("; "));
    }
    println!("down: stopped");
    Ok(())
}

/// Starts everything in order, each step waiting for the one before; returns the route keeper.
async fn start(
    opts: &UpOptions,
    layout: &Layout,
    running: &mut Vec<Supervised>,
) -> anyhow::Result<routes::Keeper> {
    let atoll = opts.atoll.display().to_string();
    let data = |p: &str| layout.data_dir.join(p).display().to_string();
    let gw = layout.gateway().to_string();
    let ports = layout.ports;

    progress::step(&format!(
        "setting up the hosts' network: bridge {} ({}/{}), {} node network namespace(s)",
        layout.bridge(),
        gw,
        layout.host_prefix,
        layout.nodes
    ));
    net::bridge(layout)?;
    for n in layout.all_nodes() {
        net::node(layout, &n).with_context(|| format!("the network of {}", n.name))?;
    }

    progress::step(&format!("starting etcd on 127.0.0.1:{}", ports.etcd));
    let client_url = format!("http://127.0.0.1:{}", ports.etcd);
    let peer_url = format!("http://127.0.0.1:{}", ports.etcd + 1);
    let cluster = format!("atoll={peer_url}");
    running.push(Supervised::start(
        Spec::new(
            "etcd",
            "etcd",
            &[
                "--name",
                "atoll",
                "--data-dir",
                &data("etcd"),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &cluster,
            ],
        ),
        layout.clone(),
    ));
    wait_http(
        layout,
        "etcd",
        &format!("127.0.0.1:{}", ports.etcd),
        "/health",
        30,
    )
    .await?;

    progress::step(&format!("starting the API server on {gw}:{}", ports.api));
    running.push(Supervised::start(
        opts.with_extra(
            "apiserver",
            Spec::new(
                "apiserver",
                &atoll,
                &[
                    "apiserver",
                    "--etcd-servers",
                    &client_url,
                    "--bind-address",
                    &gw,
                    "--port",
                    &ports.api.to_string(),
                    "--data-dir",
                    &data("apiserver"),
                ],
            ),
        ),
        layout.clone(),
    ));
    wait_http(
        layout,
        "apiserver",
        &format!("{gw}:{}", ports.api),
        "/readyz",
        60,
    )
    .await?;
    write_kubeconfig(layout)?;
    let kubeconfig = layout.kubeconfig().display().to_string();

    progress::step("starting the scheduler and the controller manager");
    let sched_addr = format!("127.0.0.1:{}", ports.scheduler);
    let cm_addr = format!("127.0.0.1:{}", ports.controller_manager);
    running.push(Supervised::start(
        opts.with_extra(
            "scheduler",
            Spec::new(
                "scheduler",
                &atoll,
                &[
                    "scheduler",
                    "--kubeconfig",
                    &kubeconfig,
                    "--metrics-bind-address",
                    &sched_addr,
                ],
            ),
        ),
        layout.clone(),
    ));
    running.push(Supervised::start(
        opts.with_extra(
            "controller-manager",
            Spec::new(
                "controller-manager",
                &atoll,
                &[
                    "controller-manager",
                    "--kubeconfig",
                    &kubeconfig,
                    "--cluster-cidr",
                    &layout.cluster_cidr,
                    "--metrics-bind-address",
                    &cm_addr,
                ],
            ),
        ),
        layout.clone(),
    ));
    wait_http(layout, "scheduler", &sched_addr, "/healthz", 30).await?;
    wait_http(layout, "controller-manager", &cm_addr, "/healthz", 30).await?;

    start_registry(layout, running).await?;

    let client = atoll_client::connect(&layout.kubeconfig()).await?;
    let routes = routes::keep(client.clone(), layout.clone());
    for n in layout.all_nodes() {
        start_node(opts, layout, &n, running).await?;
    }
    progress::step(&format!("waiting for {} node(s) to be Ready", layout.nodes));
    wait_nodes_ready(layout, &client, 90).await?;
    let port = ports.registry;
    println!(
        "The cluster is up: {} node(s), the API server at {}, images at localhost:{port}.
  export KUBECONFIG={kubeconfig}
  kubectl get nodes -o wide
  kubectl run web --image=localhost:{port}/busybox:1.35 -- httpd -f -p 80 -h /www
  kubectl get pods -o wide        # then: curl http://<pod IP>/
Logs are in {}. Stop it with: ./deploy/down --data-dir {}",
        layout.nodes,
        layout.api_url(),
        layout.logs().display(),
        layout.data_dir.display()
    );
    Ok(routes)
}

/// Builds the images when they are not built yet, starts the registry and pushes them.
async fn start_registry(layout: &Layout, running: &mut Vec<Supervised>) -> anyhow::Result<()> {
    let images = layout.data_dir.join("images");
    let deploy = &layout.deploy_dir;
    if !images.join("busybox/index.json").exists() || !images.join("pause/index.json").exists() {
        progress::step("building the images (busybox:1.35, pause:3.9) from Debian packages");
        run_logged(
            layout,
            "images",
            &deploy.join("images/build"),
            &[&images.display().to_string()],
        )
        .await?;
    }
    let registry = layout.registry();
    progress::step(&format!("starting the image registry on {registry}"));
    let dir = layout.data_dir.join("registry");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {registry}}}\n",
            dir.join("data").display()
        ),
    )?;
    running.push(Supervised::start(
        Spec::new(
            "registry",
            "docker-registry",
            &["serve", &config.display().to_string()],
        ),
        layout.clone(),
    ));
    wait_http(layout, "registry", &registry, "/v2/", 30).await?;
    run_logged(
        layout,
        "images",
        &deploy.join("images/push"),
        &[&registry, &images.display().to_string()],
    )
    .await
}

/// Starts node `n`'s containerd and kubelet in its network namespace.
async fn start_node(
    opts: &UpOptions,
    layout: &Layout,
    n: &NodeLayout,
    running: &mut Vec<Supervised>,
) -> anyhow::Result<()> {
    progress::step(&format!(
        "starting {} ({}, network namespace {}): containerd, the kubelet and the proxy",
        n.name, n.ip, n.netns
    ));
    let dir = n.containerd_dir();
    std::fs::create_dir_all(dir.join("cni-conf"))?;
    let template = layout.deploy_dir.join("containerd/config.toml.in");
    let config = std::fs::read_to_string(&template)
        .with_context(|| template.display().to_string())?
        .replace("@DIR@", &dir.display().to_string())
        .replace("@REGISTRY_PORT@", &layout.ports.registry.to_string())
        .replace("@REGISTRY@", &layout.registry());
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config)?;
    let containerd = format!("containerd-{}", n.name);
    running.push(Supervised::start(
        Spec::new(
            &containerd,
            layout.deploy_dir.join("containerd/run"),
            &[
                &config_path.display().to_string(),
                &n.kubelet_root().display().to_string(),
            ],
        )
        .in_netns(&n.netns),
        layout.clone(),
    ));
    let socket = n.containerd_socket();
    wait_until(layout, &containerd, 30, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })
    .await?;
    let ip = n.ip.to_string();
    running.push(Supervised::start(
        opts.with_extra(
            "kubelet",
            Spec::new(
                &format!("kubelet-{}", n.name),
                &opts.atoll,
                &[
                    "kubelet",
                    "--kubeconfig",
                    &layout.kubeconfig().display().to_string(),
                    "--node-name",
                    &n.name,
                    "--node-ip",
                    &ip,
                    "--address",
                    &ip,
                    "--container-runtime-endpoint",
                    &format!("unix://{}", socket.display()),
                    "--root-dir",
                    &n.kubelet_root().display().to_string(),
                    "--cni-conf-dir",
                    &dir.join("cni-conf").display().to_string(),
                    "--cgroup-root",
                    &n.cgroup_root,
                ],
            ),
        )
        .in_netns(&n.netns),
        layout.clone(),
    ));
    running.push(Supervised::start(
        opts.with_extra(
            "proxy",
            Spec::new(
                &format!("proxy-{}", n.name),
                &opts.atoll,
                &[
                    "proxy",
                    "--kubeconfig",
                    &layout.kubeconfig().display().to_string(),
                    "--node-name",
                    &n.name,
                    "--cluster-cidr",
                    &layout.cluster_cidr,
                ],
            ),
        )
        .in_netns(&n.netns),
        layout.clone(),
    ));
    Ok(())
}

/// Runs `program ARGS` to completion, output appended to `<logs>/<log>.log`.
async fn run_logged(
    layout: &Layout,
    log: &str,
    program: &Path,
    args: &[&str],
) -> anyhow::Result<()> {
    let path = layout.log(log);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); log: {}",
            program.display(),
            path.display()
        );
    }
    Ok(())
}

/// Polls `ready` until it holds, for up to `secs` seconds; the error names the component and its log.
async fn wait_until(
    layout: &Layout,
    name: &str,
    secs: u64,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !ready() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{name} failed: not ready within {secs} s (log: {})",
                layout.log(name).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Waits until `GET http://addr/path` answers 200.
async fn wait_http(
    layout: &Layout,
    name: &str,
    addr: &str,
    path: &str,
    secs: u64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if http_ok(addr, path).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{name} failed: no answer from http://{addr}{path} within {secs} s (log: {})",
                layout.log(name).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `GET http://addr/path` answers 200 within two seconds.
async fn http_ok(addr: &str, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut head = [0u8; 16];
        let n = s.read(&mut head).await.ok()?;
        Some(head[..n].starts_with(b"HTTP/1.") && head[..n].windows(5).any(|w| w == b" 200 "))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Whether `node` is Ready and no longer carries the taints of a node that is not (which the node
/// lifecycle controller removes a moment after Ready): pods tolerating those for a short while
/// would otherwise be placed there and evicted.
fn schedulable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter().any(|t| {
                matches!(
                    t.key.as_str(),
                    "node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable"
                )
            })
        });
    ready && !tainted
}

/// Says which nodes report memory, disk or PID pressure: they are Ready but tainted NoSchedule, so
/// new pods stay Pending (the machine's disk under 10 % free is the usual cause).
async fn warn_pressure(nodes: &Api<Node>) {
    let Ok(list) = nodes.list(&Default::default()).await else {
        return;
    };
    for node in list.items {
        let name = node.metadata.name.unwrap_or_default();
        for c in node.status.and_then(|s| s.conditions).unwrap_or_default() {
            if c.type_.ends_with("Pressure") && c.status == "True" {
                progress::note(&format!(
                    "warning: {name} reports {}: {} (new pods will not be scheduled there)",
                    c.type_,
                    c.message.unwrap_or_default()
                ));
            }
        }
    }
}

/// Waits until every node of the layout is Ready and untainted.
async fn wait_nodes_ready(layout: &Layout, client: &kube::Client, secs: u64) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let mut missing = vec![];
        for n in layout.all_nodes() {
            let ready = nodes
                .get_opt(&n.name)
                .await
                .ok()
                .flatten()
                .is_some_and(|node| schedulable(&node));
            if !ready {
                missing.push(n.name);
            }
        }
        if missing.is_empty() {
            warn_pressure(&nodes).await;
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let logs: Vec<String> = missing
                .iter()
                .map(|m| layout.log(&format!("kubelet-{m}")).display().to_string())
                .collect();
            bail!(
                "kubelet failed: {} not Ready within {secs} s (logs: {})",
                missing.join(", "),
                logs.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes the admin kubeconfig (plain HTTP, no credentials: the API server has no authentication
/// yet).
fn write_kubeconfig(layout: &Layout) -> anyhow::Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: atoll
  cluster:
    server: {}
users:
- name: admin
  user: {{}}
contexts:
- name: atoll
  context:
    cluster: atoll
    user: admin
current-context: atoll
",
        layout.api_url()
    );
    let path = layout.kubeconfig();
    std::fs::write(&path, text).with_context(|| path.display().to_string())
}
