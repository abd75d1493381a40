//! The coordinator's HTTP API (docs/ARCHITECTURE.md, "The flow of one task"): submit (single and batch, with
//! `Idempotency-Key`), get, wait, cancel, list, queues, an operator's
//! retry, discard and purge, workers, and the OpenAPI
//! document generated from these handlers, so it cannot drift. Requests are
//! authenticated by bearer token and scope, bodies are size-limited, and
//! every error is JSON with a stable code; nothing is written for a request
//! that fails validation.
//!
//! Files by concern: `state` (what handlers share, auth and admission),
//! `requests` and `validate` (what clients send and its checks),
//! `responses` (what they get back), `tasks`, `listing`, `queues`,
//! `dead_letter` and `workers` (the routes),
//! `doc` (the OpenAPI document); this file joins them into the router.

pub mod auth;
mod dead_letter;
mod doc;
pub mod error;
mod listing;
mod queue_control;
mod queues;
mod requests;
mod responses;
mod state;
mod tasks;
mod validate;
pub mod waiters;
mod workers;

pub use doc::ApiDoc;
pub use requests::{BatchRequest, ListQuery, PurgeQuery, SubmitRequest, WaitQuery};
pub use responses::{
    BatchResponse, CancelResponse, Discarded, Purged, QueueBody, QueueLimitsBody, QueueList, Retried, RetriedDead,
    Submitted, TaskBody, TaskList, WorkerBody, WorkerList,
};
pub use state::ApiState;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use error::ApiError;
use std::sync::Arc;
use tasks::{cancel_task, get_task, submit, submit_batch, wait_task};

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Counts requests by matched route and status.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    metrics::counter!(crate::telemetry::catalog::HTTP_REQUESTS.name, "route" => route, "status" => resp.status().as_u16().to_string())
        .increment(1);
    resp
}

pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.ctx.settings.coordinator.max_body;
    Router::new()
        .route("/v1/tasks", post(submit).get(listing::list_tasks))
        .route("/v1/tasks/batch", post(submit_batch))
        .route("/v1/tasks/{id}", get(get_task).delete(dead_letter::discard_task))
        .route("/v1/tasks/{id}/retry", post(dead_letter::retry_task))
        .route("/v1/queues", get(queues::list_queues))
        .route("/v1/queues/{queue}", get(queues::get_queue))
        .route("/v1/queues/{queue}/pause", post(queue_control::pause_queue))
        .route("/v1/queues/{queue}/resume", post(queue_control::resume_queue))
        .route("/v1/queues/{queue}/drain", post(queue_control::drain_queue))
        .route("/v1/queues/{queue}/limits", put(queue_control::set_queue_limits))
        .route("/v1/queues/{queue}/retry-dead", post(dead_letter::retry_dead))
        .route("/v1/queues/{queue}/purge", post(dead_letter::purge))
        .route("/v1/tasks/{id}/wait", get(wait_task))
        .route("/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/v1/workers", get(workers::list_workers))
        .route("/v1/openapi.json", get(doc::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { (StatusCode::METHOD_NOT_ALLOWED, Json(serde_json::json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this route"}}))) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}
