//! The worker's own defences: what its handlers can see of it, and how its
//! bookkeeping of running attempts holds up against panics, stale
//! completions and entries it cannot read.

use crate::lifecycle::task;
use crate::support::*;
use drover::handlers::{HandlerError, Registry, TaskContext};
use drover::roles::worker::{self, WorkerSpec};
use drover::task::TaskState;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An exec program reads its whole environment and returns it: the keyring,
/// the API tokens and the Redis password the worker process was started
/// with must not be in it.
#[tokio::test]
async fn exec_handlers_never_see_the_workers_secrets() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    // A user with a password, so the worker really runs with
    // DROVER_REDIS_PASSWORD set (and needs it).
    let password = "redis-password-not-for-handlers-0123";
    let mut con = c.redis_con().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("envtest")
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut con)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prof = profile(
        dir.path(),
        "worker",
        "[handlers]\nprintenv = { kind = \"exec\", command = [\"/usr/bin/env\"], timeout = \"10s\" }\n",
    );
    let url = format!("redis://envtest@127.0.0.1:{}", c.redis.port());
    let env = proc_env(&url, &[("DROVER_REDIS_PASSWORD", password)]);
    let _worker = spawn("pw1", &["worker", "--config", &prof, "--id", "pw1"], &env, dir.path());
    let client = c.client();
    eventually(Duration::from_secs(60), "the worker process", || async {
        (client.workers().await.unwrap().workers.len() == 1).then_some(())
    })
    .await;
    let s = client
        .submit_one(&task("printenv", serde_json::Value::Null))
        .await
        .unwrap();
    let t = client.wait(&s.id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let seen = t.result.unwrap().as_str().expect("env prints text").to_string();
    assert!(seen.contains(&format!("DROVER_TASK_ID={}", s.id)), "{seen}");
    let secret_hex = SIGNING_KEYS.split_once(':').unwrap().1;
    for (what, secret) in [
        ("the signing keys", secret_hex),
        ("the API tokens", ADMIN_TOKEN),
        ("the Redis password", password),
    ] {
        assert!(!seen.contains(secret), "the program saw {what}:\n{seen}");
    }
    for name in [
        "DROVER_SIGNING_KEYS",
        "DROVER_API_TOKENS",
        "DROVER_REDIS_PASSWORD",
        "DROVER_REDIS_URL",
    ] {
        assert!(!seen.contains(&format!("{name}=")), "the program saw {name}:\n{seen}");
    }
    c.stop().await;
}

/// A handler that panics ends its attempt as a failure carrying the panic
/// message, and frees its slot: the lease is not renewed for ever.
#[tokio::test]
async fn a_panicking_handler_fails_its_attempt_with_the_panic_message() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let mut registry = Registry::builtins();
    registry.register(
        "boom",
        Arc::new(|_ctx: TaskContext, input: serde_json::Value| async move {
            if input == serde_json::json!("now") {
                panic!("kaboom in the handler");
            }
            Ok::<_, HandlerError>(input)
        }),
    );
    // Panicking while building the future, before it is first polled.
    registry.register(
        "early",
        Arc::new(
            |_ctx: TaskContext, _input: serde_json::Value| -> drover::handlers::HandlerFuture {
                panic!("kaboom before the future")
            },
        ),
    );
    c.add_worker("w1", 2, &[], registry).await;
    let client = c.client();
    let mut req = task("boom", serde_json::json!("now"));
    req.max_attempts = Some(2);
    let boom = client.submit_one(&req).await.unwrap();
    let mut req = task("early", serde_json::Value::Null);
    req.max_attempts = Some(1);
    let early = client.submit_one(&req).await.unwrap();
    for (id, message) in [
        (&boom.id, "kaboom in the handler"),
        (&early.id, "kaboom before the future"),
    ] {
        let t = client.wait(id, Duration::from_secs(15)).await.unwrap();
        assert_eq!(t.state, TaskState::Dead, "{t:?}");
        let error = t.error.clone().unwrap_or_default();
        assert!(error.contains("panicked") && error.contains(message), "{t:?}");
    }
    // Both slots are free again and the worker still runs work.
    let ok = client.submit_one(&task("boom", serde_json::json!(7))).await.unwrap();
    let t = client.wait(&ok.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    eventually(
        Duration::from_secs(5),
        "the worker to report nothing in flight",
        || async {
            let w = client.workers().await.unwrap().workers;
            (w.len() == 1 && w[0].in_flight == 0 && w[0].used == 0).then_some(())
        },
    )
    .await;
    c.stop().await;
}

/// What the test's `twice` handler has seen of its attempts.
#[derive(Default)]
struct Twice {
    first_started: AtomicBool,
    /// Set by the test: the first attempt may return.
    release_first: AtomicBool,
    first_returned: AtomicBool,
    /// The attempt number of the second run, once it started.
    second_started: AtomicU32,
    second_saw_cancel: AtomicBool,
}

