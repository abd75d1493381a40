//! Request validation: reading a body as JSON within the size limit, a task
//! id from the path, durations in the API's grammar, and turning a
//! submission into a [`NewTask`] or saying exactly what is wrong with it.
//! Every check runs before anything is written, so a request that fails one
//! leaves no trace.

use super::error::ApiError;
use super::requests::SubmitRequest;
use super::state::ApiState;
use crate::names::{HandlerName, NameKind, QueueName, Tag};
use crate::task::{NewTask, TaskId};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::Path;
use axum::http::StatusCode;
use std::time::Duration;

/// Durations as the API documents them: 1-12 digits and a unit (ms, s, m,
/// h), nothing else; the same grammar the OpenAPI document states.
pub(super) fn api_duration(s: &str) -> Option<Duration> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() || digits.len() > 12 || !["ms", "s", "m", "h"].contains(&unit) {
        return None;
    }
    crate::units::parse_duration(s)
}

/// Times are kept as Lua numbers in Redis: exact up to 2^53 - 1.
const MAX_SAFE_MS: u64 = (1 << 53) - 1;

pub(super) fn body_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
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
pub(super) fn task_id(id: Result<Path<String>, PathRejection>) -> Result<TaskId, ApiError> {
    match id {
        Ok(Path(id)) => parse_id(&id),
        Err(_) => Err(ApiError::NotFound("no such task".into())),
    }
}

/// The queue named in the path: a name that breaks the rule names no
/// queue, so it is a 404 like an unknown one.
pub(super) fn queue_path(queue: Result<Path<String>, PathRejection>) -> Result<QueueName, ApiError> {
    let Ok(Path(queue)) = queue else {
        return Err(ApiError::NotFound("no such queue".into()));
    };
    QueueName::parse(&queue).map_err(|_| ApiError::NotFound(format!("no queue {queue:?}")))
}

pub(super) fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(id).ok_or_else(|| ApiError::NotFound(format!("no task {id:?}")))
}

impl ApiState {
    /// Turns a request into a task, or says exactly what is wrong with it.
    pub(super) async fn validate(
        &self,
        req: SubmitRequest,
        header_key: Option<String>,
        now_ms: u64,
    ) -> Result<NewTask, ApiError> {
        let c = &self.ctx.settings.coordinator;
        self.check_handler(&req.handler).await?;
        check_tags(&req.tags)?;
        let max_attempts = req.max_attempts.unwrap_or(c.max_attempts);
        if !(1..=1000).contains(&max_attempts) {
            return Err(ApiError::Invalid("max_attempts: must be from 1 to 1000".into()));
        }
        let timeout = attempt_timeout(req.timeout.as_deref(), c.timeout)?;
        let run_at_ms = run_at(req.run_at_ms, req.delay.as_deref(), now_ms)?;
        let queue = queue_name(req.queue.as_deref())?;
        let (unique_key, unique_for) = uniqueness(req.unique_key, req.unique_for.as_deref())?;
        // The header wins over the body's field.
        let idempotency_key = header_key.or(req.idempotency_key);
        if let Some(k) = &idempotency_key {
            check_idempotency_key(k)?;
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
            queue,
            unique_key,
            unique_for_ms: unique_for.as_millis() as u64,
        })
    }

    /// A well-formed handler name that some worker profile offers.
    async fn check_handler(&self, handler: &str) -> Result<(), ApiError> {
        if HandlerName::parse(handler).is_err() {
            return Err(ApiError::Invalid(format!(
                "handler: must be {}",
                NameKind::HandlerName.rule()
            )));
        }
        if !self.handler_known(handler).await? {
            return Err(ApiError::UnknownHandler(format!(
                "handler {handler:?} is not offered by any worker profile"
            )));
        }
        Ok(())
    }
}

/// The queue a request names (`default` when it names none), checked by
/// the name rule.
pub(super) fn queue_name(given: Option<&str>) -> Result<QueueName, ApiError> {
    match given {
        None => Ok(QueueName::default_queue()),
        Some(q) => QueueName::parse(q)
            .map_err(|_| ApiError::Invalid(format!("queue: {q:?} must be {}", NameKind::Queue.rule()))),
    }
}

