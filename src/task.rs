//! The task as the rest of the crate sees it: identifiers, states, what a
//! client submits and what it reads back. Redis field names stay in
//! `store`; this module only speaks in domain types.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// A task's identifier: a UUIDv7, so ids sort roughly by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    pub fn generate() -> Self {
        TaskId(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts only the canonical UUID form, so an id taken from a URL can
    /// never smuggle key syntax into a Redis key name.
    pub fn parse(s: &str) -> Option<Self> {
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

/// The states of DESIGN §2. `failed` is not a state of its own: a failed
/// attempt becomes `scheduled` (retry) or `dead`.
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
}

/// A task as stored, for the API and the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    pub state: TaskState,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The fencing token of the latest attempt, `epoch.fence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Any JSON value the handler returned.
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub cancel_requested: bool,
}

/// The fencing token of one attempt. Both parts must match for renew and
/// complete; `lua/assign.lua` issues it when it takes the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceToken {
    pub epoch: u64,
    pub fence: u64,
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
    fn task_id_accepts_only_canonical_uuids() {
        let id = TaskId::generate();
        assert_eq!(TaskId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(TaskId::parse(&id.as_str().to_uppercase()), None);
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
