//! Decoding what Redis stores into typed values: task hashes as the worker
//! and the API read them, and the rows that leader duties and cancel read
//! with one `HMGET` each ([`Row`]: named fields, never a position). Fields
//! a task does not store read as their defaults (lua/README.md, key map).

use super::{Result, StoreError};
use crate::names::QueueName;
use crate::task::{TaskState, TaskView, UNSTORED_MAX_ATTEMPTS, UNSTORED_TIMEOUT_MS};
use redis::Value;
use std::collections::HashMap;

pub(crate) fn num<T: std::str::FromStr + Default>(s: Option<&String>) -> T {
    num_or(s, T::default())
}

/// A stored number, or `default` when the field is missing or not one.
pub(crate) fn num_or<T: std::str::FromStr>(s: Option<&String>, default: T) -> T {
    s.and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A stored JSON list of strings (tags, handlers); empty when missing or bad.
pub(crate) fn string_list(s: Option<&String>) -> Vec<String> {
    s.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default()
}

/// A task's hash as `HGETALL` returns it, looked up by field name. It has
/// a dozen fields at most, so a scan of the pairs is cheaper than hashing
/// every name into a map: the worker reads one per task it runs.
pub(crate) struct TaskFields(Vec<(String, String)>);

impl TaskFields {
    pub(crate) fn get(&self, name: &str) -> Option<&String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.swap_remove(i).1)
    }
}

impl redis::FromRedisValue for TaskFields {
    fn from_redis_value(v: Value) -> std::result::Result<Self, redis::ParsingError> {
        Ok(TaskFields(redis::FromRedisValue::from_redis_value(v)?))
    }
}

/// A struct read with one `HMGET` of its `FIELDS`, in that order.
pub(crate) trait Row: Sized {
    const FIELDS: &'static [&'static str];
    /// Builds the row from the values of `FIELDS` (None: not stored).
    fn from_fields(fields: Fields) -> Self;

    /// Decodes one `HMGET` reply of `FIELDS`.
    fn decode(script: &'static str, v: Value) -> Result<Self> {
        let values: Vec<Option<String>> = redis::from_redis_value(v).map_err(|e| StoreError::Reply {
            script,
            detail: e.to_string(),
        })?;
        if values.len() != Self::FIELDS.len() {
            return Err(StoreError::Reply {
                script,
                detail: format!("{} fields for {:?}", values.len(), Self::FIELDS),
            });
        }
        Ok(Self::from_fields(Fields(values.into_iter())))
    }
}

/// The values of one `HMGET`, taken in the order of the row's `FIELDS`.
pub(crate) struct Fields(std::vec::IntoIter<Option<String>>);

impl Fields {
    /// The next field's value, None when not stored.
    pub(crate) fn next(&mut self) -> Option<String> {
        self.0.next().flatten()
    }
}

/// What a leader duty or cancel reads of a task to move it: its state and
/// version, the attempts used and the token of its latest lease.
#[derive(Debug, Clone)]
pub(crate) struct TaskRow {
    pub state: Option<String>,
    pub version: u64,
    /// Attempts charged so far; 1 when not stored (the reaper's backoff
    /// is for at least a first attempt).
    pub attempts: u32,
    /// The token of the task's latest lease.
    pub batch: Option<String>,
}

impl Row for TaskRow {
    const FIELDS: &'static [&'static str] = &["state", "v", "att", "b"];

    fn from_fields(mut f: Fields) -> Self {
        TaskRow {
            state: f.next(),
            version: num(f.next().as_ref()),
            attempts: num_or(f.next().as_ref(), 1),
            batch: f.next(),
        }
    }
}

impl TaskRow {
    pub(crate) fn is(&self, state: TaskState) -> bool {
        self.state.as_deref() == Some(state.as_str())
    }
}

/// What the reconciler reads of every task key it scans: enough to tell
/// a queued task that no ready list holds (one that still names an intake
/// entry, from a build whose backlog was the intake stream).
#[derive(Debug, Clone)]
pub(crate) struct QueuedUnlisted {
    pub state: Option<String>,
    pub version: u64,
    /// The intake entry that last announced it, if one is stored.
    pub entry: Option<String>,
}

impl Row for QueuedUnlisted {
    const FIELDS: &'static [&'static str] = &["state", "v", "ent"];

    fn from_fields(mut f: Fields) -> Self {
        QueuedUnlisted {
            state: f.next(),
            version: num(f.next().as_ref()),
            entry: f.next(),
        }
    }
}

