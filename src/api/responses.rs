//! What the API answers with, as the OpenAPI document names it: the
//! submission receipts, a task's record, task and worker lists, and the
//! cancel outcome. The task and worker records are the API's own types,
//! converted from the store's views, so the store can change what it reads
//! without changing the JSON clients get; their document names
//! (`TaskView`, `WorkerView`) are kept from when the store's types were
//! served as they are. Errors have their own module, `error.rs`.

use crate::names::QueueName;
use crate::store::WorkerView;
use crate::task::{PriorEnd, TaskState, TaskView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    pub tasks: Vec<TaskBody>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A queue: how many tasks it holds, whether it takes and starts them, and
/// its limits.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueBody {
    pub name: String,
    /// Tasks waiting in its backlog to start.
    pub queued: u64,
    /// Its tasks running now, over every worker.
    pub running: u64,
    /// Finished tasks whose result is still kept, by state. Succeeded ones
    /// are counted only when they are indexed (`limits.index_succeeded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<u64>,
    pub dead: u64,
    pub cancelled: u64,
    /// Nothing starts while paused; queued tasks stay queued.
    pub paused: bool,
    /// New submissions are refused (409 `queue_draining`) while draining.
    pub draining: bool,
    pub limits: QueueLimitsBody,
    /// How long the oldest queued task has waited, in ms; absent when none
    /// is queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_queued_ms: Option<u64>,
}

/// A queue's limits, enforced in Redis across every distributor. Absent
/// fields are no limit.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueLimitsBody {
    /// Most of the queue's tasks running at once (1 to 1000000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::requests::whole::opt_u32"
    )]
    #[schema(minimum = 1, maximum = 1000000)]
    pub concurrency: Option<u32>,
    /// Most tasks started per period, as `<count>/<period>`: `100/s`,
    /// `5000/m`, `10/h`, `30/10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9]{0,3}[1-9][0-9]{0,8}/([smh]|[0-9]{0,3}[1-9][0-9]{0,8}(ms|s|m|h))$")]
    pub rate: Option<String>,
    /// How many may start at once after a quiet spell (the token bucket's
    /// size, 1 to 1000000000); with `rate` only. Defaults to the rate's
    /// count.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::requests::whole::opt_u32"
    )]
    #[schema(minimum = 1, maximum = 1000000000)]
    pub burst: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueBody>,
}

/// A task an operator queued again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Retried {
    pub id: String,
    pub state: TaskState,
}

/// A finished task an operator deleted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Discarded {
    pub id: String,
}

/// How many dead tasks of a queue an operator queued again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetriedDead {
    pub queue: String,
    pub queued: u64,
}

/// How many finished tasks of a queue an operator deleted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    pub queue: String,
    pub state: TaskState,
    pub purged: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub id: String,
    /// `cancelled`, or `running` with `cancel_requested` while the worker stops it.
    pub state: TaskState,
    pub cancel_requested: bool,
}

/// A task as stored, for the API and the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = TaskView)]
pub struct TaskBody {
    pub id: String,
    pub state: TaskState,
    /// The queue the task is in.
    #[serde(default = "default_queue")]
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
    /// How earlier runs ended, oldest first, when an operator retried the
    /// task after it was dead or cancelled.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<PriorEnd>,
}

/// What a server that does not name queues means (before queues existed).
fn default_queue() -> String {
    QueueName::DEFAULT.to_string()
}

impl From<TaskView> for TaskBody {
    /// Field by field, destructured so that a field the store adds is a
    /// decision here (serve it or not), not a silent change of the API.
    fn from(t: TaskView) -> Self {
        let TaskView {
            id,
            state,
            queue,
            handler,
            input,
            tags,
            priority,
            attempts,
            max_attempts,
            timeout_ms,
            version,
            run_at_ms,
            created_ms,
            updated_ms,
            started_ms,
            finished_ms,
            worker,
            fence,
            result,
            error,
            cancel_requested,
            history,
        } = t;
        TaskBody {
            id,
            state,
            queue,
            handler,
            input,
            tags,
            priority,
            attempts,
            max_attempts,
            timeout_ms,
            version,
            run_at_ms,
            created_ms,
            updated_ms,
            started_ms,
            finished_ms,
            worker,
            fence,
            result,
            error,
            cancel_requested,
            history,
        }
    }
}

/// A worker as its heartbeats describe it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = WorkerView)]
pub struct WorkerBody {
    pub id: String,
    pub handlers: Vec<String>,
    pub tags: Vec<String>,
    /// The queues it takes tasks from, as `<queue>:<weight>`; empty: every
    /// queue.
    pub queues: Vec<String>,
    pub capacity: u32,
    /// Slots held by tasks assigned or running (the assign script's credit).
    pub used: u32,
    pub in_flight: u32,
    pub draining: bool,
    pub last_heartbeat_ms: u64,
    pub version: String,
}

