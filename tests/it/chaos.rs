//! kill -9 of random worker processes, again and again, during a 2000-task
//! run with slow handlers. The handler appends `task epoch fence` to a
//! ledger file (outside Redis) before it reports success. Afterwards: every
//! accepted task succeeded; per task, fences in the ledger strictly increase
//! (no effect applied twice under the same or an older token) and the last
//! one is the fence of the attempt that succeeded; and nothing is left
//! behind: no leases or batch records, no scheduled tasks, no id left in a
//! ready list, and the backlog counts are zero. Half the tasks are in a
//! queue with a concurrency limit that is paused and resumed meanwhile.

use crate::lifecycle::task;
use crate::support::*;
use drover::task::TaskState;
use rand::Rng;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_again_and_again_loses_nothing_and_applies_nothing_twice() {
    let Some(mut c) = Cluster::start(&[("coordinator.handlers", "ledger")]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    std::fs::write(&ledger, "").unwrap();
    let script = format!(
        "sleep 0.05; printf '%s %s %s\\n' \"$DROVER_TASK_ID\" \"$DROVER_EPOCH\" \"$DROVER_FENCE_COUNTER\" >> {}",
        ledger.display()
    );
    let prof = profile(
        dir.path(),
        "worker",
        &format!("[handlers]\nledger = {{ kind = \"exec\", command = [\"/bin/sh\", \"-c\", {script:?}], timeout = \"10s\" }}\n"),
    );
    let url = c.redis.url();
    let env = proc_env(&url, &[("DROVER_MAX_ATTEMPTS", "20"), ("RUST_LOG", "warn")]);
    let ids = ["k1", "k2", "k3"];
    let start = |id: &str| {
        spawn(
            id,
            &["worker", "--config", &prof, "--id", id, "--capacity", "8"],
            &env,
            dir.path(),
        )
    };
    let mut workers: Vec<Proc> = ids.iter().map(|id| start(id)).collect();
    let client = c.client();
    eventually(Duration::from_secs(60), "three workers", || async {
        (client.workers().await.unwrap().workers.len() == 3).then_some(())
    })
    .await;

    // Two queues: "open" without limits, and "narrow" with a concurrency
    // limit of 6 (of 24 slots), paused and resumed while workers die.
    let mut accepted = Vec::new();
    for (i, queue) in ["open", "narrow", "open", "narrow"].iter().enumerate() {
        let mut req = task("ledger", serde_json::Value::Null);
        req.max_attempts = Some(20);
        req.queue = Some(queue.to_string());
        accepted.extend(
            client
                .submit_batch(vec![req.clone(); 500])
                .await
                .unwrap()
                .tasks
                .into_iter()
                .map(|t| t.id),
        );
        if i == 1 {
            let limits = drover::api::QueueLimitsBody {
                concurrency: Some(6),
                ..Default::default()
            };
            client.set_queue_limits("narrow", &limits).await.unwrap();
        }
    }

    // Chaos: kill -9 a random worker every 700 ms, bring it back under the
    // same id (so it re-reads what it was sent), twelve times; "narrow" is
    // paused from the third kill to the eighth.
    let mut kills = 0;
    while kills < 12 {
        match kills {
            3 => assert!(client.change_queue("narrow", "pause").await.unwrap().paused),
            8 => assert!(!client.change_queue("narrow", "resume").await.unwrap().paused),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let i = rand::rng().random_range(0..workers.len());
        workers[i].signal(libc::SIGKILL);
        workers[i].wait_exit(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
        workers[i] = start(ids[i]);
        kills += 1;
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut finals = HashMap::new();
    for id in &accepted {
        loop {
            let t = client.get(id).await.unwrap();
            if t.state.is_terminal() {
                assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
                finals.insert(id.clone(), t);
                break;
            }
            assert!(Instant::now() < deadline, "task {id} never finished: {t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The ledger: per task, strictly increasing fences; the last is the one
    // that succeeded.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut seen: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for line in text.lines() {
        let mut p = line.split(' ');
        let (id, e, f) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        seen.entry(id)
            .or_default()
            .push((e.parse().unwrap(), f.parse().unwrap()));
    }
    let mut twice = 0;
    for id in &accepted {
        let applied = seen
            .get(id.as_str())
            .unwrap_or_else(|| panic!("task {id} succeeded but its effect is not in the ledger"));
        assert!(
            applied.windows(2).all(|w| w[0] < w[1]),
            "task {id}: effects not under strictly increasing fences: {applied:?}"
        );
        let last = applied.last().unwrap();
        assert_eq!(
            Some(format!("{}.{}", last.0, last.1)),
            finals[id].fence,
            "task {id}: the last effect is the winner's"
        );
        if applied.len() > 1 {
            twice += 1;
        }
    }
    eprintln!(
        "chaos: {} tasks, {kills} kills, {twice} tasks applied more than once (each under a newer fence)",
        accepted.len()
    );

    // Nothing left behind.
    let mut con = c.redis_con().await;
    for zset in ["{drover:0}:leases", "{drover:0}:scheduled"] {
        let n: u64 = redis::cmd("ZCARD").arg(zset).query_async(&mut con).await.unwrap();
        assert_eq!(n, 0, "{zset} is empty");
    }
    let records: Vec<String> = redis::cmd("KEYS")
        .arg("{drover:0}:b:*")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(records.is_empty(), "every batch record retired: {records:?}");
    crate::taking::assert_backlog_drained(&mut con).await;
    let counts: HashMap<String, i64> = redis::AsyncCommands::hgetall(&mut con, "{drover:0}:counts")
        .await
        .unwrap();
    assert!(counts.values().all(|n| *n == 0), "{counts:?}");
    drop(workers);
    c.stop().await;
}
