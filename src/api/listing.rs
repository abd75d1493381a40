//! Listing tasks a page at a time. Finished tasks (succeeded, dead,
//! cancelled) come from their queue's index, and scheduled ones from the
//! scheduled set: ordered by time, exactly `limit` per page, with a cursor
//! that stays valid while tasks come and go, at a cost that grows with the
//! page, not the keyspace. Queued and running tasks, and lists of every
//! state, still come from a scan of the keyspace (docs/QUEUES.md says what
//! replaces it).

use super::auth::Scope;
use super::error::{ApiError, ErrorBody};
use super::requests::ListQuery;
use super::responses::{TaskBody, TaskList};
use super::state::ApiState;
use super::validate::queue_name;
use crate::names::QueueName;
use crate::store::{Page, PageCursor};
use crate::task::TaskState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use std::sync::Arc;

/// What a cursor of the wrong kind, or none we issued, is told.
const CURSOR_HELP: &str = "cursor: use the next_cursor of the previous page";

/// Lists tasks, optionally of one queue and in one state, a page at a time.
#[utoipa::path(get, path = "/v1/tasks", params(ListQuery),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "No such queue", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_tasks(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    s.authorize(&headers, Scope::Read)?;
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Malformed("limit: from 1 to 1000".into()));
    }
    let queue = match q.queue.as_deref() {
        None => None,
        Some(given) => {
            let queue = queue_name(Some(given)).map_err(|e| ApiError::Malformed(e.to_string()))?;
            if !s.ctx.store.queue_exists(&queue).await? {
                return Err(ApiError::NotFound(format!("no queue {given:?}")));
            }
            Some(queue)
        }
    };
    let store = &s.ctx.store;
    let indexed = |state: TaskState| state != TaskState::Succeeded || s.ctx.settings.index_succeeded;
    let page = match q.state {
        Some(state) if state.is_terminal() && indexed(state) => {
            let after = index_cursor(q.cursor.as_deref())?;
            store
                .finished_page(queue.as_ref(), state, after.as_ref(), limit)
                .await?
        }
        Some(TaskState::Scheduled) => {
            let after = index_cursor(q.cursor.as_deref())?;
            store.scheduled_page(queue.as_ref(), after.as_ref(), limit).await?
        }
        state => return scanned(&s, state, queue.as_ref(), q.cursor.as_deref(), limit).await,
    };
    let Page { tasks, next } = page;
    Ok(Json(TaskList {
        tasks: tasks.into_iter().map(TaskBody::from).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// An index page's cursor, `<ms>-<id>`, as `next_cursor` gave it.
fn index_cursor(given: Option<&str>) -> Result<Option<PageCursor>, ApiError> {
    given
        .map(|c| PageCursor::parse(c).ok_or_else(|| ApiError::Malformed(CURSOR_HELP.into())))
        .transpose()
}

/// A page from one step of a keyspace scan (the cursor is Redis' SCAN
/// cursor, digits only), filtered by state and queue: it may hold fewer
/// than `limit` tasks while more remain.
async fn scanned(
    s: &ApiState,
    state: Option<TaskState>,
    queue: Option<&QueueName>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Json<TaskList>, ApiError> {
    let cursor = cursor.unwrap_or("0");
    // Exactly what next_cursor looks like: digits, nothing else.
    if cursor.is_empty()
        || cursor.len() > 19
        || !cursor.bytes().all(|b| b.is_ascii_digit())
        || cursor.parse::<u64>().is_err()
    {
        return Err(ApiError::Malformed(CURSOR_HELP.into()));
    }
    let (tasks, next) = s.ctx.store.list_tasks(state, queue, cursor, limit).await?;
    Ok(Json(TaskList {
        tasks: tasks.into_iter().map(TaskBody::from).collect(),
        next_cursor: (next != "0").then_some(next),
    }))
}
