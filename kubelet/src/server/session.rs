//! `/exec/<namespace>/<pod>/<container>`, `/attach/…` and `/portForward/<namespace>/<pod>` (GET
//! or POST with an HTTP upgrade, as the API server relays them for `kubectl exec`, `attach` and
//! `port-forward`): the container's running instance (or the pod's ready sandbox) is found through
//! the runtime, the runtime is asked for a URL on its streaming server (CRI `Exec`, `Attach`,
//! `PortForward`), and the client's upgrade is relayed there with [`atoll_client::upgrade`]. The
//! runtime and the client negotiate the protocol (SPDY/3.1 or WebSocket) and its version between
//! themselves; a refusal from the runtime comes back as it is.

use std::sync::Arc;

use atoll_api::podstream::{PortForwardOptions, StreamOptions};
use atoll_client::upgrade;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use k8s_cri::v1 as cri;

use super::lookup::{Containers, Session, pick};
use super::{Failure, absent, bad, internal};
use crate::pods::observe::State as ContainerState;

/// The runtime's session for an exec (`command` set) or attach of container `id`. A terminal
/// carries one output stream, so `stderr` is dropped with `tty` (CRI refuses both).
pub fn session(id: &str, opts: &StreamOptions, exec: bool) -> Session {
    let stderr = opts.stderr && !opts.tty;
    if exec {
        Session::Exec(cri::ExecRequest {
            container_id: id.to_string(),
            cmd: opts.command.clone(),
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr,
        })
    } else {
        Session::Attach(cri::AttachRequest {
            container_id: id.to_string(),
            stdin: opts.stdin,
            tty: opts.tty,
            stdout: opts.stdout,
            stderr,
        })
    }
}

/// The request's pending upgrade, or the 400 Kubernetes' kubelet answers without one.
fn pending_upgrade(req: &mut Request) -> Result<OnUpgrade, Failure> {
    let on = req.extensions_mut().remove::<OnUpgrade>();
    match on {
        Some(on) if upgrade::is_upgrade(req.headers()) => Ok(on),
        _ => Err(bad("Upgrade request required".into())),
    }
}

/// The protocol a request offers (`Sec-WebSocket-Protocol`, else `X-Stream-Protocol-Version`) or an
/// answer chose, its values joined.
fn protocol(headers: &HeaderMap) -> String {
    let pick = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let upgrade = pick("upgrade");
    match pick("sec-websocket-protocol") {
        ws if !ws.is_empty() => format!("{upgrade} {ws}"),
        _ => format!("{upgrade} {}", pick("x-stream-protocol-version")),
    }
}

/// `url` with the query `query` added, as Kubernetes' kubelet passes its request's query on to the
/// runtime (a WebSocket port forward names its ports there).
pub fn with_query(url: &str, query: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        None => url.to_string(),
        Some(q) if url.contains('?') => format!("{url}&{q}"),
        Some(q) => format!("{url}?{q}"),
    }
}

/// Relays the client's upgrade (`method`, `headers`, `query`) to `url` on the runtime's streaming
/// server.
async fn relay(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    url: &str,
    client: OnUpgrade,
) -> Response {
    let url = with_query(url, query);
    let offered = protocol(headers);
    match upgrade::dial(method, &url, headers).await {
        Ok(answer) => {
            match &answer {
                upgrade::Answer::Switched { headers, .. } => {
                    tracing::info!(%method, offered, chosen = protocol(headers), "streaming session relayed to the runtime")
                }
                upgrade::Answer::Refused { status, body, .. } => {
                    tracing::info!(%method, offered, %status, answer = %String::from_utf8_lossy(body).trim(), "the runtime refused a streaming session")
                }
            }
            upgrade::respond(answer, client)
        }
        Err(e) => Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming server: {e}"),
        )
        .into_response(),
    }
}

/// Serves `/exec/<namespace>/<pod>/<container>`.
pub async fn exec<C: Containers>(
    State(containers): State<Arc<C>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    exec_or_attach(containers, &namespace, &pod, &container, req, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Serves `/attach/<namespace>/<pod>/<container>`.
pub async fn attach<C: Containers>(
    State(containers): State<Arc<C>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    exec_or_attach(containers, &namespace, &pod, &container, req, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn exec_or_attach<C: Containers>(
    containers: Arc<C>,
    namespace: &str,
    pod: &str,
    container: &str,
    mut req: Request,
    exec: bool,
) -> Result<Response, Failure> {
    let opts = StreamOptions::from_query(req.uri().query().unwrap_or_default());
    opts.check(exec).map_err(|e| bad(e.message))?;
    let client = pending_upgrade(&mut req)?;
    let instances = containers
        .instances(namespace, pod, container)
        .await
        .map_err(internal)?;
    let running = pick(instances, false).filter(|i| i.state == ContainerState::Running);
    let Some(instance) = running else {
        let why = containers
            .absent(namespace, pod, container)
            .await
            .map_err(internal)?;
        return Err(absent(Some(why), pod, container, false));
    };
    let url = containers
        .session(session(&instance.id, &opts, exec))
        .await
        .map_err(internal)?;
    Ok(relay(req.method(), req.headers(), req.uri().query(), &url, client).await)
}

/// Serves `/portForward/<namespace>/<pod>`; the ports are named per stream by a SPDY client, in
/// the query (`port`, repeated) by a WebSocket one.
pub async fn port_forward<C: Containers>(
    State(containers): State<Arc<C>>,
    Path((namespace, pod)): Path<(String, String)>,
    mut req: Request,
) -> Response {
    let ports = match PortForwardOptions::from_query(req.uri().query().unwrap_or_default()) {
        Ok(o) => o.ports,
        Err(e) => return bad(e.message).into_response(),
    };
    let client = match pending_upgrade(&mut req) {
        Ok(c) => c,
        Err(f) => return f.into_response(),
    };
    let sandbox = match containers.sandbox(&namespace, &pod).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Failure(
                StatusCode::NOT_FOUND,
                format!("pod not found (\"{namespace}/{pod}\")"),
            )
            .into_response();
        }
        Err(e) => return internal(e).into_response(),
    };
    let request = cri::PortForwardRequest {
        pod_sandbox_id: sandbox,
        port: ports.into_iter().map(i32::from).collect(),
    };
    match containers.session(Session::PortForward(request)).await {
        Ok(url) => relay(req.method(), req.headers(), req.uri().query(), &url, client).await,
        Err(e) => internal(e).into_response(),
    }
}
