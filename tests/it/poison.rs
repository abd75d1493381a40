//! Poison tasks and redelivery: a handler that crashes or hangs every time
//! ends dead after its attempts, spaced by backoff, while other tasks keep
//! flowing; one task placed by two distributors at once, or found twice
//! in its list, starts exactly once.

use crate::lifecycle::task;
use crate::support::*;
use drover::handlers::{HandlerSpec, Registry};
use drover::store::StartReply;
use drover::task::TaskState;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test]
async fn poison_tasks_die_after_their_attempts_while_others_flow() {
    let Some(mut c) = Cluster::start(&[]).await else { return };
    c.add_distributor("dist-1");
    let mut specs = BTreeMap::new();
    let spec = |t: &str| toml::from_str::<HandlerSpec>(t).unwrap();
    specs.insert(
        "crash".to_string(),
        spec("kind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"kill -SEGV $$\"]"),
    );
    specs.insert(
        "hang".to_string(),
        spec("kind = \"exec\"\ncommand = [\"/bin/sleep\", \"600\"]\ntimeout = \"300ms\""),
    );
    specs.insert("noop".to_string(), spec("kind = \"builtin\""));
    c.add_worker("w1", 8, &[], Registry::from_specs(&specs).unwrap()).await;
    let client = c.client();
    let mut poison = Vec::new();
    for h in ["crash", "hang"] {
        let mut r = task(h, serde_json::Value::Null);
        r.max_attempts = Some(3);
        poison.extend(
            client
                .submit_batch(vec![r; 3])
                .await
                .unwrap()
                .tasks
                .into_iter()
                .map(|t| t.id),
        );
    }
    let good = client
        .submit_batch(vec![task("noop", serde_json::Value::Null); 200])
        .await
        .unwrap();
    for s in &good.tasks {
        assert_eq!(
            client.wait(&s.id, Duration::from_secs(20)).await.unwrap().state,
            TaskState::Succeeded
        );
    }
    for id in &poison {
        let t = wait_state(&client, id, TaskState::Dead, Duration::from_secs(30)).await;
        assert_eq!(t.attempts, 3, "exactly its attempts, no hot loop: {t:?}");
        let err = t.error.clone().unwrap();
        assert!(err.contains("signal 11") || err.contains("timed out"), "{err}");
        // Two backoff delays of at least 50 and 100 ms separate the attempts.
        assert!(t.finished_ms.unwrap() - t.created_ms >= 150, "{t:?}");
    }
    c.stop().await;
}

#[tokio::test]
async fn one_task_placed_twice_at_once_starts_once() {
    let Some((_redis, ctx)) = crate::taking::store_ctx().await else {
        return;
    };
    for w in ["w1", "w2"] {
        crate::taking::register(&ctx, w).await;
    }
    let t = crate::taking::new_task("noop");
    ctx.store.submit(std::slice::from_ref(&t)).await.unwrap();
    // Two distributors place it at once, for w1 and w2: the backlog gives
    // it to one of them only.
    let list = crate::taking::ready_list(&ctx, "default", 0).await;
    let names = ctx.store.active_backlogs().await.unwrap();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (r1, r2) = tokio::join!(
        ctx.store.assign("w1", 1, &names, Duration::from_secs(5)),
        ctx.store.assign("w2", 1, &names, Duration::from_secs(5)),
    );
    let taken = [r1.unwrap().taken, r2.unwrap().taken];
    assert_eq!(taken.iter().sum::<usize>(), 1, "taken once: {taken:?}");
    // A copy of the task's id in its list (as a lost reply retried could
    // leave) gives it to nobody else either.
    let mut con = ctx.store.con().await.unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(t.id.as_str())
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        ctx.store
            .assign("w2", 1, &names, Duration::from_secs(5))
            .await
            .unwrap()
            .taken,
        0
    );
    // Each worker stream got what was appended; only w1's can start, and
    // only once even if w1 reads it twice (a restart re-reads pending).
    let mut started = 0;
    for w in ["w1", "w2"] {
        let stream = ctx.store.keys.worker_stream(w);
        for pending in [false, true] {
            for e in ctx
                .store
                .read_group(&stream, "worker", w, 10, None, pending)
                .await
                .unwrap()
            {
                for r in crate::taking::claim(&ctx, w, &e).await {
                    if let StartReply::Started(_) = r {
                        started += 1;
                    }
                }
            }
        }
    }
    assert_eq!(started, 1, "exactly one claim wins");
}
