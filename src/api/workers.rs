//! The worker routes: the live workers as their heartbeats describe them.

use super::auth::Scope;
use super::error::{ApiError, ErrorBody};
use super::responses::WorkerList;
use super::state::ApiState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use std::sync::Arc;

/// Live workers with their handlers, tags, capacity and load.
#[utoipa::path(get, path = "/v1/workers",
    responses((status = 200, body = WorkerList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_workers(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<WorkerList>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let workers = s.ctx.store.workers(s.ctx.settings.timing.worker_ttl).await?;
    Ok(Json(WorkerList {
        workers: workers.into_iter().map(Into::into).collect(),
    }))
}
