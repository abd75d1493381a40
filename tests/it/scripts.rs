//! The scripts and envelopes against a real Redis, driven through the
//! store: a stale fence cannot complete, a replayed assignment cannot start
//! twice, forged or moved messages are refused with the right reason, and
//! trimming never drops an unacknowledged entry.

use crate::support::*;
use drover::envelope::{Keyring, Rejection};
use drover::handlers::Registry;
use drover::messages::{self, AssignBody, Assignment, IntakeBody, IntakeTask};
use drover::redis_server::Persistence;
use drover::roles::Context;
use drover::store::{Completion, Entry, Heartbeat, Outcome, RenewStatus, StartReply, StartedTask};
use drover::task::{NewTask, TaskId, TaskState};
use std::time::Duration;

fn new_task(handler: &str) -> NewTask {
    NewTask {
        id: TaskId::generate(),
        handler: handler.into(),
        input: "null".into(),
        tags: vec![],
        priority: 0,
        max_attempts: 3,
        timeout_ms: 10_000,
        run_at_ms: None,
        idempotency_key: None,
    }
}

async fn store_ctx() -> Option<(drover::redis_server::RedisServer, Context)> {
    let redis = redis(Persistence::None)?;
    let ctx = Context::new(settings(&redis.url(), &[]), "test", "test").unwrap();
    ctx.store.ping().await.unwrap();
    Some((redis, ctx))
}

async fn register(ctx: &Context, wid: &str) {
    ctx.store
        .ensure_group(&ctx.store.keys.worker_stream(wid), "worker")
        .await
        .unwrap();
    let handlers = vec!["noop".to_string()];
    ctx.store
        .heartbeat(&Heartbeat {
            worker_id: wid,
            capacity: 4,
            handlers: &handlers,
            tags: &[],
            in_flight: 0,
            draining: false,
        })
        .await
        .unwrap();
}

