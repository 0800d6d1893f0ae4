//! WebSocket clients whose protocol the node's runtime does not speak, served at the API server as
//! Kubernetes' own API server serves them:
//! - `v5.channel.k8s.io` (kubectl 1.30+ `exec` and `attach`, the Python client): the client's
//!   WebSocket ends here and is bridged to a SPDY/3.1 `v4.channel.k8s.io` session toward the
//!   kubelet ([`bridge_v5`]). Messages carry a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error
//!   (the closing Status, with the exit code), 4 resize; `[255, 0]` closes stdin.
//! - `SPDY/3.1+portforward.k8s.io` (kubectl 1.31+ `port-forward`): the client speaks SPDY inside
//!   binary WebSocket messages; the SPDY bytes are unwrapped and relayed to a SPDY/3.1
//!   `portforward.k8s.io` connection to the kubelet ([`tunnel`]).

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::spdy::{self, Frame, HeaderEncoder};

/// The remote-command protocol with a close-stdin signal (kubectl 1.30+).
pub const V5: &str = "v5.channel.k8s.io";
/// Port forwarding as SPDY inside WebSocket messages (kubectl 1.31+).
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The SPDY remote-command protocol [`bridge_v5`] speaks toward the kubelet.
pub const SPDY_V4: &str = "v4.channel.k8s.io";
/// The SPDY port-forward protocol [`tunnel`] carries.
pub const SPDY_PORT_FORWARD: &str = "portforward.k8s.io";

/// The subprotocols a WebSocket upgrade request offers (none when it is not one).
pub fn offered(headers: &HeaderMap) -> Vec<String> {
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !websocket {
        return vec![];
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The `101 Switching Protocols` that accepts a WebSocket upgrade with `key` for `protocol`.
pub fn switching(key: &str, protocol: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key(key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    resp
}

/// A connection: the client's or the kubelet's upgraded one (`TokioIo<Upgraded>`).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Which streams a remote-command session has (stderr is off with a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    /// The client sends input.
    pub stdin: bool,
    /// The process's output comes back.
    pub stdout: bool,
    /// The process's error output comes back.
    pub stderr: bool,
    /// The process runs on a terminal (a resize stream is opened).
    pub tty: bool,
}

/// Channel numbers of `v5.channel.k8s.io` (and of SPDY's stream types).
mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const CLOSE: u8 = 255;
}

/// The SPDY streams a session opens, in the order Kubernetes' client opens them: (stream type,
/// channel).
fn stream_types(s: Streams) -> Vec<(&'static str, u8)> {
    let mut out = vec![("error", channel::ERROR)];
    if s.stdin {
        out.push(("stdin", channel::STDIN));
    }
    if s.stdout {
        out.push(("stdout", channel::STDOUT));
    }
    if s.stderr {
        out.push(("stderr", channel::STDERR));
    }
    if s.tty {
        out.push(("resize", channel::RESIZE));
    }
    out
}

/// What a client's v5 message asks of the SPDY session: bytes for the stream of a channel, or the
/// end of stdin.
#[derive(Debug, PartialEq, Eq)]
enum ClientSays<'a> {
    Data(u8, &'a [u8]),
    CloseStdin,
    Nothing,
}

fn client_says(msg: &[u8]) -> ClientSays<'_> {
    match msg {
        [channel::CLOSE, channel::STDIN, ..] => ClientSays::CloseStdin,
        [ch @ (channel::STDIN | channel::RESIZE), data @ ..] if !data.is_empty() => {
            ClientSays::Data(*ch, data)
        }
        _ => ClientSays::Nothing,
    }
}

/// A close with status 1000: kubectl takes any other (also none) as a failure of the session.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// A task that writes what it is sent to the kubelet's connection, in order, and closes it when
/// every sender is gone.
fn writer<W: AsyncWrite + Send + 'static>(mut w: tokio::io::WriteHalf<W>) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if let Err(e) = w.write_all(&b).await {
                tracing::debug!("writing to the kubelet: {e}");
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    tx
}

/// Bridges a client's `v5.channel.k8s.io` WebSocket (`client`) to a SPDY `v4.channel.k8s.io`
/// session (`upstream`, already upgraded) with `streams`, until the kubelet ends the session
/// (then the client gets a normal close) or the client goes away.
pub async fn bridge_v5(client: impl Io, upstream: impl Io, streams: Streams) {
    let ws = WebSocketStream::from_raw_socket(client, Role::Server, None).await;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut up_r, up_w) = tokio::io::split(upstream);
    let up = writer(up_w);
    let mut encoder = HeaderEncoder::default();
    let mut ids: HashMap<u8, u32> = HashMap::new();
    let mut channels: HashMap<u32, u8> = HashMap::new();
    for (i, (kind, ch)) in stream_types(streams).into_iter().enumerate() {
        let id = 2 * i as u32 + 1;
        ids.insert(ch, id);
        channels.insert(id, ch);
        if up
            .send(spdy::syn_stream(&mut encoder, id, &[("streamtype", kind)]))
            .await
            .is_err()
        {
            return;
        }
    }
    let to_kubelet = up.clone();
    let from_client = async move {
        while let Some(msg) = ws_rx.next().await {
            let msg = match msg {
                Ok(Message::Binary(b)) => b,
                // The Python client sends text input in text messages, channel byte first.
                Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let frame = match client_says(&msg) {
                ClientSays::Data(ch, data) => ids.get(&ch).map(|id| spdy::data(*id, false, data)),
                ClientSays::CloseStdin => ids
                    .get(&channel::STDIN)
                    .map(|id| spdy::data(*id, true, &[])),
                ClientSays::Nothing => None,
            };
            if let Some(f) = frame
                && to_kubelet.send(f).await.is_err()
            {
                break;
            }
        }
    };
    let from_kubelet = async move {
        loop {
            match spdy::read_frame(&mut up_r).await {
                Ok(Some(Frame::Data { stream, data, .. })) => {
                    let Some(ch) = channels.get(&stream) else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    let mut msg = Vec::with_capacity(data.len() + 1);
                    msg.push(*ch);
                    msg.extend_from_slice(&data);
                    if ws_tx.send(Message::Binary(msg.into())).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Frame::Control { kind, payload, .. })) => match kind {
                    spdy::kind::PING => {
                        let _ = up.send(spdy::control(kind, 0, &payload)).await;
                    }
                    spdy::kind::GOAWAY => break,
                    spdy::kind::RST_STREAM => tracing::debug!(
                        stream = spdy::Frame::control_stream(&payload),
                        "the kubelet reset a stream"
                    ),
                    _ => {}
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("reading from the kubelet: {e}");
                    break;
                }
            }
        }
        let _ = ws_tx.send(normal_close()).await;
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = from_kubelet => {}
        _ = from_client => {}
    }
}

/// Relays a client's `SPDY/3.1+portforward.k8s.io` WebSocket (`client`): the payloads of its
/// binary messages go to `upstream` (a SPDY `portforward.k8s.io` connection to the kubelet) as
/// they are, and what comes back goes to the client in binary messages.
pub async fn tunnel(client: impl Io, upstream: impl Io) {
    let ws = WebSocketStream::from_raw_socket(client, Role::Server, None).await;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut up_r, up_w) = tokio::io::split(upstream);
    let up = writer(up_w);
    let from_client = async move {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if up.send(b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let from_kubelet = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match up_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if ws_tx.send(Message::Binary(chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx.send(normal_close()).await;
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = from_kubelet => {}
        _ = from_client => {}
    }
}

#[cfg(test)]
mod tests;
