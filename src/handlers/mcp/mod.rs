//! `mcp` handlers: each task is one call of one tool of an MCP server.
//!
//! `{ kind = "mcp", command = [...], tool = "name" }` names a stdio server:
//! the worker starts it on the first task, keeps it for the next ones
//! (tasks share it, each call under its own JSON-RPC id), and starts a new
//! one when it has died. The task's input (a JSON object, or `null` for
//! none) is the tool's arguments, and `_meta` carries `drover/task_id`,
//! `drover/attempt` and `drover/fence` (the `epoch.fence` token) for a tool
//! that fences its writes. The tool's `structuredContent`, else its
//! `content` array, is the result; `isError` fails the attempt with the
//! tool's text. The task's timeout and cancellation apply to the call (and
//! to starting the server): the call is given up and the server told with
//! `notifications/cancelled`. A server that dies mid-call fails that
//! attempt (drover retries it as any failure) and is restarted for the next.
//!
//! `{ kind = "mcp", url = "https://…", tool = "name" }` names a server over
//! streamable HTTP instead: the first task initializes a session, the next
//! ones reuse it, and a session the server ended (HTTP 404) or a server that
//! cannot be reached fails that attempt and makes the next task start anew.
//!
//! Layout: the profile entry in `spec`, the process in `process`, the
//! JSON-RPC session over stdio in `session` and over HTTP in `http`, the
//! tool's answer as an outcome in `result`; the protocol itself is
//! `crate::mcp::protocol`.

mod http;
mod process;
mod result;
mod session;
mod spec;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Handler, HandlerError, HandlerFuture, SpecError, TaskContext};
use http::HttpSession;
use session::{CallError, Session};
pub use spec::McpSpec;
use spec::Target;

/// Room for the envelope of a result around its content, and for a result
/// given twice (as `structuredContent` and as text), in one message.
const MESSAGE_SLACK: usize = 64 * 1024;

/// Calls one tool of one MCP server per task; see the module documentation.
#[derive(Clone)]
pub struct McpHandler {
    inner: Arc<Inner>,
}

struct Inner {
    handler: String,
    target: Target,
    /// For servers over HTTP.
    client: reqwest::Client,
    env: BTreeMap<String, String>,
    tool: String,
    max_output: usize,
    /// The running server, if any. Held across a start, so concurrent tasks
    /// wait for one server rather than each starting their own.
    session: tokio::sync::Mutex<Option<Arc<Live>>>,
}

/// A session with the server, by transport.
enum Live {
    Stdio(Session),
    Http(HttpSession),
}

type Answer<'a> = Pin<Box<dyn Future<Output = Result<Value, CallError>> + Send + 'a>>;

impl Live {
    fn ended(&self) -> bool {
        match self {
            Live::Stdio(s) => s.ended(),
            Live::Http(s) => s.ended(),
        }
    }

    fn call(&self, method: &'static str, params: Value) -> (u64, Answer<'_>) {
        match self {
            Live::Stdio(s) => {
                let (id, answer) = s.call(method, params);
                (id, Box::pin(answer))
            }
            Live::Http(s) => {
                let id = s.next_id();
                (id, Box::pin(s.call(id, method, params)))
            }
        }
    }

    async fn cancel(&self, id: u64, reason: &str) {
        match self {
            Live::Stdio(s) => s.cancel(id, reason).await,
            Live::Http(s) => s.cancel(id, reason).await,
        }
    }
}

impl std::fmt::Debug for McpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpHandler")
            .field("target", &self.inner.target)
            .field("tool", &self.inner.tool)
            .finish()
    }
}

impl McpHandler {
    /// Validates a profile entry named `handler`. Nothing starts until the
    /// first task. The `timeout` key is not read here: the worker folds it
    /// into [`TaskContext::timeout`].
    pub fn from_spec(handler: &str, spec: &McpSpec) -> Result<McpHandler, SpecError> {
        let checked = spec.check(handler)?;
        let client = super::http::build_client().map_err(|e| SpecError::HttpClient {
            handler: handler.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(McpHandler {
            inner: Arc::new(Inner {
                handler: handler.to_owned(),
                target: checked.target,
                client,
                env: checked.env,
                tool: checked.tool,
                max_output: checked.max_output,
                session: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

impl Handler for McpHandler {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.run(ctx, input).await })
    }
}

impl Inner {
    async fn run(&self, ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
        if ctx.cancel.is_cancelled() {
            return Err(HandlerError::Cancelled);
        }
        let arguments = match input {
            Value::Null => json!({}),
            Value::Object(_) => input,
            other => {
                return Err(HandlerError::Failed(format!(
                    "the input must be a JSON object (the tool's arguments), not {}",
                    kind_of(&other)
                )))
            }
        };
        let deadline = tokio::time::sleep(ctx.timeout);
        tokio::pin!(deadline);
        let session = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(HandlerError::Cancelled),
            () = &mut deadline => return Err(HandlerError::Timeout(ctx.timeout)),
            session = self.session() => session?,
        };
        let params = json!({
            "name": self.tool,
            "arguments": arguments,
            "_meta": {
                "drover/task_id": ctx.task_id,
                "drover/attempt": ctx.attempt,
                "drover/fence": ctx.fence_token(),
            }
        });
        let (id, answer) = session.call("tools/call", params);
        let (given_up, reason) = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => (HandlerError::Cancelled, "the task was cancelled"),
            () = &mut deadline => (HandlerError::Timeout(ctx.timeout), "the task timed out"),
            answer = answer => return match answer {
                Ok(result) => result::outcome(result, self.max_output),
                Err(CallError::Rpc(e)) => Err(HandlerError::Failed(format!("tools/call {}: {e}", self.tool))),
                Err(CallError::Ended(why)) => Err(HandlerError::Failed(format!("{why} (mid-call)"))),
            },
        };
        session.cancel(id, reason).await;
        Err(given_up)
    }

    /// The running server, started if there is none or it has died.
    async fn session(&self) -> Result<Arc<Live>, HandlerError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref().filter(|s| !s.ended()) {
            return Ok(Arc::clone(session));
        }
        // A dead server's session is dropped here (its group was killed already).
        *slot = None;
        let max_message = self.max_output.saturating_mul(2).saturating_add(MESSAGE_SLACK);
        let session = match &self.target {
            Target::Command(command) => {
                tracing::info!(handler = %self.handler, ?command, "starting mcp server");
                Live::Stdio(
                    Session::start(&self.handler, command, &self.env, max_message)
                        .await
                        .map_err(HandlerError::Start)?,
                )
            }
            Target::Url(url) => Live::Http(
                HttpSession::start(self.client.clone(), url.clone(), max_message)
                    .await
                    .map_err(HandlerError::Start)?,
            ),
        };
        Ok(Arc::clone(slot.insert(Arc::new(session))))
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
