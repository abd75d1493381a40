//! The admin port every role serves, apart from the API: `/health`
//! (liveness), `/ready` (ready to take work) and `/metrics` (Prometheus).

use crate::context::Health;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/health", get(health_route))
        .route("/ready", get(ready_route))
        .route("/metrics", get(metrics_route))
        .with_state(health)
}

async fn health_route(State(h): State<Arc<Health>>) -> impl IntoResponse {
    Json(h.describe())
}

async fn ready_route(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let ready = h.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": ready, "reason": h.not_ready_reason() })),
    )
}

async fn metrics_route() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
}

/// Serves the admin routes on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}
