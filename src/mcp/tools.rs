//! The tools of `drover mcp`: their names, descriptions and input schemas
//! (JSON Schema, as `tools/list` returns them), and one function per tool
//! that turns its arguments into calls of the API through
//! [`crate::client::Client`] with the caller's own token, so what an agent
//! may do is exactly what that token's scopes allow. Answers are the API's
//! documents as they are (`structuredContent`, and the same JSON as text);
//! an API error is a tool result with `isError` carrying its status, code
//! and message, so the agent can read why and act on it.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::protocol::{RpcError, INVALID_PARAMS};
use crate::api::SubmitRequest;
use crate::client::{CallError, Client};

/// The longest `wait_task` waits in one call, whatever it is asked.
const WAIT_MAX: Duration = Duration::from_secs(3600);
/// One long-poll of `wait_task`; the API caps a wait at its own maximum too.
const WAIT_STEP: Duration = Duration::from_secs(30);

/// Every tool, as `tools/list` returns it.
pub fn list() -> Value {
    let id = json!({ "type": "string", "description": "Task id, as submit_task returned it." });
    let duration = |what: &str| json!({ "type": "string", "pattern": "^[0-9]{1,12}(ms|s|m|h)$", "description": what });
    json!([
        {
            "name": "submit_task",
            "title": "Submit a task",
            "description": "Submit one task to drover: a handler some worker offers, and its JSON input. Returns the task's id and state; use wait_task to get its result.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "handler": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "A handler some worker profile offers (see list_workers)." },
                    "input": { "description": "Any JSON value; handed to the handler as is." },
                    "queue": { "type": "string", "pattern": "^[a-z0-9_-]{1,64}$", "description": "Queue to put the task in (default: default)." },
                    "priority": { "type": "integer", "description": "Higher runs first among waiting tasks." },
                    "tags": { "type": "array", "items": { "type": "string" }, "description": "Tags a worker must all have to take the task." },
                    "max_attempts": { "type": "integer", "minimum": 1, "maximum": 1000, "description": "Attempts before the task is dead." },
                    "timeout": duration("Time limit of one attempt, e.g. 30s."),
                    "delay": duration("Run no earlier than this long from now, e.g. 5m."),
                    "idempotency_key": { "type": "string", "description": "Submitting again with the same key returns the first task instead of a new one." },
                    "unique_key": { "type": "string", "description": "While a task with this key is live, submitting it again returns that task." }
                },
                "required": ["handler"],
                "additionalProperties": false
            },
            "annotations": { "readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": true }
        },
        {
            "name": "get_task",
            "title": "Read a task",
            "description": "Read one task: its state, attempts, and its result or error once finished.",
            "inputSchema": { "type": "object", "properties": { "id": id }, "required": ["id"], "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        },
        {
            "name": "wait_task",
            "title": "Wait for a task",
            "description": "Wait until a task has finished (succeeded, dead or cancelled) or timeout_seconds pass, then return it either way; check its state.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "id": id,
                    "timeout_seconds": { "type": "number", "minimum": 0, "maximum": WAIT_MAX.as_secs(), "description": "Longest wait (default 30)." }
                },
                "required": ["id"],
                "additionalProperties": false
            },
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        },
        {
            "name": "cancel_task",
            "title": "Cancel a task",
            "description": "Cancel a task: a waiting one is cancelled at once, a running one is stopped by its worker.",
            "inputSchema": { "type": "object", "properties": { "id": id }, "required": ["id"], "additionalProperties": false },
            "annotations": { "readOnlyHint": false, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false }
        },
        {
            "name": "list_tasks",
            "title": "List tasks",
            "description": "List tasks, optionally of one state and one queue, a page at a time (pass next_cursor back as cursor).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "state": { "type": "string", "enum": ["queued", "scheduled", "assigned", "running", "succeeded", "dead", "cancelled"] },
                    "queue": { "type": "string" },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 1000, "description": "Tasks per page (default 100)." },
                    "cursor": { "type": "string" }
                },
                "additionalProperties": false
            },
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        },
        {
            "name": "list_queues",
            "title": "List queues",
            "description": "List queues with their counts of finished tasks.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        },
        {
            "name": "list_workers",
            "title": "List workers",
            "description": "List live workers: the handlers each offers, its tags and free slots.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": { "readOnlyHint": true, "openWorldHint": false }
        }
    ])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitArgs {
    handler: String,
    #[serde(default)]
    input: Value,
    queue: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    tags: Vec<String>,
    max_attempts: Option<u32>,
    timeout: Option<String>,
    delay: Option<String>,
    idempotency_key: Option<String>,
    unique_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    id: String,
    timeout_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    state: Option<String>,
    queue: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Why a tool call has no answer from the API.
#[derive(Debug)]
enum Failure {
    /// The arguments do not fit the tool's schema.
    Arguments(String),
    Api(CallError),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        Failure::Api(e)
    }
}

