//! Operations with real processes: SIGTERM and SIGINT drain every role
//! without losing a task or charging an attempt; JSON logs let one task be
//! followed by its id across all three roles; `drover config check`
//! validates a profile and never prints a secret.

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::redis_server::Persistence;
use drover::task::TaskState;
use std::time::Duration;

const WORKER: &str = "[handlers]\nsleep = { kind = \"builtin\" }\nnoop = { kind = \"builtin\" }\n";

#[tokio::test]
async fn sigterm_on_the_coordinator_finishes_open_requests_and_refuses_new_work() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = proc_env(
        &redis.url(),
        &[
            ("DROVER_HTTP_ADDR", &format!("127.0.0.1:{port}")),
            ("DROVER_HANDLERS", "noop"),
        ],
    );
    let mut coord = spawn("coordinator", &["coordinator", "--id", "c1"], &env, dir.path());
    let client = Client::new(&format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN.into())).unwrap();
    eventually(Duration::from_secs(60), "the API", || async {
        client.workers().await.ok().map(|_| ())
    })
    .await;
    let queued = client.submit_one(&task("noop", serde_json::Value::Null)).await.unwrap();
    // An open long-poll on a task nobody will run.
    let waiter = {
        let client = client.clone();
        let id = queued.id.clone();
        tokio::spawn(async move { client.wait(&id, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = std::time::Instant::now();
    coord.signal(libc::SIGTERM);
    let answered = waiter.await.unwrap().expect("the open request is answered, not cut");
    assert_eq!(answered.state, TaskState::Queued);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waiters are released at shutdown"
    );
    // New work is never accepted once draining: 503 or no connection at all.
    if let Ok(s) = client.submit_one(&task("noop", serde_json::Value::Null)).await {
        panic!("a submission was accepted during shutdown: {s:?}");
    }
    let status = coord.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", coord.log_text());
    let log = coord.log_text();
    assert!(
        log.contains("coordinator draining") && log.contains("gave up the leader lease"),
        "{log}"
    );
}

#[tokio::test]
async fn sigterm_on_distributor_and_sigint_on_worker_lose_nothing() {
    let Some(c) = Cluster::start(&[]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = c.redis.url();
    let prof = profile(dir.path(), "worker", WORKER);
    let client = c.client();
    // A worker process that runs a long task when interrupted.
    let admin = free_port();
    let env = proc_env(
        &url,
        &[
            ("DROVER_WORKER_GRACE", "1500ms"),
            ("DROVER_ADMIN_ADDR", &format!("127.0.0.1:{admin}")),
        ],
    );
    let mut w1 = spawn("w1", &["worker", "--config", &prof, "--id", "w1"], &env, dir.path());
    eventually(Duration::from_secs(60), "w1", || async {
        (client.workers().await.unwrap().workers.len() == 1).then_some(())
    })
    .await;
    let mut d1 = spawn("d1", &["distributor", "--id", "d1"], &proc_env(&url, &[]), dir.path());
    let long = client
        .submit_one(&task("sleep", serde_json::json!(10_000)))
        .await
        .unwrap();
    wait_state(&client, &long.id, TaskState::Running, Duration::from_secs(15)).await;
    w1.signal(libc::SIGINT);
    // While it drains, its admin port says so.
    let ready: serde_json::Value = eventually(Duration::from_secs(2), "/ready to report draining", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{admin}/ready")).await.ok()?;
        (r.status() == 503).then_some(())?;
        r.json().await.ok()
    })
    .await;
    assert_eq!(ready["reason"], "draining");
    assert_eq!(
        w1.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        w1.log_text()
    );
    let back = client.get(&long.id).await.unwrap();
    assert_eq!(
        (back.state, back.attempts),
        (TaskState::Queued, 0),
        "handed back, no attempt charged: {back:?}"
    );

    // The distributor holds the handed-back task (no worker) when it is
    // stopped; its entry stays pending and the restarted one re-reads it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    d1.signal(libc::SIGTERM);
    assert_eq!(
        d1.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        d1.log_text()
    );
    let _d1 = spawn(
        "d1-again",
        &["distributor", "--id", "d1"],
        &proc_env(&url, &[]),
        dir.path(),
    );
    let _w2 = spawn(
        "w2",
        &["worker", "--config", &prof, "--id", "w2"],
        &proc_env(&url, &[]),
        dir.path(),
    );
    let mut quick = task("sleep", serde_json::json!(10));
    quick.max_attempts = Some(1);
    let q = client.submit_one(&quick).await.unwrap();
    assert_eq!(
        client.wait(&q.id, Duration::from_secs(20)).await.unwrap().state,
        TaskState::Succeeded
    );
    let t = client.wait(&long.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 1), "{t:?}");
    c.stop().await;
}

#[tokio::test]
async fn one_task_can_be_followed_by_its_id_through_json_logs_of_every_role() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let port = free_port();
    let json = [("DROVER_LOG_FORMAT", "json"), ("RUST_LOG", "drover=debug")];
    let mut cenv = proc_env(&url, &json);
    cenv.push(("DROVER_HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
    let coord = spawn("coordinator", &["coordinator", "--id", "c1"], &cenv, dir.path());
    let dist = spawn(
        "distributor",
        &["distributor", "--id", "d1"],
        &proc_env(&url, &json),
        dir.path(),
    );
    let prof = profile(dir.path(), "worker", WORKER);
    let worker = spawn(
        "worker",
        &["worker", "--config", &prof, "--id", "w1"],
        &proc_env(&url, &json),
        dir.path(),
    );
    let client = Client::new(&format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN.into())).unwrap();
    eventually(Duration::from_secs(60), "a worker", || async {
        client
            .workers()
            .await
            .ok()
            .filter(|w| !w.workers.is_empty())
            .map(|_| ())
    })
    .await;
    let s = client.submit_one(&task("noop", serde_json::Value::Null)).await.unwrap();
    assert_eq!(
        client.wait(&s.id, Duration::from_secs(10)).await.unwrap().state,
        TaskState::Succeeded
    );
    for (proc, expect) in [(&coord, "submitted"), (&dist, "assigned"), (&worker, "completed")] {
        let log = eventually(Duration::from_secs(5), "the log line", || async {
            let log = proc.log_text();
            log.contains(&s.id).then_some(log)
        })
        .await;
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l}", proc.name)))
            .collect();
        let mine: Vec<&serde_json::Value> = lines.iter().filter(|l| l.to_string().contains(&s.id)).collect();
        assert!(
            mine.iter().any(|l| l["message"] == expect && l["level"] == "DEBUG"),
            "{}: no debug {expect:?} line for the task: {mine:?}",
            proc.name
        );
    }
}

#[test]
fn config_check_validates_profiles_and_redacts_secrets() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for prof in ["coordinator", "distributor", "worker", "worker-exec"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["config", "check", "--config"])
            .arg(repo.join(format!("roles/{prof}.toml")))
            .env("DROVER_API_TOKENS", "very-secret-token-value:admin")
            .env("DROVER_REDIS_URL", "redis://:hunter2hunter2@redis:6379")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{prof}: {text}");
        assert!(text.contains("# ok"), "{prof}: {text}");
        assert!(
            !text.contains("very-secret-token-value") && !text.contains("hunter2"),
            "{prof}: {text}"
        );
        assert!(text.contains("api_tokens = <redacted>"), "{prof}: {text}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["config", "check"])
        .env("DROVER_WORKER_CAPACITY", "lots")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("worker.capacity (from DROVER_WORKER_CAPACITY)"));
}
