//! `pods/<name>/exec`, `pods/<name>/attach` and `pods/<name>/portforward` (GET or POST with an
//! HTTP upgrade: WebSocket or SPDY/3.1): checks the options and the container, finds the kubelet
//! of the pod's node as `pods/log` does ([`crate::podlogs::kubelet_of`]), and relays the client's
//! upgrade to the kubelet's `/exec`, `/attach` or `/portForward` with [`atoll_client::upgrade`].
//! What the two ends negotiate (protocol version, streams, exit code) passes through unchanged; a
//! refusal comes back as a Status with the kubelet's code, which makes kubectl fall back from
//! WebSocket to SPDY when the node's runtime does not speak the WebSocket protocol it offered.

use std::sync::Arc;

use atoll_api::podstream::StreamOptions;
use atoll_api::{ApiError, ApiResult};
use atoll_client::upgrade::{self, Answer};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;

use crate::podlogs::{choose_container, error_chain, kubelet_error, kubelet_of, read_pod, segment};
use crate::request::Target;
use crate::server::Server;

/// The streaming subresources.
pub const SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// The kubelet path (after the host) for subresource `sub` of pod `ns/name`.
fn kubelet_path(sub: &str, ns: &str, name: &str, container: &str, opts: &StreamOptions) -> String {
    let (ns, name) = (segment(ns), segment(name));
    match sub {
        "portforward" => format!("/portForward/{ns}/{name}"),
        _ => {
            let path = if sub == "exec" { "exec" } else { "attach" };
            let query = opts.kubelet_query();
            format!(
                "/{path}/{ns}/{name}/{}{}{query}",
                segment(container),
                if query.is_empty() { "" } else { "?" }
            )
        }
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
    if sub != "portforward" {
        opts.check(sub == "exec")?;
    }
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
        kubelet_path(sub, ns, name, &container, &opts)
    );
    let answer = upgrade::dial(method, &url, headers).await.map_err(|e| {
        ApiError::internal(format!(
            "error dialing backend: {} (the kubelet of node \"{node_name}\")",
            error_chain(&e)
        ))
    })?;
    match answer {
        Answer::Refused { status, body, .. } => {
            Err(kubelet_error(status, &body, &format!("pods/{sub}"), name))
        }
        switched => Ok(upgrade::respond(switched, client)),
    }
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
            kubelet_path("exec", "default", "web", "c", &opts),
            "/exec/default/web/c?command=sh&command=-c&command=exit+3&error=1&output=1"
        );
        let opts = StreamOptions::from_query("stdout=true&container=c");
        assert_eq!(
            kubelet_path("attach", "default", "web", "c", &opts),
            "/attach/default/web/c?output=1"
        );
        assert_eq!(
            kubelet_path("portforward", "ns", "web", "", &opts),
            "/portForward/ns/web"
        );
    }
}