/// Attempt 1 ignores its cancel token and runs until the test releases it;
/// later attempts run until they are cancelled.
fn twice(seen: Arc<Twice>) -> Registry {
    let mut r = Registry::default();
    r.register(
        "twice",
        Arc::new(move |ctx: TaskContext, _input: serde_json::Value| {
            let seen = seen.clone();
            async move {
                if ctx.attempt == 1 {
                    seen.first_started.store(true, Ordering::SeqCst);
                    while !seen.release_first.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    seen.first_returned.store(true, Ordering::SeqCst);
                    return Ok(serde_json::json!("first"));
                }
                seen.second_started.store(ctx.attempt, Ordering::SeqCst);
                tokio::select! {
                    _ = ctx.cancel.cancelled() => {
                        seen.second_saw_cancel.store(true, Ordering::SeqCst);
                        Err(HandlerError::Cancelled)
                    }
                    _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(serde_json::json!("second")),
                }
            }
        }),
    );
    r
}

/// A task whose first attempt outlives its lease on a worker (cut off from
/// Redis) and whose second attempt lands on the same worker: when the old
/// attempt finally ends, the new one must still be this worker's, renewed
/// and reachable by a cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_attempt_ending_late_leaves_the_new_attempt_of_the_same_task_running() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let proxy = Proxy::start(c.redis.port()).await;
    let mut settings = c.settings.clone();
    settings.redis_url = drover::config::Secret(proxy.url());
    let ctx = drover::context::Context::new(settings, "worker", "worker").expect("context");
    let seen = Arc::new(Twice::default());
    let spec = WorkerSpec {
        id: "w1".into(),
        capacity: 2,
        tags: vec![],
        queues: vec![],
        grace: Duration::from_secs(1),
        registry: twice(seen.clone()),
    };
    let stop = c.shutdown.child_token();
    let w1 = tokio::spawn(worker::run(ctx, spec, stop));
    let client = c.client();
    eventually(Duration::from_secs(10), "the worker", || async {
        (client.workers().await.unwrap().workers.len() == 1).then_some(())
    })
    .await;

    let mut req = task("twice", serde_json::Value::Null);
    req.max_attempts = Some(3);
    let s = client.submit_one(&req).await.unwrap();
    eventually(Duration::from_secs(10), "the first attempt to start", || async {
        seen.first_started.load(Ordering::SeqCst).then_some(())
    })
    .await;
    wait_assignments_acknowledged(&c.redis_con().await, "w1").await;

    // Cut off past the lease: the reaper takes the first attempt back while
    // its handler, deaf to its cancel, still runs on the worker.
    proxy.set(Link::Blackhole);
    eventually(Duration::from_secs(15), "the first lease to be reaped", || async {
        let t = client.get(&s.id).await.unwrap();
        (t.state != TaskState::Running).then_some(())
    })
    .await;
    proxy.set(Link::Pass);
    eventually(
        Duration::from_secs(20),
        "the second attempt on the same worker",
        || async { (seen.second_started.load(Ordering::SeqCst) == 2).then_some(()) },
    )
    .await;
    let second = client.get(&s.id).await.unwrap();
    assert_eq!(
        (second.state, second.attempts, second.worker.as_deref()),
        (TaskState::Running, 2, Some("w1"))
    );

    // The old attempt ends now, long after its lease.
    seen.release_first.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "the first attempt to return", || async {
        seen.first_returned.load(Ordering::SeqCst).then_some(())
    })
    .await;
    // The new attempt is still known to the worker: a cancel reaches its
    // handler, and its lease was kept (no third attempt).
    client.cancel(&s.id).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the cancel to reach the second attempt",
        || async { seen.second_saw_cancel.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    let t = wait_state(&client, &s.id, TaskState::Cancelled, Duration::from_secs(10)).await;
    assert_eq!(t.attempts, 2, "{t:?}");
    assert_ne!(t.result, Some(serde_json::json!("first")), "{t:?}");
    c.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), w1).await;
    c.stop().await;
}

/// A worker restarted with entries it cannot verify still pending reads
/// each of them once and goes on to new assignments at once; it does not
/// re-read them until they are acknowledged (two leases after they were
/// written).
#[tokio::test]
async fn a_restarted_worker_with_unreadable_entries_pending_takes_new_work_at_once() {
    // A long lease, so "until they are acknowledged" is far from "at once".
    let lease = Duration::from_secs(10);
    let Some(mut c) = Cluster::start(&[("timing.lease_ttl", "10s")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 2, &[], Registry::builtins()).await;
    let stream = "{drover:0}:w:w1:in";
    let mut con = c.redis_con().await;
    // More than one read's worth (the worker reads `capacity` at a time).
    for i in 0..5 {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("m")
            .arg(format!("not a signed envelope {i}"))
            .query_async(&mut con)
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "the worker to set the entries aside", || {
        let mut con = con.clone();
        async move { (pending_count(&mut con, stream, "worker").await == 5).then_some(()) }
    })
    .await;
    c.stop_role("w1").await;
    assert_eq!(pending_count(&mut con, stream, "worker").await, 5, "still pending");

    c.add_worker("w1", 2, &[], Registry::builtins()).await;
    let client = c.client();
    let s = client.submit_one(&task("noop", serde_json::Value::Null)).await.unwrap();
    // Well inside one lease; the set-aside entries are only acknowledged
    // after two.
    let t = client.wait(&s.id, lease / 2).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(
        pending_count(&mut con, stream, "worker").await,
        5,
        "set aside, not dropped"
    );
    c.stop().await;
}
