//! `drover snapshot export` and `import`: live tasks from one Redis run to
//! completion in another, delayed ones keep their time, finished ones keep
//! their results; an import into a namespace holding tasks is refused.

use crate::lifecycle::task;
use crate::support::*;
use drover::handlers::Registry;
use drover::redis_server::Persistence;
use drover::task::TaskState;
use std::process::Command;
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
