//! What every Atoll component needs as a client of the API server, and nothing component-specific:
//! a [`kube::Client`] from a kubeconfig ([`connect`]), leader election through a
//! `coordination.k8s.io` Lease ([`leader::LeaderElection`]), core/v1 Events ([`events::Recorder`]) and
//! the `/metrics` + `/healthz` endpoint ([`metrics::serve`]), objects decoded without their
//! managedFields ([`lean::Lean`]) for components that watch many of them, and the relay of HTTP
//! upgrades (exec, attach, port-forward) that the API server and the kubelet share ([`upgrade`]), and
//! watches forwarded into one channel ([`watch::forward`]).

pub mod events;
pub mod leader;
pub mod lean;
pub mod metrics;
pub mod upgrade;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Why a client-side facility failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// A local listener could not be opened.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// This copy held the leader Lease and lost it: another copy may be acting now, so stop.
    #[error("lost the leader lease {0}")]
    LostLease(String),
    /// An upgrade request (exec, attach, port-forward) could not be sent on, or got no answer.
    #[error("{url}: {message}")]
    Dial {
        /// Where it was sent.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Connects to the API server that the kubeconfig at `path` names (its current context).
pub async fn connect(path: &Path) -> Result<kube::Client, Error> {
    let fail = |message: String| Error::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// Completes when the process is asked to stop (SIGTERM or Ctrl-C), so a component can finish
/// cleanly (e.g. give up its leader Lease).
pub async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How a component runs: its metrics, and the Lease it must hold to act.
pub struct Component {
    /// Run only while holding this Lease (None: always run).
    pub lease: Option<leader::LeaseConfig>,
    /// Serve this registry on `/metrics` (and `/healthz`) at this address (None: nowhere).
    pub metrics: Option<(SocketAddr, prometheus_client::registry::Registry)>,
    /// What `/healthz` reports (None: always `ok`).
    pub health: Option<metrics::HealthCheck>,
}

impl Component {
    /// Runs `work` until it ends or `shutdown` completes, serving the metrics and, with a Lease, only
    /// while holding it; a shutdown gives the Lease up so another copy takes over at once.
    pub async fn run<E: From<Error>>(
        self,
        client: kube::Client,
        work: impl Future<Output = Result<(), E>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), E> {
        let _metrics_server = match self.metrics {
            Some((addr, registry)) => {
                Some(metrics::serve_with_health(addr, Arc::new(registry), self.health).await?)
            }
            None => None,
        };
        let work = async {
            tokio::select! {
                r = work => r,
                _ = shutdown => {
                    tracing::info!("shutting down");
                    Ok(())
                }
            }
        };
        match self.lease {
            Some(lease) => leader::LeaderElection::new(client, lease).run(work).await?,
            None => work.await,
        }
    }
}
