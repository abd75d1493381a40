//! An operator's actions on finished tasks, all admin-scoped and counted
//! (`drover_operator_actions_total`): retry one dead or cancelled task,
//! discard one finished task, retry every dead task of a queue, and purge a
//! queue's tasks of one finished state.

use super::auth::Scope;
use super::error::{ApiError, ErrorBody};
use super::requests::PurgeQuery;
use super::responses::{Discarded, Purged, Retried, RetriedDead};
use super::state::ApiState;
use super::validate::{queue_path, task_id};
use crate::store::{DiscardOutcome, RetryOutcome};
use crate::task::TaskState;
use crate::telemetry::catalog;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use std::sync::Arc;

/// Counts `n` tasks an operator's `action` changed.
fn counted(action: &'static str, n: u64) {
    metrics::counter!(catalog::OPERATOR_ACTIONS.name, "action" => action).increment(n);
}

/// Runs a dead or cancelled task again: queued, attempts reset, the run
/// that ended kept in its `history`.
#[utoipa::path(post, path = "/v1/tasks/{id}/retry", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = Retried), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Not dead or cancelled", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn retry_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Retried>, ApiError> {
    s.authorize(&headers, Scope::Admin)?;
    let id = task_id(id)?;
    let outcome = s
        .ctx
        .store
        .retry(std::slice::from_ref(&id))
        .await?
        .pop()
        .map(|(_, o)| o);
    match outcome {
        Some(RetryOutcome::Queued) => {
            counted("retry", 1);
            tracing::info!(task_id = %id, "retried by an operator");
            Ok(Json(Retried {
                id: id.to_string(),
                state: TaskState::Queued,
            }))
        }
        Some(RetryOutcome::Missing) | None => Err(ApiError::NotFound(format!("no task {id}"))),
        Some(RetryOutcome::Conflict) => Err(ApiError::Conflict(format!(
            "task {id} changed while it was being retried; read it and try again"
        ))),
        Some(RetryOutcome::WrongState(state)) => Err(ApiError::Conflict(format!(
            "task {id} is {state}: only dead or cancelled tasks are retried"
        ))),
    }
}

/// Deletes a finished task now, before its result TTL.
#[utoipa::path(delete, path = "/v1/tasks/{id}", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = Discarded), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Still live", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn discard_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Discarded>, ApiError> {
    s.authorize(&headers, Scope::Admin)?;
    let id = task_id(id)?;
    match s.ctx.store.discard(std::slice::from_ref(&id)).await?.pop() {
        Some(DiscardOutcome::Discarded) => {
            counted("discard", 1);
            Ok(Json(Discarded { id: id.to_string() }))
        }
        Some(DiscardOutcome::Missing) | None => Err(ApiError::NotFound(format!("no task {id}"))),
        Some(DiscardOutcome::WrongState(state)) => Err(ApiError::Conflict(format!(
            "task {id} is {state}: only finished tasks are discarded (cancel it first)"
        ))),
    }
}

/// Runs every dead task of the queue again, oldest first.
#[utoipa::path(post, path = "/v1/queues/{queue}/retry-dead", params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = RetriedDead), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn retry_dead(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Result<Json<RetriedDead>, ApiError> {
    s.authorize(&headers, Scope::Admin)?;
    let queue = s.known_queue(queue_path(queue)?).await?;
    let queued = s.ctx.store.retry_dead(&queue).await?;
    counted("retry_dead", queued);
    tracing::info!(queue = %queue, queued, "dead tasks retried by an operator");
    Ok(Json(RetriedDead {
        queue: queue.into_string(),
        queued,
    }))
}

/// Deletes every task of the queue finished in one state.
#[utoipa::path(post, path = "/v1/queues/{queue}/purge", params(("queue" = String, Path, description = "Queue name"), PurgeQuery),
    responses((status = 200, body = Purged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Succeeded tasks are not indexed here", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn purge(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
    query: Result<Query<PurgeQuery>, QueryRejection>,
) -> Result<Json<Purged>, ApiError> {
    s.authorize(&headers, Scope::Admin)?;
    let queue = s.known_queue(queue_path(queue)?).await?;
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let state = TaskState::from(q.state);
    if state == TaskState::Succeeded && !s.ctx.settings.index_succeeded {
        return Err(ApiError::Conflict(
            "succeeded tasks are not indexed here (limits.index_succeeded is off): they expire after the result TTL"
                .into(),
        ));
    }
    let purged = s.ctx.store.purge(&queue, state).await?;
    counted("purge", purged);
    tracing::info!(queue = %queue, %state, purged, "purged by an operator");
    Ok(Json(Purged {
        queue: queue.into_string(),
        state,
        purged,
    }))
}
