//! The task routes: submit (one, or a batch all validated before any is
//! written), get, wait (long-poll until terminal) and cancel. Listing is
//! `listing.rs`; an operator's retry and discard are `dead_letter.rs`.

use super::auth::Scope;
use super::error::{ApiError, ErrorBody};
use super::requests::{BatchRequest, SubmitRequest, WaitQuery};
use super::responses::{BatchResponse, CancelResponse, Submitted, TaskBody};
use super::state::ApiState;
use super::validate::{api_duration, body_json, parse_id, task_id};
use crate::store::{CancelOutcome, SubmitReply, SubmitStatus};
use crate::task::{NewTask, TaskState};
use crate::telemetry::catalog;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl ApiState {
    /// Writes validated tasks once admission control lets them in, and
    /// says where each stands (a duplicate: the state of the task it
    /// repeats).
    async fn submit_all(&self, tasks: Vec<NewTask>) -> Result<Vec<Submitted>, ApiError> {
        self.admit(tasks.len()).await?;
        let replies = self.ctx.store.submit(&tasks).await?;
        let mut out = Vec::with_capacity(replies.len());
        for SubmitReply { id, status } in replies {
            let duplicate = status == SubmitStatus::Duplicate;
            let state = match status {
                SubmitStatus::Duplicate => {
                    let existing = self.ctx.store.get_task(&parse_id(&id)?).await?;
                    existing.map(|t| t.state).unwrap_or(TaskState::Queued)
                }
                SubmitStatus::Queued => TaskState::Queued,
                SubmitStatus::Scheduled => TaskState::Scheduled,
            };
            out.push(Submitted { id, state, duplicate });
        }
        let created = out.iter().filter(|s| !s.duplicate).count();
        metrics::counter!(catalog::TASKS_SUBMITTED.name).increment(created as u64);
        for s in out.iter().filter(|s| !s.duplicate) {
            tracing::debug!(task_id = %s.id, state = %s.state, "submitted");
        }
        Ok(out)
    }
}

/// Submit one task.
#[utoipa::path(post, path = "/v1/tasks", request_body = SubmitRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,200}$", description = "Repeat-safe submission: the same key returns the first task")),
    responses(
        (status = 202, description = "Accepted", body = Submitted),
        (status = 200, description = "Duplicate of an earlier submission with the same key", body = Submitted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The queue is draining (code queue_draining): nothing was written", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn submit(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Scope::Submit)?;
    s.check_accepting()?;
    let req: SubmitRequest = body_json(body, s.ctx.settings.coordinator.max_body)?;
    let key = idempotency_header(&headers)?;
    let task = s.validate(req, key, s.ctx.store.clock().now_ms()).await?;
    let mut out = s.submit_all(vec![task]).await?;
    let one = out
        .pop()
        .ok_or_else(|| ApiError::Internal("submit returned nothing".into()))?;
    let status = if one.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(one)).into_response())
}

/// The `Idempotency-Key` header, if given.
fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::Invalid("Idempotency-Key: printable ASCII only".into()))
        })
        .transpose()
}

