//! `pods/<name>/exec`, `pods/<name>/attach` and `pods/<name>/portforward` (GET or POST with an
//! HTTP upgrade: WebSocket or SPDY/3.1): checks the options and the container, finds the kubelet
//! of the pod's node as `pods/log` does ([`crate::podlogs::kubelet_of`]), and relays the client's
//! upgrade to the kubelet's `/exec`, `/attach` or `/portForward` with [`atoll_client::upgrade`].
//! What the two ends negotiate (protocol version, streams, exit code) passes through unchanged; a
//! refusal comes back as a Status with the kubelet's code, which makes kubectl fall back from
//! WebSocket to SPDY when the node's runtime does not speak the WebSocket protocol it offered.
//! Two WebSocket protocols that containerd's streaming server lacks end here instead
//! ([`websocket`]): `v5.channel.k8s.io` for exec and attach, bridged to SPDY v4, and port forwarding
//! tunnelled in WebSocket messages (`SPDY/3.1+portforward.k8s.io`).

use std::sync::Arc;

use atoll_api::podstream::{PortForwardOptions, StreamOptions};
use atoll_api::{ApiError, ApiResult};
use atoll_client::upgrade::{self, Answer};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::podlogs::{choose_container, error_chain, kubelet_error, kubelet_of, read_pod, segment};
use crate::request::Target;
use crate::server::Server;

pub mod spdy;
pub mod websocket;

/// How a client's upgrade reaches the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Relayed as it is: the client and the runtime negotiate.
    Relay,
    /// A `v5.channel.k8s.io` WebSocket, bridged to SPDY v4 ([`websocket::bridge_v5`]).
    V5,
    /// SPDY port forwarding inside a WebSocket, unwrapped ([`websocket::tunnel`]).
    Tunnel,
}

/// The mode for a request to subresource `sub` with `headers`.
fn mode(sub: &str, headers: &HeaderMap) -> Mode {
    let offered = websocket::offered(headers);
    let has = |p: &str| offered.iter().any(|o| o == p);
    let key = headers.contains_key(header::SEC_WEBSOCKET_KEY);
    match sub {
        "portforward" if key && has(websocket::PORT_FORWARD_TUNNEL) => Mode::Tunnel,
        "exec" | "attach" if key && has(websocket::V5) => Mode::V5,
        _ => Mode::Relay,
    }
}

