//! One running MCP server over stdio and the JSON-RPC session with it:
//! started and initialized by [`Session::start`], calls matched to their
//! answers by id (so tasks of one handler share the server concurrently),
//! `notifications/cancelled` for a call given up, requests from the server
//! answered (`ping`; anything else is "method not found"), and the end of
//! the server noticed: every call in flight then fails with why (its exit
//! status and the end of its stderr), and [`Session::ended`] tells the
//! handler to start a new server for the next call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{oneshot, watch};

use super::process::{self, Group};
use crate::mcp::protocol::{self, Incoming, RpcError, LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS};

/// How a call ended without an answer.
#[derive(Debug, Clone)]
pub(super) enum CallError {
    /// The server answered with a JSON-RPC error.
    Rpc(RpcError),
    /// The session is over (the server exited, or broke the protocol).
    Ended(String),
}

type Reply = oneshot::Sender<Result<Value, CallError>>;

/// What the session's tasks share with it.
struct Shared {
    handler: String,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Mutex<HashMap<u64, Reply>>,
    /// Why the session is over, once it is.
    ended: Mutex<Option<String>>,
    group: Group,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
}

/// A started, initialized server; killed (its whole group) when dropped.
pub(super) struct Session {
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.group.kill();
    }
}

impl Session {
    /// Starts `command` and runs the `initialize` handshake. Dropping the
    /// future midway kills what it started.
    pub(super) async fn start(
        handler: &str,
        command: &[String],
        env: &BTreeMap<String, String>,
        max_message: usize,
    ) -> Result<Session, String> {
        let mut child = process::spawn(command, env).map_err(|e| format!("{}: {e}", command[0]))?;
        let pid = child.id().ok_or_else(|| format!("{}: no pid", command[0]))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(format!("{}: pipes missing", command[0]));
        };
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            handler: handler.to_owned(),
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(HashMap::new()),
            ended: Mutex::new(None),
            group: Group::new(pid),
            stderr_tail: Arc::clone(&stderr_tail),
        });
        let session = Session {
            shared: Arc::clone(&shared),
            next_id: AtomicU64::new(1),
        };
        tokio::spawn(process::drain_stderr(handler.to_owned(), stderr, stderr_tail));
        // The exit status, for the reader's message; then leftovers of the group are killed.
        let (status_tx, status_rx) = watch::channel(None);
        let reaper = Arc::clone(&shared);
        tokio::spawn(async move {
            let status = child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            reaper.group.leader_reaped();
            let _ = status_tx.send(Some(status));
        });
        tokio::spawn(read_answers(shared, stdout, max_message, status_rx));

        let init = session
            .call(
                "initialize",
                json!({
                    "protocolVersion": LATEST_PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": { "name": "drover", "version": env!("CARGO_PKG_VERSION") }
                }),
            )
            .1
            .await
            .map_err(|e| match e {
                CallError::Rpc(e) => format!("initialize: {e}"),
                CallError::Ended(why) => why,
            })?;
        let version = init.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&version) {
            return Err(format!(
                "the server speaks MCP {version:?}; drover speaks {}",
                SUPPORTED_PROTOCOL_VERSIONS.join(", ")
            ));
        }
        session
            .send(&protocol::notification("notifications/initialized", json!({})))
            .await
            .map_err(|e| format!("initialize: {e}"))?;
        Ok(session)
    }

    /// Whether the server is gone, so the next call needs a new one.
    pub(super) fn ended(&self) -> bool {
        self.shared.ended.lock().expect("session end").is_some()
    }

    /// Sends request `method`; returns its id and where its answer arrives.
    pub(super) fn call(
        &self,
        method: &str,
        params: Value,
    ) -> (u64, impl std::future::Future<Output = Result<Value, CallError>> + '_) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = protocol::request(id, method, params);
        let answer = async move {
            let (tx, rx) = oneshot::channel();
            {
                // Registered under the lock the reader ends the session with, so
                // a call is either failed by it or refused here, never lost.
                let ended = self.shared.ended.lock().expect("session end");
                if let Some(why) = ended.as_ref() {
                    return Err(CallError::Ended(why.clone()));
                }
                self.shared.pending.lock().expect("pending calls").insert(id, tx);
            }
            if let Err(e) = self.send(&message).await {
                self.shared.pending.lock().expect("pending calls").remove(&id);
                return Err(CallError::Ended(format!("writing to the server: {e}")));
            }
            rx.await
                .unwrap_or_else(|_| Err(CallError::Ended("the session ended".into())))
        };
        (id, answer)
    }

    /// Gives up call `id`: forgets it and tells the server to stop it.
    pub(super) async fn cancel(&self, id: u64, reason: &str) {
        self.shared.pending.lock().expect("pending calls").remove(&id);
        let note = protocol::notification("notifications/cancelled", json!({ "requestId": id, "reason": reason }));
        // Best effort: a server that does not read its stdin must not hold up the task.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.send(&note)).await;
    }

    async fn send(&self, message: &Value) -> std::io::Result<()> {
        self.shared.send(message).await
    }
}

