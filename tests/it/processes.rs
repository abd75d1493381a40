//! Crashes and stalls with real `drover` processes: kill -9 of a worker
//! mid-task, a zombie worker (SIGSTOP past its lease, then SIGCONT), the
//! leader coordinator killed, Redis unreachable at start, and a bad config.

use crate::lifecycle::task;
use crate::support::*;
use drover::api::TaskBody;
use drover::client::Client;
use drover::redis_server::Persistence;
use drover::task::{FenceToken, TaskState};
use std::time::Duration;

/// The fencing token of a task's latest attempt, as the API shows it.
fn token(t: &TaskBody) -> FenceToken {
    t.fence.as_deref().and_then(FenceToken::parse).expect("a fencing token")
}

const SLEEP_WORKER: &str = "[handlers]\nsleep = { kind = \"builtin\" }\nnoop = { kind = \"builtin\" }\n";

#[tokio::test]
async fn a_task_on_a_killed_worker_completes_on_another_after_its_lease() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let dir = tempfile::tempdir().unwrap();
    let prof = profile(dir.path(), "worker", SLEEP_WORKER);
    let url = c.redis.url();
    let workers: Vec<Proc> = ["pw1", "pw2"]
        .iter()
        .map(|id| {
            spawn(
                id,
                &["worker", "--config", &prof, "--id", id],
                &proc_env(&url, &[]),
                dir.path(),
            )
        })
        .collect();
    let client = c.client();
    eventually(Duration::from_secs(60), "two worker processes", || async {
        (client.workers().await.unwrap().workers.len() == 2).then_some(())
    })
    .await;
    let s = client
        .submit_one(&task("sleep", serde_json::json!(1500)))
        .await
        .unwrap();
    let running = wait_state(&client, &s.id, TaskState::Running, Duration::from_secs(10)).await;
    let victim = running.worker.clone().unwrap();
    wait_assignments_acknowledged(&c.redis_con().await, &victim).await;
    let i = workers.iter().position(|w| w.name == victim).unwrap();
    workers[i].signal(libc::SIGKILL);
    let t = client.wait(&s.id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts, 2, "the killed attempt was charged: {t:?}");
    assert!(token(&t) > token(&running), "a new lease: {t:?} after {running:?}");
    let survivor = &workers[1 - i];
    assert!(survivor.log_text().contains(&s.id), "the other worker ran it");
    c.stop().await;
}

#[tokio::test]
async fn a_zombie_worker_cannot_complete_after_its_lease_passed() {
    let Some(mut c) = Cluster::start(&[("timing.lease_ttl", "1500ms")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let dir = tempfile::tempdir().unwrap();
    let prof = profile(dir.path(), "worker", SLEEP_WORKER);
    let url = c.redis.url();
    let env = proc_env(&url, &[("DROVER_LEASE_TTL", "1500ms")]);
    let zombie = spawn(
        "zombie",
        &["worker", "--config", &prof, "--id", "zombie"],
        &env,
        dir.path(),
    );
    let client = c.client();
    eventually(Duration::from_secs(60), "the first worker", || async {
        (client.workers().await.unwrap().workers.len() == 1).then_some(())
    })
    .await;
    let s = client
        .submit_one(&task("sleep", serde_json::json!(2500)))
        .await
        .unwrap();
    let first = wait_state(&client, &s.id, TaskState::Running, Duration::from_secs(10)).await;
    assert_eq!(first.worker.as_deref(), Some("zombie"));
    wait_assignments_acknowledged(&c.redis_con().await, "zombie").await;
    zombie.signal(libc::SIGSTOP);
    let fresh = spawn(
        "fresh",
        &["worker", "--config", &prof, "--id", "fresh"],
        &env,
        dir.path(),
    );
    // The lease runs out; the retry lands on the fresh worker.
    let second = eventually(
        Duration::from_secs(15),
        "the retry running on the fresh worker",
        || async {
            let t = client.get(&s.id).await.unwrap();
            (t.state == TaskState::Running && t.worker.as_deref() == Some("fresh")).then_some(t)
        },
    )
    .await;
    assert!(token(&second) > token(&first), "{second:?} after {first:?}");
    zombie.signal(libc::SIGCONT);
    let t = client.wait(&s.id, Duration::from_secs(15)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts, 2);
    assert_eq!(t.fence, second.fence, "the record holds the fresh fence: {t:?}");
    // The zombie woke up holding the first token: its renew says the lease is lost
    // or its completion is refused; either way it changed nothing.
    let log = eventually(Duration::from_secs(10), "the zombie to notice", || async {
        let log = zombie.log_text();
        (log.contains("completion refused") || log.contains("lease lost")).then_some(log)
    })
    .await;
    assert!(!log.contains("state=succeeded"), "the zombie never completed: {log}");
    drop(fresh);
    c.stop().await;
}

#[tokio::test]
async fn when_the_leader_coordinator_dies_another_takes_over() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let prof = profile(dir.path(), "worker", SLEEP_WORKER);
    let ports = [free_port(), free_port()];
    let mut coords: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let env = proc_env(&url, &[("DROVER_HTTP_ADDR", &format!("127.0.0.1:{p}"))]);
            spawn(
                &format!("coord-{i}"),
                &["coordinator", "--id", &format!("coord-{i}")],
                &env,
                dir.path(),
            )
        })
        .collect();
    let _dist = spawn(
        "dist",
        &["distributor", "--id", "dist"],
        &proc_env(&url, &[]),
        dir.path(),
    );
    let _worker = spawn(
        "worker",
        &["worker", "--config", &prof, "--id", "pw"],
        &proc_env(&url, &[]),
        dir.path(),
    );
    let mut con = redis::Client::open(url.clone())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let leader: String = eventually(Duration::from_secs(60), "a leader", || {
        let mut con = con.clone();
        async move {
            redis::cmd("GET")
                .arg("{drover:0}:leader")
                .query_async::<Option<String>>(&mut con)
                .await
                .unwrap()
        }
    })
    .await;
    let li: usize = if leader == "coord-0" { 0 } else { 1 };
    let survivor = Client::new(&format!("http://127.0.0.1:{}", ports[1 - li]), Some(ADMIN_TOKEN.into())).unwrap();
    eventually(Duration::from_secs(60), "the worker", || async {
        survivor
            .workers()
            .await
            .ok()
            .filter(|w| !w.workers.is_empty())
            .map(|_| ())
    })
    .await;
    coords[li].signal(libc::SIGKILL);
    coords[li].wait_exit(Duration::from_secs(5));
    // A delayed task and a retry both need the scheduler, which only the
    // leader runs.
    let mut delayed = task("noop", serde_json::Value::Null);
    delayed.delay = Some("500ms".into());
    let d = survivor.submit_one(&delayed).await.unwrap();
    let t = survivor.wait(&d.id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let now_leader: Option<String> = redis::cmd("GET")
        .arg("{drover:0}:leader")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(now_leader.as_deref(), Some(if li == 0 { "coord-1" } else { "coord-0" }));
}