/// The streaming subresources.
pub const SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// The kubelet path (after the host) for subresource `sub` of pod `ns/name`.
fn kubelet_path(sub: &str, ns: &str, name: &str, container: &str, query: &str) -> String {
    let (ns, name) = (segment(ns), segment(name));
    let path = match sub {
        "portforward" => format!("/portForward/{ns}/{name}"),
        "exec" => format!("/exec/{ns}/{name}/{}", segment(container)),
        _ => format!("/attach/{ns}/{name}/{}", segment(container)),
    };
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// Serves a streaming subresource `t.sub` (one of [`SUBRESOURCES`]); `client` is the request's
/// pending upgrade.
pub async fn serve(
    srv: &Arc<Server>,
    method: &Method,
    t: &Target,
    raw_query: &str,
    headers: &HeaderMap,
    client: Option<OnUpgrade>,
) -> ApiResult<Response> {
    let sub = t.sub.as_deref().unwrap_or_default();
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {method} pods/{sub}"
        )));
    }
    let (ns, name) = (t.namespace.as_deref().unwrap_or(""), t.name());
    let opts = StreamOptions::from_query(raw_query);
    let kubelet_query = if sub == "portforward" {
        PortForwardOptions::from_query(raw_query)?.kubelet_query()
    } else {
        opts.check(sub == "exec")?;
        opts.kubelet_query()
    };
    let pod = read_pod(srv, t).await?;
    let container = match sub {
        "portforward" => String::new(),
        _ => choose_container(&pod, name, opts.container.as_deref())?,
    };
    let (node_name, authority) = kubelet_of(srv, &pod, name).await?;
    let Some(client) = client.filter(|_| upgrade::is_upgrade(headers)) else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let url = format!(
        "http://{authority}{}",
        kubelet_path(sub, ns, name, &container, &kubelet_query)
    );
    let mode = mode(sub, headers);
    let (up_method, up_headers) = match mode {
        Mode::Relay => (method.clone(), headers.clone()),
        Mode::V5 => (Method::POST, spdy_upgrade(websocket::SPDY_V4)),
        Mode::Tunnel => (Method::POST, spdy_upgrade(websocket::SPDY_PORT_FORWARD)),
    };
    let answer = upgrade::dial(&up_method, &url, &up_headers)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "error dialing backend: {} (the kubelet of node \"{node_name}\")",
                error_chain(&e)
            ))
        })?;
    let how = match mode {
        Mode::Relay => "relayed",
        Mode::V5 => "bridged from WebSocket v5 to SPDY v4",
        Mode::Tunnel => "tunnelled from WebSocket to SPDY",
    };
    match &answer {
        Answer::Switched { .. } => {
            tracing::info!(namespace = ns, pod = name, sub, upgrade = ?headers.get(header::UPGRADE), "streaming session {how}")
        }
        Answer::Refused { status, .. } => {
            tracing::info!(namespace = ns, pod = name, sub, %status, "streaming session refused by the kubelet")
        }
    }
    let (chosen, upstream) = match answer {
        Answer::Refused { status, body, .. } => {
            return Err(kubelet_error(status, &body, &format!("pods/{sub}"), name));
        }
        switched if mode == Mode::Relay => return Ok(upgrade::respond(switched, client)),
        Answer::Switched { headers, stream } => (headers, stream),
    };
    let wanted = match mode {
        Mode::Tunnel => websocket::SPDY_PORT_FORWARD,
        _ => websocket::SPDY_V4,
    };
    let chosen = chosen
        .get("x-stream-protocol-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if chosen != wanted {
        return Err(ApiError::internal(format!(
            "the kubelet of node \"{node_name}\" chose stream protocol {chosen:?}, not {wanted}"
        )));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (protocol, streams) = match mode {
        Mode::Tunnel => (websocket::PORT_FORWARD_TUNNEL, None),
        _ => (
            websocket::V5,
            Some(websocket::Streams {
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr && !opts.tty,
                tty: opts.tty,
            }),
        ),
    };
    tokio::spawn(async move {
        let client = match client.await {
            Ok(c) => TokioIo::new(c),
            Err(e) => {
                tracing::debug!("the client's upgrade failed: {e}");
                return;
            }
        };
        let upstream = TokioIo::new(upstream);
        match streams {
            Some(streams) => websocket::bridge_v5(client, upstream, streams).await,
            None => websocket::tunnel(client, upstream).await,
        }
    });
    Ok(websocket::switching(key, protocol))
}

/// The headers that ask the kubelet for a SPDY/3.1 upgrade with stream protocol `protocol`.
fn spdy_upgrade(protocol: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_kubelet_paths() {
        let opts = StreamOptions::from_query(
            "command=sh&command=-c&command=exit 3&stdout=true&stderr=true",
        );
        assert_eq!(
            kubelet_path("exec", "default", "web", "c", &opts.kubelet_query()),
            "/exec/default/web/c?command=sh&command=-c&command=exit+3&error=1&output=1"
        );
        let opts = StreamOptions::from_query("stdout=true&container=c");
        assert_eq!(
            kubelet_path("attach", "default", "web", "c", &opts.kubelet_query()),
            "/attach/default/web/c?output=1"
        );
        assert_eq!(
            kubelet_path("portforward", "ns", "web", "", ""),
            "/portForward/ns/web"
        );
        let ports = PortForwardOptions::from_query("ports=80").unwrap();
        assert_eq!(
            kubelet_path("portforward", "ns", "web", "", &ports.kubelet_query()),
            "/portForward/ns/web?port=80"
        );
    }
}