impl Shared {
    async fn send(&self, message: &Value) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(&protocol::to_line(message)).await?;
        stdin.flush().await
    }

    /// Ends the session: records why and fails every call in flight.
    fn end(&self, why: String) {
        let mut ended = self.ended.lock().expect("session end");
        let waiting: Vec<Reply> = self
            .pending
            .lock()
            .expect("pending calls")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for reply in waiting {
            let _ = reply.send(Err(CallError::Ended(why.clone())));
        }
        ended.get_or_insert(why);
        self.group.kill();
    }
}

/// Reads the server's stdout until it ends: answers go to their callers,
/// the server's own requests are answered, notifications are dropped.
async fn read_answers(
    shared: Arc<Shared>,
    stdout: ChildStdout,
    max_message: usize,
    mut status: watch::Receiver<Option<String>>,
) {
    let mut stdout = BufReader::new(stdout);
    let why = loop {
        let line = match protocol::read_line(&mut stdout, max_message).await {
            Ok(Some(line)) => line,
            Ok(None) => break None,
            Err(e) => break Some(format!("the MCP server sent {e}")),
        };
        match protocol::parse(&line) {
            Ok(Incoming::Response { id, result }) => {
                let reply = id
                    .as_u64()
                    .and_then(|id| shared.pending.lock().expect("pending calls").remove(&id));
                // An answer to a call given up (or never made) is dropped.
                if let Some(reply) = reply {
                    let _ = reply.send(result.map_err(CallError::Rpc));
                }
            }
            Ok(Incoming::Request { id, method, .. }) => {
                let answer = match method.as_str() {
                    "ping" => Ok(json!({})),
                    other => Err(RpcError::new(
                        protocol::METHOD_NOT_FOUND,
                        format!("drover does not offer {other:?}"),
                    )),
                };
                let _ = shared.send(&protocol::response(id, answer)).await;
            }
            Ok(Incoming::Notification { .. }) => {}
            Err((_, e)) => break Some(format!("the MCP server broke the protocol: {e}")),
        }
    };
    let why = match why {
        Some(why) => why,
        None => {
            // Its stdout closed: it exited, or is about to. Wait a moment for
            // the status, so the message says how it ended.
            let exited = tokio::time::timeout(Duration::from_secs(2), status.wait_for(Option::is_some)).await;
            let how = match exited {
                Ok(Ok(s)) => s.clone().unwrap_or_default(),
                _ => "closed its stdout".to_owned(),
            };
            let tail = shared.stderr_tail.lock().expect("stderr tail").clone();
            let tail = String::from_utf8_lossy(&tail).trim().to_owned();
            if tail.is_empty() {
                format!("the MCP server exited ({how})")
            } else {
                format!("the MCP server exited ({how}): {tail}")
            }
        }
    };
    tracing::warn!(handler = %shared.handler, reason = %why, "mcp session ended");
    shared.end(why);
}
