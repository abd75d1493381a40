//! The `mcp` handler kind against a real MCP server process
//! (tests/fixtures/mcp_server.py, standard-library Python speaking
//! JSON-RPC on stdio): tool results and errors become task outcomes, the
//! server sees a clean environment and the task's fence, a server that
//! dies mid-call fails that attempt and is restarted for the next task,
//! and a timeout or cancel stops the call and tells the server.

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::handlers::{HandlerSpec, Registry};
use drover::task::TaskState;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A cluster with one worker whose handler `work` is the fixture's tool;
/// the server logs its starts and cancellations to the returned file.
async fn cluster_with_server(tag: &str) -> Option<(Cluster, PathBuf)> {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        skip_or_fail("python3 (the test's MCP server)");
        return None;
    }
    let mut c = Cluster::start(&[]).await?;
    c.add_distributor("dist-1");
    let log = std::env::temp_dir().join(format!("drover-mcp-{tag}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_server.py");
    let spec: HandlerSpec = toml::from_str(&format!(
        "kind = \"mcp\"\ncommand = [\"python3\", {server:?}]\ntool = \"work\"\nenv = {{ MCP_TEST_LOG = {log:?}, GREETING = \"hi\" }}",
        server = server.display().to_string(),
        log = log.display().to_string(),
    ))
    .unwrap();
    let registry = Registry::from_specs(&BTreeMap::from([("work".to_string(), spec)])).unwrap();
    c.add_worker("w1", 4, &[], registry).await;
    Some((c, log))
}

async fn run(client: &Client, input: Value, max_attempts: u32, timeout: Option<&str>) -> drover::api::TaskBody {
    let mut r = task("work", input);
    r.max_attempts = Some(max_attempts);
    r.timeout = timeout.map(str::to_owned);
    let id = client.submit_one(&r).await.unwrap().id;
    let t = client.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert!(t.state.is_terminal(), "{t:?}");
    t
}

