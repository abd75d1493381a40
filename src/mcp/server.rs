//! `drover mcp`: one MCP session on stdin and stdout (the stdio
//! transport). Requests are answered as they finish, not in order: each
//! `tools/call` runs as a task of its own, so a long `wait_task` does not
//! hold up a `get_task` sent after it, and `notifications/cancelled` for its
//! id stops it (no answer is sent then, as the spec says). The session ends
//! when the client closes stdin; calls still running are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::protocol::{self, Incoming, RpcError, METHOD_NOT_FOUND};
use super::tools;
use crate::client::Client;

/// The longest message drover reads from a client (tool arguments carry a
/// task's input, which the API bounds well below this).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Serves one session on this process' stdin and stdout.
pub async fn stdio(client: Client) -> anyhow::Result<()> {
    serve(client, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves one session on `input` and `output` until `input` ends.
pub async fn serve(
    client: Client,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(write_all(rx, output));
    // Calls in flight by request id (as JSON text, since ids are numbers or strings).
    let running: Arc<Mutex<HashMap<String, AbortHandle>>> = Arc::default();
    let mut input = BufReader::new(input);
    loop {
        let line = match protocol::read_line(&mut input, MAX_MESSAGE).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(protocol::response(
                    Value::Null,
                    Err(RpcError::new(protocol::INVALID_REQUEST, e.to_string())),
                ));
                break;
            }
        };
        match protocol::parse(&line) {
            Err((id, e)) => {
                let _ = tx.send(protocol::response(id, Err(e)));
            }
            Ok(Incoming::Request { id, method, params }) if method == "tools/call" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
                let (client, tx, key) = (client.clone(), tx.clone(), id.to_string());
                let done = Arc::clone(&running);
                let handle = tokio::spawn({
                    let key = key.clone();
                    async move {
                        let result = tools::call(&client, &name, arguments).await;
                        // Answer only if not cancelled meanwhile.
                        if done.lock().expect("running calls").remove(&key).is_some() {
                            let _ = tx.send(protocol::response(id, result));
                        }
                    }
                });
                running
                    .lock()
                    .expect("running calls")
                    .insert(key, handle.abort_handle());
            }
            Ok(Incoming::Request { id, method, params }) => {
                let _ = tx.send(protocol::response(id, answer(&method, &params)));
            }
            Ok(Incoming::Notification { method, params }) => {
                if method == "notifications/cancelled" {
                    let key = params.get("requestId").map(Value::to_string).unwrap_or_default();
                    if let Some(handle) = running.lock().expect("running calls").remove(&key) {
                        handle.abort();
                    }
                }
                // notifications/initialized and others need nothing.
            }
            // drover sends no requests, so there is nothing to match a response to.
            Ok(Incoming::Response { .. }) => {}
        }
    }
    for (_, handle) in running.lock().expect("running calls").drain() {
        handle.abort();
    }
    drop(tx);
    writer.await??;
    Ok(())
}

/// The answer to every request but `tools/call`.
fn answer(method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "initialize" => {
            let requested = params.get("protocolVersion").and_then(Value::as_str);
            Ok(json!({
                "protocolVersion": protocol::negotiate(requested),
                "capabilities": { "tools": { "listChanged": false } },
                "serverInfo": { "name": "drover", "title": "drover tasks", "version": env!("CARGO_PKG_VERSION") },
                "instructions": "Run work as drover tasks: submit_task with a handler (list_workers shows which exist) and its input, then wait_task for the result. Tasks are retried, time-limited and can be cancelled."
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools::list() })),
        other => Err(RpcError::new(METHOD_NOT_FOUND, format!("method {other:?} not found"))),
    }
}

/// Writes each message as one line, flushing after each: the client waits
/// for whole answers.
async fn write_all(mut rx: mpsc::UnboundedReceiver<Value>, mut output: impl AsyncWrite + Unpin) -> anyhow::Result<()> {
    while let Some(message) = rx.recv().await {
        output.write_all(&protocol::to_line(&message)).await?;
        output.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// One session over in-memory pipes: sends `lines`, closes, returns every answer.
    async fn session(lines: &[Value]) -> Vec<Value> {
        let client = Client::new("http://127.0.0.1:9", None).unwrap();
        let (mut to_server, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, from_server) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve(client, server_in, server_out));
        for line in lines {
            to_server.write_all(&protocol::to_line(line)).await.unwrap();
        }
        drop(to_server);
        server.await.unwrap().unwrap();
        let mut answers = Vec::new();
        let mut reader = BufReader::new(from_server).lines();
        while let Some(line) = reader.next_line().await.unwrap() {
            answers.push(serde_json::from_str(&line).unwrap());
        }
        answers
    }

    /// An API that answers every request with `body` after `delay`.
    async fn slow_api(delay: std::time::Duration, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut con, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = tokio::io::AsyncReadExt::read(&mut con, &mut buf).await;
                    tokio::time::sleep(delay).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = con.write_all(reply.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_cancelled_call_is_never_answered_and_others_are() {
        let api = slow_api(
            std::time::Duration::from_millis(200),
            r#"{"id":"t1","state":"running"}"#,
        )
        .await;
        let client = Client::new(&api, None).unwrap();
        let (mut to_server, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, from_server) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve(client, server_in, server_out));
        let get = |id: u64| {
            protocol::request(
                id,
                "tools/call",
                json!({ "name": "get_task", "arguments": { "id": "t1" } }),
            )
        };
        for message in [
            get(1),
            get(2),
            protocol::notification(
                "notifications/cancelled",
                json!({ "requestId": 1, "reason": "changed my mind" }),
            ),
        ] {
            to_server.write_all(&protocol::to_line(&message)).await.unwrap();
        }
        let mut answers = BufReader::new(from_server).lines();
        let answer: Value = serde_json::from_str(&answers.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(answer["id"], 2, "{answer}");
        assert_eq!(answer["result"]["structuredContent"]["state"], "running");
        // Call 1 would have been answered by now, as call 2 was.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        drop(to_server);
        server.await.unwrap().unwrap();
        assert!(
            answers.next_line().await.unwrap().is_none(),
            "the cancelled call was answered"
        );
    }

    #[tokio::test]
    async fn a_session_initializes_lists_tools_and_answers_errors() {
        let answers = session(&[
            protocol::request(1, "initialize", json!({ "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } })),
            protocol::notification("notifications/initialized", json!({})),
            protocol::request(2, "tools/list", json!({})),
            protocol::request(3, "ping", json!({})),
            protocol::request(4, "resources/list", json!({})),
        ])
        .await;
        assert_eq!(answers.len(), 4, "{answers:?}");
        assert_eq!(answers[0]["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(answers[0]["result"]["capabilities"]["tools"]["listChanged"], false);
        assert_eq!(answers[1]["result"]["tools"].as_array().unwrap().len(), 7);
        assert_eq!(answers[2], json!({ "jsonrpc": "2.0", "id": 3, "result": {} }));
        assert_eq!(answers[3]["error"]["code"], METHOD_NOT_FOUND);
    }
}
