//! The routes that change a queue, admin-scoped and counted
//! (`drover_operator_actions_total`): pause, resume, drain, and its limits.
//! Each answers with the queue as it is after the change. The change is in
//! Redis (`P q:<queue>:meta`), so every distributor obeys it on its next
//! assign call.

use super::auth::Scope;
use super::error::{ApiError, ErrorBody};
use super::responses::{QueueBody, QueueLimitsBody};
use super::state::ApiState;
use super::validate::{body_json, queue_path};
use crate::store::{QueueChange, QueueLimits};
use crate::telemetry::catalog;
use crate::units::Rate;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use std::sync::Arc;

impl ApiState {
    async fn change_queue(
        &self,
        headers: &HeaderMap,
        queue: Result<Path<String>, PathRejection>,
        action: &'static str,
        change: impl FnOnce() -> Result<QueueChange, ApiError>,
    ) -> Result<Json<QueueBody>, ApiError> {
        self.authorize(headers, Scope::Admin)?;
        let queue = self.known_queue(queue_path(queue)?).await?;
        let change = change()?;
        self.ctx.store.change_queue(&queue, change).await?;
        metrics::counter!(catalog::OPERATOR_ACTIONS.name, "action" => action).increment(1);
        tracing::info!(queue = %queue.as_str(), ?change, "queue changed by an operator");
        Ok(Json(self.queue_body(queue).await?))
    }
}

/// Stops starting the queue's tasks; queued ones stay queued, running ones
/// run on.
#[utoipa::path(post, path = "/v1/queues/{queue}/pause", params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn pause_queue(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Result<Json<QueueBody>, ApiError> {
    s.change_queue(&headers, queue, "pause", || Ok(QueueChange::Pause))
        .await
}

/// Starts the queue's tasks again after a pause, and accepts submissions
/// again after a drain.
#[utoipa::path(post, path = "/v1/queues/{queue}/resume", params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn resume_queue(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Result<Json<QueueBody>, ApiError> {
    s.change_queue(&headers, queue, "resume", || Ok(QueueChange::Resume))
        .await
}

/// Refuses new submissions to the queue (409 `queue_draining`) while its
/// queued tasks still run.
#[utoipa::path(post, path = "/v1/queues/{queue}/drain", params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn drain_queue(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Result<Json<QueueBody>, ApiError> {
    s.change_queue(&headers, queue, "drain", || Ok(QueueChange::Drain))
        .await
}

/// Sets the queue's limits, all of them: a field left out is no limit. A
/// task over a limit waits in its list without using an attempt.
#[utoipa::path(put, path = "/v1/queues/{queue}/limits", params(("queue" = String, Path, description = "Queue name")),
    request_body = QueueLimitsBody,
    responses((status = 200, body = QueueBody), (status = 400, description = "A limit that does not parse, named", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(super) async fn set_queue_limits(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<QueueBody>, ApiError> {
    let limit = s.ctx.settings.coordinator.max_body;
    s.change_queue(&headers, queue, "limits", || {
        let req: serde_json::Value = body_json(body, limit)?;
        Ok(QueueChange::Limits(queue_limits(limits_body(req)?)?))
    })
    .await
}

/// The body as limits. Only a JSON object is: serde would also read an
/// array as the fields in order (found by schemathesis: `[null, null]`
/// was taken as "no limits").
fn limits_body(v: serde_json::Value) -> Result<QueueLimitsBody, ApiError> {
    if !v.is_object() {
        return Err(ApiError::Malformed(
            "invalid JSON body: an object of concurrency, rate and burst".into(),
        ));
    }
    serde_json::from_value(v).map_err(|e| ApiError::Malformed(format!("invalid JSON body: {e}")))
}

/// The largest concurrency limit and bucket size taken, as the OpenAPI
/// document states them (QueueLimitsBody).
const MAX_CONCURRENCY: u32 = 1_000_000;
const MAX_BURST: u32 = 1_000_000_000;

/// The limits a request asks for, or a 400 naming the field that is wrong.
pub(super) fn queue_limits(req: QueueLimitsBody) -> Result<QueueLimits, ApiError> {
    if req.concurrency.is_some_and(|n| !(1..=MAX_CONCURRENCY).contains(&n)) {
        return Err(ApiError::Malformed(format!(
            "concurrency: 1 to {MAX_CONCURRENCY} (leave it out for no limit)"
        )));
    }
    let rate = match req.rate.as_deref() {
        None => None,
        Some(text) => Some(Rate::parse(text).ok_or_else(|| {
            ApiError::Malformed(format!(
                "rate: {text:?} is not a rate; write <count>/<period>, e.g. \"100/s\", \"5000/m\", \"30/10s\""
            ))
        })?),
    };
    match (req.burst, rate) {
        (Some(n), _) if !(1..=MAX_BURST).contains(&n) => Err(ApiError::Malformed(format!("burst: 1 to {MAX_BURST}"))),
        (Some(_), None) => Err(ApiError::Malformed("burst: only with a rate".into())),
        (burst, rate) => Ok(QueueLimits {
            concurrency: req.concurrency,
            rate,
            burst,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(json: &str) -> Result<QueueLimits, String> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        queue_limits(limits_body(v).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }

    #[test]
    fn limits_parse_or_name_the_field_that_is_wrong() {
        let l = limits(r#"{"concurrency": 5, "rate": "100/s"}"#).unwrap();
        assert_eq!(l.concurrency, Some(5));
        assert_eq!(l.burst_or_default(), Some(100));
        let l = limits(r#"{"rate": "5000/m", "burst": 10}"#).unwrap();
        assert_eq!((l.concurrency, l.burst_or_default()), (None, Some(10)));
        assert_eq!(limits("{}").unwrap(), QueueLimits::default());
        for (json, field) in [
            (r#"{"concurrency": 0}"#, "concurrency:"),
            (r#"{"concurrency": 1000001}"#, "concurrency:"),
            (r#"{"rate": "1/s", "burst": 1000000001}"#, "burst:"),
            (r#"{"rate": "fast"}"#, "rate:"),
            (r#"{"rate": "0/s"}"#, "rate:"),
            (r#"{"burst": 5}"#, "burst:"),
            (r#"{"rate": "1/s", "burst": 0}"#, "burst:"),
        ] {
            let err = limits(json).unwrap_err();
            assert!(err.starts_with(field), "{json}: {err}");
        }
        assert!(limits(r#"{"concurency": 5}"#).unwrap_err().contains("unknown field"));
        // A whole number written as a float is a JSON Schema integer.
        assert_eq!(limits(r#"{"concurrency": 2858.0}"#).unwrap().concurrency, Some(2858));
        assert!(limits(r#"{"concurrency": 2.5}"#).is_err());
        for not_an_object in ["[null, null]", "[5]", "null", "3", r#""100/s""#] {
            assert!(
                limits(not_an_object).unwrap_err().contains("an object"),
                "{not_an_object}"
            );
        }
    }
}