/// Runs tool `name` with `arguments`; the value is a `tools/call` result.
/// Only an unknown tool is a protocol error (as the spec has it); bad
/// arguments and API errors are results with `isError`, for the agent.
pub async fn call(client: &Client, name: &str, arguments: Value) -> Result<Value, RpcError> {
    // A call without arguments is a call with none.
    let arguments = if arguments.is_null() { json!({}) } else { arguments };
    let outcome = match name {
        "submit_task" => submit(client, arguments).await,
        "get_task" => get(client, arguments).await,
        "wait_task" => wait(client, arguments).await,
        "cancel_task" => cancel(client, arguments).await,
        "list_tasks" => list_tasks(client, arguments).await,
        "list_queues" => plain_get(client, arguments, "/v1/queues").await,
        "list_workers" => plain_get(client, arguments, "/v1/workers").await,
        _ => return Err(RpcError::new(INVALID_PARAMS, format!("unknown tool {name:?}"))),
    };
    Ok(match outcome {
        Ok(value) => success(value),
        Err(failure) => error_result(&failure),
    })
}

fn parse<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<T, Failure> {
    serde_json::from_value(arguments).map_err(|e| Failure::Arguments(format!("arguments: {e}")))
}

/// `/v1/tasks/<id><tail>`, for an id that cannot change the route: task
/// ids are UUIDs, so anything beyond letters, digits and `-` is refused
/// here rather than sent.
fn task_path(id: &str, tail: &str) -> Result<String, Failure> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Failure::Arguments(format!("id: {id:?} is not a task id")));
    }
    Ok(format!("/v1/tasks/{id}{tail}"))
}

async fn submit(client: &Client, arguments: Value) -> Result<Value, Failure> {
    let a: SubmitArgs = parse(arguments)?;
    let request = SubmitRequest {
        handler: a.handler,
        input: a.input,
        tags: a.tags,
        queue: a.queue,
        priority: a.priority,
        max_attempts: a.max_attempts,
        timeout: a.timeout,
        run_at_ms: None,
        delay: a.delay,
        idempotency_key: None,
        unique_key: a.unique_key,
        unique_for: None,
    };
    let body = serde_json::to_value(&request).map_err(|e| Failure::Arguments(e.to_string()))?;
    let key = a.idempotency_key.as_deref();
    Ok(client.call(Method::POST, "/v1/tasks", &[], Some(&body), key).await?)
}

async fn get(client: &Client, arguments: Value) -> Result<Value, Failure> {
    let a: IdArgs = parse(arguments)?;
    Ok(client
        .call(Method::GET, &task_path(&a.id, "")?, &[], None, None)
        .await?)
}

async fn cancel(client: &Client, arguments: Value) -> Result<Value, Failure> {
    let a: IdArgs = parse(arguments)?;
    let path = task_path(&a.id, "/cancel")?;
    Ok(client.call(Method::POST, &path, &[], None, None).await?)
}

/// Long-polls in steps of [`WAIT_STEP`] until the task has finished or the
/// wait is over, and returns the task as last read.
async fn wait(client: &Client, arguments: Value) -> Result<Value, Failure> {
    let a: WaitArgs = parse(arguments)?;
    let seconds = a.timeout_seconds.unwrap_or(30.0);
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(Failure::Arguments(
            "timeout_seconds: must be a number of seconds, 0 or more".into(),
        ));
    }
    let total = Duration::from_secs_f64(seconds).min(WAIT_MAX);
    let path = task_path(&a.id, "/wait")?;
    let deadline = Instant::now() + total;
    loop {
        let step = deadline.saturating_duration_since(Instant::now()).min(WAIT_STEP);
        let query = [("timeout", format!("{}ms", step.as_millis()))];
        let task = client.call(Method::GET, &path, &query, None, None).await?;
        let finished = matches!(
            task.get("state").and_then(Value::as_str),
            Some("succeeded" | "dead" | "cancelled")
        );
        if finished || Instant::now() >= deadline {
            return Ok(task);
        }
    }
}

