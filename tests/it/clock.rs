//! Clock skew: roles whose clocks are off by two minutes either way, under
//! libfaketime, with a message TTL far shorter than the skew. Leases,
//! deadlines and delays are judged by Redis time, and envelope expiry by
//! each role's estimate of Redis time, so every task completes on its first
//! attempt and a delayed task waits for its time, not a skewed one.

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::redis_server::Persistence;
use drover::task::TaskState;
use std::process::Command;
use std::time::Duration;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn skewed(env: &[(String, String)], offset: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("LD_PRELOAD".into(), LIBFAKETIME.into()));
    env.push(("FAKETIME".into(), offset.into()));
    // Timers use the monotonic clock; only the wall clock is skewed.
    env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
    env
}

#[tokio::test]
async fn roles_two_minutes_apart_agree_on_time() {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        skip_or_fail("libfaketime is not installed (Debian package faketime)");
        return;
    }
    // The skew is real: `date` under the same settings is two minutes off.
    let out = Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", "+120")
        .output()
        .unwrap();
    let fake: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((fake - real - 120).abs() <= 2, "libfaketime applies: {fake} vs {real}");

    let Some(redis) = redis(Persistence::None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = proc_env(&url, &[("DROVER_MESSAGE_TTL", "20s"), ("DROVER_LEASE_TTL", "1500ms")]);
    let mut coord_env = skewed(&base, "+120");
    coord_env.push(("DROVER_HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
    let _coord = spawn("coordinator", &["coordinator", "--id", "c1"], &coord_env, dir.path());
    let _dist = spawn(
        "distributor",
        &["distributor", "--id", "d1"],
        &skewed(&base, "-120"),
        dir.path(),
    );
    let prof = profile(
        dir.path(),
        "worker",
        "[handlers]\nsleep = { kind = \"builtin\" }\nnoop = { kind = \"builtin\" }\n",
    );
    let _fast = spawn(
        "ahead",
        &["worker", "--config", &prof, "--id", "ahead"],
        &skewed(&base, "+120"),
        dir.path(),
    );
    let _slow = spawn(
        "behind",
        &["worker", "--config", &prof, "--id", "behind"],
        &skewed(&base, "-120"),
        dir.path(),
    );
    let client = Client::new(&format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN.into())).unwrap();
    eventually(Duration::from_secs(60), "both workers", || async {
        client.workers().await.ok().filter(|w| w.workers.len() == 2).map(|_| ())
    })
    .await;

    // Longer than the lease: renewals must keep it, whatever the clocks say.
    let batch = client
        .submit_batch(vec![task("sleep", serde_json::json!(2500)); 8])
        .await
        .unwrap();
    let mut delayed = task("noop", serde_json::Value::Null);
    delayed.delay = Some("2s".into());
    let d = client.submit_one(&delayed).await.unwrap();
    for s in &batch.tasks {
        let t = client.wait(&s.id, Duration::from_secs(30)).await.unwrap();
        assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 1), "{t:?}");
    }
    let t = client.wait(&d.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    let started = t.started_ms.unwrap();
    assert!(started >= t.run_at_ms.unwrap(), "not early: {t:?}");
    assert!(started < t.run_at_ms.unwrap() + 10_000, "not two minutes late: {t:?}");
}
