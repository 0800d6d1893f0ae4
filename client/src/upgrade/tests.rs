//! The relay between a raw-TCP client and an upgrading echo server, through a front server that
//! dials and responds as the API server and the kubelet do.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// An upstream that switches to protocol `echo` (refusing any other with 403) and echoes bytes.
async fn upstream(req: Request) -> Response {
    let asked = req
        .headers()
        .get("x-stream-protocol-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if asked != "echo" {
        let mut resp = Response::new(Body::from("requested protocol not supported"));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        return resp;
    }
    let Some(on) = req.extensions().get::<OnUpgrade>().cloned() else {
        return Response::new(Body::from("no upgrade"));
    };
    tokio::spawn(async move {
        let Ok(up) = on.await else { return };
        let mut io = TokioIo::new(up);
        let mut buf = [0u8; 64];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = io.write_all(b"bye").await;
        let _ = io.shutdown().await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    resp.headers_mut().insert(
        "x-stream-protocol-version",
        HeaderValue::from_static("echo"),
    );
    resp
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn front(upstream: SocketAddr) -> SocketAddr {
    let url = format!("http://{upstream}/exec/token");
    serve(Router::new().fallback(move |mut req: Request| {
        let url = url.clone();
        async move {
            let on = req.extensions_mut().remove::<OnUpgrade>().unwrap();
            let answer = dial(req.method(), &url, req.headers()).await.unwrap();
            respond(answer, on)
        }
    }))
    .await
}

/// Sends an upgrade request for `protocol`; returns the answer's head and the connection.
async fn ask(addr: SocketAddr, protocol: &str) -> (String, tokio::net::TcpStream) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: front\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "answer ended early");
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap().to_lowercase(), s)
}

#[tokio::test]
async fn relays_an_upgraded_connection_both_ways() {
    let up = serve(Router::new().fallback(upstream)).await;
    let front = front(up).await;
    let (head, mut s) = ask(front, "echo").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-stream-protocol-version: echo"), "{head}");
    assert!(head.contains("upgrade: spdy/3.1"), "{head}");
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    // Closing the client's side reaches the upstream, whose last words still come back.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye");
}

#[tokio::test]
async fn passes_a_refusal_on() {
    let up = serve(Router::new().fallback(upstream)).await;
    let front = front(up).await;
    let (head, mut s) = ask(front, "v5.channel.k8s.io").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    let mut body = vec![0u8; "requested protocol not supported".len()];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(body, b"requested protocol not supported");
}

#[test]
fn recognises_upgrade_requests_and_forwards_their_negotiation() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    assert!(!is_upgrade(&h));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    assert!(is_upgrade(&h));
    h.append(
        "x-stream-protocol-version",
        HeaderValue::from_static("v4.channel.k8s.io"),
    );
    h.append(
        "x-stream-protocol-version",
        HeaderValue::from_static("v3.channel.k8s.io"),
    );
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
    let f = forwarded_headers(&h, "127.0.0.1:1234");
    assert_eq!(f.get_all("x-stream-protocol-version").iter().count(), 2);
    assert_eq!(f.get(header::HOST).unwrap(), "127.0.0.1:1234");
    assert!(f.get(header::AUTHORIZATION).is_none());
}
