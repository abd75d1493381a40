//! The coordinator's HTTP API (DESIGN §6): submit (single and batch, with
//! `Idempotency-Key`), get, wait, cancel, list, workers, and the OpenAPI
//! document generated from these handlers, so it cannot drift. Requests are
//! authenticated by bearer token and scope, bodies are size-limited, and
//! every error is JSON with a stable code; nothing is written for a request
//! that fails validation.

pub mod auth;
pub mod error;
pub mod waiters;

use crate::config::{is_valid_name, is_valid_tag};
use crate::context::Context;
use crate::store::{CancelOutcome, WorkerView};
use crate::task::{NewTask, TaskId, TaskState, TaskView};
use auth::Scope;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::{OpenApi, ToSchema};
use waiters::Waiters;

/// Shared state of the API handlers.
pub struct ApiState {
    pub ctx: Context,
    pub waiters: Arc<Waiters>,
    /// False once shutdown began: submits get 503 while open requests finish.
    pub accepting: AtomicBool,
    handlers: Mutex<(Option<Instant>, HashSet<String>)>,
    /// Backlog (queued + scheduled) and Redis memory use, read at most
    /// every 250 ms: what admission control decides on.
    pressure: Mutex<(Option<Instant>, Pressure)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Pressure {
    backlog: u64,
    used_memory: u64,
    max_memory: u64,
}

/// Share of Redis' maxmemory past which submissions get 503: with
/// noeviction a full Redis refuses writes, and the rest of the lifecycle
/// (assign, complete) needs room too.
const MEMORY_HIGH_WATER: f64 = 0.9;

impl ApiState {
    pub fn new(ctx: Context, waiters: Arc<Waiters>) -> Self {
        ApiState {
            ctx,
            waiters,
            accepting: AtomicBool::new(true),
            handlers: Mutex::new((None, HashSet::new())),
            pressure: Mutex::new((None, Pressure::default())),
        }
    }

    fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .ok_or(ApiError::Unauthorized)?;
        let tokens = self.ctx.settings.api_tokens.as_ref().ok_or(ApiError::Unauthorized)?;
        let grants = tokens.grants(token.trim()).ok_or(ApiError::Unauthorized)?;
        if grants.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }

    /// Handler names a task may use: those some worker profile offers (as
    /// its heartbeats registered them) plus the configured extras. Cached
    /// for two seconds; a miss refreshes at once so a new worker's handler
    /// is accepted without delay.
    async fn handler_known(&self, name: &str) -> Result<bool, ApiError> {
        if self.ctx.settings.coordinator.handlers.iter().any(|h| h == name) {
            return Ok(true);
        }
        {
            let cache = self.handlers.lock().expect("handler cache lock");
            let fresh = cache.0.is_some_and(|t| t.elapsed() < Duration::from_secs(2));
            if cache.1.contains(name) && fresh {
                return Ok(true);
            }
        }
        let known = self.ctx.store.known_handlers().await?;
        let mut cache = self.handlers.lock().expect("handler cache lock");
        *cache = (Some(Instant::now()), known.into_keys().collect());
        Ok(cache.1.contains(name))
    }

    /// Admission control: past the backlog high-water mark, 429; with Redis
    /// memory nearly full, 503; both with Retry-After, so producers back off
    /// instead of growing Redis without bound.
    async fn admit(&self, n: usize) -> Result<(), ApiError> {
        let cached = {
            let p = self.pressure.lock().expect("pressure lock");
            p.0.filter(|t| t.elapsed() < Duration::from_millis(250)).map(|_| p.1)
        };
        let p = match cached {
            Some(p) => p,
            None => {
                let counts = self.ctx.store.counts().await?;
                let (used_memory, max_memory) = self.ctx.store.memory().await?;
                let backlog = ["queued", "scheduled"]
                    .iter()
                    .map(|s| counts.get(*s).copied().unwrap_or(0).max(0) as u64)
                    .sum();
                let p = Pressure {
                    backlog,
                    used_memory,
                    max_memory,
                };
                *self.pressure.lock().expect("pressure lock") = (Some(Instant::now()), p);
                p
            }
        };
        let max = self.ctx.settings.coordinator.max_backlog;
        if p.backlog + n as u64 > max {
            return Err(ApiError::TooBusy(format!(
                "backlog is full ({} of {max} tasks waiting); retry later",
                p.backlog
            )));
        }
        if p.max_memory > 0 && p.used_memory as f64 > p.max_memory as f64 * MEMORY_HIGH_WATER {
            return Err(ApiError::Unavailable("redis memory is nearly full; retry later".into()));
        }
        // Count what this request adds until the next read.
        self.pressure.lock().expect("pressure lock").1.backlog += n as u64;
        Ok(())
    }