/// Assigns one queued task (at version `v`) to `wid` and starts it there.
async fn assign_and_start(ctx: &Context, wid: &str, id: &str, v: u64) -> StartedTask {
    let it = IntakeTask {
        id: id.into(),
        v,
        h: "noop".into(),
        tags: vec![],
        prio: 0,
    };
    let r = ctx.store.assign(wid, &[it], Duration::from_secs(5)).await.unwrap();
    assert_eq!(r, vec!["ok"]);
    let entries = ctx
        .store
        .read_group(&ctx.store.keys.worker_stream(wid), "worker", wid, 10, None, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let body: AssignBody = ctx
        .store
        .open(&ctx.store.keys.worker_stream(wid), &entries[0])
        .unwrap()
        .parse()
        .unwrap();
    match ctx
        .store
        .start(wid, &entries[0].id, &body.tasks, Duration::from_millis(300))
        .await
        .unwrap()
        .remove(0)
    {
        StartReply::Started(t) => *t,
        StartReply::Refused(why) => panic!("start refused: {why}"),
    }
}

#[tokio::test]
async fn a_stale_fence_can_neither_renew_nor_complete() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    register(&ctx, "w2").await;
    let t = new_task("noop");
    ctx.store.submit(std::slice::from_ref(&t)).await.unwrap();
    let first = assign_and_start(&ctx, "w1", t.id.as_str(), 1).await;
    assert_eq!(first.token.fence, 1);

    // w1 stalls past its lease; the reaper charges the attempt and
    // schedules a retry, the scheduler queues it, w2 takes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = ctx.store.reap(100, |_| 0).await.unwrap();
    assert_eq!(stats.lease_expired, 1);
    assert_eq!(ctx.store.promote(100).await.unwrap(), 1);
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(view.state, TaskState::Queued);
    let second = assign_and_start(&ctx, "w2", t.id.as_str(), view.version).await;
    assert_eq!(second.token.fence, 2);
    assert_eq!(second.token.epoch, first.token.epoch);

    let renew = ctx
        .store
        .renew("w1", &[(first.id.clone(), first.token)], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(renew, vec![RenewStatus::Lost]);
    let late = Completion {
        task: first.clone(),
        outcome: Outcome::Succeeded,
        payload: "\"zombie\"".into(),
        retry_delay_ms: 0,
    };
    assert_eq!(ctx.store.complete("w1", &[late]).await.unwrap(), vec!["stale"]);
    // Even with the right worker id, an old fence is refused.
    let forged = Completion {
        task: StartedTask {
            token: first.token,
            ..second.clone()
        },
        outcome: Outcome::Succeeded,
        payload: "1".into(),
        retry_delay_ms: 0,
    };
    assert_eq!(ctx.store.complete("w2", &[forged]).await.unwrap(), vec!["stale"]);

    let ok = Completion {
        task: second.clone(),
        outcome: Outcome::Succeeded,
        payload: "\"fresh\"".into(),
        retry_delay_ms: 0,
    };
    assert_eq!(ctx.store.complete("w2", &[ok]).await.unwrap(), vec!["succeeded"]);
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(view.result, Some(serde_json::json!("fresh")));
    assert_eq!(view.attempts, 2);
    assert_eq!(view.fence.as_deref(), Some(format!("{}.2", first.token.epoch).as_str()));
}

#[tokio::test]
async fn a_replayed_assignment_is_not_started_again() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    let t = new_task("noop");
    ctx.store.submit(std::slice::from_ref(&t)).await.unwrap();
    let stream = ctx.store.keys.worker_stream("w1");
    let started = assign_and_start(&ctx, "w1", t.id.as_str(), 1).await;
    let c = Completion {
        task: started,
        outcome: Outcome::Succeeded,
        payload: "null".into(),
        retry_delay_ms: 0,
    };
    ctx.store.complete("w1", &[c]).await.unwrap();

    // Copy the signed assignment back into the stream, byte for byte.
    let mut con = ctx.store.con().await.unwrap();
    let all: redis::Value = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let raw = first_entry_payload(all);
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("m")
        .arg(&raw)
        .query_async(&mut con)
        .await
        .unwrap();
    let entries = ctx
        .store
        .read_group(&stream, "worker", "w1", 10, None, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let body: AssignBody = ctx
        .store
        .open(&stream, &entries[0])
        .expect("the signature is still valid")
        .parse()
        .unwrap();
    let r = ctx
        .store
        .start("w1", &entries[0].id, &body.tasks, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(&r[0], StartReply::Refused(why) if why == "state:succeeded"),
        "{r:?}"
    );
    assert_eq!(
        pending_count(&mut con, &stream, "worker").await,
        0,
        "the replay was acknowledged"
    );
    assert_eq!(ctx.store.get_task(&t.id).await.unwrap().unwrap().attempts, 1);
}

#[tokio::test]
async fn forged_expired_moved_and_truncated_messages_are_refused_by_reason() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    let intake = ctx.store.keys.intake();
    let body = serde_json::to_vec(&IntakeBody {
        tasks: vec![IntakeTask {
            id: "x".into(),
            v: 1,
            h: "noop".into(),
            tags: vec![],
            prio: 0,
        }],
    })
    .unwrap();
    let ours = Keyring::parse(SIGNING_KEYS, None).unwrap();
    let theirs = Keyring::generate();
    let far = u64::MAX / 2;
    let good = ours.sign(&intake, messages::SUBMIT, far, &body);
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Rejection)> = vec![
        ("unsigned", b"{\"tasks\":[]}".to_vec(), Rejection::Malformed),
        (
            "other key",
            theirs.sign(&intake, messages::SUBMIT, far, &body),
            Rejection::Signature,
        ),
        (
            "moved from another stream",
            ours.sign(&ctx.store.keys.events(), messages::SUBMIT, far, &body),
            Rejection::Signature,
        ),
        (
            "expired",
            ours.sign(&intake, messages::SUBMIT, 1, &body),
            Rejection::Expired,
        ),
        ("flipped bit", flipped, Rejection::Signature),
        ("truncated tag", good[..good.len() - 3].to_vec(), Rejection::Malformed),
        ("oversize", vec![0u8; 2 << 20], Rejection::Oversize),
    ];
    for (what, raw, want) in cases {
        let entry = Entry { id: "1-1".into(), raw };
        let got = ctx.store.open(&intake, &entry).map(|_| ()).unwrap_err();
        assert_eq!(got, want, "{what}");
    }
    assert!(ctx
        .store
        .open(
            &intake,
            &Entry {
                id: "1-1".into(),
                raw: good
            }
        )
        .is_ok());
}

