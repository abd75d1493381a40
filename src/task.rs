//! The task as the rest of the crate sees it: identifiers, states, what a
//! client submits and what it reads back. Redis field names stay in
//! `store`; this module only speaks in domain types.

use crate::names::QueueName;
use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// A task's identifier: a UUIDv7 written as 22 base-62 digits
/// (`0-9A-Za-z`, most significant first). The digits are in ASCII order and
/// the width is fixed, so ids still sort by creation time, as the UUID does;
/// and they are 14 characters shorter than the UUID's canonical form, which
/// every task key and intake message carries (memory per queued task,
/// BENCHMARKS.md). Ids issued by earlier releases, canonical UUIDs, are
/// still accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

/// Base-62 digits in ASCII order, so text order is number order.
const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Digits in an id: 62^22 > 2^128.
const ID_LEN: usize = 22;

/// `n` as exactly [`ID_LEN`] base-62 digits. Two 128-bit divisions split
/// it into parts below 62^10 (< 2^60), whose digits come from 64-bit
/// arithmetic: u128 division is a library call, u64 by a constant is not.
fn base62(n: u128) -> String {
    const P10: u128 = 62u128.pow(10);
    let mut out = [b'0'; ID_LEN];
    let parts = [(n / P10 / P10) as u64, (n / P10 % P10) as u64, (n % P10) as u64];
    // The top part holds 2 digits (2^128 / 62^20 < 62^2), the others 10.
    for (part, range) in parts.into_iter().zip([0..2, 2..12, 12..22]) {
        let mut rest = part;
        for slot in out[range].iter_mut().rev() {
            *slot = DIGITS[(rest % 62) as usize];
            rest /= 62;
        }
    }
    String::from_utf8(out.to_vec()).expect("digits are ASCII")
}

/// The number 22 base-62 digits stand for; None for any other text or a
/// value past 128 bits.
fn from_base62(s: &str) -> Option<u128> {
    if s.len() != ID_LEN {
        return None;
    }
    s.bytes().try_fold(0u128, |n, c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return None,
        };
        n.checked_mul(62)?.checked_add(u128::from(d))
    })
}

impl TaskId {
    pub fn generate() -> Self {
        TaskId(base62(uuid::Uuid::now_v7().as_u128()))
    }

    /// Accepts exactly the forms ids are issued in (22 base-62 digits, or
    /// an earlier release's canonical UUID), so an id taken from a URL can
    /// never smuggle key syntax into a Redis key name.
    pub fn parse(s: &str) -> Option<Self> {
        if from_base62(s).is_some() {
            return Some(TaskId(s.to_string()));
        }
        let u = uuid::Uuid::parse_str(s).ok()?;
        let canonical = u.to_string();
        (canonical == s).then_some(TaskId(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The states of docs/ARCHITECTURE.md ("Task states as built"). `failed`
/// is not a state of its own: a failed attempt becomes `scheduled` (retry)
/// or `dead`. No build produces `assigned` any more; the API keeps its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Scheduled,
    /// Placed on a worker that has not taken the lease yet. Only tasks
    /// placed by a distributor built before assign.lua took the lease are
    /// ever in it: current ones go from `queued` straight to `running`.
    Assigned,
    Running,
    Succeeded,
    Dead,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Scheduled,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Dead,
        TaskState::Cancelled,
    ];
    /// The states counted as backlog (kept in the counts hash).
    pub const LIVE: [TaskState; 4] = [
        TaskState::Queued,
        TaskState::Scheduled,
        TaskState::Assigned,
        TaskState::Running,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Scheduled => "scheduled",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        TaskState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Dead | TaskState::Cancelled)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated submission, ready to be written: every optional field of the
/// request has been resolved to a concrete value.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub handler: String,
    /// The input as JSON text, already checked to parse.
    pub input: String,
    pub tags: Vec<String>,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// Unix ms; `None` runs as soon as a worker is free.
    pub run_at_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    pub queue: QueueName,
    /// While this task is live (and for `unique_for_ms` after it was
    /// submitted, when that is not 0), a submission with the same key
    /// returns this task instead of making another.
    pub unique_key: Option<String>,
    pub unique_for_ms: u64,
}

/// What a stored task without `max` means (`lua/prelude.lua` mirrors it),
/// and the default of `coordinator.max_attempts`. `submit.lua` stores
/// neither `max` nor `to` when both are at their defaults (16 bytes less
/// per queued task); every reader takes these for a missing field.
pub const UNSTORED_MAX_ATTEMPTS: u32 = 3;
/// What a stored task without `to` means, in ms, and the default of
/// `coordinator.timeout`; as for [`UNSTORED_MAX_ATTEMPTS`].
pub const UNSTORED_TIMEOUT_MS: u64 = 300_000;

/// A task as stored, decoded from its hash (`store::decode`). The API
/// serves it as `api::TaskBody`, its own type.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: String,
    pub state: TaskState,
    /// The queue's name (`default` when the task named none).
    pub queue: String,
    pub handler: String,
    /// Any JSON value.
    pub input: serde_json::Value,
    pub tags: Vec<String>,
    pub priority: i32,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// Version of the record: it rises with every transition.
    pub version: u64,
    pub run_at_ms: Option<u64>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub worker: Option<String>,
    /// The fencing token of the latest attempt, `epoch.fence`.
    pub fence: Option<String>,
    /// Any JSON value the handler returned.
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// How earlier runs ended, oldest first: one entry per time an
    /// operator retried the task after it was dead or cancelled.
    pub history: Vec<PriorEnd>,
}

/// How a run of a task ended before an operator retried it: kept in the
/// task (`hist`), since the retry clears the state, error and attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PriorEnd {
    /// `dead` or `cancelled`.
    pub state: TaskState,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Attempts that run used.
    pub attempts: u32,
    pub finished_ms: u64,
    /// When it was retried.
    pub retried_ms: u64,
}

