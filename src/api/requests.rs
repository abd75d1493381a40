//! What clients send: the submission body (one task, or a batch) and the
//! query strings of the list and wait routes, with the schema annotations
//! the OpenAPI document states for them. Their serde rules are the first
//! check a request passes; `validate.rs` does the rest.

use crate::task::TaskState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    /// The queue to put the task in (default `default`): 1-64 characters
    /// of a-z 0-9 - _.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub queue: Option<String>,
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
    /// While a task submitted with this key is live (and within
    /// `unique_for`, when given), a submission with the same key returns
    /// that task instead of making another (1-200 printable ASCII).
    #[serde(default)]
    #[schema(pattern = "^[!-~]{1,200}$")]
    pub unique_key: Option<String>,
    /// How long from submission `unique_key` holds even after the task
    /// finished, e.g. "10m" (at most 30 days). Without it, the key holds
    /// while the task is live.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(ms|s|m|h)$")]
    pub unique_for: Option<String>,
    /// For batch items: the same as the `Idempotency-Key` header.
    #[serde(default)]
    #[schema(pattern = "^[!-~]{1,200}$")]
    pub idempotency_key: Option<String>,
}

/// Tags in the document: at most 32, each as `names::Tag` accepts.
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
pub(super) mod whole {
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this state. Finished states (succeeded, dead,
    /// cancelled) and scheduled are read from indexes: oldest (soonest)
    /// first, pages of exactly `limit` tasks; the others from a scan.
    pub state: Option<TaskState>,
    /// Only tasks of this queue.
    #[param(pattern = "^[a-z0-9_-]{1,64}$")]
    pub queue: Option<String>,
    /// From the previous page's `next_cursor`.
    #[param(pattern = "^([0-9]{1,19}|[0-9]{1,16}-[0-9A-Za-z]{22})$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PurgeQuery {
    /// The finished state whose tasks to delete.
    pub state: FinishedTaskState,
}

/// The states a task ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FinishedTaskState {
    Succeeded,
    Dead,
    Cancelled,
}

impl From<FinishedTaskState> for TaskState {
    fn from(s: FinishedTaskState) -> TaskState {
        match s {
            FinishedTaskState::Succeeded => TaskState::Succeeded,
            FinishedTaskState::Dead => TaskState::Dead,
            FinishedTaskState::Cancelled => TaskState::Cancelled,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Longest wait, e.g. "30s" (capped by the coordinator's wait_max).
    #[param(pattern = "^[0-9]{1,12}(ms|s|m|h)$")]
    pub timeout: Option<String>,
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
