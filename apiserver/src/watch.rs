//! Serving watches from the watch cache: a chunked stream of one JSON event per line.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use atoll_api::{ApiError, ApiResult, KindInfo};
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::cache::EventType;
use crate::negotiate::Format;
use crate::object::{Filter, Obj};
use crate::request::{Query, Target};
use crate::server::Server;
use crate::table;

/// Longest a watch stays open when the client gives no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a bookmark is sent to clients that allow them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// How watch events are encoded for one client.
struct Encoder {
    kind: Arc<KindInfo>,
    format: Format,
    include_object: Option<String>,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, kind: EventType, obj: &Obj) -> Bytes {
        let object: Bytes = match &self.format {
            Format::Table(api_version) => match obj.value() {
                Ok(v) => {
                    let t = table::build(
                        &self.kind,
                        std::slice::from_ref(&v),
                        api_version,
                        self.include_object.as_deref(),
                        jiff::Timestamp::now(),
                        !self.sent_columns,
                    );
                    self.sent_columns = true;
                    Bytes::from(serde_json::to_vec(&t).unwrap_or_default())
                }
                Err(_) => obj.json.clone(),
            },
            Format::Metadata => match obj.value() {
                Ok(v) => Bytes::from(
                    serde_json::to_vec(&table::partial_metadata(&v)).unwrap_or_default(),
                ),
                Err(_) => obj.json.clone(),
            },
            Format::Json | Format::Yaml => obj.json.clone(),
        };
        let mut out = Vec::with_capacity(object.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        out.extend_from_slice(&object);
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn bookmark(&self, revision: i64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version(), "metadata": metadata});
        line(&json!({"type": "BOOKMARK", "object": object}))
    }
}

fn line(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// The ERROR event for a failed watch.
fn error_event(e: &ApiError) -> Bytes {
    line(&json!({"type": "ERROR", "object": e.to_status()}))
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    resp
}

/// Starts a watch: synthetic ADDED events (no resourceVersion, or "0"), or a replay from the given one;
/// then live events until `timeoutSeconds`. A too old resourceVersion gives one ERROR event (410).
pub fn serve(srv: &Arc<Server>, t: &Target, q: &Query, format: &Format) -> ApiResult<Response> {
    let filter: Filter = crate::rest::filter(t, q)?;
    let from = match q.resource_version.as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let from = if q.send_initial_events == Some(true) {
        None
    } else {
        from
    };
    let cache = srv.cache(&t.kind)?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut enc = Encoder {
        kind: t.kind.clone(),
        format: format.clone(),
        include_object: q.include_object.clone(),
        sent_columns: false,
    };
    let sub = match cache.subscribe(&filter, from) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.try_send(error_event(&e));
            return Ok(stream_response(rx));
        }
    };
    let timeout = q
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = q.allow_bookmarks;
    let initial_end = q.send_initial_events == Some(true) && bookmarks;
    let kind = t.kind.clone();
    let mut stopping = srv.stopping();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let crate::cache::Subscription {
            initial,
            revision,
            mut live,
        } = sub;
        let mut last = revision;
        for (ty, obj) in initial {
            if tx.send(enc.event(ty, &obj)).await.is_err() {
                return;
            }
        }
        if initial_end && tx.send(enc.bookmark(last, true)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = stopping.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let current = cache.revision();
                    if live.is_empty() && current > last {
                        last = current;
                        if tx.send(enc.bookmark(last, false)).await.is_err() { return; }
                    }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.revision() <= last { continue; }
                        last = ev.revision();
                        if let Some((ty, obj)) = ev.for_filter(&kind, &filter)
                            && tx.send(enc.event(ty, &obj)).await.is_err() {
                            return;
                        }
                    }
                    // A watcher too slow to keep up is closed; the client resumes from its last revision.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(stream_response(rx))
}
