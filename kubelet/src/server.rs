//! The kubelet's HTTP server (plain HTTP for now): `GET /healthz`, `GET /pods` (the pods the kubelet
//! runs, a `PodList`), `GET /metrics` (Prometheus),
//! `GET /containerLogs/<namespace>/<pod>/<container>` with the query of `PodLogOptions`, which the
//! API server relays for `kubectl logs`, and the streaming sessions of `kubectl exec`, `attach` and
//! `port-forward` ([`session`]). The container is found through the runtime
//! ([`lookup::Containers`]); its CRI log file is decoded and filtered by [`crate::logs`] and sent as
//! it is read ([`stream::copy`]), following new output with `follow=true`. Errors are plain text
//! worded as Kubernetes' kubelet words them.

pub mod lookup;
pub mod session;
pub mod stream;

use std::convert::Infallible;
use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;

use atoll_api::podlog::LogOptions;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::Error;
use crate::logs::{Filter, Options, tail_start};
use crate::pods::PodSet;
use crate::pods::observe::State as ContainerState;
use lookup::{Absent, Containers, pick};

/// A running server; dropping it stops it.
pub struct Handle {
    /// Where it listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the server reports about the node beside its containers.
#[derive(Clone, Default)]
pub struct NodeView {
    /// The pods the kubelet runs (`/pods`).
    pub pods: PodSet,
    /// The kubelet's metrics (`/metrics`).
    pub metrics: Arc<Registry>,
}

/// Serves the kubelet's endpoints for `containers` and `node` on `addr`.
pub async fn serve<C: Containers>(
    addr: SocketAddr,
    containers: C,
    node: NodeView,
) -> Result<Handle, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?;
    let app = router(Arc::new(containers), node);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("kubelet server stopped: {e}");
        }
    });
    tracing::info!(%addr, "kubelet server listening");
    Ok(Handle { addr, task })
}

/// The routes.
pub fn router<C: Containers>(containers: Arc<C>, node: NodeView) -> Router {
    let NodeView { pods, metrics } = node;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(move || pod_list(pods.clone())))
        .route(
            "/metrics",
            get(move || atoll_client::metrics::render(metrics.clone())),
        )
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs::<C>),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(session::exec::<C>).post(session::exec::<C>),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(session::attach::<C>).post(session::attach::<C>),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(session::port_forward::<C>).post(session::port_forward::<C>),
        )
        .with_state(containers)
}

/// An error answer: a status and a plain-text message.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

fn bad(message: String) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message)
}

fn internal(e: Error) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `/pods`: the pods the kubelet runs, as a `v1` `PodList`.
async fn pod_list(pods: PodSet) -> Response {
    let pods = pods.list();
    let items: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        list.to_string(),
    )
        .into_response()
}

async fn container_logs<C: Containers>(
    State(containers): State<Arc<C>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    match logs(containers, &namespace, &pod, &container, &query).await {
        Ok(resp) => resp,
        Err(f) => f.into_response(),
    }
}

/// The options of a `/containerLogs` query; `tail` is the older name of `tailLines` (`all`: none).
fn options(query: &str) -> Result<LogOptions, Failure> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if let Some(tail) = pairs
        .iter()
        .find(|(k, v)| k == "tail" && !v.is_empty())
        .map(|(_, v)| v.clone())
    {
        pairs.retain(|(k, _)| k != "tailLines");
        if tail != "all" {
            pairs.insert(0, ("tailLines".into(), tail));
        }
    }
    let opts = LogOptions::from_pairs(pairs).map_err(|e| bad(e.message))?;
    let causes = opts.validate();
    if !causes.is_empty() {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid log options: {}", list.join(", ")),
        ));
    }
    Ok(opts)
}

/// The answer when no instance of the container can be read.
fn absent(why: Option<Absent>, pod: &str, c: &str, previous: bool) -> Failure {
    match why {
        Some(Absent::NoPod) => Failure(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" does not exist"),
        ),
        Some(Absent::NoContainer) => Failure(
            StatusCode::NOT_FOUND,
            format!("container \"{c}\" not found in pod \"{pod}\""),
        ),
        _ if previous => bad(format!(
            "previous terminated container \"{c}\" in pod \"{pod}\" not found"
        )),
        Some(Absent::Waiting(reason)) => {
            let why = match reason.as_str() {
                "ErrImagePull" => "image can't be pulled".to_string(),
                "ImagePullBackOff" => "trying and failing to pull image".to_string(),
                _ => reason,
            };
            bad(format!(
                "container \"{c}\" in pod \"{pod}\" is waiting to start: {why}"
            ))
        }
        Some(Absent::Terminated) => {
            bad(format!("container \"{c}\" in pod \"{pod}\" is terminated"))
        }
        Some(Absent::Unavailable) | None => bad(format!(
            "container \"{c}\" in pod \"{pod}\" is not available"
        )),
    }
}

async fn logs<C: Containers>(
    containers: Arc<C>,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Result<Response, Failure> {
    let opts = options(query)?;
    let instances = containers
        .instances(namespace, pod, container)
        .await
        .map_err(internal)?;
    let Some(instance) = pick(instances, opts.previous) else {
        let why = match containers.absent(namespace, pod, container).await {
            Ok(why) => Some(why),
            Err(e) if !opts.previous => return Err(internal(e)),
            Err(_) => None,
        };
        return Err(absent(why, pod, container, opts.previous));
    };
    let since = opts.since_time.or_else(|| {
        let seconds = opts.since_seconds?;
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(seconds))
            .ok()
    });
    let filter = Filter::new(Options {
        timestamps: opts.timestamps,
        since,
        limit_bytes: opts.limit_bytes.map(|n| n.max(0) as u64),
    });
    let tail = opts.tail_lines.map(|n| n.max(0) as u64);
    let path = instance.log_path.clone();
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let mut f = std::fs::File::open(&path)?;
        if let Some(n) = tail {
            let at = tail_start(&mut f, n)?;
            f.seek(SeekFrom::Start(at))?;
        }
        Ok(f)
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        bad(format!(
            "failed to open log file {:?}: {e}",
            instance.log_path.display().to_string()
        ))
    })?;
    let follow =
        (opts.follow && instance.state == ContainerState::Running).then(|| stream::Follow {
            containers: containers.clone(),
            id: instance.id.clone(),
        });
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(stream::copy(
        tokio::fs::File::from_std(file),
        filter,
        follow,
        tx,
    ));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests;