    fn check_accepting(&self) -> Result<(), ApiError> {
        if self.accepting.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ApiError::Unavailable("the coordinator is shutting down".into()))
        }
    }
}

/// A task to run.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// A handler some worker profile offers.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub handler: String,
    /// Any JSON value; handed to the handler as is.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Tags a worker must all have to take the task (at most 32, each 1-64
    /// characters of A-Z a-z 0-9 - _ . : /).
    #[serde(default)]
    #[schema(schema_with = tags_schema)]
    pub tags: Vec<String>,
    /// Higher runs first among tasks waiting for the same workers.
    #[serde(default, deserialize_with = "whole::i32")]
    pub priority: i32,
    /// Attempts before the task is dead (default from the coordinator).
    #[serde(default, deserialize_with = "whole::opt_u32")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    /// Time limit of one attempt, e.g. "30s" (default from the coordinator).
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(ms|s|m|h)$")]
    pub timeout: Option<String>,
    /// Run no earlier than this time, in unix milliseconds.
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[schema(maximum = 9007199254740991_u64)]
    pub run_at_ms: Option<u64>,
    /// Run no earlier than this long from now, e.g. "5m".
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(ms|s|m|h)$")]
    pub delay: Option<String>,
    /// For batch items: the same as the `Idempotency-Key` header.
    #[serde(default)]
    #[schema(pattern = "^[!-~]{1,200}$")]
    pub idempotency_key: Option<String>,
}

/// Tags in the document: at most 32, each as `is_valid_tag` accepts.
fn tags_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9._:/-]{1,64}$")),
        )
        .max_items(Some(32))
        .build()
}

/// Integer fields that also accept a JSON number with a zero fraction
/// (`3.0`): JSON Schema counts it as an integer, so clients may send it.
mod whole {
    use serde::{Deserialize, Deserializer};

    fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let n = Option::<serde_json::Number>::deserialize(d)?;
        n.map(|n| match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Ok(i as f64),
            (_, Some(u), _) => Ok(u as f64),
            (_, _, Some(f)) if f.fract() == 0.0 => Ok(f),
            _ => Err(serde::de::Error::custom(format!("{n} is not a whole number"))),
        })
        .transpose()
    }

    fn exact<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Number>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)
    }

    pub fn i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        let v = whole(d)?.unwrap_or(0.0);
        if v < i32::MIN as f64 || v > i32::MAX as f64 {
            return Err(serde::de::Error::custom(format!("{v} is out of range")));
        }
        Ok(v as i32)
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        whole(d)?
            .map(|v| {
                if (0.0..=u32::MAX as f64).contains(&v) {
                    Ok(v as u32)
                } else {
                    Err(serde::de::Error::custom(format!("{v} is out of range")))
                }
            })
            .transpose()
    }

    /// Exact for integers; a float only when whole and within 2^53.
    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match exact(d)? {
            None => Ok(None),
            Some(n) => match (n.as_u64(), n.as_f64()) {
                (Some(u), _) => Ok(Some(u)),
                (_, Some(f)) if f.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&f) => Ok(Some(f as u64)),
                _ => Err(serde::de::Error::custom(format!(
                    "{n} is not a whole number from 0 to 2^53-1"
                ))),
            },
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to `coordinator.max_batch` tasks (default 1000).
    #[schema(min_items = 1)]
    pub tasks: Vec<SubmitRequest>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub id: String,
    pub state: TaskState,
    /// True when an earlier submission with the same idempotency key stands.
    pub duplicate: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    pub tasks: Vec<Submitted>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub id: String,
    /// `cancelled`, or `running` with `cancel_requested` while the worker stops it.
    pub state: TaskState,
    pub cancel_requested: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// From the previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Longest wait, e.g. "30s" (capped by the coordinator's wait_max).
    #[param(pattern = "^[0-9]{1,12}(ms|s|m|h)$")]
    pub timeout: Option<String>,
}

/// Durations as the API documents them: 1-12 digits and a unit (ms, s, m,
/// h), nothing else; the same grammar the OpenAPI document states.
fn api_duration(s: &str) -> Option<Duration> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() || digits.len() > 12 || !["ms", "s", "m", "h"].contains(&unit) {
        return None;
    }
    crate::units::parse_duration(s)
}

/// Times are kept as Lua numbers in Redis: exact up to 2^53 - 1.
const MAX_SAFE_MS: u64 = (1 << 53) - 1;

fn body_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::Malformed(r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed(format!("invalid JSON body: {e}")))
}

/// The task id from the path, read after the token was checked: an id that
/// is not even UTF-8 is simply no task.
fn task_id(id: Result<Path<String>, PathRejection>) -> Result<TaskId, ApiError> {
    match id {
        Ok(Path(id)) => parse_id(&id),
        Err(_) => Err(ApiError::NotFound("no such task".into())),
    }
}

fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(id).ok_or_else(|| ApiError::NotFound(format!("no task {id:?}")))
}

impl ApiState {
    /// Turns a request into a task, or says exactly what is wrong with it.
    async fn validate(&self, req: SubmitRequest, header_key: Option<String>, now_ms: u64) -> Result<NewTask, ApiError> {
        let c = &self.ctx.settings.coordinator;
        if !is_valid_name(&req.handler) {
            return Err(ApiError::Invalid(
                "handler: must be 1-64 characters of A-Z a-z 0-9 - _ .".into(),
            ));
        }
        if !self.handler_known(&req.handler).await? {
            return Err(ApiError::UnknownHandler(format!(
                "handler {:?} is not offered by any worker profile",
                req.handler
            )));
        }
        if req.tags.len() > 32 {
            return Err(ApiError::Invalid("tags: at most 32".into()));
        }
        if let Some(bad) = req.tags.iter().find(|t| !is_valid_tag(t)) {
            return Err(ApiError::Invalid(format!(
                "tags: {bad:?} must be 1-64 characters of A-Z a-z 0-9 - _ . : /"
            )));
        }
        let max_attempts = req.max_attempts.unwrap_or(c.max_attempts);
        if !(1..=1000).contains(&max_attempts) {
            return Err(ApiError::Invalid("max_attempts: must be from 1 to 1000".into()));
        }
        let timeout = match &req.timeout {
            None => c.timeout,
            Some(t) => api_duration(t)
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(7 * 24 * 3600))
                .ok_or_else(|| {
                    ApiError::Invalid(format!("timeout: {t:?} is not a duration from 1ms to 7d (e.g. 30s)"))
                })?,
        };
        let run_at_ms = match (&req.run_at_ms, &req.delay) {
            (Some(_), Some(_)) => return Err(ApiError::Invalid("give run_at_ms or delay, not both".into())),
            (Some(at), None) if *at > MAX_SAFE_MS => {
                return Err(ApiError::Invalid("run_at_ms: at most 9007199254740991".into()))
            }
            (Some(at), None) => Some(*at),
            (None, Some(d)) => {
                let d = api_duration(d)
                    .filter(|d| *d <= Duration::from_secs(365 * 24 * 3600))
                    .ok_or_else(|| {
                        ApiError::Invalid(format!("delay: {d:?} is not a duration up to a year (e.g. 5m)"))
                    })?;
                Some(now_ms + d.as_millis() as u64)
            }
            (None, None) => None,
        }
        .filter(|at| *at > now_ms);
        let idempotency_key = match (header_key, req.idempotency_key) {
            (Some(h), _) => Some(h),
            (None, k) => k,
        };
        if let Some(k) = &idempotency_key {
            if k.is_empty() || k.len() > 200 || !k.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ApiError::Invalid(
                    "idempotency key: 1-200 printable ASCII characters".into(),
                ));
            }
        }
        Ok(NewTask {
            id: TaskId::generate(),
            handler: req.handler,
            input: serde_json::to_string(&req.input).expect("a parsed JSON value serializes"),
            tags: req.tags,
            priority: req.priority,
            max_attempts,
            timeout_ms: timeout.as_millis() as u64,
            run_at_ms,
            idempotency_key,
        })
    }

    async fn submit_all(&self, tasks: Vec<NewTask>) -> Result<Vec<Submitted>, ApiError> {
        self.admit(tasks.len()).await?;
        let replies = self.ctx.store.submit(&tasks).await?;
        let mut out = Vec::with_capacity(replies.len());
        for (id, status) in replies {
            let duplicate = status == "duplicate";
            let state = if duplicate {
                let existing = self.ctx.store.get_task(&parse_id(&id)?).await?;
                existing.map(|t| t.state).unwrap_or(TaskState::Queued)
            } else {
                TaskState::parse(&status).unwrap_or(TaskState::Queued)
            };
            out.push(Submitted { id, state, duplicate });
        }
        let created = out.iter().filter(|s| !s.duplicate).count();
        metrics::counter!("drover_tasks_submitted_total").increment(created as u64);
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
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn submit(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Scope::Submit)?;
    s.check_accepting()?;
    let req: SubmitRequest = body_json(body, s.ctx.settings.coordinator.max_body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::Invalid("Idempotency-Key: printable ASCII only".into()))?
                .to_string(),
        ),
    };
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

