//! The worker's own defences: what its handlers can see of it, and how its
//! bookkeeping of running attempts holds up against panics, stale
//! completions and entries it cannot read.

use crate::lifecycle::task;
use crate::support::*;
use drover::task::TaskState;
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
