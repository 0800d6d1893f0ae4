//! The `/metrics` (Prometheus text format) and `/healthz` endpoint every component serves.
//! `/healthz` answers `ok`, or 503 with the reason when the component's [`HealthCheck`] fails.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::Error;

/// A running metrics endpoint; dropping it stops the server.
pub struct MetricsServer {
    /// The address it listens on (the port is the real one when 0 was asked for).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A component's own health: `Err(reason)` makes `/healthz` answer 503 with the reason.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves `registry` on `http://addr/metrics`, and `ok` on `/healthz`.
pub async fn serve(addr: SocketAddr, registry: Arc<Registry>) -> Result<MetricsServer, Error> {
    serve_with_health(addr, registry, None).await
}

/// Serves `registry` on `http://addr/metrics`, and on `/healthz` what `health` says (`ok` without one).
pub async fn serve_with_health(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Option<HealthCheck>,
) -> Result<MetricsServer, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(move || render(registry.clone())))
        .route("/healthz", get(move || healthz(health.clone())));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("metrics server stopped: {e}");
        }
    });
    Ok(MetricsServer { addr, task })
}

async fn healthz(health: Option<HealthCheck>) -> impl IntoResponse {
    match health.map(|h| h()).unwrap_or(Ok(())) {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// The `/metrics` answer: `registry` in the OpenMetrics text format.
pub async fn render(registry: Arc<Registry>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.to_string(),
        ),
    }
}