async fn list_tasks(client: &Client, arguments: Value) -> Result<Value, Failure> {
    let a: ListArgs = parse(arguments)?;
    let mut query = vec![("limit", a.limit.unwrap_or(100).to_string())];
    query.extend(a.state.map(|s| ("state", s)));
    query.extend(a.queue.map(|q| ("queue", q)));
    query.extend(a.cursor.map(|c| ("cursor", c)));
    Ok(client.call(Method::GET, "/v1/tasks", &query, None, None).await?)
}

async fn plain_get(client: &Client, arguments: Value, path: &str) -> Result<Value, Failure> {
    let NoArgs {} = parse(arguments)?;
    Ok(client.call(Method::GET, path, &[], None, None).await?)
}

/// A result the agent reads: the API's document as structured content,
/// and the same as text for clients that only show text.
fn success(value: Value) -> Value {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    // structuredContent must be an object; every answer of the API is one.
    let mut result = json!({ "content": [{ "type": "text", "text": text }], "isError": false });
    if value.is_object() {
        result["structuredContent"] = value;
    }
    result
}

fn error_result(failure: &Failure) -> Value {
    let (text, error) = match failure {
        Failure::Arguments(why) => (why.clone(), json!({ "code": "invalid_arguments", "message": why })),
        Failure::Api(e @ CallError::Api { status, code, message }) => (
            e.to_string(),
            json!({ "status": status, "code": code, "message": message }),
        ),
        Failure::Api(e @ CallError::Transport(why)) => {
            (e.to_string(), json!({ "code": "unreachable", "message": why }))
        }
    };
    json!({
        "content": [{ "type": "text", "text": text }],
        "structuredContent": { "error": error },
        "isError": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let tools = list();
        let names: Vec<&str> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "submit_task",
                "get_task",
                "wait_task",
                "cancel_task",
                "list_tasks",
                "list_queues",
                "list_workers"
            ]
        );
        for tool in tools.as_array().unwrap() {
            assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
            assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()), "{tool}");
        }
    }

    #[test]
    fn task_ids_cannot_change_the_route() {
        assert_eq!(
            task_path("0193a0a0-0000-7000", "/wait").unwrap(),
            "/v1/tasks/0193a0a0-0000-7000/wait"
        );
        for bad in ["", "../workers", "a?b=c", "a/b", "a%2f"] {
            assert!(matches!(task_path(bad, ""), Err(Failure::Arguments(_))), "{bad}");
        }
    }

    #[test]
    fn api_errors_are_results_with_their_code() {
        let r = error_result(&Failure::Api(CallError::Api {
            status: 400,
            code: "unknown_handler".into(),
            message: "no worker offers handler \"x\"".into(),
        }));
        assert_eq!(r["isError"], true);
        assert_eq!(r["structuredContent"]["error"]["code"], "unknown_handler");
        assert_eq!(r["structuredContent"]["error"]["status"], 400);
        assert_eq!(
            r["content"][0]["text"],
            "API error 400: no worker offers handler \"x\" (unknown_handler)"
        );
    }

    #[tokio::test]
    async fn unknown_tools_are_protocol_errors_and_bad_arguments_tool_errors() {
        let client = Client::new("http://127.0.0.1:9", None).unwrap();
        let e = call(&client, "rm_rf", json!({})).await.unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        let r = call(&client, "get_task", json!({ "id": 5 })).await.unwrap();
        assert_eq!(r["isError"], true);
        assert_eq!(r["structuredContent"]["error"]["code"], "invalid_arguments");
        let r = call(&client, "list_queues", json!({ "surprise": 1 })).await.unwrap();
        assert_eq!(r["isError"], true);
    }
}