#[tokio::test]
async fn forged_intake_and_worker_messages_are_never_executed() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut reg = Registry::default();
    let r2 = runs.clone();
    reg.register(
        "count",
        std::sync::Arc::new(move |_ctx: drover::handlers::TaskContext, _in: serde_json::Value| {
            let r = r2.clone();
            async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, drover::handlers::HandlerError>(serde_json::Value::Null)
            }
        }),
    );
    c.add_worker("w1", 4, &[], reg).await;
    let client = c.client();
    let ctx = c.ctx("attacker");
    eventually(Duration::from_secs(5), "worker registered", || async {
        (!client.workers().await.unwrap().workers.is_empty()).then_some(())
    })
    .await;
    let before: std::collections::HashMap<&str, f64> = ["signature", "malformed", "oversize"]
        .into_iter()
        .map(|r| (r, rejected(r)))
        .collect();
    let real = client
        .submit_one(&crate::lifecycle::task("count", serde_json::Value::Null))
        .await
        .unwrap();
    client.wait(&real.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);

    // An attacker with Redis access but not the key writes assignments and
    // intake entries naming the finished task and a fresh one.
    let attacker = Keyring::generate();
    let fresh = new_task("count");
    let mut con = c.redis_con().await;
    let ws = ctx.store.keys.worker_stream("w1");
    let fake = serde_json::to_vec(&AssignBody {
        tasks: vec![
            Assignment {
                id: real.id.clone(),
                v: 3,
            },
            Assignment {
                id: fresh.id.to_string(),
                v: 2,
            },
        ],
    })
    .unwrap();
    let forged = attacker.sign(&ws, messages::ASSIGN, u64::MAX / 2, &fake);
    let _: String = redis::cmd("XADD")
        .arg(&ws)
        .arg("*")
        .arg("m")
        .arg(forged)
        .query_async(&mut con)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&ws)
        .arg("*")
        .arg("m")
        .arg("garbage")
        .query_async(&mut con)
        .await
        .unwrap();
    // 2 MiB written straight into the intake stream: refused by size before
    // any verification, and acknowledged like the rest.
    let _: String = redis::cmd("XADD")
        .arg(ctx.store.keys.intake())
        .arg("*")
        .arg("m")
        .arg(vec![b'x'; 2 << 20])
        .query_async(&mut con)
        .await
        .unwrap();
    let intake = ctx.store.keys.intake();
    let fake_intake = serde_json::to_vec(&IntakeBody {
        tasks: vec![IntakeTask {
            id: real.id.clone(),
            v: 5,
            h: "count".into(),
            tags: vec![],
            prio: 0,
        }],
    })
    .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&intake)
        .arg("*")
        .arg("m")
        .arg(attacker.sign(&intake, messages::SUBMIT, u64::MAX / 2, &fake_intake))
        .query_async(&mut con)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "forged entries acknowledged", || {
        let mut con = con.clone();
        let ws = ws.clone();
        let intake = intake.clone();
        async move {
            let a = pending_count(&mut con, &ws, "worker").await;
            let b = pending_count(&mut con, &intake, "distributors").await;
            let len: u64 = redis::cmd("XLEN").arg(&ws).query_async(&mut con).await.unwrap();
            (a == 0 && b == 0 && len >= 1).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "nothing forged was executed"
    );
    assert_eq!(client.get(&real.id).await.unwrap().attempts, 1);
    for reason in ["signature", "malformed", "oversize"] {
        assert!(rejected(reason) > before[reason], "{reason} rejections were counted");
    }
    c.stop().await;
}

#[tokio::test]
async fn trimming_keeps_every_unacknowledged_entry() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    let stream = ctx.store.keys.intake();
    ctx.store.ensure_group(&stream, "distributors").await.unwrap();
    for _ in 0..5 {
        ctx.store.submit(&[new_task("noop")]).await.unwrap();
    }
    // Deliver three, acknowledge the second only.
    let got = ctx
        .store
        .read_group(&stream, "distributors", "d1", 3, None, false)
        .await
        .unwrap();
    ctx.store
        .ack(&stream, "distributors", &[got[1].id.clone()])
        .await
        .unwrap();
    ctx.store.trim(&stream, "distributors").await.unwrap();
    let mut con = ctx.store.con().await.unwrap();
    let len: u64 = redis::cmd("XLEN").arg(&stream).query_async(&mut con).await.unwrap();
    assert_eq!(len, 5, "the oldest pending entry bounds the trim");
    // Acknowledge the rest of the delivered ones: only delivered, acked
    // entries go; the two never delivered stay.
    ctx.store
        .ack(&stream, "distributors", &[got[0].id.clone(), got[2].id.clone()])
        .await
        .unwrap();
    ctx.store.trim(&stream, "distributors").await.unwrap();
    let len: u64 = redis::cmd("XLEN").arg(&stream).query_async(&mut con).await.unwrap();
    assert_eq!(len, 3, "the last delivered entry and the two undelivered remain");
    let rest = ctx
        .store
        .read_group(&stream, "distributors", "d1", 10, None, false)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
}

/// The `m` field of the first entry in an XRANGE reply.
fn first_entry_payload(v: redis::Value) -> Vec<u8> {
    let redis::Value::Array(entries) = v else {
        panic!("XRANGE reply {v:?}")
    };
    let redis::Value::Array(entry) = &entries[0] else {
        panic!("entry {:?}", entries[0])
    };
    let redis::Value::Array(fields) = &entry[1] else {
        panic!("fields {:?}", entry[1])
    };
    match &fields[1] {
        redis::Value::BulkString(b) => b.clone(),
        other => panic!("payload {other:?}"),
    }
}

