//! Bodies of the signed stream messages (DESIGN §3). The envelope module
//! signs and verifies bytes; this module says what those bytes mean. Every
//! message names the task version it was issued for, so a replayed or
//! stale message is refused where it arrives: by the script it reaches, or,
//! for an assignment, by the worker's claim (which also checks that the
//! task's `ent` is the very entry it read).

use serde::{Deserialize, Serialize};

/// Message types; each is accepted only on the stream it belongs to.
pub const SUBMIT: &str = "submit";
pub const ASSIGN: &str = "assign";
pub const CANCEL: &str = "cancel";
pub const EVENT: &str = "event";

/// One task announced on the intake stream: what the distributor needs to
/// place it without reading the task record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakeTask {
    pub id: String,
    /// The version the task has while queued. Read as 1 when missing, so a
    /// later release can leave it out for a task just submitted (about 6
    /// bytes per queued task in the stream) without breaking distributors
    /// of this one during a rolling upgrade; written always, for the same
    /// reason in the other direction.
    #[serde(default = "first_version")]
    pub v: u64,
    pub h: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prio: i32,
}

fn is_zero(p: &i32) -> bool {
    *p == 0
}

fn first_version() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakeBody {
    pub tasks: Vec<IntakeTask>,
}

/// A task placed on a worker, with the version it has once assigned
/// (`running`, leased to that worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub id: String,
    pub v: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignBody {
    pub tasks: Vec<Assignment>,
}

/// Tells a worker to stop the attempt holding this fence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelBody {
    pub id: String,
    pub epoch: u64,
    pub fence: u64,
}

/// Tasks whose state changed; readers re-read the records (the events
/// stream is informational, the task hash is the truth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    pub ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_tasks_leave_out_default_tags_and_priority_and_read_them_back() {
        let fresh = IntakeTask {
            id: "a".into(),
            v: 1,
            h: "noop".into(),
            tags: vec![],
            prio: 0,
        };
        let json = serde_json::to_string(&fresh).unwrap();
        assert_eq!(json, r#"{"id":"a","v":1,"h":"noop"}"#);
        assert_eq!(serde_json::from_str::<IntakeTask>(&json).unwrap(), fresh);
        let without_version = r#"{"id":"a","h":"noop"}"#;
        assert_eq!(serde_json::from_str::<IntakeTask>(without_version).unwrap(), fresh);
        let moved = IntakeTask {
            v: 3,
            tags: vec!["gpu".into()],
            prio: -2,
            ..fresh
        };
        let json = serde_json::to_string(&moved).unwrap();
        assert_eq!(json, r#"{"id":"a","v":3,"h":"noop","tags":["gpu"],"prio":-2}"#);
        assert_eq!(serde_json::from_str::<IntakeTask>(&json).unwrap(), moved);
    }
}
