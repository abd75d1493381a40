//! The HTTP API over real sockets: bad input gets a 4xx JSON error naming
//! the problem and writes nothing; tokens and scopes are enforced; the
//! OpenAPI document covers every route; list, wait and workers behave.

use crate::lifecycle::task;
use crate::support::*;
use drover::handlers::Registry;
use drover::task::TaskState;
use reqwest::StatusCode;
use std::time::Duration;

pub(crate) async fn raw(
    c: &Cluster,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut rb = reqwest::Client::new().request(method, format!("{}{path}", c.api));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b.to_string());
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

pub(crate) fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn task_keys(c: &Cluster) -> usize {
    let mut con = c.redis_con().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{drover:0}:t:*")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_write_nothing() {
    let Some(mut c) = Cluster::start(&[("coordinator.max_body", "2KiB")]).await else {
        return;
    };
    c.add_worker("w1", 1, &[], Registry::builtins()).await;
    let client = c.client();
    eventually(Duration::from_secs(5), "worker registered", || async {
        (!client.workers().await.unwrap().workers.is_empty()).then_some(())
    })
    .await;
    use reqwest::Method as M;
    let post = M::POST;
    let cases: Vec<(Option<&str>, String, StatusCode, &str)> = vec![
        (
            None,
            r#"{"handler":"noop"}"#.into(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Some("wrong-token-0123456789"),
            r#"{"handler":"noop"}"#.into(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Some(READ_TOKEN),
            r#"{"handler":"noop"}"#.into(),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":"noop""#.into(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"input":1}"#.into(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":5}"#.into(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":"noop","surprise":1}"#.into(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":"rm-rf"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_handler",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":"../bin/sh"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_task",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":"noop","timeout":"soon"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_task",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":"noop","tags":["bad tag"]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_task",
        ),
        (
            Some(ADMIN_TOKEN),
            r#"{"handler":"noop","max_attempts":0}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_task",
        ),
        (
            Some(ADMIN_TOKEN),
            format!(r#"{{"handler":"noop","input":"{}"}}"#, "x".repeat(4096)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (token, body, status, want) in cases {
        let (got, json) = raw(&c, post.clone(), "/v1/tasks", token, Some(&body)).await;
        assert_eq!(got, status, "body {body:.80}: {json}");
        assert_eq!(code(&json), want, "body {body:.80}: {json}");
        assert!(!json["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    for (body, want) in [
        (
            r#"{"handler":"noop","run_at_ms":18446744073709551615}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"handler":"noop","run_at_ms":9007199254740992}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (r#"{"handler":"noop","delay":" 5s"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"handler":"noop","max_attempts":2.5}"#, StatusCode::BAD_REQUEST),
    ] {
        let (got, json) = raw(&c, post.clone(), "/v1/tasks", Some(ADMIN_TOKEN), Some(body)).await;
        assert_eq!(got, want, "{body}: {json}");
    }
    assert_eq!(task_keys(&c).await, 0, "nothing was written");
    // An id that is not UTF-8 is still asked for a token first.
    let (got, _) = raw(&c, M::GET, "/v1/tasks/%FF", None, None).await;
    assert_eq!(got, StatusCode::UNAUTHORIZED);
    let (got, json) = raw(&c, M::GET, "/v1/tasks/%FF", Some(READ_TOKEN), None).await;
    assert_eq!((got, code(&json)), (StatusCode::NOT_FOUND, "not_found"));
    // Whole numbers written as floats are integers; the scheme name is
    // case-insensitive.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/tasks", c.api))
        .header("authorization", format!("bearer {SUBMIT_TOKEN}"))
        .header("content-type", "application/json")
        .body(r#"{"handler":"noop","max_attempts":3.0,"priority":-2.0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = client.get(&id).await.unwrap();
    assert_eq!((t.max_attempts, t.priority), (3, -2));
    client.cancel(&id).await.unwrap();
    let mut con = c.redis_con().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{{drover:0}}:t:{id}"))
        .query_async(&mut con)
        .await
        .unwrap();

    // A batch with one bad item writes none of them.
    let batch = r#"{"tasks":[{"handler":"noop"},{"handler":"nope"}]}"#;
    let (got, json) = raw(&c, post.clone(), "/v1/tasks/batch", Some(SUBMIT_TOKEN), Some(batch)).await;
    assert_eq!(got, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert!(
        json["error"]["message"].as_str().unwrap().contains("tasks[1]"),
        "{json}"
    );
    assert_eq!(task_keys(&c).await, 0, "nothing was written");

    let (got, json) = raw(&c, M::GET, "/v1/tasks/not-an-id", Some(READ_TOKEN), None).await;
    assert_eq!((got, code(&json)), (StatusCode::NOT_FOUND, "not_found"));
    let (got, _) = raw(&c, M::GET, "/v1/tasks?state=bogus", Some(READ_TOKEN), None).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    let (got, json) = raw(&c, M::GET, "/v1/nothing-here", Some(READ_TOKEN), None).await;
    assert_eq!((got, code(&json)), (StatusCode::NOT_FOUND, "not_found"));
    // A submit token may not read; a read token may.
    let (got, _) = raw(&c, M::GET, "/v1/workers", Some(SUBMIT_TOKEN), None).await;
    assert_eq!(got, StatusCode::FORBIDDEN);
    let (got, json) = raw(&c, M::GET, "/v1/workers", Some(READ_TOKEN), None).await;
    assert_eq!(got, StatusCode::OK);
    assert_eq!(json["workers"][0]["id"], "w1");
    c.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let Some(c) = Cluster::start(&[]).await else {
        return;
    };
    let (status, doc) = raw(&c, reqwest::Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (p, method) in [
        ("/v1/tasks", "post"),
        ("/v1/tasks", "get"),
        ("/v1/tasks/batch", "post"),
        ("/v1/tasks/{id}", "get"),
        ("/v1/tasks/{id}/wait", "get"),
        ("/v1/tasks/{id}/cancel", "post"),
        ("/v1/workers", "get"),
    ] {
        assert!(
            paths.get(p).and_then(|m| m.get(method)).is_some(),
            "{method} {p} missing from the document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["SubmitRequest"].is_object());
    c.stop().await;
}

#[tokio::test]
async fn list_pages_by_state_and_wait_long_polls() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 8, &[], Registry::builtins()).await;
    let client = c.client();
    let done = client
        .submit_batch(vec![task("noop", serde_json::Value::Null); 30])
        .await
        .unwrap();
    for s in &done.tasks {
        client.wait(&s.id, Duration::from_secs(10)).await.unwrap();
    }
    let mut delayed = task("noop", serde_json::Value::Null);
    delayed.delay = Some("1h".into());
    let later = client.submit_batch(vec![delayed; 5]).await.unwrap();

    // Page through succeeded tasks with a small limit.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = client
            .list(Some("succeeded"), None, 7, cursor.as_deref())
            .await
            .unwrap();
        for t in &page.tasks {
            assert_eq!(t.state, TaskState::Succeeded);
            seen.insert(t.id.clone());
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 30);
    let scheduled = client.list(Some("scheduled"), None, 1000, None).await.unwrap();
    assert_eq!(scheduled.tasks.len(), 5);

    // A wait on an unfinished task returns at its timeout with the state.
    let t0 = std::time::Instant::now();
    let t = client
        .wait(&later.tasks[0].id, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Scheduled);
    assert!(t0.elapsed() >= Duration::from_millis(250));
    c.stop().await;
}

#[tokio::test]
async fn past_the_high_water_mark_submissions_get_429_or_503_with_retry_after() {
    let Some(mut c) = Cluster::start(&[("coordinator.max_backlog", "100"), ("coordinator.handlers", "noop")]).await
    else {
        return;
    };
    let batch = |n: usize| format!("{{\"tasks\":[{}]}}", vec![r#"{"handler":"noop"}"#; n].join(","));
    let url = format!("{}/v1/tasks/batch", c.api);
    let post = |body: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post(batch(60)).await.status(), StatusCode::ACCEPTED);
    let refused = post(batch(60)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    let json: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(code(&json), "backlog_full");
    assert_eq!(post(batch(40)).await.status(), StatusCode::ACCEPTED);
    assert_eq!(post(batch(1)).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(task_keys(&c).await, 100, "nothing past the mark was written");

    // Workers drain the backlog; submissions are accepted again.
    c.add_distributor("dist-1");
    c.add_worker("w1", 16, &[], Registry::builtins()).await;
    let ctx = c.ctx("check");
    eventually(Duration::from_secs(20), "the backlog to drain", || async {
        let counts = ctx.store.counts().await.unwrap();
        (counts.get("queued").copied().unwrap_or(0) == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(batch(50)).await.status(), StatusCode::ACCEPTED);

    // Redis close to its maxmemory: 503, before noeviction starts refusing
    // writes in the middle of the lifecycle.
    let mut con = c.redis_con().await;
    let (used, _) = ctx.store.memory().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + used / 20)
        .query_async(&mut con)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let full = post(batch(1)).await;
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.headers().contains_key("retry-after"));
    let json: serde_json::Value = full.json().await.unwrap();
    assert!(json["error"]["message"].as_str().unwrap().contains("memory"), "{json}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();
    c.stop().await;
}