impl From<WorkerView> for WorkerBody {
    /// Destructured for the same reason as [`TaskBody`]'s.
    fn from(w: WorkerView) -> Self {
        let WorkerView {
            id,
            handlers,
            tags,
            queues,
            capacity,
            used,
            in_flight,
            draining,
            last_heartbeat_ms,
            version,
        } = w;
        WorkerBody {
            id,
            handlers,
            tags,
            queues: queues.iter().map(ToString::to_string).collect(),
            capacity,
            used,
            in_flight,
            draining,
            last_heartbeat_ms,
            version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use utoipa::OpenApi;

    fn stored_task(all: bool) -> TaskView {
        TaskView {
            id: "0000000000000000000001".into(),
            state: if all { TaskState::Running } else { TaskState::Queued },
            queue: "default".into(),
            handler: "noop".into(),
            input: json!({"n": 1}),
            tags: vec!["gpu".into()],
            priority: -2,
            attempts: 1,
            max_attempts: 3,
            timeout_ms: 300_000,
            version: 7,
            run_at_ms: all.then_some(10),
            created_ms: 1,
            updated_ms: 2,
            started_ms: all.then_some(3),
            finished_ms: all.then_some(4),
            worker: all.then(|| "w1".into()),
            fence: all.then(|| "5.6".into()),
            result: all.then(|| json!([1, 2])),
            error: all.then(|| "boom".into()),
            cancel_requested: all,
            history: if all {
                vec![PriorEnd {
                    state: TaskState::Dead,
                    error: Some("first".into()),
                    attempts: 3,
                    finished_ms: 1,
                    retried_ms: 2,
                }]
            } else {
                Vec::new()
            },
        }
    }

    /// The JSON as served before the API had types of its own: names,
    /// shapes, and the fields left out when empty.
    #[test]
    fn a_task_reads_as_it_always_has() {
        let full = serde_json::to_value(TaskBody::from(stored_task(true))).unwrap();
        assert_eq!(
            full,
            json!({
                "id": "0000000000000000000001", "state": "running", "queue": "default", "handler": "noop",
                "input": {"n": 1}, "tags": ["gpu"], "priority": -2, "attempts": 1,
                "max_attempts": 3, "timeout_ms": 300000, "version": 7, "run_at_ms": 10,
                "created_ms": 1, "updated_ms": 2, "started_ms": 3, "finished_ms": 4,
                "worker": "w1", "fence": "5.6", "result": [1, 2], "error": "boom",
                "cancel_requested": true,
                "history": [{"state": "dead", "error": "first", "attempts": 3, "finished_ms": 1, "retried_ms": 2}]
            })
        );
        let bare = serde_json::to_value(TaskBody::from(stored_task(false))).unwrap();
        assert_eq!(
            bare,
            json!({
                "id": "0000000000000000000001", "state": "queued", "queue": "default", "handler": "noop",
                "input": {"n": 1}, "tags": ["gpu"], "priority": -2, "attempts": 1,
                "max_attempts": 3, "timeout_ms": 300000, "version": 7,
                "created_ms": 1, "updated_ms": 2
            })
        );
        // What the CLI's client reads back is what was served.
        let back: TaskBody = serde_json::from_value(bare.clone()).unwrap();
        assert_eq!(serde_json::to_value(back).unwrap(), bare);
    }

    #[test]
    fn a_worker_reads_as_it_always_has() {
        let w = WorkerBody::from(WorkerView {
            id: "w1".into(),
            handlers: vec!["noop".into()],
            tags: vec![],
            queues: vec![],
            capacity: 8,
            used: 2,
            in_flight: 1,
            draining: false,
            last_heartbeat_ms: 99,
            version: "0.1.0".into(),
        });
        assert_eq!(
            serde_json::to_value(w).unwrap(),
            json!({
                "id": "w1", "handlers": ["noop"], "tags": [], "queues": [], "capacity": 8, "used": 2,
                "in_flight": 1, "draining": false, "last_heartbeat_ms": 99, "version": "0.1.0"
            })
        );
    }

    /// The document keeps the schema names clients know, and each schema
    /// lists exactly the fields the type serves.
    #[test]
    fn the_document_describes_the_served_fields_under_the_old_names() {
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let full_worker = json!({
            "id": "", "handlers": [], "tags": [], "queues": [], "capacity": 0, "used": 0, "in_flight": 0,
            "draining": false, "last_heartbeat_ms": 0, "version": ""
        });
        let full_task = serde_json::to_value(TaskBody::from(stored_task(true))).unwrap();
        for (name, served) in [("TaskView", full_task), ("WorkerView", full_worker)] {
            let mut documented: Vec<&String> = schemas[name]["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name} missing from the document"))
                .keys()
                .collect();
            let mut fields: Vec<&String> = served.as_object().unwrap().keys().collect();
            documented.sort();
            fields.sort();
            assert_eq!(documented, fields, "{name}");
        }
        assert!(schemas.get("TaskBody").is_none() && schemas.get("WorkerBody").is_none());
    }
}
