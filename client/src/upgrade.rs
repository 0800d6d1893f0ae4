//! Relaying an HTTP upgrade one hop further: how `kubectl exec`, `attach` and `port-forward` reach
//! a container. The API server relays the client's upgrade request (SPDY/3.1 or WebSocket) to the
//! kubelet, the kubelet to the runtime's streaming server. [`dial`] sends the request with its
//! negotiation headers ([`FORWARDED`]) over a new HTTP/1.1 connection; [`respond`] answers the
//! client with what came back: a refusal as it is, or a `101 Switching Protocols` with the next
//! hop's negotiation headers, after which [`relay`] copies bytes both ways. No stream protocol is
//! parsed: whatever the two ends agreed on passes through unchanged.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::Error;

/// The request headers that carry an upgrade's negotiation, forwarded to the next hop.
pub const FORWARDED: [&str; 8] = [
    "upgrade",
    "connection",
    "x-stream-protocol-version",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "origin",
];

/// How long connecting to the next hop may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the next hop may take to answer the upgrade request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a refusal's body is kept.
const MAX_REFUSAL_BYTES: usize = 64 * 1024;

/// Whether a request asks to upgrade its connection (`Connection: upgrade` with an `Upgrade` header).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// What the next hop answered an upgrade request with.
pub enum Answer {
    /// It switched protocols.
    Switched {
        /// The headers of its `101` (the negotiated protocol, `Sec-WebSocket-Accept` …).
        headers: HeaderMap,
        /// The upgraded connection.
        stream: Upgraded,
    },
    /// It answered something else (an error, or a refused protocol).
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its `Content-Type`, if any.
        content_type: Option<HeaderValue>,
        /// Its body (the first 64 KiB).
        body: Bytes,
    },
}

fn dial_error(url: &str, message: impl std::fmt::Display) -> Error {
    Error::Dial {
        url: url.to_string(),
        message: message.to_string(),
    }
}

/// The headers sent to the next hop: [`FORWARDED`] from `headers`, and `Host`.
pub fn forwarded_headers(headers: &HeaderMap, authority: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED {
        for v in headers.get_all(name) {
            out.append(name, v.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(authority) {
        out.insert(header::HOST, host);
    }
    out
}

/// Sends `method url` (plain `http://`) with the upgrade negotiation of `headers` over a new
/// HTTP/1.1 connection, and returns what came back.
pub async fn dial(method: &Method, url: &str, headers: &HeaderMap) -> Result<Answer, Error> {
    let uri: Uri = url.parse().map_err(|e| dial_error(url, e))?;
    if uri.scheme_str() != Some("http") {
        return Err(dial_error(url, "only http:// URLs can be dialled"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| dial_error(url, "no host in the URL"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| dial_error(url, "connect timed out"))?
    .map_err(|e| dial_error(url, e))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| dial_error(url, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upgrade connection ended: {e}");
        }
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut request = hyper::Request::builder()
        .method(method.clone())
        .uri(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| dial_error(url, e))?;
    *request.headers_mut() = forwarded_headers(headers, authority.as_str());
    let mut response = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| dial_error(url, "no answer in time"))?
        .map_err(|e| dial_error(url, e))?;
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let headers = response.headers().clone();
        let stream = hyper::upgrade::on(&mut response)
            .await
            .map_err(|e| dial_error(url, e))?;
        return Ok(Answer::Switched { headers, stream });
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = http_body_util::Limited::new(response.into_body(), MAX_REFUSAL_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Answer::Refused {
        status,
        content_type,
        body,
    })
}

/// Answers the client whose upgrade is `client` with `answer`: a refusal as the next hop gave it,
/// or a `101` with the next hop's headers and a task that [`relay`]s the two connections.
pub fn respond(answer: Answer, client: OnUpgrade) -> Response {
    match answer {
        Answer::Refused {
            status,
            content_type,
            body,
        } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status;
            if let Some(ct) = content_type {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp
        }
        Answer::Switched { headers, stream } => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            for (name, v) in &headers {
                if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                    resp.headers_mut().append(name, v.clone());
                }
            }
            tokio::spawn(async move {
                match client.await {
                    Ok(client) => relay(client, stream).await,
                    Err(e) => tracing::debug!("the client's upgrade failed: {e}"),
                }
            });
            resp
        }
    }
}

/// Copies bytes between the client's and the next hop's upgraded connections. When the next hop
/// ends its side the session is over; when the client ends its side, that end is passed on and the
/// next hop's remaining output still reaches the client.
pub async fn relay(client: Upgraded, upstream: Upgraded) {
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut up_read, mut up_write) = tokio::io::split(TokioIo::new(upstream));
    let from_upstream = async {
        let r = tokio::io::copy(&mut up_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        r
    };
    let from_client = async {
        let r = tokio::io::copy(&mut client_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
        r
    };
    tokio::pin!(from_upstream, from_client);
    tokio::select! {
        r = &mut from_upstream => {
            if let Err(e) = r {
                tracing::debug!("relaying to the client: {e}");
            }
        }
        r = &mut from_client => {
            if let Err(e) = r {
                tracing::debug!("relaying to the next hop: {e}");
            }
            if let Err(e) = from_upstream.await {
                tracing::debug!("relaying to the client: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
