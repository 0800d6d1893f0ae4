//! `atoll`: one binary for every component. This file only parses flags and calls each crate's entry.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the API server allocates many small JSON nodes per request,
/// and glibc's arenas spent about a third of its CPU time on them (measured with api-bench + perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "atoll",
    version,
    about = "Atoll: a Kubernetes-compatible orchestrator for Atomic hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (the Kubernetes REST API, stored in etcd).
    Apiserver(ApiserverArgs),
    /// Run the scheduler (assigns pending pods to nodes).
    Scheduler(SchedulerArgs),
    /// Run the controller manager (replication, endpoints and endpoint slices, node lifecycle and taint-based eviction, namespaces, garbage collection, node pod CIDRs).
    ControllerManager(ControllerManagerArgs),
    /// Run the kubelet (registers this node and runs the pods bound to it on a CRI runtime).
    Kubelet(KubeletArgs),
    /// Start a local cluster in the background: control plane, image registry, and per node a
    /// network namespace with containerd, a kubelet and the proxy; returns once every node is Ready.
    Up(UpArgs),
    /// Stop the local cluster `up` started and remove everything it made.
    Down(DownArgs),
    /// Run the service proxy (programs this node's nftables table for ClusterIPs and NodePorts).
    Proxy(ProxyArgs),
    /// Run N simulated ("hollow") kubelets in this process, for scale tests: each registers its
    /// Node, renews its Lease and runs its pods on an in-memory runtime that runs nothing.
    HollowNodes(HollowNodesArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// How many nodes (each a host of its own: a network namespace on the cluster's bridge).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Where the cluster keeps its state, logs and admin.kubeconfig.
    #[arg(long, default_value = "./.atoll")]
    data_dir: PathBuf,
    /// The hosts' network: the bridge takes its first address, node i the (i+1)-th.
    #[arg(long, default_value = "10.99.0.0/24")]
    host_cidr: String,
    /// The pod network; each node gets a /24 of it.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The API server's port (on the bridge's address).
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// etcd's client port on 127.0.0.1 (the peer port is the next one).
    #[arg(long, default_value_t = 23790)]
    etcd_port: u16,
    /// The image registry's port (on the bridge's address; images are named localhost:PORT/…).
    #[arg(long, default_value_t = 5000)]
    registry_port: u16,
    /// The scheduler's metrics port on 127.0.0.1.
    #[arg(long, default_value_t = 10259)]
    scheduler_port: u16,
    /// The controller manager's metrics port on 127.0.0.1.
    #[arg(long, default_value_t = 10257)]
    controller_manager_port: u16,
    /// More flags for a component, as COMPONENT=FLAG (repeatable), e.g.
    /// `controller-manager=--node-monitor-grace-period=20s`; components: apiserver, scheduler,
    /// controller-manager, kubelet and proxy (every node's).
    #[arg(long = "extra-args")]
    extra_args: Vec<String>,
    /// The repository's deploy/ directory (default: found beside the binary).
    #[arg(long)]
    deploy_dir: Option<PathBuf>,
    /// Run as the supervisor in the foreground (what `atoll up` starts in the background).
    #[arg(long, hide = true)]
    supervise: bool,
}

#[derive(clap::Args)]
struct DownArgs {
    /// The cluster's data directory.
    #[arg(long, default_value = "./.atoll")]
    data_dir: PathBuf,
    /// Also delete the data directory.
    #[arg(long)]
    purge: bool,
}