/// Submit many tasks at once; all are validated before any is written.
/// With an `Idempotency-Key`, task `i` of the batch that names no key of
/// its own takes the key `<key>#<i>`, so a retried batch returns the tasks
/// the first one made instead of making them again.
#[utoipa::path(post, path = "/v1/tasks/batch", request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,190}$", description = "Repeat-safe batch: the same key returns the first batch's tasks")),
    responses((status = 202, body = BatchResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The queue is draining (code queue_draining): nothing was written", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn submit_batch(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Scope::Submit)?;
    s.check_accepting()?;
    let req: BatchRequest = body_json(body, s.ctx.settings.coordinator.max_body)?;
    let max = s.ctx.settings.coordinator.max_batch;
    if req.tasks.is_empty() || req.tasks.len() > max {
        return Err(ApiError::Invalid(format!("tasks: 1 to {max} per batch")));
    }
    let batch_key = idempotency_header(&headers)?;
    // Room for the `#<index>` each task's key gets.
    if batch_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 190) {
        return Err(ApiError::Invalid(
            "Idempotency-Key: 1-190 printable ASCII characters for a batch".into(),
        ));
    }
    let now = s.ctx.store.clock().now_ms();
    let mut tasks = Vec::with_capacity(req.tasks.len());
    for (i, t) in req.tasks.into_iter().enumerate() {
        let key = match (&batch_key, &t.idempotency_key) {
            (Some(k), None) => Some(format!("{k}#{i}")),
            _ => None,
        };
        tasks.push(s.validate(t, key, now).await.map_err(|e| match e {
            ApiError::Invalid(m) => ApiError::Invalid(format!("tasks[{i}]: {m}")),
            ApiError::UnknownHandler(m) => ApiError::UnknownHandler(format!("tasks[{i}]: {m}")),
            other => other,
        })?);
    }
    let out = s.submit_all(tasks).await?;
    Ok((StatusCode::ACCEPTED, Json(BatchResponse { tasks: out })).into_response())
}

/// A task's current record.
#[utoipa::path(get, path = "/v1/tasks/{id}", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskBody>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let id = task_id(id)?;
    let task = s.ctx.store.get_task(&id).await?;
    task.map(|t| Json(t.into()))
        .ok_or_else(|| ApiError::NotFound(format!("no task {id} (unknown, or expired after finishing)")))
}

/// Waits until the task reaches a terminal state or the timeout passes,
/// then returns the record either way. Past `coordinator.max_waits` open
/// waits, 429 at once.
#[utoipa::path(get, path = "/v1/tasks/{id}/wait", params(("id" = String, Path, description = "Task id"), WaitQuery),
    responses((status = 200, body = TaskBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, description = "Too many open waits", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn wait_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<TaskBody>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let id = task_id(id)?;
    let max = s.ctx.settings.coordinator.wait_max;
    let timeout = match q.timeout.as_deref() {
        None => max,
        Some(t) => api_duration(t)
            .ok_or_else(|| ApiError::Malformed(format!("timeout: {t:?} is not a duration (e.g. 30s)")))?
            .min(max),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // Released when this future ends or is dropped (the client went away).
    let wait = s
        .waiters
        .try_register(id.as_str())
        .map_err(|full| ApiError::TooManyWaits(format!("{} waits are open already; retry later", full.max)))?;
    loop {
        // Listen before reading, so a change between the read and the
        // wait still wakes us.
        let notified = wait.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let task = s
            .ctx
            .store
            .get_task(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
        if task.state.is_terminal() || tokio::time::Instant::now() >= deadline || !s.accepting.load(Ordering::SeqCst) {
            return Ok(Json(task.into()));
        }
        // Only the events reader wakes us (an event names the task, or
        // events may have been missed, or shutdown), else the deadline:
        // nothing reads Redis per wait in between.
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// Cancels a task: at once unless it is running, in which case its worker
/// is told to stop and the state follows.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = CancelResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Already finished", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn cancel_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<CancelResponse>, ApiError> {
    s.authorize(&headers, Scope::Submit)?;
    let id = task_id(id)?;
    let (state, cancel_requested) = match s.ctx.store.cancel(&id).await? {
        CancelOutcome::Cancelled => (TaskState::Cancelled, false),
        CancelOutcome::Requested => (TaskState::Running, true),
        CancelOutcome::Missing => return Err(ApiError::NotFound(format!("no task {id}"))),
        CancelOutcome::AlreadyFinished(st) => {
            return Err(ApiError::Conflict(format!("task {id} already finished: {st}")))
        }
    };
    tracing::debug!(task_id = %id, %state, "cancel");
    Ok(Json(CancelResponse {
        id: id.to_string(),
        state,
        cancel_requested,
    }))
}