/// The unique key and its window (zero: while the task is live).
fn uniqueness(key: Option<String>, window: Option<&str>) -> Result<(Option<String>, Duration), ApiError> {
    if let Some(k) = &key {
        if k.is_empty() || k.len() > 200 || !k.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ApiError::Invalid("unique_key: 1-200 printable ASCII characters".into()));
        }
    }
    let Some(w) = window else {
        return Ok((key, Duration::ZERO));
    };
    if key.is_none() {
        return Err(ApiError::Invalid("unique_for: give unique_key with it".into()));
    }
    let window = api_duration(w)
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(30 * 24 * 3600))
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "unique_for: {w:?} is not a duration from 1ms to 30d (e.g. 10m)"
            ))
        })?;
    Ok((key, window))
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > 32 {
        return Err(ApiError::Invalid("tags: at most 32".into()));
    }
    if let Some(bad) = tags.iter().find(|t| Tag::parse(t).is_err()) {
        return Err(ApiError::Invalid(format!(
            "tags: {bad:?} must be {}",
            NameKind::Tag.rule()
        )));
    }
    Ok(())
}

/// The time limit of one attempt: as given (1 ms to 7 days), or the
/// coordinator's default.
fn attempt_timeout(given: Option<&str>, default: Duration) -> Result<Duration, ApiError> {
    let Some(t) = given else {
        return Ok(default);
    };
    api_duration(t)
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(7 * 24 * 3600))
        .ok_or_else(|| ApiError::Invalid(format!("timeout: {t:?} is not a duration from 1ms to 7d (e.g. 30s)")))
}

/// When the task may first run, from `run_at_ms` or `delay` (not both);
/// `None` when that is now or past, so the task is queued at once.
fn run_at(run_at_ms: Option<u64>, delay: Option<&str>, now_ms: u64) -> Result<Option<u64>, ApiError> {
    let at = match (run_at_ms, delay) {
        (Some(_), Some(_)) => return Err(ApiError::Invalid("give run_at_ms or delay, not both".into())),
        (Some(at), None) if at > MAX_SAFE_MS => {
            return Err(ApiError::Invalid("run_at_ms: at most 9007199254740991".into()))
        }
        (Some(at), None) => Some(at),
        (None, Some(d)) => {
            let d = api_duration(d)
                .filter(|d| *d <= Duration::from_secs(365 * 24 * 3600))
                .ok_or_else(|| ApiError::Invalid(format!("delay: {d:?} is not a duration up to a year (e.g. 5m)")))?;
            Some(now_ms + d.as_millis() as u64)
        }
        (None, None) => None,
    };
    Ok(at.filter(|at| *at > now_ms))
}

fn check_idempotency_key(k: &str) -> Result<(), ApiError> {
    if k.is_empty() || k.len() > 200 || !k.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::Invalid(
            "idempotency key: 1-200 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_documented_grammar_only() {
        assert_eq!(api_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(api_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "s", "30", "1d", "1.5s", " 1s", "1s ", "1234567890123s"] {
            assert_eq!(api_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn run_at_takes_one_of_its_two_forms_and_drops_a_time_already_past() {
        let now = 1_000_000;
        assert_eq!(run_at(None, None, now).unwrap(), None);
        assert_eq!(run_at(Some(now + 5), None, now).unwrap(), Some(now + 5));
        assert_eq!(run_at(Some(now), None, now).unwrap(), None);
        assert_eq!(run_at(None, Some("5s"), now).unwrap(), Some(now + 5000));
        assert!(run_at(Some(now + 5), Some("5s"), now).is_err());
        assert!(run_at(Some(MAX_SAFE_MS + 1), None, now).is_err());
        assert!(run_at(None, Some("9000h"), now).is_err());
    }

    #[test]
    fn an_attempt_timeout_is_from_1ms_to_7d_or_the_default() {
        let default = Duration::from_secs(300);
        assert_eq!(attempt_timeout(None, default).unwrap(), default);
        assert_eq!(
            attempt_timeout(Some("168h"), default).unwrap(),
            Duration::from_secs(7 * 24 * 3600)
        );
        assert!(attempt_timeout(Some("0s"), default).is_err());
        assert!(attempt_timeout(Some("169h"), default).is_err());
    }
}
