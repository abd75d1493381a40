//! What the API answers with, as the OpenAPI document names it: the
//! submission receipts, task and worker lists, and the cancel outcome.
//! Errors have their own module, `error.rs`.

use crate::store::WorkerView;
use crate::task::{TaskState, TaskView};
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
