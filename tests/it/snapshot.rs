//! `drover snapshot export` and `import`: live tasks from one Redis run to
//! completion in another, delayed ones keep their time, finished ones keep
//! their results; an import into a namespace holding tasks is refused, even
//! in a Redis shared with many other keys; a cancel requested before the
//! export is not forgotten.

use crate::lifecycle::task;
use crate::support::*;
use drover::handlers::{HandlerError, Registry, TaskContext};
use drover::redis_server::Persistence;
use drover::task::TaskState;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn drover(args: &[&str], redis_url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env_clear()
        .envs(proc_env(redis_url, &[("RUST_LOG", "warn")]))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_snapshot_restored_into_an_empty_redis_runs_its_tasks() {
    let Some(mut a) = Cluster::start(&[]).await else { return };
    a.add_distributor("dist-a");
    a.add_worker("wa", 4, &[], Registry::builtins()).await;
    let client = a.client();
    let done = client
        .submit_batch(vec![task("echo", serde_json::json!({"k": 1})); 5])
        .await
        .unwrap();
    for s in &done.tasks {
        client.wait(&s.id, Duration::from_secs(10)).await.unwrap();
    }
    a.stop_role("wa").await;
    let live = client
        .submit_batch(vec![task("noop", serde_json::Value::Null); 20])
        .await
        .unwrap();
    let mut later = task("noop", serde_json::Value::Null);
    later.delay = Some("1500ms".into());
    let delayed = client.submit_batch(vec![later; 3]).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.snapshot");
    let file_s = file.display().to_string();
    let (ok, out) = drover(&["snapshot", "export", "--out", &file_s, "--results"], &a.redis.url());
    assert!(ok, "{out}");
    assert!(out.contains("exported 23 live and 5 finished tasks"), "{out}");

    let b_redis = redis(Persistence::None).unwrap();
    let (ok, out) = drover(&["snapshot", "import", "--in", &file_s], &b_redis.url());
    assert!(ok, "{out}");
    assert!(
        out.contains("20 queued") && out.contains("3 scheduled") && out.contains("5 terminal"),
        "{out}"
    );
    // A second import into the now busy namespace is refused.
    let (ok, out) = drover(&["snapshot", "import", "--in", &file_s], &b_redis.url());
    assert!(!ok && out.contains("already holds tasks"), "{out}");
    a.stop().await;

    let Some(mut b) = Cluster::start_with(b_redis, &[]).await else {
        return;
    };
    b.add_distributor("dist-b");
    b.add_worker("wb", 8, &[], Registry::builtins()).await;
    let client = b.client();
    for s in live.tasks.iter().chain(&delayed.tasks) {
        let t = client.wait(&s.id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    }
    for s in &delayed.tasks {
        let t = client.get(&s.id).await.unwrap();
        assert!(
            t.started_ms.unwrap() >= t.run_at_ms.unwrap(),
            "a delayed task kept its time: {t:?}"
        );
    }
    for s in &done.tasks {
        let t = client.get(&s.id).await.unwrap();
        assert_eq!(
            (t.state, t.result.clone()),
            (TaskState::Succeeded, Some(serde_json::json!({"k": 1})))
        );
    }
    b.stop().await;
}

#[test]
fn importing_something_that_is_not_a_snapshot_fails_clearly() {
    let Some(r) = redis(Persistence::None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"hello\": 1}\n").unwrap();
    let (ok, out) = drover(&["snapshot", "import", "--in", &bogus.display().to_string()], &r.url());
    assert!(!ok && out.contains("not a drover snapshot"), "{out}");
}

/// In a Redis shared with many other keys, one task of the namespace is
/// enough to refuse an import, wherever the SCAN happens to find it.
#[tokio::test]
async fn an_import_is_refused_when_one_task_hides_among_many_other_keys() {
    let Some(r) = redis(Persistence::None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.snapshot");
    let file_s = file.display().to_string();
    {
        // One live task, exported from a first Redis.
        let Some(mut a) = Cluster::start(&[]).await else { return };
        // A worker offered `noop` once (so it is accepted) and is gone.
        a.add_worker("wa", 1, &[], Registry::builtins()).await;
        a.stop_role("wa").await;
        a.client()
            .submit_one(&task("noop", serde_json::Value::Null))
            .await
            .unwrap();
        let (ok, out) = drover(&["snapshot", "export", "--out", &file_s], &a.redis.url());
        assert!(ok && out.contains("exported 1 live"), "{out}");
        a.stop().await;
    }
    let (ok, out) = drover(&["snapshot", "import", "--in", &file_s], &r.url());
    assert!(ok, "{out}");
    // 200,000 keys of something else share this Redis.
    let mut con = redis::Client::open(r.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for chunk in 0..20 {
        let mut mset = redis::cmd("MSET");
        for i in 0..10_000 {
            mset.arg(format!("other-app:{chunk}:{i}")).arg(1);
        }
        let _: () = mset.query_async(&mut con).await.unwrap();
    }
    let (ok, out) = drover(&["snapshot", "import", "--in", &file_s], &r.url());
    assert!(!ok && out.contains("already holds tasks"), "{out}");
}

/// A task whose cancel was requested while it ran (its handler had not
/// stopped yet) when the snapshot was taken comes back cancelled, not
/// queued to run again.
#[tokio::test]
async fn a_cancel_requested_before_the_export_is_kept_by_the_import() {
    let Some(mut a) = Cluster::start(&[]).await else { return };
    a.add_distributor("dist-a");
    let started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::default();
    let (s2, r2) = (started.clone(), release.clone());
    // Deaf to its cancel until released, so the request stays pending.
    registry.register(
        "deaf",
        Arc::new(move |_ctx: TaskContext, _input: serde_json::Value| {
            let (started, release) = (s2.clone(), r2.clone());
            async move {
                started.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err::<serde_json::Value, _>(HandlerError::Cancelled)
            }
        }),
    );
    a.add_worker("wa", 1, &[], registry).await;
    let client = a.client();
    let s = client.submit_one(&task("deaf", serde_json::Value::Null)).await.unwrap();
    eventually(Duration::from_secs(10), "the handler to start", || async {
        started.load(Ordering::SeqCst).then_some(())
    })
    .await;
    client.cancel(&s.id).await.unwrap();
    let t = client.get(&s.id).await.unwrap();
    assert!(t.state == TaskState::Running && t.cancel_requested, "{t:?}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cancel.snapshot");
    let file_s = file.display().to_string();
    let (ok, out) = drover(&["snapshot", "export", "--out", &file_s], &a.redis.url());
    assert!(ok && out.contains("exported 1 live"), "{out}");
    release.store(true, Ordering::SeqCst);
    a.stop().await;

    let b_redis = redis(Persistence::None).unwrap();
    let (ok, out) = drover(&["snapshot", "import", "--in", &file_s], &b_redis.url());
    assert!(ok && out.contains("1 cancelled"), "{out}");
    let Some(b) = Cluster::start_with(b_redis, &[]).await else {
        return;
    };
    let t = b.client().get(&s.id).await.unwrap();
    assert_eq!(t.state, TaskState::Cancelled, "{t:?}");
    assert_eq!(t.attempts, 0, "the attempt in flight died with the old Redis: {t:?}");
    b.stop().await;
}
