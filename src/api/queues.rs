//! The queue routes that read: every queue with its counts, settings and
//! limits, and one queue. A queue exists once a task has named it
//! (`default` once any task was submitted). Changing a queue is
//! `queue_control.rs`.

use super::auth::Scope;
use super::error::{ApiError, ErrorBody};
use super::responses::{QueueBody, QueueLimitsBody, QueueList};
use super::state::ApiState;
use super::validate::queue_path;
use crate::names::QueueName;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use std::sync::Arc;

impl ApiState {
    /// `queue`, if some task has named it; else 404.
    pub(super) async fn known_queue(&self, queue: QueueName) -> Result<QueueName, ApiError> {
        if self.ctx.store.queue_exists(&queue).await? {
            Ok(queue)
        } else {
            Err(ApiError::NotFound(format!("no queue {:?}", queue.as_str())))
        }
    }

    pub(super) async fn queue_body(&self, queue: QueueName) -> Result<QueueBody, ApiError> {
        let q = self.ctx.store.queue_state(&queue).await?;
        let [succeeded, dead, cancelled] = q.finished;
        Ok(QueueBody {
            name: q.name.into_string(),
            queued: q.queued,
            running: q.running,
            succeeded: self.ctx.settings.index_succeeded.then_some(succeeded),
            dead,
            cancelled,
            paused: q.paused,
            draining: q.draining,
            limits: QueueLimitsBody {
                concurrency: q.limits.concurrency,
                rate: q.limits.rate.map(|r| r.to_string()),
                burst: q.limits.burst,
            },
            oldest_queued_ms: q.oldest_queued.map(|d| d.as_millis() as u64),
        })
    }
}

/// Every queue, by name, with its counts.
#[utoipa::path(get, path = "/v1/queues",
    responses((status = 200, body = QueueList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_queues(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<QueueList>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let mut queues = Vec::new();
    for queue in s.ctx.store.queue_names().await? {
        queues.push(s.queue_body(queue).await?);
    }
    Ok(Json(QueueList { queues }))
}

/// One queue with its counts.
#[utoipa::path(get, path = "/v1/queues/{queue}", params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_queue(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Result<Json<QueueBody>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let queue = s.known_queue(queue_path(queue)?).await?;
    Ok(Json(s.queue_body(queue).await?))
}
