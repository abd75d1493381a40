//! The task lifecycle end to end with in-process roles on a real Redis:
//! each handler kind, retries then dead, delayed tasks, cancel in every
//! state, idempotent submit, and capacity under two distributors.

use crate::support::*;
use drover::api::SubmitRequest;
use drover::handlers::{HandlerError, HandlerSpec, Registry, TaskContext};
use drover::store::Heartbeat;
use drover::task::{FenceToken, TaskState};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn spec(toml_text: &str) -> HandlerSpec {
    toml::from_str(toml_text).expect("handler spec parses")
}

pub fn task(handler: &str, input: serde_json::Value) -> SubmitRequest {
    SubmitRequest {
        handler: handler.into(),
        input,
        tags: vec![],
        queue: None,
        priority: 0,
        max_attempts: None,
        timeout: None,
        run_at_ms: None,
        delay: None,
        idempotency_key: None,
        unique_key: None,
        unique_for: None,
    }
}

async fn builtin_cluster() -> Option<Cluster> {
    let mut c = Cluster::start(&[]).await?;
    c.add_distributor("dist-1");
    c.add_worker("w1", 4, &[], Registry::builtins()).await;
    Some(c)
}

#[tokio::test]
async fn builtin_tasks_run_to_success_with_their_results() {
    let Some(c) = builtin_cluster().await else {
        return;
    };
    let client = c.client();
    let echo = client
        .submit_one(&task("echo", serde_json::json!({"hello": [1, 2]})))
        .await
        .unwrap();
    assert_eq!(echo.state, TaskState::Queued);
    let noop = client.submit_one(&task("noop", serde_json::Value::Null)).await.unwrap();
    let t = client.wait(&echo.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.result, Some(serde_json::json!({"hello": [1, 2]})));
    assert_eq!(t.attempts, 1);
    assert_eq!(t.worker, None, "a finished task names no worker");
    assert!(
        t.fence.as_deref().and_then(FenceToken::parse).is_some(),
        "{:?}",
        t.fence
    );
    let n = client.wait(&noop.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(n.state, TaskState::Succeeded);
    assert_eq!(n.result.unwrap_or_default(), serde_json::Value::Null);
    c.stop().await;
}

#[tokio::test]
async fn exec_handler_gets_input_on_stdin_and_its_fencing_token() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let mut specs = BTreeMap::new();
    let script = r#"read line; printf '{"in":%s,"task":"%s","fence":"%s"}' "$line" "$DROVER_TASK_ID" "$DROVER_FENCE""#;
    specs.insert(
        "shell".to_string(),
        spec(&format!(
            "kind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"10s\""
        )),
    );
    c.add_worker("w1", 2, &[], Registry::from_specs(&specs).unwrap()).await;
    let client = c.client();
    let s = client
        .submit_one(&task("shell", serde_json::json!({"n": 7})))
        .await
        .unwrap();
    let t = client.wait(&s.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let r = t.result.unwrap();
    assert_eq!(r["in"], serde_json::json!({"n": 7}));
    assert_eq!(r["task"], serde_json::json!(s.id));
    assert_eq!(r["fence"].as_str(), t.fence.as_deref());
    c.stop().await;
}

#[tokio::test]
async fn http_handler_posts_the_input_with_the_fencing_token() {
    use axum::routing::post;
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen2.clone();
            async move {
                let fence = headers.get("x-drover-fence").unwrap().to_str().unwrap().to_string();
                seen.lock().unwrap().push((fence.clone(), body.clone()));
                axum::Json(serde_json::json!({"got": serde_json::from_str::<serde_json::Value>(&body).unwrap(), "fence": fence}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut specs = BTreeMap::new();
    specs.insert("hook".to_string(), spec(&format!("kind = \"http\"\nurl = {url:?}")));
    c.add_worker("w1", 2, &[], Registry::from_specs(&specs).unwrap()).await;
    let client = c.client();
    let s = client
        .submit_one(&task("hook", serde_json::json!([1, "two"])))
        .await
        .unwrap();
    let t = client.wait(&s.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.result.as_ref().unwrap()["got"], serde_json::json!([1, "two"]));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(Some(seen[0].0.as_str()), t.fence.as_deref());
    c.stop().await;
}

#[tokio::test]
async fn failing_task_is_retried_with_backoff_then_dead() {
    let Some(c) = builtin_cluster().await else {
        return;
    };
    let client = c.client();
    let mut req = task("fail", serde_json::json!({"message": "boom"}));
    req.max_attempts = Some(3);
    let s = client.submit_one(&req).await.unwrap();
    let t = wait_state(&client, &s.id, TaskState::Dead, Duration::from_secs(15)).await;
    assert_eq!(t.attempts, 3);
    assert_eq!(t.error.as_deref(), Some("boom"));
    // Each attempt took a lease of its own batch, numbered from 1.
    assert!(
        t.fence
            .as_deref()
            .and_then(FenceToken::parse)
            .is_some_and(|f| f.fence >= 3),
        "one lease per attempt: {:?}",
        t.fence
    );
    // Backoff: three attempts cannot finish faster than the two delays
    // (each at least half of 100ms and 200ms).
    assert!(t.finished_ms.unwrap() - t.created_ms >= 150, "{t:?}");
    c.stop().await;
}

#[tokio::test]
async fn delayed_task_never_starts_before_its_time() {
    let Some(c) = builtin_cluster().await else {
        return;
    };
    let client = c.client();
    let mut req = task("noop", serde_json::Value::Null);
    req.delay = Some("1500ms".into());
    let s = client.submit_one(&req).await.unwrap();
    assert_eq!(s.state, TaskState::Scheduled);
    let t = client.wait(&s.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    let run_at = t.run_at_ms.expect("run_at is kept");
    assert!(
        t.started_ms.unwrap() >= run_at,
        "started {} before run_at {run_at}",
        t.started_ms.unwrap()
    );
    // run_at is taken from the API's view of Redis time, created_ms from
    // the script's: allow for the clock sync's error.
    assert!(run_at + 100 >= t.created_ms + 1500, "{t:?}");
    c.stop().await;
}

#[tokio::test]
async fn cancel_works_in_every_state() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let client = c.client();

    // queued: no worker offers the handler yet, so it waits.
    let mut req = task("sleep", serde_json::json!(5000));
    let queued = client
        .submit_one(&SubmitRequest {
            handler: "never".into(),
            ..req.clone()
        })
        .await;
    assert!(queued.is_err(), "an unknown handler is refused");
    // Register the handler with a worker that is not reading its stream:
    // a task is assigned to it, with the lease, and never accepted.
    let ctx = c.ctx("fake");
    let handlers = vec!["sleep".to_string()];
    ctx.store
        .ensure_group(&ctx.store.keys.worker_stream("ghost"), "worker")
        .await
        .unwrap();
    ctx.store
        .heartbeat(&Heartbeat {
            worker_id: "ghost",
            capacity: 1,
            handlers: &handlers,
            tags: &[],
            queues: &[],
            in_flight: 0,
            draining: false,
        })
        .await
        .unwrap();
    let held = client.submit_one(&req).await.unwrap();
    let t = wait_state(&client, &held.id, TaskState::Running, Duration::from_secs(5)).await;
    assert_eq!(t.worker.as_deref(), Some("ghost"));
    let queued = client.submit_one(&req).await.unwrap(); // the ghost is full
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.get(&queued.id).await.unwrap().state, TaskState::Queued);
    req.delay = Some("1h".into());
    let scheduled = client.submit_one(&req).await.unwrap();
    assert_eq!(scheduled.state, TaskState::Scheduled);

    for id in [&queued.id, &scheduled.id] {
        let r = client.cancel(id).await.unwrap();
        assert_eq!(r.state, TaskState::Cancelled);
        assert!(!r.cancel_requested);
        assert_eq!(client.get(id).await.unwrap().state, TaskState::Cancelled);
    }
    // Held by a worker that never read the assignment: the cancel is a
    // request; when the lease runs out the reaper sees the assignment was
    // never acknowledged and cancels the task without charging an attempt.
    let r = client.cancel(&held.id).await.unwrap();
    assert!(r.cancel_requested);
    let t = wait_state(&client, &held.id, TaskState::Cancelled, Duration::from_secs(6)).await;
    assert_eq!(t.attempts, 0, "{t:?}");
    // The ghost says it is draining so nothing more goes to it (and is
    // heard from again, so it is listed).
    ctx.store
        .heartbeat(&Heartbeat {
            worker_id: "ghost",
            capacity: 1,
            handlers: &handlers,
            tags: &[],
            queues: &[],
            in_flight: 0,
            draining: true,
        })
        .await
        .unwrap();
    // The ghost's slot was given back.
    let workers = client.workers().await.unwrap().workers;
    assert_eq!(workers.iter().find(|w| w.id == "ghost").unwrap().used, 0);
    // Cancelling again is a conflict.
    assert!(client.cancel(&queued.id).await.unwrap_err().to_string().contains("409"));

    // running: a real worker runs a long sleep and is told to stop.
    c.add_worker("w1", 1, &[], Registry::builtins()).await;
    req.delay = None;
    let running = client.submit_one(&req).await.unwrap();
    wait_state(&client, &running.id, TaskState::Running, Duration::from_secs(10)).await;
    let r = client.cancel(&running.id).await.unwrap();
    assert!(r.cancel_requested);
    let t = wait_state(&client, &running.id, TaskState::Cancelled, Duration::from_secs(3)).await;
    assert!(
        t.finished_ms.unwrap() - t.started_ms.unwrap() < 4000,
        "the handler was stopped, not waited for"
    );
    let counts: HashMap<String, i64> = redis::AsyncCommands::hgetall(&mut c.redis_con().await, "{drover:0}:counts")
        .await
        .unwrap();
    for (state, n) in counts {
        assert_eq!(n, 0, "backlog count of {state} returns to zero");
    }
    c.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_first_task() {
    let Some(c) = builtin_cluster().await else {
        return;
    };
    let client = c.client();
    let mut req = task("noop", serde_json::Value::Null);
    req.idempotency_key = Some("order-42".into());
    let a = client.submit_one(&req).await.unwrap();
    let b = client.submit_one(&req).await.unwrap();
    assert!(!a.duplicate);
    assert!(b.duplicate);
    assert_eq!(a.id, b.id);
    client.wait(&a.id, Duration::from_secs(10)).await.unwrap();
    let page = client.list(None, None, 100, None).await.unwrap();
    assert_eq!(page.tasks.len(), 1, "one task was written, not two");
    c.stop().await;
}

/// Counts executions per worker and the peak concurrency each one saw.
#[derive(Default)]
struct Meter {
    now: HashMap<String, u32>,
    peak: HashMap<String, u32>,
    runs: u32,
}

fn metered(meter: Arc<Mutex<Meter>>, worker: &'static str) -> Registry {
    let mut r = Registry::default();
    r.register(
        "work",
        Arc::new(move |ctx: TaskContext, _input: serde_json::Value| {
            let meter = meter.clone();
            async move {
                {
                    let mut m = meter.lock().unwrap();
                    let n = m.now.entry(worker.into()).or_default();
                    *n += 1;
                    let n = *n;
                    let p = m.peak.entry(worker.into()).or_default();
                    *p = (*p).max(n);
                    m.runs += 1;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(30)) => {}
                    _ = ctx.cancel.cancelled() => {}
                }
                *meter.lock().unwrap().now.get_mut(worker).unwrap() -= 1;
                Ok::<_, HandlerError>(serde_json::Value::Null)
            }
        }),
    );
    r
}

#[tokio::test]
async fn two_distributors_never_overfill_workers_and_every_task_finishes() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    let meter = Arc::new(Mutex::new(Meter::default()));
    c.add_distributor("dist-1");
    c.add_distributor("dist-2");
    for (id, cap) in [("w1", 1), ("w2", 2), ("w3", 3)] {
        c.add_worker(id, cap, &[], metered(meter.clone(), id)).await;
    }
    let client = c.client();
    eventually(Duration::from_secs(5), "three workers", || async {
        (client.workers().await.unwrap().workers.len() == 3).then_some(())
    })
    .await;
    let batch = client
        .submit_batch(vec![task("work", serde_json::Value::Null); 120])
        .await
        .unwrap();
    for s in &batch.tasks {
        let t = client.wait(&s.id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    }
    let (runs, peak) = {
        let m = meter.lock().unwrap();
        (m.runs, m.peak.clone())
    };
    assert_eq!(runs, 120, "each task ran exactly once");
    for (id, cap) in [("w1", 1), ("w2", 2), ("w3", 3)] {
        let peak = peak.get(id).copied().unwrap_or(0);
        assert!(peak <= cap, "{id} ran {peak} at once with capacity {cap}");
    }
    assert!(
        peak.get("w3").copied().unwrap_or(0) >= 2,
        "the roomiest worker was used: {peak:?}"
    );
    c.stop().await;
}

#[tokio::test]
async fn tasks_go_only_to_workers_with_their_tags() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let ran_on: Arc<Mutex<Vec<String>>> = Arc::default();
    for (id, tags) in [("cpu-1", vec!["cpu"]), ("gpu-1", vec!["gpu", "eu"])] {
        let mut r = Registry::default();
        let ran_on = ran_on.clone();
        r.register(
            "job",
            Arc::new(move |_ctx: TaskContext, _in: serde_json::Value| {
                let ran_on = ran_on.clone();
                async move {
                    ran_on.lock().unwrap().push(id.to_string());
                    Ok::<_, HandlerError>(serde_json::Value::Null)
                }
            }),
        );
        c.add_worker(id, 4, &tags, r).await;
    }
    let client = c.client();
    eventually(Duration::from_secs(5), "two workers", || async {
        (client.workers().await.unwrap().workers.len() == 2).then_some(())
    })
    .await;
    let mut req = task("job", serde_json::Value::Null);
    req.tags = vec!["gpu".into(), "eu".into()];
    let batch = client.submit_batch(vec![req; 10]).await.unwrap();
    for s in &batch.tasks {
        assert_eq!(
            client.wait(&s.id, Duration::from_secs(10)).await.unwrap().state,
            TaskState::Succeeded
        );
    }
    assert!(ran_on.lock().unwrap().iter().all(|w| w == "gpu-1"));
    c.stop().await;
}

#[tokio::test]
async fn graceful_worker_stop_hands_tasks_back_without_using_an_attempt() {
    let Some(mut c) = Cluster::start(&[("worker.grace", "200ms")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 2, &[], Registry::builtins()).await;
    let client = c.client();
    let mut req = task("sleep", serde_json::json!(3000));
    req.max_attempts = Some(1);
    let s = client.submit_one(&req).await.unwrap();
    let t = wait_state(&client, &s.id, TaskState::Running, Duration::from_secs(10)).await;
    assert_eq!(t.worker.as_deref(), Some("w1"));
    c.stop_role("w1").await;
    let t = client.get(&s.id).await.unwrap();
    assert_eq!(t.state, TaskState::Queued, "handed back: {t:?}");
    assert_eq!(t.attempts, 0, "no attempt charged");
    c.add_worker("w2", 2, &[], Registry::builtins()).await;
    let t = client.wait(&s.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts, 1);
    c.stop().await;
}

#[tokio::test]
async fn ten_thousand_noop_tasks_all_succeed() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 64, &[], Registry::builtins()).await;
    c.add_worker("w2", 64, &[], Registry::builtins()).await;
    let client = c.client();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let b = client
            .submit_batch(vec![task("noop", serde_json::Value::Null); 500])
            .await
            .unwrap();
        ids.extend(b.tasks.into_iter().map(|t| t.id));
    }
    let ctx = c.ctx("check");
    eventually(Duration::from_secs(120), "all 10000 tasks to finish", || async {
        let counts = ctx.store.counts().await.unwrap();
        (counts.values().all(|n| *n == 0)).then_some(())
    })
    .await;
    for chunk in ids.chunks(1000) {
        assert_eq!(client.get(&chunk[0]).await.unwrap().state, TaskState::Succeeded);
    }
    let mut con = c.redis_con().await;
    crate::taking::assert_backlog_drained(&mut con).await;
    c.stop().await;
}

#[tokio::test]
async fn finished_tasks_and_their_events_leave_redis_after_their_ttls() {
    let Some(mut c) = Cluster::start(&[("timing.result_ttl", "1s"), ("limits.events_retention", "1s")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 4, &[], Registry::builtins()).await;
    let client = c.client();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            client
                .submit_one(&task("noop", serde_json::Value::Null))
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        let t = client.wait(id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    }
    let keys = c.ctx("test").store.keys.clone();
    let mut con = c.redis_con().await;
    let events: u64 = redis::cmd("XLEN")
        .arg(keys.events())
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(events > 0, "finishing tasks writes events");
    // The janitor runs every 5 s; results expire after 1 s.
    eventually(
        Duration::from_secs(30),
        "events trimmed and finished tasks expired",
        || {
            let mut con = con.clone();
            let (events, tasks) = (keys.events(), keys.task("*"));
            async move {
                let left: u64 = redis::cmd("XLEN").arg(&events).query_async(&mut con).await.unwrap();
                let hashes: Vec<String> = redis::cmd("KEYS").arg(&tasks).query_async(&mut con).await.unwrap();
                (left == 0 && hashes.is_empty()).then_some(())
            }
        },
    )
    .await;
    c.stop().await;
}