#[tokio::test]
async fn the_reconciler_announces_again_a_queued_task_whose_entry_was_lost() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    let t = new_task("noop");
    ctx.store.submit(std::slice::from_ref(&t)).await.unwrap();
    let intake = ctx.store.keys.intake();
    let mut con = ctx.store.con().await.unwrap();
    // Lose the entry, as a Redis restart with AOF everysec can.
    let _: () = redis::cmd("DEL").arg(&intake).query_async(&mut con).await.unwrap();
    let (cursor, n) = ctx.store.reconcile("0", 1000, Duration::ZERO).await.unwrap();
    assert_eq!((cursor.as_str(), n), ("0", 1));
    let len: u64 = redis::cmd("XLEN").arg(&intake).query_async(&mut con).await.unwrap();
    assert_eq!(len, 1, "announced again");
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!((view.state, view.version), (TaskState::Queued, 2));
    // With its entry present, a second sweep leaves it alone.
    let (_, n) = ctx.store.reconcile("0", 1000, Duration::ZERO).await.unwrap();
    assert_eq!(n, 0);
    // The announcement is a valid one: the task can be assigned from it.
    register(&ctx, "w1").await;
    ctx.store.ensure_group(&intake, "distributors").await.unwrap();
    let e = ctx
        .store
        .read_group(&intake, "distributors", "d", 10, None, true)
        .await
        .unwrap();
    assert!(e.is_empty());
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&intake)
        .arg("distributors")
        .arg("0")
        .query_async(&mut con)
        .await
        .unwrap();
    let e = ctx
        .store
        .read_group(&intake, "distributors", "d", 10, None, false)
        .await
        .unwrap();
    let body: IntakeBody = ctx.store.open(&intake, &e[0]).unwrap().parse().unwrap();
    assert_eq!(
        ctx.store
            .assign("w1", &body.tasks, Duration::from_secs(5))
            .await
            .unwrap(),
        vec!["ok"]
    );
}

#[tokio::test]
async fn tasks_due_right_at_submission_are_never_stranded() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    c.add_worker("w1", 64, &[], Registry::builtins()).await;
    let client = c.client();
    let ctx = c.ctx("check");
    let mut ids = Vec::new();
    for round in 0..6 {
        let now = ctx.store.clock().now_ms();
        let reqs: Vec<_> = (0..50)
            .map(|i| {
                let mut r = crate::lifecycle::task("noop", serde_json::Value::Null);
                r.run_at_ms = Some(now + (i % 10) + round);
                r
            })
            .collect();
        ids.extend(client.submit_batch(reqs).await.unwrap().tasks.into_iter().map(|t| t.id));
    }
    for id in &ids {
        let t = client.wait(id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    }
    c.stop().await;
}

#[tokio::test]
async fn a_redis_restart_starts_a_new_epoch_and_running_tasks_keep_theirs() {
    let Some(redis) = redis(Persistence::AofAlways) else {
        return;
    };
    let mut redis = redis;
    let ctx = Context::new(settings(&redis.url(), &[]), "test", "test").unwrap();
    ctx.store.ping().await.unwrap();
    register(&ctx, "w1").await;
    let a = new_task("noop");
    ctx.store.submit(std::slice::from_ref(&a)).await.unwrap();
    let first = assign_and_start(&ctx, "w1", a.id.as_str(), 1).await;
    redis.restart().unwrap();
    // The pool reconnects on the next call.
    let b = new_task("noop");
    eventually(Duration::from_secs(10), "redis back", || async {
        ctx.store.submit(std::slice::from_ref(&b)).await.ok().map(|_| ())
    })
    .await;
    let second = assign_and_start(&ctx, "w1", b.id.as_str(), 1).await;
    assert!(
        second.token.epoch > first.token.epoch,
        "{:?} then {:?}",
        first.token,
        second.token
    );
    // The attempt started before the restart completes under its own epoch.
    let done = Completion {
        task: first,
        outcome: Outcome::Succeeded,
        payload: "1".into(),
        retry_delay_ms: 0,
    };
    assert_eq!(ctx.store.complete("w1", &[done]).await.unwrap(), vec!["succeeded"]);
}

#[tokio::test]
async fn handing_back_a_task_with_a_cancel_request_cancels_it() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    let t = new_task("noop");
    ctx.store.submit(std::slice::from_ref(&t)).await.unwrap();
    let started = assign_and_start(&ctx, "w1", t.id.as_str(), 1).await;
    assert_eq!(
        ctx.store.cancel(&t.id).await.unwrap(),
        drover::store::CancelOutcome::Requested
    );
    let back = Completion {
        task: started,
        outcome: Outcome::Released,
        payload: String::new(),
        retry_delay_ms: 0,
    };
    assert_eq!(ctx.store.complete("w1", &[back]).await.unwrap(), vec!["cancelled"]);
}

/// The process-wide count of messages rejected for `reason`.
fn rejected(reason: &str) -> f64 {
    let text = drover::telemetry::metrics_handle().render();
    let prefix = format!("drover_messages_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
