//! The OpenAPI document, generated from the handlers' annotations and the
//! request and response types, so it cannot drift from what is served.

use super::error::{self, ErrorBody};
use super::requests::{BatchRequest, FinishedTaskState, SubmitRequest};
use super::responses::{
    BatchResponse, CancelResponse, Discarded, Purged, QueueBody, QueueLimitsBody, QueueList, Retried, RetriedDead,
    Submitted, TaskBody, TaskList, WorkerBody, WorkerList,
};
// Globs, because `paths(...)` finds each operation as `__path_<handler>`
// in scope: a handler named through its module (`tasks::submit`) would be
// tagged with the module's name, and the document would change.
use super::dead_letter::*;
use super::listing::*;
use super::queue_control::*;
use super::queues::*;
use super::tasks::*;
use super::workers::*;
use crate::task::{PriorEnd, TaskState};
use axum::response::IntoResponse;
use axum::Json;
use utoipa::OpenApi;

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
    paths(submit, submit_batch, get_task, wait_task, cancel_task, list_tasks, retry_task, discard_task,
        list_queues, get_queue, pause_queue, resume_queue, drain_queue, set_queue_limits, retry_dead, purge,
        list_workers),
    components(schemas(SubmitRequest, BatchRequest, Submitted, BatchResponse, TaskBody, TaskState, TaskList,
        PriorEnd, FinishedTaskState, QueueBody, QueueLimitsBody, QueueList, Retried, Discarded, RetriedDead, Purged,
        WorkerList, WorkerBody, CancelResponse, ErrorBody, error::ErrorDetail)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

pub(super) async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
