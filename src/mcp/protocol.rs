//! The wire of the Model Context Protocol as drover speaks it, both as a
//! server (`drover mcp`) and as a client (the `mcp` handler kind): JSON-RPC
//! 2.0 messages, one per line (the stdio transport: newline-delimited UTF-8
//! JSON, no embedded newlines), the protocol versions drover knows and how
//! one is agreed, and a bounded line reader so a peer cannot make drover
//! buffer without limit. Only what tools need is here: `initialize`,
//! `notifications/initialized`, `ping`, `tools/list`, `tools/call` and
//! `notifications/cancelled`; batches (removed from the spec in 2025-06-18)
//! are refused.

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The version drover asks for as a client and prefers as a server.
pub const LATEST_PROTOCOL_VERSION: &str = "2025-06-18";

/// Every version whose tool messages drover reads and writes correctly,
/// newest first. They differ, for tools, only in what 2025-06-18 added
/// (`structuredContent`, `outputSchema`), which older peers ignore;
/// 2025-11-25 adds only optional features drover neither offers nor asks
/// for (icons, tasks, elicitation by URL). Clients of 2026-07-28 probe with
/// `server/discover` first and fall back to `initialize` on "method not
/// found", which is what drover answers.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", LATEST_PROTOCOL_VERSION, "2025-03-26", "2024-11-05"];

/// The version a server answers `initialize` with: the client's if drover
/// knows it, else drover's latest (the client then decides whether to go on).
pub fn negotiate(requested: Option<&str>) -> &'static str {
    SUPPORTED_PROTOCOL_VERSIONS
        .into_iter()
        .find(|v| Some(*v) == requested)
        .unwrap_or(LATEST_PROTOCOL_VERSION)
}

/// JSON-RPC's reserved error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (JSON-RPC error {})", self.message, self.code)
    }
}

/// One message received, by what it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A call that wants a response under the same `id`.
    Request { id: Value, method: String, params: Value },
    /// A call without an `id`: nothing is answered.
    Notification { method: String, params: Value },
    /// The answer to a request of ours.
    Response { id: Value, result: Result<Value, RpcError> },
}

/// Reads one message. `Err` carries the error response to send back (with
/// the id when the message had one a response can name).
pub fn parse(line: &[u8]) -> Result<Incoming, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (Value::Null, RpcError::new(PARSE_ERROR, format!("not JSON: {e}"))))?;
    let Value::Object(mut msg) = value else {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "a message must be a JSON object"),
        ));
    };
    let id = msg.remove("id");
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            id.unwrap_or_default(),
            RpcError::new(INVALID_REQUEST, "jsonrpc must be \"2.0\""),
        ));
    }
    if let Some(method) = msg.get("method").and_then(Value::as_str).map(str::to_owned) {
        let params = msg.remove("params").unwrap_or(Value::Null);
        return Ok(match id {
            Some(id) => Incoming::Request { id, method, params },
            None => Incoming::Notification { method, params },
        });
    }
    let Some(id) = id else {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "neither a call nor a response"),
        ));
    };
    if let Some(result) = msg.remove("result") {
        return Ok(Incoming::Response { id, result: Ok(result) });
    }
    let error = msg.remove("error").unwrap_or_default();
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(INVALID_REQUEST);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error without a message");
    Ok(Incoming::Response {
        id,
        result: Err(RpcError::new(code, message)),
    })
}

pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

pub fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() }),
    }
}

/// One message as a line for the stdio transport. `serde_json` escapes
/// every newline inside strings, so the only one is the terminator.
pub fn to_line(message: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Why [`read_line`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("a message over {0} bytes")]
    TooLong(usize),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The next non-empty line without its terminator, `None` at end of input.
/// A line longer than `limit` bytes is an error: the stream cannot be
/// resynchronised after it, so the caller ends the session.
pub async fn read_line(reader: &mut (impl AsyncBufRead + Unpin), limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            // End of input: a last line without a newline still counts.
            return Ok((!line.iter().all(u8::is_ascii_whitespace)).then_some(line));
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if line.len() > limit.saturating_add(1) {
            return Err(ReadError::TooLong(limit));
        }
        if done {
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear();
                continue;
            }
            while line.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart() {
        let req = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            req,
            Incoming::Request {
                id: json!(7),
                method: "tools/list".into(),
                params: Value::Null
            }
        );
        let note = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(note, Incoming::Notification { method, .. } if method == "notifications/initialized"));
        let ok = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(
            ok,
            Incoming::Response {
                id: json!("a"),
                result: Ok(json!({}))
            }
        );
        let err = parse(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#).unwrap();
        assert_eq!(
            err,
            Incoming::Response {
                id: json!(1),
                result: Err(RpcError::new(METHOD_NOT_FOUND, "no"))
            }
        );
    }

    #[test]
    fn bad_messages_get_the_codes_of_the_spec() {
        assert_eq!(parse(b"{nope").unwrap_err().1.code, PARSE_ERROR);
        assert_eq!(parse(b"[1]").unwrap_err().1.code, INVALID_REQUEST);
        let (id, e) = parse(br#"{"id":3,"method":"ping"}"#).unwrap_err();
        assert_eq!((id, e.code), (json!(3), INVALID_REQUEST));
    }

    #[test]
    fn versions_are_agreed() {
        assert_eq!(negotiate(Some("2024-11-05")), "2024-11-05");
        assert_eq!(negotiate(Some("2099-01-01")), LATEST_PROTOCOL_VERSION);
        assert_eq!(negotiate(None), LATEST_PROTOCOL_VERSION);
    }

    #[tokio::test]
    async fn lines_are_read_whole_skipping_blanks_and_bounded() {
        let mut input: &[u8] = b"\n{\"a\":1}\r\n  \n{\"b\":2}";
        assert_eq!(read_line(&mut input, 100).await.unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(read_line(&mut input, 100).await.unwrap().unwrap(), b"{\"b\":2}");
        assert!(read_line(&mut input, 100).await.unwrap().is_none());
        let mut long: &[u8] = b"0123456789\n";
        assert!(matches!(read_line(&mut long, 4).await, Err(ReadError::TooLong(4))));
    }
}
