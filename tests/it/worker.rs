//! The worker's own defences: what its handlers can see of it, and how its
//! bookkeeping of running attempts holds up against panics, stale
//! completions and entries it cannot read.

use crate::lifecycle::task;
use crate::support::*;
use drover::handlers::{HandlerError, Registry, TaskContext};
use drover::task::TaskState;
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