/// The fencing token of one attempt: `lua/assign.lua` issues one per
/// assign batch when it takes the batch's lease, and every task of the
/// batch carries it. Renew and complete must present it whole. Tokens
/// only rise (compared as (epoch, fence)): `fence` is the batch number,
/// global and rising, and `epoch` begins anew when Redis may have lost
/// writes (and with them batch numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FenceToken {
    pub epoch: u64,
    pub fence: u64,
}

impl FenceToken {
    /// Reads the `<epoch>.<fence>` form Redis stores (`b` of a task).
    pub fn parse(s: &str) -> Option<FenceToken> {
        let (epoch, fence) = s.split_once('.')?;
        Some(FenceToken {
            epoch: epoch.parse().ok()?,
            fence: fence.parse().ok()?,
        })
    }
}

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.fence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_token_reads_back_as_written_and_refuses_anything_else() {
        let t = FenceToken {
            epoch: 1795337600000,
            fence: 42,
        };
        assert_eq!(FenceToken::parse(&t.to_string()), Some(t));
        for bad in ["", "1", "1.", ".2", "1.2.3", "a.2", "1.-2"] {
            assert_eq!(FenceToken::parse(bad), None, "{bad}");
        }
        assert!(FenceToken { epoch: 2, fence: 1 } > FenceToken { epoch: 1, fence: 9 });
    }

    #[test]
    fn task_ids_are_22_base62_digits_that_sort_by_creation() {
        let first = TaskId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = TaskId::generate();
        assert_eq!(first.as_str().len(), 22);
        assert!(first.as_str().bytes().all(|c| c.is_ascii_alphanumeric()), "{first}");
        assert!(first < second, "{first} then {second}");
        assert_eq!(TaskId::parse(first.as_str()), Some(first.clone()));
    }

    #[test]
    fn base62_round_trips_at_the_edges() {
        for n in [0, 1, 61, 62, u128::from(u64::MAX), u128::MAX - 1, u128::MAX] {
            let s = base62(n);
            assert_eq!(s.len(), 22, "{s}");
            assert_eq!(from_base62(&s), Some(n));
        }
        assert_eq!(base62(0), "0000000000000000000000");
        assert_eq!(base62(u128::MAX), "7n42DGM5Tflk9n8mt7Fhc7");
        // Text order is number order.
        assert!(base62(61) < base62(62) && base62(u128::from(u64::MAX)) < base62(u128::MAX));
    }

    #[test]
    fn task_id_accepts_only_the_forms_ids_are_issued_in() {
        // Earlier releases' ids: canonical UUIDs only.
        let legacy = uuid::Uuid::now_v7().to_string();
        assert_eq!(TaskId::parse(&legacy).map(|t| t.to_string()), Some(legacy.clone()));
        assert_eq!(TaskId::parse(&legacy.to_uppercase()), None);
        // 22 digits past 2^128, a digit outside the alphabet, wrong lengths.
        assert_eq!(TaskId::parse("zzzzzzzzzzzzzzzzzzzzzz"), None);
        assert_eq!(TaskId::parse("7n42DGM5Tflk9n8mt7Fhc8"), None);
        assert_eq!(TaskId::parse("0000000000000000000-00"), None);
        assert_eq!(TaskId::parse("000000000000000000000"), None);
        assert_eq!(TaskId::parse("x}:t:evil"), None);
        assert_eq!(TaskId::parse(""), None);
    }

    #[test]
    fn states_round_trip_and_terminal_ones_are_known() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert!(TaskState::Dead.is_terminal());
        assert!(!TaskState::Running.is_terminal());
        assert_eq!(TaskState::parse("failed"), None);
    }
}