/// The repository's `deploy/` directory: the first ancestor of the binary (or of the working
/// directory) that has `deploy/containerd/run`.
fn find_deploy_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the atoll binary")?;
    let cwd = std::env::current_dir().context("the working directory")?;
    exe.ancestors()
        .chain(cwd.ancestors())
        .map(|d| d.join("deploy"))
        .find(|d| d.join("containerd/run").exists())
        .context("no deploy/ directory beside the atoll binary or the working directory: pass --deploy-dir")
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// kubeconfig naming the API server and the credentials to use (not needed with --cleanup).
    #[arg(long, required_unless_present = "cleanup")]
    kubeconfig: Option<PathBuf>,
    /// The node's name (default: the host name); endpoints on it are local.
    #[arg(long)]
    node_name: Option<String>,
    /// The cluster's pod network; ClusterIP traffic from outside it is masqueraded.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// CIDRs whose local addresses NodePorts answer on, comma separated (default: every IPv4
    /// address of the node but loopback; include 127.0.0.1/32 for localhost NodePorts).
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
    /// Address for /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: std::net::SocketAddr,
    /// Remove everything the proxy made (its nftables table) and exit.
    #[arg(long)]
    cleanup: bool,
}

#[derive(clap::Args)]
struct HollowNodesArgs {
    /// kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How many nodes.
    #[arg(long)]
    count: usize,
    /// Node i is named <prefix><i>.
    #[arg(long, default_value = "hollow-")]
    name_prefix: String,
    /// CPUs each node reports.
    #[arg(long, default_value_t = 4)]
    cpu: u64,
    /// Memory each node reports.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Ephemeral storage each node reports.
    #[arg(long, default_value = "100Gi")]
    ephemeral_storage: String,
    /// The most pods each node runs.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Parent of the nodes' state directories (written only for pods with volumes).
    #[arg(long, default_value = "/var/lib/atoll/hollow")]
    root_dir: PathBuf,
    /// Extra labels for every node, key=value[,key=value…].
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// How many API clients (connection pools) the nodes share, node i using client i mod this.
    #[arg(long, default_value_t = 1)]
    clients: usize,
}

#[derive(clap::Args)]
struct KubeletArgs {
    /// kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The CRI runtime's socket.
    #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
    container_runtime_endpoint: String,
    /// The kubelet's state directory (pod volumes, container logs, CNI address leases).
    #[arg(long, default_value = "/var/lib/atoll/kubelet")]
    root_dir: PathBuf,
    /// Where the container runtime reads CNI configurations; the kubelet writes the node's there.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The cgroup under which pod cgroups are made.
    #[arg(long, default_value = "/")]
    cgroup_root: String,
    /// The address to report for the node (default: the first global address of an interface that is up).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// The node's pod CIDR when no controller manager assigns one.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Extra node labels, key=value[,key=value…].
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// The most pods this node runs.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Address for /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1:10248")]
    healthz_bind_address: std::net::SocketAddr,
    /// Address of the kubelet server (logs, exec, attach, port-forward, /pods, /metrics).
    #[arg(long, default_value = "0.0.0.0")]
    address: IpAddr,
    /// Port of the kubelet server; the node reports it to the API server.
    #[arg(long, default_value_t = 10250)]
    port: u16,
}

#[derive(clap::Args)]
struct ControllerManagerArgs {
    /// kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The cluster's pod network; each node gets a subnet of it as spec.podCIDR (off when unset).
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Run only while holding the `kube-system/kube-controller-manager` Lease, so several copies can run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Address for /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:10257")]
    metrics_bind_address: std::net::SocketAddr,
    /// How often node health is checked (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = atoll_controller_manager::nodelifecycle::parse_duration)]
    node_monitor_period: std::time::Duration,
    /// How long a node may go without renewing its Lease or posting status before it is marked Unknown.
    #[arg(long, default_value = "40s", value_parser = atoll_controller_manager::nodelifecycle::parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How long a node that never posted a Ready condition may stay silent before it is marked Unknown.
    #[arg(long, default_value = "60s", value_parser = atoll_controller_manager::nodelifecycle::parse_duration)]
    node_startup_grace_period: std::time::Duration,
    /// Unhealthy nodes NoExecute-tainted (their pods evicted) per second in a healthy zone.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// Nodes per second when a zone is unhealthy in a cluster larger than --large-cluster-size-threshold.
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// The share of not-Ready nodes (more than 2) from which a zone counts as unhealthy.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// Clusters of at most this many nodes stop evicting in an unhealthy zone instead of slowing down.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
}