/// Submit many tasks at once; all are validated before any is written.
#[utoipa::path(post, path = "/v1/tasks/batch", request_body = BatchRequest,
    responses((status = 202, body = BatchResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn submit_batch(
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
    let now = s.ctx.store.clock().now_ms();
    let mut tasks = Vec::with_capacity(req.tasks.len());
    for (i, t) in req.tasks.into_iter().enumerate() {
        tasks.push(s.validate(t, None, now).await.map_err(|e| match e {
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
    responses((status = 200, body = TaskView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskView>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let id = task_id(id)?;
    let task = s.ctx.store.get_task(&id).await?;
    task.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no task {id} (unknown, or expired after finishing)")))
}

/// Waits until the task reaches a terminal state or the timeout passes,
/// then returns the record either way.
#[utoipa::path(get, path = "/v1/tasks/{id}/wait", params(("id" = String, Path, description = "Task id"), WaitQuery),
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn wait_task(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskView>, ApiError> {
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
    loop {
        // Register before reading, so a change between the read and the
        // wait still wakes us.
        let notify = s.waiters.register(id.as_str());
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let task = s.ctx.store.get_task(&id).await;
        let task = match task {
            Ok(t) => t,
            Err(e) => {
                s.waiters.release(id.as_str());
                return Err(e.into());
            }
        };
        let Some(task) = task else {
            s.waiters.release(id.as_str());
            return Err(ApiError::NotFound(format!("no task {id}")));
        };
        if task.state.is_terminal() || tokio::time::Instant::now() >= deadline || !s.accepting.load(Ordering::SeqCst) {
            s.waiters.release(id.as_str());
            return Ok(Json(task));
        }
        // The events stream wakes us; the one-second cap covers an event
        // lost to trimming or a Redis restart.
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        let _ = tokio::time::timeout_at(until, notified).await;
        s.waiters.release(id.as_str());
    }
}

/// Cancels a task: at once unless it is running, in which case its worker
/// is told to stop and the state follows.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = CancelResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Already finished", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_task(
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

/// Lists tasks, optionally in one state, a page at a time.
#[utoipa::path(get, path = "/v1/tasks", params(ListQuery),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_tasks(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let state = q.state;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Malformed("limit: from 1 to 1000".into()));
    }
    let cursor = q.cursor.unwrap_or_else(|| "0".into());
    // Exactly what next_cursor looks like: digits, nothing else.
    if cursor.is_empty()
        || cursor.len() > 19
        || !cursor.bytes().all(|b| b.is_ascii_digit())
        || cursor.parse::<u64>().is_err()
    {
        return Err(ApiError::Malformed(
            "cursor: use the next_cursor of the previous page".into(),
        ));
    }
    let (tasks, next) = s.ctx.store.list_tasks(state, &cursor, limit).await?;
    Ok(Json(TaskList {
        tasks,
        next_cursor: (next != "0").then_some(next),
    }))
}

/// Live workers with their handlers, tags, capacity and load.
#[utoipa::path(get, path = "/v1/workers",
    responses((status = 200, body = WorkerList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_workers(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Json<WorkerList>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let workers = s.ctx.store.workers(s.ctx.settings.timing.worker_ttl).await?;
    Ok(Json(WorkerList { workers }))
}

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "drover", description = "Distributed task system: coordinator API"),
    paths(submit, submit_batch, get_task, wait_task, cancel_task, list_tasks, list_workers),
    components(schemas(SubmitRequest, BatchRequest, Submitted, BatchResponse, TaskView, TaskState, TaskList,
        WorkerList, WorkerView, CancelResponse, ErrorBody, error::ErrorDetail)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

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
    metrics::counter!("drover_http_requests_total", "route" => route, "status" => resp.status().as_u16().to_string())
        .increment(1);
    resp
}

pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.ctx.settings.coordinator.max_body;
    Router::new()
        .route("/v1/tasks", post(submit).get(list_tasks))
        .route("/v1/tasks/batch", post(submit_batch))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/wait", get(wait_task))
        .route("/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/v1/workers", get(list_workers))
        .route("/v1/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { (StatusCode::METHOD_NOT_ALLOWED, Json(serde_json::json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this route"}}))) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by schemathesis: `2251799813685247.0` is a whole number (and a
    /// valid JSON Schema integer), but serde_json's default float parser may
    /// land one step off (…247.25) at this size; exact parsing
    /// (`float_roundtrip`) is on so a whole number stays whole.
    #[test]
    fn large_whole_numbers_written_as_floats_are_accepted() {
        let req: SubmitRequest =
            serde_json::from_str(r#"{"handler":"noop","run_at_ms":2251799813685247.0,"max_attempts":3.0}"#).unwrap();
        assert_eq!(req.run_at_ms, Some(2_251_799_813_685_247));
        assert_eq!(req.max_attempts, Some(3));
        let err = serde_json::from_str::<SubmitRequest>(r#"{"handler":"noop","run_at_ms":2.5}"#).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
    }
}
