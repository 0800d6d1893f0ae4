//! `GET pods/<name>/log`: checks the options, picks the container, finds the kubelet of the pod's
//! node (its InternalIP and `daemonEndpoints.kubeletEndpoint.Port`) and relays that kubelet's
//! `/containerLogs` answer as it comes, so `kubectl logs -f` sees every line when it is written.

use std::sync::Arc;
use std::time::Duration;

use atoll_api::podlog::LogOptions;
use atoll_api::{ApiError, ApiResult};
use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, Empty, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::request::Target;
use crate::server::Server;

/// The HTTP client the API server reaches kubelets with.
pub type KubeletClient = Client<HttpConnector, Empty<Bytes>>;

/// The kubelet port when a Node does not report one.
const DEFAULT_KUBELET_PORT: i32 = 10250;
/// How much of a kubelet's error answer is read into the Status.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// A client for kubelets: plain HTTP, 10 s to connect, no overall timeout (follows last long).
pub fn kubelet_client() -> KubeletClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(http)
}

/// Serves `GET pods/<name>/log`.
pub async fn serve(
    srv: &Arc<Server>,
    method: &Method,
    t: &Target,
    raw_query: &str,
) -> ApiResult<Response> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {method} pods/log"
        )));
    }
    let (ns, name) = (t.namespace.as_deref().unwrap_or(""), t.name());
    let opts = LogOptions::from_pairs(url::form_urlencoded::parse(raw_query.as_bytes()))?;
    let causes = opts.validate();
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", name, causes));
    }
    let pod = read_pod(srv, t).await?;
    let container = choose_container(&pod, name, opts.container.as_deref())?;
    let (node_name, authority) = kubelet_of(srv, &pod, name).await?;
    let query = opts.kubelet_query();
    let url = format!(
        "http://{authority}/containerLogs/{}/{}/{}{}{query}",
        segment(ns),
        segment(name),
        segment(&container),
        if query.is_empty() { "" } else { "?" },
    );
    let unreachable = |why: String| {
        ApiError::internal(format!(
            "Get \"{url}\": {why} (the kubelet of node \"{node_name}\")"
        ))
    };
    let request = hyper::Request::get(&url)
        .body(Empty::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let answer = srv
        .kubelets
        .request(request)
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    let status = answer.status();
    if !status.is_success() {
        let body = http_body_util::Limited::new(answer.into_body(), MAX_ERROR_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(kubelet_error(status, &body, "pods/log", name));
    }
    // Relay frames as they arrive; end the stream when the server shuts down.
    let mut stopping = srv.stopping();
    let frames = BodyStream::new(answer.into_body()).take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    let mut resp = Response::new(Body::new(StreamBody::new(frames)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// The pod a `pods/<name>/…` request names.
pub(crate) async fn read_pod(srv: &Arc<Server>, t: &Target) -> ApiResult<Pod> {
    let (ns, name) = (t.namespace.as_deref().unwrap_or(""), t.name());
    let (pod, _) = srv.read(&t.kind, ns, name).await?;
    serde_json::from_value(pod)
        .map_err(|e| ApiError::internal(format!("stored pod {ns}/{name}: {e}")))
}

/// The node of pod `name` and the `host:port` of its kubelet (see [`kubelet_authority`]).
pub(crate) async fn kubelet_of(
    srv: &Arc<Server>,
    pod: &Pod,
    name: &str,
) -> ApiResult<(String, String)> {
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let nodes = srv
        .served()
        .registry
        .get("", "v1", "nodes")
        .cloned()
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let (node, _) = srv.read(&nodes, "", &node_name).await?;
    let node: Node = serde_json::from_value(node)
        .map_err(|e| ApiError::internal(format!("stored node {node_name}: {e}")))?;
    let authority = kubelet_authority(&node).ok_or_else(|| {
        ApiError::internal(format!(
            "node \"{node_name}\" reports no address to reach its kubelet at"
        ))
    })?;
    Ok((node_name, authority))
}

/// The container a request reads: the named one (which must be in the pod), or the only one.
pub(crate) fn choose_container(pod: &Pod, name: &str, wanted: Option<&str>) -> ApiResult<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let names = |v: Vec<String>| v.join(" ");
    let containers: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let init: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    let ephemeral: Vec<String> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    match wanted {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None if containers.is_empty() => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names(containers)
            );
            if !init.is_empty() {
                message += &format!(" or one of the init containers: [{}]", names(init));
            }
            if !ephemeral.is_empty() {
                message += &format!(
                    " or one of the ephemeral containers: [{}]",
                    names(ephemeral)
                );
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// `host:port` of a node's kubelet: its InternalIP (else ExternalIP, else Hostname) and the port
/// it reports.
fn kubelet_authority(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let addresses = status.addresses.as_deref().unwrap_or_default();
    let host = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|ty| {
            addresses
                .iter()
                .find(|a| a.type_ == *ty && !a.address.is_empty())
        })?
        .address
        .clone();
    let port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port)
        .filter(|p| (1..=65535).contains(p))
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some(match host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port as u16).to_string(),
        Err(_) => format!("{host}:{port}"),
    })
}

/// A path segment, percent-encoded.
pub(crate) fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2D", "-")
        .replace("%2E", ".")
        .replace("%5F", "_")
}

/// An error and its sources, `outer: inner: …`.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The Status for a kubelet's error answer: its text (or its Status' message) with its code.
pub(crate) fn kubelet_error(
    status: StatusCode,
    body: &[u8],
    resource: &str,
    pod: &str,
) -> ApiError {
    let text = String::from_utf8_lossy(body).trim().to_string();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or(text);
    let mut e = match status.as_u16() {
        400 => ApiError::bad_request(message),
        404 => {
            let mut e = ApiError::not_found("", resource, pod);
            e.message = message;
            e
        }
        _ => ApiError::internal(message),
    };
    e.code = status.as_u16();
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec})).unwrap()
    }

    #[test]
    fn chooses_the_container_as_kubernetes_does() {
        let one = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(choose_container(&one, "web", None).unwrap(), "a");
        let two = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}),
        );
        assert_eq!(
            choose_container(&two, "web", None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(choose_container(&two, "web", Some("i")).unwrap(), "i");
        let e = choose_container(&two, "web", Some("x")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container x is not valid for pod web")
        );
    }

    #[test]
    fn finds_the_kubelet() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "fd00::1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}}}}))
        .unwrap();
        assert_eq!(kubelet_authority(&node).as_deref(), Some("[fd00::1]:11250"));
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}]}}))
        .unwrap();
        assert_eq!(kubelet_authority(&bare).as_deref(), Some("n1:10250"));
        assert_eq!(segment("a.b-c_d"), "a.b-c_d");
    }

    #[test]
    fn relays_kubelet_errors() {
        let e = kubelet_error(
            StatusCode::BAD_REQUEST,
            b"container \"c\" in pod \"p\" is waiting to start: ContainerCreating",
            "pods/log",
            "p",
        );
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert!(e.message.ends_with("ContainerCreating"));
        let e = kubelet_error(
            StatusCode::NOT_FOUND,
            br#"{"kind":"Status","message":"pod \"p\" does not exist"}"#,
            "pods/log",
            "p",
        );
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (404, "NotFound", "pod \"p\" does not exist")
        );
    }
}