fn log_lines(log: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn mcp_tool_results_and_errors_become_task_outcomes() {
    let Some((c, log)) = cluster_with_server("outcomes").await else {
        return;
    };
    let client = c.client();

    let t = run(&client, json!({ "op": "echo", "value": [1, "two"] }), 1, None).await;
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let result = t.result.clone().unwrap();
    assert_eq!(result["value"], json!([1, "two"]), "structuredContent is the result");
    assert_eq!(result["meta"]["drover/task_id"], json!(t.id));
    assert_eq!(result["meta"]["drover/attempt"], json!(1));
    assert_eq!(result["meta"]["drover/fence"], json!(t.fence.clone().unwrap()));

    let t = run(&client, json!({ "op": "text", "value": "plain" }), 1, None).await;
    assert_eq!(
        t.result,
        Some(json!([{ "type": "text", "text": "plain" }])),
        "else the content"
    );

    // PATH and the profile's env, none of the worker's variables (this test
    // process has CARGO_*; what a python launcher or shim adds is its own).
    let t = run(&client, json!({ "op": "env" }), 1, None).await;
    let names: Vec<String> = serde_json::from_value(t.result.unwrap()["names"].clone()).unwrap();
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
    for given in ["GREETING", "MCP_TEST_LOG", "PATH"] {
        assert!(names.iter().any(|n| n == given), "{given} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("CARGO") || n.starts_with("DROVER")),
        "{names:?}"
    );

    let t = run(&client, json!({ "op": "fail", "value": "nope" }), 2, None).await;
    assert_eq!(t.state, TaskState::Dead, "{t:?}");
    assert_eq!(t.attempts, 2, "a tool error is retried like any failure");
    assert_eq!(t.error.as_deref(), Some("refused: nope"));

    let t = run(&client, json!([1, 2]), 1, None).await;
    assert_eq!(t.state, TaskState::Dead);
    assert!(t.error.unwrap().contains("must be a JSON object"));

    // All of it on one server, started once.
    assert_eq!(log_lines(&log, "started").len(), 1, "{:?}", log_lines(&log, ""));
    c.stop().await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn mcp_server_dying_mid_call_fails_the_attempt_and_is_restarted() {
    let Some((c, log)) = cluster_with_server("death").await else {
        return;
    };
    let client = c.client();
    let first = run(&client, json!({ "op": "echo" }), 1, None).await;
    let first_pid = first.result.unwrap()["pid"].clone();

    // Two attempts: both kill their server mid-call, each on a new one.
    let t = run(&client, json!({ "op": "exit" }), 2, None).await;
    assert_eq!(t.state, TaskState::Dead, "{t:?}");
    assert_eq!(t.attempts, 2);
    let error = t.error.unwrap();
    assert!(error.contains("the MCP server exited"), "{error}");
    assert!(error.contains("exit status: 3"), "{error}");
    assert!(error.contains("exiting on purpose"), "the end of its stderr: {error}");

    let after = run(&client, json!({ "op": "echo" }), 1, None).await;
    assert_eq!(after.state, TaskState::Succeeded, "{after:?}");
    assert_ne!(after.result.unwrap()["pid"], first_pid, "a new server");
    assert_eq!(log_lines(&log, "started").len(), 3, "{:?}", log_lines(&log, ""));
    c.stop().await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn mcp_call_stops_at_the_tasks_timeout_and_on_cancel() {
    let Some((c, log)) = cluster_with_server("stop").await else {
        return;
    };
    let client = c.client();

    let t = run(&client, json!({ "op": "sleep", "seconds": 60 }), 1, Some("1s")).await;
    assert_eq!(t.state, TaskState::Dead, "{t:?}");
    assert!(t.error.as_deref().unwrap().contains("timed out"), "{t:?}");
    eventually(Duration::from_secs(5), "the server told of the timeout", || async {
        log_lines(&log, "cancelled")
            .iter()
            .any(|l| l.ends_with("the task timed out"))
            .then_some(())
    })
    .await;

    let mut r = task("work", json!({ "op": "sleep", "seconds": 60 }));
    r.max_attempts = Some(1);
    let id = client.submit_one(&r).await.unwrap().id;
    wait_state(&client, &id, TaskState::Running, Duration::from_secs(10)).await;
    wait_assignments_acknowledged(&c.redis_con().await, "w1").await;
    assert!(client.cancel(&id).await.unwrap().cancel_requested);
    let t = wait_state(&client, &id, TaskState::Cancelled, Duration::from_secs(10)).await;
    assert_eq!(t.attempts, 1);
    eventually(Duration::from_secs(5), "the server told of the cancel", || async {
        log_lines(&log, "cancelled")
            .iter()
            .any(|l| l.ends_with("the task was cancelled"))
            .then_some(())
    })
    .await;

    // The server itself lived on through both.
    let t = run(&client, json!({ "op": "echo" }), 1, None).await;
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(log_lines(&log, "started").len(), 1, "{:?}", log_lines(&log, ""));
    c.stop().await;
    let _ = std::fs::remove_file(&log);
}

/// The HTTP fixture server, killed when dropped.
struct HttpServer {
    child: std::process::Child,
    url: String,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_http_server(log: &Path) -> HttpServer {
    use std::io::BufRead;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_http_server.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .env("MCP_TEST_LOG", log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut port = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let url = format!("http://127.0.0.1:{}/mcp", port.trim());
    HttpServer { child, url }
}

#[tokio::test]
async fn mcp_over_streamable_http_json_and_sse_sessions_and_timeouts() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        return skip_or_fail("python3 (the test's MCP server)");
    }
    let Some(mut c) = Cluster::start(&[]).await else { return };
    c.add_distributor("dist-1");
    let log = std::env::temp_dir().join(format!("drover-mcp-http-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let server = start_http_server(&log);
    let spec: HandlerSpec =
        toml::from_str(&format!("kind = \"mcp\"\nurl = \"{}\"\ntool = \"work\"", server.url)).unwrap();
    let registry = Registry::from_specs(&BTreeMap::from([("work".to_string(), spec)])).unwrap();
    c.add_worker("w1", 4, &[], registry).await;
    let client = c.client();

    let t = run(&client, json!({ "op": "echo", "value": 7 }), 1, None).await;
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let result = t.result.unwrap();
    assert_eq!(result["value"], json!(7));
    assert_eq!(result["meta"]["drover/fence"], json!(t.fence.unwrap()));
    let first_session = result["session"].clone();
    assert!(first_session.is_string(), "drover sends the session id back: {result}");

    let t = run(&client, json!({ "op": "sse", "value": "streamed" }), 1, None).await;
    assert_eq!(
        t.result.unwrap()["value"],
        json!("streamed"),
        "the answer from an event stream"
    );

    let t = run(&client, json!({ "op": "fail", "value": "no" }), 1, None).await;
    assert_eq!((t.state, t.error.as_deref()), (TaskState::Dead, Some("refused: no")));

    // The server forgets every session: the next call's 404 fails that
    // attempt, and its retry runs in a new session.
    run(&client, json!({ "op": "forget" }), 1, None).await;
    let t = run(&client, json!({ "op": "echo" }), 2, None).await;
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts, 2, "{t:?}");
    assert_ne!(t.result.unwrap()["session"], first_session);
    assert_eq!(log_lines(&log, "session").len(), 2, "{:?}", log_lines(&log, ""));

    let t = run(&client, json!({ "op": "sleep", "seconds": 60 }), 1, Some("1s")).await;
    assert!(t.error.as_deref().unwrap().contains("timed out"), "{t:?}");
    eventually(Duration::from_secs(5), "the server told of the timeout", || async {
        log_lines(&log, "cancelled")
            .iter()
            .any(|l| l.ends_with("the task timed out"))
            .then_some(())
    })
    .await;
    c.stop().await;
    drop(server);
    let _ = std::fs::remove_file(&log);
}
