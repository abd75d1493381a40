//! An MCP server over streamable HTTP (`url = "…"`): every message is a
//! POST to the one URL, answered with the response as JSON or as an SSE
//! stream that carries it (and maybe notifications and requests of the
//! server first). [`HttpSession::start`] runs `initialize` and keeps the
//! `Mcp-Session-Id` the server gives; every later POST sends it and
//! `MCP-Protocol-Version`. A 404 for a session, or a server that cannot be
//! reached, ends the session, so the next task initializes a new one (the
//! stdio kind's restart). Redirects are not followed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Client, Response, StatusCode, Url};
use serde_json::{json, Value};

use super::session::CallError;
use crate::mcp::protocol::{self, Incoming, RpcError, LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS};

const SESSION_HEADER: &str = "mcp-session-id";

/// An initialized session with one server URL.
pub(super) struct HttpSession {
    client: Client,
    url: Url,
    session_id: Option<String>,
    version: String,
    max_message: usize,
    next_id: AtomicU64,
    ended: Mutex<Option<String>>,
}

impl HttpSession {
    pub(super) async fn start(client: Client, url: Url, max_message: usize) -> Result<HttpSession, String> {
        let mut session = HttpSession {
            client,
            url,
            session_id: None,
            version: LATEST_PROTOCOL_VERSION.to_owned(),
            max_message,
            next_id: AtomicU64::new(1),
            ended: Mutex::new(None),
        };
        let init = protocol::request(
            0,
            "initialize",
            json!({
                "protocolVersion": LATEST_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "drover", "version": env!("CARGO_PKG_VERSION") }
            }),
        );
        let response = session.post(&init).await.map_err(|e| format!("initialize: {e}"))?;
        session.session_id = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let result = session.answer(response, 0).await.map_err(|e| match e {
            CallError::Rpc(e) => format!("initialize: {e}"),
            CallError::Ended(why) => format!("initialize: {why}"),
        })?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&version) {
            return Err(format!(
                "the server speaks MCP {version:?}; drover speaks {}",
                SUPPORTED_PROTOCOL_VERSIONS.join(", ")
            ));
        }
        session.version = version.to_owned();
        let note = protocol::notification("notifications/initialized", json!({}));
        session.post(&note).await.map_err(|e| format!("initialize: {e}"))?;
        Ok(session)
    }

    pub(super) fn ended(&self) -> bool {
        self.ended.lock().expect("session end").is_some()
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Request `id`: its answer, or why there is none. Dropping the future
    /// drops the HTTP request.
    pub(super) async fn call(&self, id: u64, method: &str, params: Value) -> Result<Value, CallError> {
        if let Some(why) = self.ended.lock().expect("session end").clone() {
            return Err(CallError::Ended(why));
        }
        let response = match self.post(&protocol::request(id, method, params)).await {
            Ok(r) => r,
            Err(why) => return Err(self.end(why)),
        };
        self.answer(response, id).await
    }

    pub(super) async fn cancel(&self, id: u64, reason: &str) {
        let note = protocol::notification("notifications/cancelled", json!({ "requestId": id, "reason": reason }));
        let _ = tokio::time::timeout(Duration::from_secs(1), self.post(&note)).await;
    }

    fn end(&self, why: String) -> CallError {
        tracing::warn!(url = %self.url, reason = %why, "mcp session ended");
        self.ended.lock().expect("session end").get_or_insert(why.clone());
        CallError::Ended(why)
    }

    /// POSTs one message; a status other than 2xx is an error here.
    async fn post(&self, message: &Value) -> Result<Response, String> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", &self.version)
            .body(message.to_string());
        if let Some(id) = &self.session_id {
            request = request.header(SESSION_HEADER, id);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("the MCP server at {} cannot be reached: {e}", self.url))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND && self.session_id.is_some() {
            return Err("the MCP server ended the session (HTTP 404)".into());
        }
        if !status.is_success() {
            return Err(format!("the MCP server answered HTTP {}", status.as_u16()));
        }
        Ok(response)
    }

    /// The answer to request `id` in `response`: the body itself (JSON), or
    /// the message with that id in its event stream.
    async fn answer(&self, mut response: Response, id: u64) -> Result<Value, CallError> {
        let sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| self.end(format!("reading the MCP server's answer: {e}")))?;
            let Some(chunk) = chunk else { break };
            buffer.extend_from_slice(&chunk);
            if buffer.len() > self.max_message {
                return Err(CallError::Rpc(RpcError::new(
                    protocol::INVALID_REQUEST,
                    format!("the answer is over {} bytes", self.max_message),
                )));
            }
            if sse {
                // Events end with a blank line; each one's data lines form a message.
                while let Some(end) = find_event_end(&buffer) {
                    let event: Vec<u8> = buffer.drain(..end).collect();
                    if let Some(found) = self.event(&event, id).await {
                        return found;
                    }
                }
            }
        }
        if sse {
            if let Some(found) = self.event(&buffer, id).await {
                return found;
            }
            return Err(self.end("the MCP server's event stream ended without the answer".into()));
        }
        self.message(&buffer, id)
            .await
            .unwrap_or_else(|| Err(self.end("the MCP server's answer names another request".into())))
    }

    /// One SSE event: its data lines joined, as a message.
    async fn event(&self, event: &[u8], id: u64) -> Option<Result<Value, CallError>> {
        let text = String::from_utf8_lossy(event);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return None;
        }
        self.message(data.join("\n").as_bytes(), id).await
    }

    /// A message from the server: `Some` when it is the answer to `id`.
    async fn message(&self, bytes: &[u8], id: u64) -> Option<Result<Value, CallError>> {
        match protocol::parse(bytes) {
            Ok(Incoming::Response { id: got, result }) if got.as_u64() == Some(id) => {
                Some(result.map_err(CallError::Rpc))
            }
            Ok(Incoming::Request { id: rid, method, .. }) => {
                let answer = match method.as_str() {
                    "ping" => Ok(json!({})),
                    other => Err(RpcError::new(
                        protocol::METHOD_NOT_FOUND,
                        format!("drover does not offer {other:?}"),
                    )),
                };
                let _ = self.post(&protocol::response(rid, answer)).await;
                None
            }
            Ok(_) => None,
            Err((_, e)) => Some(Err(self.end(format!("the MCP server broke the protocol: {e}")))),
        }
    }
}

/// Where the first complete event of `buffer` ends (after its blank line).
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
