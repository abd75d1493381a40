//! Queues as far as they are built (docs/QUEUES.md): a task names its
//! queue; finished tasks are listed per queue and state from indexes, in
//! exact pages with a stable cursor; an operator retries, discards and
//! purges them; a batch honours its Idempotency-Key. Real Redis, real HTTP.

use crate::api::{code, raw};
use crate::lifecycle::task;
use crate::support::*;
use drover::api::SubmitRequest;
use drover::handlers::Registry;
use drover::task::TaskState;
use reqwest::Method as M;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// A task of `handler` in `queue` that gets one attempt.
fn once(handler: &str, queue: &str) -> SubmitRequest {
    SubmitRequest {
        queue: Some(queue.into()),
        max_attempts: Some(1),
        ..task(handler, Value::Null)
    }
}

/// Submits `tasks` and waits until each has finished; returns their ids.
async fn run_all(c: &Cluster, tasks: Vec<SubmitRequest>) -> Vec<String> {
    let client = c.client();
    let ids: Vec<String> = client
        .submit_batch(tasks)
        .await
        .unwrap()
        .tasks
        .into_iter()
        .map(|s| s.id)
        .collect();
    for id in &ids {
        let t = client.wait(id, Duration::from_secs(20)).await.unwrap();
        assert!(t.state.is_terminal(), "{id} still {}", t.state);
    }
    ids
}

/// Every page of `GET /v1/tasks?<query>` with `limit`, as (ids, page sizes).
async fn all_pages(c: &Cluster, query: &str, limit: usize) -> (Vec<Value>, Vec<usize>) {
    let (mut tasks, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let after = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let path = format!("/v1/tasks?{query}&limit={limit}{after}");
        let (status, page) = raw(c, M::GET, &path, Some(READ_TOKEN), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        let got = page["tasks"].as_array().unwrap().clone();
        sizes.push(got.len());
        tasks.extend(got);
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return (tasks, sizes);
        }
    }
    panic!("{query}: no last page");
}