#[derive(clap::Args)]
struct SchedulerArgs {
    /// kubeconfig naming the API server and the credentials to use.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Run only while holding the `kube-system/kube-scheduler` Lease, so several copies can run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, default_value = "kube-scheduler")]
    leader_elect_resource_name: String,
    /// Namespace of that Lease.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
    /// Pods whose spec.schedulerName is this are scheduled (pods naming none get the default).
    #[arg(long, default_value = atoll_scheduler::DEFAULT_SCHEDULER_NAME)]
    scheduler_name: String,
    /// Address for /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:10259")]
    metrics_bind_address: std::net::SocketAddr,
}

#[derive(clap::Args)]
struct ApiserverArgs {
    /// etcd client URLs, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_servers: Vec<String>,
    /// Address to listen on. There is no authentication yet: keep it on loopback unless you know why.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// CIDR that Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Port range that Service NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Directory for the API server's own files.
    #[arg(long, default_value = "/var/lib/atoll/apiserver")]
    data_dir: PathBuf,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATOLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    if let Command::Up(a) = &cli.command
        && !a.supervise
    {
        // The supervisor is started in the background; this process only shows its progress.
        let opts = up_options(a)?;
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        args.push("--supervise".into());
        return atoll_cluster::up(&opts, &args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Apiserver(a) => runtime.block_on(async {
            let config = atoll_apiserver::Config {
                etcd_servers: a.etcd_servers,
                bind_address: a.bind_address,
                port: a.port,
                service_cluster_ip_range: a.service_cluster_ip_range,
                service_node_port_range: a.service_node_port_range,
                data_dir: a.data_dir,
            };
            atoll_apiserver::run(config)
                .await
                .context("atoll apiserver")
        }),
        Command::Scheduler(a) => runtime.block_on(async {
            let client = atoll_client::connect(&a.kubeconfig).await?;
            let identity = atoll_client::leader::default_identity();
            let config = atoll_scheduler::Config {
                scheduler_name: a.scheduler_name,
                leader_election: a.leader_elect.then(|| {
                    atoll_client::leader::LeaseConfig::new(
                        &a.leader_elect_resource_namespace,
                        &a.leader_elect_resource_name,
                        &identity,
                    )
                }),
                metrics_addr: Some(a.metrics_bind_address),
                ..Default::default()
            };
            atoll_scheduler::run_until(client, config, atoll_client::terminated())
                .await
                .context("atoll scheduler")
        }),
        Command::ControllerManager(a) => runtime.block_on(async {
            let client = atoll_client::connect(&a.kubeconfig).await?;
            let identity = atoll_client::leader::default_identity();
            let config = atoll_controller_manager::Config {
                cluster_cidr: a.cluster_cidr,
                node_cidr_mask_size: a.node_cidr_mask_size,
                leader_election: a.leader_elect.then(|| {
                    atoll_client::leader::LeaseConfig::new(
                        "kube-system",
                        "kube-controller-manager",
                        &identity,
                    )
                }),
                metrics_addr: Some(a.metrics_bind_address),
                node_lifecycle: atoll_controller_manager::nodelifecycle::Settings {
                    node_monitor_period: a.node_monitor_period,
                    node_monitor_grace_period: a.node_monitor_grace_period,
                    node_startup_grace_period: a.node_startup_grace_period,
                    node_eviction_rate: a.node_eviction_rate,
                    secondary_node_eviction_rate: a.secondary_node_eviction_rate,
                    unhealthy_zone_threshold: a.unhealthy_zone_threshold,
                    large_cluster_size_threshold: a.large_cluster_size_threshold,
                },
                ..Default::default()
            };
            atoll_controller_manager::run_until(client, config, atoll_client::terminated())
                .await
                .context("atoll controller-manager")
        }),
        Command::Kubelet(a) => runtime.block_on(async {
            let client = atoll_client::connect(&a.kubeconfig).await?;
            let node_name = a
                .node_name
                .unwrap_or_else(atoll_kubelet::host::hostname)
                .to_lowercase();
            let mut config = atoll_kubelet::Config::new(&node_name);
            config.runtime_endpoint = a.container_runtime_endpoint;
            config.root_dir = a.root_dir;
            config.cni_conf_dir = a.cni_conf_dir;
            config.cgroup_root = a.cgroup_root;
            config.node_ip = a.node_ip;
            config.pod_cidr = a.pod_cidr;
            config.max_pods = a.max_pods;
            config.healthz_addr = Some(a.healthz_bind_address);
            config.server_addr = Some(std::net::SocketAddr::new(a.address, a.port));
            config.kubelet_port = a.port;
            for label in a.node_labels.iter().filter(|l| !l.is_empty()) {
                let (k, v) = label
                    .split_once('=')
                    .with_context(|| format!("--node-labels: {label:?} is not key=value"))?;
                config.node_labels.insert(k.into(), v.into());
            }
            atoll_kubelet::run_until(client, config, atoll_client::terminated())
                .await
                .context("atoll kubelet")
        }),
        Command::Up(a) => {
            let opts = up_options(&a)?;
            runtime.block_on(atoll_cluster::supervise(opts))
        }
        Command::Down(a) => runtime.block_on(atoll_cluster::down(&a.data_dir, a.purge)),
        Command::Proxy(a) => runtime.block_on(async {
            if a.cleanup {
                return atoll_proxy::cleanup()
                    .await
                    .context("atoll proxy --cleanup");
            }
            let kubeconfig = a.kubeconfig.context("--kubeconfig is required")?;
            let client = atoll_client::connect(&kubeconfig).await?;
            let node_name = a
                .node_name
                .unwrap_or_else(atoll_kubelet::host::hostname)
                .to_lowercase();
            let mut config = atoll_proxy::Config::new(&node_name);
            config.cluster_cidr = a.cluster_cidr;
            config.nodeport_addresses = a
                .nodeport_addresses
                .into_iter()
                .filter(|c| !c.is_empty())
                .collect();
            config.metrics_addr = Some(a.metrics_bind_address);
            atoll_proxy::run_until(client, config, atoll_client::terminated())
                .await
                .context("atoll proxy")
        }),
        Command::HollowNodes(a) => runtime.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..a.clients.max(1) {
                clients.push(atoll_client::connect(&a.kubeconfig).await?);
            }
            let mut settings = atoll_kubelet::hollow::nodes::Settings::new(a.count);
            settings.name_prefix = a.name_prefix;
            settings.resources =
                atoll_kubelet::hollow::Resources::parse(a.cpu, &a.memory, &a.ephemeral_storage)?;
            settings.max_pods = a.pods;
            settings.root_dir = a.root_dir;
            for label in a.node_labels.iter().filter(|l| !l.is_empty()) {
                let (k, v) = label
                    .split_once('=')
                    .with_context(|| format!("--node-labels: {label:?} is not key=value"))?;
                settings.node_labels.insert(k.into(), v.into());
            }
            atoll_kubelet::hollow::nodes::run_until(clients, settings, atoll_client::terminated())
                .await
                .context("atoll hollow-nodes")
        }),
    }
}

fn up_options(a: &UpArgs) -> anyhow::Result<atoll_cluster::UpOptions> {
    Ok(atoll_cluster::UpOptions {
        data_dir: a.data_dir.clone(),
        nodes: a.nodes,
        host_cidr: a.host_cidr.clone(),
        cluster_cidr: a.cluster_cidr.clone(),
        ports: atoll_cluster::layout::Ports {
            api: a.port,
            etcd: a.etcd_port,
            registry: a.registry_port,
            scheduler: a.scheduler_port,
            controller_manager: a.controller_manager_port,
        },
        deploy_dir: match &a.deploy_dir {
            Some(d) => d.clone(),
            None => find_deploy_dir()?,
        },
        atoll: std::env::current_exe().context("locating the atoll binary")?,
        extra_args: a
            .extra_args
            .iter()
            .map(|e| atoll_cluster::parse_extra_arg(e))
            .collect::<anyhow::Result<_>>()?,
    })
}