#[tokio::test]
async fn a_role_waits_for_redis_and_becomes_ready_without_a_restart() {
    let Some(mut redis) = redis(Persistence::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prof = profile(dir.path(), "worker", SLEEP_WORKER);
    redis.kill();
    let admin = free_port();
    let env = proc_env(&redis.url(), &[("DROVER_ADMIN_ADDR", &format!("127.0.0.1:{admin}"))]);
    let w = spawn(
        "worker",
        &["worker", "--config", &prof, "--id", "patient"],
        &env,
        dir.path(),
    );
    let ready_url = format!("http://127.0.0.1:{admin}/ready");
    let http = reqwest::Client::new();
    let body = eventually(Duration::from_secs(15), "/ready to answer 503", || async {
        let r = http.get(&ready_url).send().await.ok()?;
        (r.status() == 503).then_some(())?;
        r.json::<serde_json::Value>().await.ok()
    })
    .await;
    assert_eq!(body["ready"], false);
    let health = admin_json(&http, admin, "/health").await;
    assert_eq!(health["redis_connected"], false);
    assert_eq!(health["role"], "worker");
    redis.restart().unwrap();
    eventually(Duration::from_secs(20), "/ready to answer 200", || async {
        let r = http.get(&ready_url).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(w.log_text().contains("redis unreachable"), "{}", w.log_text());
    let metrics = metrics_page(&http, admin).await;
    assert!(metrics.contains("drover_redis_up 1"), "{metrics}");
}

#[tokio::test]
async fn a_bad_config_value_exits_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("DROVER_LEASE_TTL", "soon")],
            "timing.lease_ttl (from DROVER_LEASE_TTL)",
        ),
        (
            vec![("DROVER_WORKER_CAPACITY", "-1")],
            "worker.capacity (from DROVER_WORKER_CAPACITY)",
        ),
        (vec![("DROVER_SIGNING_KEYS", "k1:abcd")], "signing_keys"),
        (vec![("DROVER_SIGNING_KEYS", "")], "DROVER_SIGNING_KEYS"),
    ];
    let prof = profile(dir.path(), "worker", SLEEP_WORKER);
    for (i, (extra, want)) in cases.into_iter().enumerate() {
        let env = proc_env("redis://127.0.0.1:1", &extra);
        let mut p = spawn(&format!("bad-{i}"), &["worker", "--config", &prof], &env, dir.path());
        let status = p.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{want}");
        let out = p.log_text();
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
        assert!(out.contains(want), "expected {want:?} in {out:?}");
        assert!(!out.contains("abcd"), "secrets are not echoed: {out}");
    }
}

#[test]
fn bench_with_role_processes_reports_each_roles_cpu() {
    if !drover::redis_server::available() {
        skip_or_fail("redis-server is not installed");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["bench", "--scenario", "throughput", "--processes", "--tasks", "2000"])
        .env_remove("DROVER_REDIS_URL")
        .output()
        .expect("drover bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let t = &v["throughput"];
    assert_eq!(t["tasks"], 2000, "{v}");
    assert!(
        t["latency"]["submit_to_start"].is_null(),
        "not measurable across processes: {v}"
    );
    assert!(t["latency"]["submit_to_finish"]["p50_ms"].as_f64().is_some(), "{v}");
    // Every role did work in its own process, and the bench reports it.
    for role in ["coordinator", "distributor", "worker", "bench"] {
        let us = t["process_cpu_us_per_task"][role].as_f64();
        assert!(us.is_some_and(|us| us >= 0.0), "{role}: {v}");
    }
    let worker = t["process_cpu_us_per_task"]["worker"].as_f64().unwrap();
    assert!(worker > 0.0, "2000 tasks cost the workers some CPU: {v}");
}