#[tokio::test]
async fn finished_tasks_list_by_queue_and_state_in_exact_pages() {
    let Some(mut c) = Cluster::start(&[("limits.index_succeeded", "true")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 16, &[], Registry::builtins()).await;
    let dead = run_all(&c, vec![once("fail", "media"); 25]).await;
    let succeeded = run_all(&c, vec![task("noop", Value::Null); 30]).await;
    let client = c.client();
    let mut later = once("noop", "media");
    later.delay = Some("1h".into());
    let scheduled = client.submit_batch(vec![later; 3]).await.unwrap();
    for s in &scheduled.tasks {
        client.cancel(&s.id).await.unwrap();
    }

    // Exactly `limit` per page, every task once, in finish-time order.
    let (tasks, sizes) = all_pages(&c, "queue=media&state=dead", 7).await;
    assert_eq!(sizes, vec![7, 7, 7, 4], "exact pages");
    let ids: HashSet<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, dead.iter().map(String::as_str).collect::<HashSet<_>>());
    let finished: Vec<u64> = tasks.iter().map(|t| t["finished_ms"].as_u64().unwrap()).collect();
    assert!(finished.windows(2).all(|w| w[0] <= w[1]), "oldest first: {finished:?}");
    assert!(tasks.iter().all(|t| t["queue"] == "media" && t["state"] == "dead"));
    assert!(tasks.iter().all(|t| t["error"] == "requested failure"));

    // Other states and queues, and every queue at once.
    let (none, _) = all_pages(&c, "queue=media&state=succeeded", 10).await;
    assert!(none.is_empty());
    let (ok, sizes) = all_pages(&c, "queue=default&state=succeeded", 100).await;
    assert_eq!((ok.len(), sizes), (30, vec![30]));
    let all_ok: HashSet<String> = ok.iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(all_ok, succeeded.into_iter().collect::<HashSet<_>>());
    let (cancelled, _) = all_pages(&c, "state=cancelled", 2).await;
    assert_eq!(cancelled.len(), 3);
    let (any_dead, sizes) = all_pages(&c, "state=dead", 10).await;
    assert_eq!((any_dead.len(), sizes), (25, vec![10, 10, 5]), "every queue merged");

    // A cursor stays good while tasks before it go.
    let (status, first) = raw(
        &c,
        M::GET,
        "/v1/tasks?queue=media&state=dead&limit=5",
        Some(READ_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    for t in first["tasks"].as_array().unwrap() {
        let path = format!("/v1/tasks/{}", t["id"].as_str().unwrap());
        assert_eq!(
            raw(&c, M::DELETE, &path, Some(ADMIN_TOKEN), None).await.0,
            StatusCode::OK
        );
    }
    let path = format!("/v1/tasks?queue=media&state=dead&limit=100&cursor={cursor}");
    let (_, rest) = raw(&c, M::GET, &path, Some(READ_TOKEN), None).await;
    assert_eq!(rest["tasks"].as_array().unwrap().len(), 20, "the 20 after the cursor");

    // A cursor of digits alone starts after that finish time.
    let tenth = finished[9];
    let path = format!("/v1/tasks?queue=media&state=dead&limit=100&cursor={tenth}");
    let (_, after) = raw(&c, M::GET, &path, Some(READ_TOKEN), None).await;
    let after: Vec<u64> = after["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["finished_ms"].as_u64().unwrap())
        .collect();
    let discarded: Vec<u64> = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["finished_ms"].as_u64().unwrap())
        .collect();
    let later = |f: &&u64| **f > tenth;
    assert_eq!(
        after.len(),
        finished.iter().filter(later).count() - discarded.iter().filter(later).count()
    );
    assert!(after.iter().all(|f| *f > tenth));

    // Queues and their counts.
    let (status, queues) = raw(&c, M::GET, "/v1/queues", Some(READ_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        queues,
        json!({"queues": [
            {"name": "default", "queued": 0, "running": 0, "succeeded": 30, "dead": 0, "cancelled": 0,
             "paused": false, "draining": false, "limits": {}},
            {"name": "media", "queued": 0, "running": 0, "succeeded": 0, "dead": 20, "cancelled": 3,
             "paused": false, "draining": false, "limits": {}},
        ]})
    );
    let (status, media) = raw(&c, M::GET, "/v1/queues/media", Some(READ_TOKEN), None).await;
    assert_eq!((status, media["dead"].as_u64()), (StatusCode::OK, Some(20)));

    // Bad input.
    for (path, want, what) in [
        ("/v1/queues/nope", StatusCode::NOT_FOUND, "not_found"),
        ("/v1/queues/Media", StatusCode::NOT_FOUND, "not_found"),
        ("/v1/tasks?queue=nope&state=dead", StatusCode::NOT_FOUND, "not_found"),
        ("/v1/tasks?queue=Media", StatusCode::BAD_REQUEST, "malformed_request"),
        (
            "/v1/tasks?state=dead&cursor=12-t:*",
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            "/v1/tasks?state=queued&cursor=1-x",
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
    ] {
        let (status, body) = raw(&c, M::GET, path, Some(READ_TOKEN), None).await;
        assert_eq!((status, code(&body)), (want, what), "{path}: {body}");
    }
    let bad_queue = r#"{"handler":"noop","queue":"no:colons"}"#;
    let (status, body) = raw(&c, M::POST, "/v1/tasks", Some(ADMIN_TOKEN), Some(bad_queue)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_task"),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("queue"), "{body}");
    c.stop().await;
}

#[tokio::test]
async fn an_operator_retries_discards_and_purges_finished_tasks() {
    // Succeeded tasks are not indexed (the default): they are neither
    // counted nor purged, and expire as before.
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 8, &[], Registry::builtins()).await;
    let dead = run_all(&c, vec![once("fail", "jobs"); 6]).await;
    let ok = run_all(&c, vec![once("noop", "jobs")]).await;
    let client = c.client();
    let mut later = once("noop", "jobs");
    later.delay = Some("1h".into());
    let scheduled = client.submit_one(&later).await.unwrap().id;

    // Retry: admin only; dead → queued → runs again (and fails again).
    let retry = |id: &str| format!("/v1/tasks/{id}/retry");
    let (status, _) = raw(&c, M::POST, &retry(&dead[0]), Some(SUBMIT_TOKEN), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = raw(&c, M::POST, &retry(&dead[0]), Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, &body["state"]), (StatusCode::OK, &json!("queued")), "{body}");
    let again = client.wait(&dead[0], Duration::from_secs(20)).await.unwrap();
    assert_eq!((again.state, again.attempts), (TaskState::Dead, 1), "attempts reset");
    assert_eq!(again.history.len(), 1, "the first run is kept");
    let first = &again.history[0];
    assert_eq!(first.state, TaskState::Dead);
    assert_eq!((first.error.as_deref(), first.attempts), (Some("requested failure"), 1));
    assert!(first.finished_ms <= first.retried_ms && first.retried_ms <= again.finished_ms.unwrap());
    for (id, want) in [
        (ok[0].as_str(), StatusCode::CONFLICT),
        (scheduled.as_str(), StatusCode::CONFLICT),
        ("0000000000000000000000", StatusCode::NOT_FOUND),
        ("no-such-id", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = raw(&c, M::POST, &retry(id), Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, want, "{id}: {body}");
    }

    // Discard: finished only.
    let task_path = |id: &str| format!("/v1/tasks/{id}");
    let (status, _) = raw(&c, M::DELETE, &task_path(&scheduled), Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a live task is not discarded");
    let (status, _) = raw(&c, M::DELETE, &task_path(&dead[1]), Some(READ_TOKEN), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = raw(&c, M::DELETE, &task_path(&dead[1]), Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        raw(&c, M::GET, &task_path(&dead[1]), Some(READ_TOKEN), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        raw(&c, M::DELETE, &task_path(&dead[1]), Some(ADMIN_TOKEN), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Retry every dead task of the queue: the 5 left (dead[0] died again).
    let (status, body) = raw(&c, M::POST, "/v1/queues/jobs/retry-dead", Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, &body["queued"]), (StatusCode::OK, &json!(5)), "{body}");
    for id in dead.iter().filter(|id| **id != dead[1]) {
        let t = client.wait(id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(t.state, TaskState::Dead);
    }

    // Purge: one finished state of one queue.
    let (status, body) = raw(
        &c,
        M::POST,
        "/v1/queues/jobs/purge?state=queued",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "malformed_request"));
    let (status, _) = raw(&c, M::POST, "/v1/queues/nope/purge?state=dead", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = raw(&c, M::POST, "/v1/queues/jobs/purge?state=dead", Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, &body["purged"]), (StatusCode::OK, &json!(5)), "{body}");
    for id in dead.iter() {
        assert_eq!(
            raw(&c, M::GET, &task_path(id), Some(READ_TOKEN), None).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let t = client.get(&ok[0]).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "another state is left alone");
    let t = client.get(&scheduled).await.unwrap();
    assert_eq!(t.state, TaskState::Scheduled, "live tasks are left alone");
    let (_, queue) = raw(&c, M::GET, "/v1/queues/jobs", Some(READ_TOKEN), None).await;
    assert_eq!(queue["dead"].as_u64(), Some(0));
    assert!(queue.get("succeeded").is_none(), "not counted: {queue}");
    let (status, body) = raw(
        &c,
        M::POST,
        "/v1/queues/jobs/purge?state=succeeded",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"), "{body}");
    let t = client.get(&ok[0]).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "kept until its result TTL");
    c.stop().await;
}

#[tokio::test]
async fn a_retried_batch_with_the_same_idempotency_key_makes_no_duplicates() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_worker("w1", 1, &[], Registry::builtins()).await;
    let client = reqwest::Client::new();
    let body = r#"{"tasks":[{"handler":"noop"},{"handler":"noop","idempotency_key":"own"},{"handler":"noop"}]}"#;
    let post = |key: &'static str| {
        client
            .post(format!("{}/v1/tasks/batch", c.api))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .header("Idempotency-Key", key)
            .body(body)
            .send()
    };
    let first: Value = post("batch-1").await.unwrap().json().await.unwrap();
    let second: Value = post("batch-1").await.unwrap().json().await.unwrap();
    let ids = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), ids(&second), "the same tasks");
    assert!(second["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["duplicate"] == true));
    let other: Value = post("batch-2").await.unwrap().json().await.unwrap();
    let (a, b) = (ids(&first), ids(&other));
    assert!(a[0] != b[0] && a[2] != b[2], "another key, other tasks");
    assert_eq!(a[1], b[1], "a task's own key stands for itself");
    let long = "k".repeat(191);
    let resp = client
        .post(format!("{}/v1/tasks/batch", c.api))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .header("Idempotency-Key", long)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    c.stop().await;
}

#[tokio::test]
async fn a_unique_key_holds_while_its_task_is_live_and_through_its_window() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_worker("w1", 4, &[], Registry::builtins()).await;
    let client = c.client();
    let unique = |key: &str, window: Option<&str>| SubmitRequest {
        unique_key: Some(key.into()),
        unique_for: window.map(str::to_string),
        ..task("noop", Value::Null)
    };
    // No distributor yet: the first task stays queued (live) while twenty
    // submissions race for its key.
    let racers = (0..20).map(|_| {
        let (client, req) = (client.clone(), unique("report-7", None));
        tokio::spawn(async move { client.submit_one(&req).await.unwrap() })
    });
    let mut ids = HashSet::new();
    let mut made = 0;
    for r in racers {
        let s = r.await.unwrap();
        made += usize::from(!s.duplicate);
        ids.insert(s.id);
    }
    assert_eq!((ids.len(), made), (1, 1), "one task, nineteen duplicates of it");
    let first = ids.into_iter().next().unwrap();
    let other = client.submit_one(&unique("report-8", None)).await.unwrap();
    assert!(!other.duplicate, "another key is another task");

    // Once it finished, the key is free again.
    c.add_distributor("dist-1");
    client.wait(&first, Duration::from_secs(20)).await.unwrap();
    let next = client.submit_one(&unique("report-7", None)).await.unwrap();
    assert!(!next.duplicate && next.id != first, "free after the task finished");
    client.wait(&next.id, Duration::from_secs(20)).await.unwrap();

    // With a window, it holds past the finish until the window ends.
    let windowed = client.submit_one(&unique("daily", Some("2s"))).await.unwrap();
    let t = client.wait(&windowed.id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    let again = client.submit_one(&unique("daily", Some("2s"))).await.unwrap();
    assert!(
        again.duplicate && again.id == windowed.id,
        "within the window: the same task"
    );
    let mut later = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = client.submit_one(&unique("daily", Some("2s"))).await.unwrap();
        if !s.duplicate {
            later = Some(s.id);
            break;
        }
    }
    assert!(
        later.is_some_and(|id| id != windowed.id),
        "a new task once the window ended"
    );

    let (status, body) = raw(
        &c,
        M::POST,
        "/v1/tasks",
        Some(ADMIN_TOKEN),
        Some(r#"{"handler":"noop","unique_for":"1m"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("unique_key"),
        "{body}"
    );
    c.stop().await;
}

/// A retried task leaves its index, so the expiry sweep, which deletes
/// finished tasks from the indexes' low ends, never deletes it while it
/// runs again; a task left finished is deleted as before.
#[tokio::test]
async fn the_expiry_sweep_spares_a_task_an_operator_retried() {
    let Some(mut c) = Cluster::start(&[("timing.result_ttl", "1s")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 4, &[], Registry::builtins()).await;
    let dead = run_all(&c, vec![once("fail", "default"); 2]).await;
    // No distributor from here on: the retried task stays queued.
    c.stop_role("dist-1").await;
    let (status, _) = raw(
        &c,
        M::POST,
        &format!("/v1/tasks/{}/retry", dead[0]),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let store = c.ctx("sweeper").store;
    eventually(Duration::from_secs(10), "the finished task expired", || async {
        store.expire_finished(1000).await.unwrap();
        c.client().get(&dead[1]).await.is_err().then_some(())
    })
    .await;
    let t = c.client().get(&dead[0]).await.unwrap();
    assert_eq!(t.state, TaskState::Queued, "the retried task is kept");
    c.stop().await;
}
