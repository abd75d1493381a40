//! A slow or broken link between a worker and Redis, made by a TCP proxy in
//! the test: a delay well below the lease reclaims nothing; a cut longer
//! than the lease makes the worker stop its handler at its local deadline,
//! the task is retried elsewhere, and the ledger kept outside Redis shows
//! exactly one applied effect.

use crate::lifecycle::task;
use crate::support::*;
use drover::task::TaskState;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_below_the_lease_reclaims_nothing() {
    let Some(mut c) = Cluster::start(&[]).await else { return };
    c.add_distributor("dist-1");
    let proxy = Proxy::start(c.redis.port()).await;
    proxy.set(Link::Delay(Duration::from_millis(150)));
    let dir = tempfile::tempdir().unwrap();
    let prof = profile(dir.path(), "worker", "[handlers]\nsleep = { kind = \"builtin\" }\n");
    let w = spawn(
        "slow",
        &["worker", "--config", &prof, "--id", "slow"],
        &proc_env(&proxy.url(), &[]),
        dir.path(),
    );
    let client = c.client();
    eventually(Duration::from_secs(60), "the worker behind the slow link", || async {
        (client.workers().await.unwrap().workers.len() == 1).then_some(())
    })
    .await;
    let batch = client
        .submit_batch(vec![task("sleep", serde_json::json!(1500)); 10])
        .await
        .unwrap();
    for s in &batch.tasks {
        let t = client.wait(&s.id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            (t.state, t.attempts),
            (TaskState::Succeeded, 1),
            "no lease was lost: {t:?}\n{}",
            {
                std::fs::write("/tmp/slow-worker.log", w.log_text()).unwrap();
                "log in /tmp/slow-worker.log"
            }
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_past_its_lease_stops_its_handler_and_the_effect_happens_once() {
    let Some(mut c) = Cluster::start(&[("timing.lease_ttl", "1500ms")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    std::fs::write(&ledger, "").unwrap();
    let script = format!(
        "sleep 3; printf '%s %s\\n' \"$DROVER_TASK_ID\" \"$DROVER_FENCE\" >> {}",
        ledger.display()
    );
    let prof = profile(
        dir.path(),
        "worker",
        &format!("[handlers]\nledger = {{ kind = \"exec\", command = [\"/bin/sh\", \"-c\", {script:?}], timeout = \"20s\" }}\n"),
    );
    let proxy = Proxy::start(c.redis.port()).await;
    let env = |url: &str| proc_env(url, &[("DROVER_LEASE_TTL", "1500ms")]);
    let cut = spawn(
        "cut",
        &["worker", "--config", &prof, "--id", "cut"],
        &env(&proxy.url()),
        dir.path(),
    );
    let client = c.client();
    eventually(Duration::from_secs(60), "the first worker", || async {
        (client.workers().await.unwrap().workers.len() == 1).then_some(())
    })
    .await;
    let s = client
        .submit_one(&task("ledger", serde_json::Value::Null))
        .await
        .unwrap();
    let first = wait_state(&client, &s.id, TaskState::Running, Duration::from_secs(10)).await;
    assert_eq!(first.worker.as_deref(), Some("cut"));
    wait_assignments_acknowledged(&c.redis_con().await, "cut").await;
    proxy.set(Link::Blackhole);
    let url = c.redis.url();
    let _direct = spawn(
        "direct",
        &["worker", "--config", &prof, "--id", "direct"],
        &env(&url),
        dir.path(),
    );
    let t = client.wait(&s.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts, 2);
    // The cut-off worker stopped its handler on its own clock.
    let log = eventually(Duration::from_secs(5), "the local deadline", || async {
        let log = cut.log_text();
        log.contains("cut off from redis for a whole lease").then_some(log)
    })
    .await;
    // Heal the link and give the old worker every chance to do damage.
    proxy.set(Link::Pass);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lines: Vec<String> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 1, "exactly one applied effect: {lines:?}\n{log}");
    assert_eq!(lines[0], format!("{} {}", s.id, t.fence.unwrap()));
    assert_eq!(client.get(&s.id).await.unwrap().state, TaskState::Succeeded);
    c.stop().await;
}
