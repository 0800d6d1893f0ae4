//! The v5 bridge and the port-forward tunnel between a WebSocket client and a scripted SPDY peer,
//! over in-memory pipes.

use super::*;

#[test]
fn accepts_keys_and_reads_offers() {
    // RFC 6455's example.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
    );
    assert!(offered(&h).is_empty(), "not a WebSocket upgrade");
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    assert_eq!(offered(&h), [V5, "v4.channel.k8s.io"]);
    let resp = switching("dGhlIHNhbXBsZSBub25jZQ==", V5);
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()[header::SEC_WEBSOCKET_PROTOCOL], V5);
}

#[test]
fn reads_client_messages() {
    assert_eq!(client_says(&[0, b'h', b'i']), ClientSays::Data(0, b"hi"));
    assert_eq!(client_says(&[4, b'{']), ClientSays::Data(4, b"{"));
    assert_eq!(client_says(&[255, 0]), ClientSays::CloseStdin);
    assert_eq!(client_says(&[0]), ClientSays::Nothing);
    assert_eq!(client_says(&[1, b'x']), ClientSays::Nothing);
    assert_eq!(client_says(&[]), ClientSays::Nothing);
    let all = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    assert_eq!(
        stream_types(all),
        [("error", 3), ("stdin", 0), ("stdout", 1), ("resize", 4)]
    );
}

async fn client(io: tokio::io::DuplexStream) -> WebSocketStream<tokio::io::DuplexStream> {
    WebSocketStream::from_raw_socket(io, Role::Client, None).await
}

/// The next frame the peer reads, with SYN_STREAM header blocks left out.
async fn next(r: &mut (impl AsyncRead + Unpin)) -> Frame {
    spdy::read_frame(r).await.unwrap().expect("a frame")
}

#[tokio::test]
async fn bridges_v5_to_spdy_and_back() {
    let (client_end, bridge_client) = tokio::io::duplex(64 * 1024);
    let (bridge_up, mut kubelet) = tokio::io::duplex(64 * 1024);
    let streams = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let bridge = tokio::spawn(bridge_v5(bridge_client, bridge_up, streams));
    let mut ws = client(client_end).await;
    // The streams are opened in Kubernetes' order, with odd IDs.
    for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
        let Frame::Control {
            kind: spdy::kind::SYN_STREAM,
            payload,
            ..
        } = next(&mut kubelet).await
        else {
            panic!("SYN_STREAM for {kind}");
        };
        assert_eq!(Frame::control_stream(&payload), Some(id));
        let block = &payload[10..];
        assert!(
            block.windows(kind.len()).any(|w| w == kind.as_bytes()),
            "{kind}"
        );
    }
    ws.send(Message::Binary(Bytes::from_static(b"\x00hi\n")))
        .await
        .unwrap();
    ws.send(Message::Text("\u{0}more".into())).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    assert_eq!(
        next(&mut kubelet).await,
        Frame::Data {
            stream: 3,
            fin: false,
            data: Bytes::from_static(b"hi\n")
        }
    );
    assert_eq!(
        next(&mut kubelet).await,
        Frame::Data {
            stream: 3,
            fin: false,
            data: Bytes::from_static(b"more")
        }
    );
    assert_eq!(
        next(&mut kubelet).await,
        Frame::Data {
            stream: 3,
            fin: true,
            data: Bytes::new()
        }
    );
    // A ping is echoed; output and the status come back on their channels; GOAWAY closes.
    let status = br#"{"status":"Failure","reason":"NonZeroExitCode"}"#;
    let mut out = spdy::control(spdy::kind::PING, 0, &7u32.to_be_bytes()).to_vec();
    out.extend_from_slice(&spdy::data(5, false, b"hi\n"));
    out.extend_from_slice(&spdy::data(7, false, b"oops"));
    out.extend_from_slice(&spdy::data(1, true, status));
    out.extend_from_slice(&spdy::control(spdy::kind::GOAWAY, 0, &[0; 8]));
    kubelet.write_all(&out).await.unwrap();
    assert_eq!(
        next(&mut kubelet).await,
        Frame::Control {
            kind: spdy::kind::PING,
            flags: 0,
            payload: Bytes::copy_from_slice(&7u32.to_be_bytes())
        }
    );
    let mut got = vec![];
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) => got.push(b.to_vec()),
            Message::Close(close) => {
                assert_eq!(close.map(|c| c.code), Some(CloseCode::Normal));
                break;
            }
            _ => {}
        }
    }
    let mut want_status = vec![3];
    want_status.extend_from_slice(status);
    assert_eq!(
        got,
        [b"\x01hi\n".to_vec(), b"\x02oops".to_vec(), want_status]
    );
    bridge.await.unwrap();
}

#[tokio::test]
async fn tunnels_spdy_in_websocket_messages() {
    let (client_end, bridge_client) = tokio::io::duplex(64 * 1024);
    let (bridge_up, mut kubelet) = tokio::io::duplex(64 * 1024);
    let bridge = tokio::spawn(tunnel(bridge_client, bridge_up));
    let mut ws = client(client_end).await;
    ws.send(Message::Binary(Bytes::from_static(b"spdy bytes")))
        .await
        .unwrap();
    let mut buf = [0u8; 10];
    kubelet.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"spdy bytes");
    kubelet.write_all(b"answer").await.unwrap();
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("a binary message");
    };
    assert_eq!(&b[..], b"answer");
    drop(kubelet);
    assert!(matches!(
        ws.next().await,
        Some(Ok(Message::Close(_))) | None
    ));
    bridge.await.unwrap();
}