/// Who holds a batch lease: the worker and the assign entry its record
/// names (`P b:<token>`).
#[derive(Debug, Clone)]
pub(crate) struct BatchHolder {
    pub worker: Option<String>,
    pub entry: Option<String>,
}

impl Row for BatchHolder {
    const FIELDS: &'static [&'static str] = &["w", "ent"];

    fn from_fields(mut f: Fields) -> Self {
        BatchHolder {
            worker: f.next(),
            entry: f.next(),
        }
    }
}

/// A due batch as the reaper reads its record: the holder and the ids of
/// the tasks assigned under it.
#[derive(Debug, Clone)]
pub(crate) struct DueBatch {
    pub holder: BatchHolder,
    pub ids: Vec<String>,
}

impl Row for DueBatch {
    const FIELDS: &'static [&'static str] = &["w", "ent", "ids"];

    fn from_fields(mut f: Fields) -> Self {
        let holder = BatchHolder {
            worker: f.next(),
            entry: f.next(),
        };
        let ids = f.next().unwrap_or_default();
        DueBatch {
            holder,
            ids: ids.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
        }
    }
}

/// The API's view of a task hash. `holder` is the worker its batch record
/// names, for a running task.
pub(crate) fn task_view(id: &str, m: &HashMap<String, String>, holder: Option<String>) -> Option<TaskView> {
    let state = TaskState::parse(m.get("state")?)?;
    let opt_num = |k: &str| m.get(k).and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0);
    Some(TaskView {
        id: id.to_string(),
        state,
        queue: m.get("q").cloned().unwrap_or_else(|| QueueName::DEFAULT.to_string()),
        handler: m.get("h").cloned().unwrap_or_default(),
        input: m
            .get("in")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null),
        tags: m
            .get("tags")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
        priority: num(m.get("prio")),
        attempts: num(m.get("att")),
        max_attempts: num_or(m.get("max"), UNSTORED_MAX_ATTEMPTS),
        timeout_ms: num_or(m.get("to"), UNSTORED_TIMEOUT_MS),
        version: num(m.get("v")),
        run_at_ms: opt_num("run_at"),
        created_ms: num(m.get("ct")),
        // `ut` is not stored until the task first changes (then it is the
        // creation time), and neither assign.lua nor a finish writes it:
        // the lease start `st` and the finish time `fin` are the times of
        // those changes, so the latest of the three is the last write.
        updated_ms: num::<u64>(m.get("ut").or(m.get("ct")))
            .max(num(m.get("st")))
            .max(num(m.get("fin"))),
        started_ms: opt_num("st"),
        finished_ms: opt_num("fin"),
        // The lease of the latest attempt: its batch's token, and while it
        // runs, the worker the batch record names.
        worker: holder.filter(|w| !w.is_empty()),
        fence: m.get("b").cloned(),
        result: m
            .get("res")
            .map(|s| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.clone()))),
        error: m.get("err").cloned(),
        cancel_requested: m.get("cr").is_some_and(|c| c == "1"),
        history: m
            .get("hist")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(values: &[Option<&str>]) -> Value {
        Value::Array(
            values
                .iter()
                .map(|v| v.map_or(Value::Nil, |s| Value::BulkString(s.as_bytes().to_vec())))
                .collect(),
        )
    }

    #[test]
    fn rows_take_their_fields_by_name_and_defaults_where_unstored() {
        let row = TaskRow::decode("reap", reply(&[Some("running"), Some("4"), None, Some("1.9")])).unwrap();
        assert!(row.is(TaskState::Running));
        assert_eq!((row.version, row.attempts), (4, 1));
        assert_eq!(row.batch.as_deref(), Some("1.9"));

        let due = DueBatch::decode("reap", reply(&[Some("w1"), Some("5-0"), Some("a,b,")])).unwrap();
        assert_eq!(due.holder.worker.as_deref(), Some("w1"));
        assert_eq!(due.ids, vec!["a".to_string(), "b".to_string()]);

        let q = QueuedUnlisted::decode("reconcile", reply(&[Some("queued"), None, Some("1-0")])).unwrap();
        assert_eq!((q.version, q.entry.as_deref()), (0, Some("1-0")));
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error() {
        let err = BatchHolder::decode("claim", reply(&[Some("w1")])).unwrap_err();
        assert!(err.to_string().contains("1 fields"), "{err}");
    }
}
