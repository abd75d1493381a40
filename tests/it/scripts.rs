//! The scripts and envelopes against a real Redis, driven through the
//! store: a stale fence cannot complete, a replayed assignment or a forged
//! batch token is not accepted, a batch's lease record lives exactly as
//! long as one of its tasks runs, forged or moved messages are refused with
//! the right reason, and trimming never drops an unacknowledged entry.

use crate::support::*;
use drover::context::Context;
use drover::envelope::{Keyring, Rejection};
use drover::handlers::Registry;
use drover::messages::{self, AssignBody, Assignment, IntakeBody, IntakeTask};
use drover::names::QueueName;
use drover::redis_server::Persistence;
use drover::store::{
    AssignStatus, Completion, Entry, FinishedState, Heartbeat, Outcome, Refusal, RenewStatus, StartReply, StartedTask,
    SubmitReply, SubmitStatus,
};
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
        queue: QueueName::default_queue(),
        unique_key: None,
        unique_for_ms: 0,
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

/// A store with worker `w1` registered and `n` noop tasks submitted.
async fn w1_and_tasks(n: usize) -> Option<(drover::redis_server::RedisServer, Context, Vec<NewTask>)> {
    let (redis, ctx) = store_ctx().await?;
    register(&ctx, "w1").await;
    let tasks: Vec<NewTask> = (0..n).map(|_| new_task("noop")).collect();
    ctx.store.submit(&tasks).await.unwrap();
    Some((redis, ctx, tasks))
}

/// Assigns one queued task (at version `v`) to `wid`, which takes a 300 ms
/// lease there, and has `wid` accept it.
async fn assign_and_start(ctx: &Context, wid: &str, id: &str, v: u64) -> StartedTask {
    let it = IntakeTask {
        id: id.into(),
        v,
        h: "noop".into(),
        tags: vec![],
        prio: 0,
    };
    let r = ctx
        .store
        .assign(wid, &[it], &[], Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(r, vec![AssignStatus::Assigned]);
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
        .claim(wid, &entries[0].id, entries[0].batch.as_deref(), &body.tasks)
        .await
        .unwrap()
        .remove(0)
    {
        StartReply::Started(t) => *t,
        StartReply::Refused(why) => panic!("claim refused: {why}"),
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

    // w1 stalls past its lease; the reaper charges the attempt and
    // schedules a retry, the scheduler queues it, w2 takes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = ctx.store.reap(100, |_| 0).await.unwrap();
    assert_eq!(stats.lease_expired, 1);
    assert_eq!(ctx.store.promote(100).await.unwrap(), 1);
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(view.state, TaskState::Queued);
    let second = assign_and_start(&ctx, "w2", t.id.as_str(), view.version).await;
    assert!(second.token > first.token, "{:?} then {:?}", first.token, second.token);
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
    assert_eq!(
        ctx.store.complete("w1", &[late]).await.unwrap(),
        vec![FinishedState::Stale]
    );
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
    assert_eq!(
        ctx.store.complete("w2", &[forged]).await.unwrap(),
        vec![FinishedState::Stale]
    );

    let ok = Completion {
        task: second.clone(),
        outcome: Outcome::Succeeded,
        payload: "\"fresh\"".into(),
        retry_delay_ms: 0,
    };
    assert_eq!(
        ctx.store.complete("w2", &[ok]).await.unwrap(),
        vec![FinishedState::Succeeded]
    );
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(view.result, Some(serde_json::json!("fresh")));
    assert_eq!(view.attempts, 2);
    assert_eq!(view.fence, Some(second.token.to_string()));
}

/// Every entry of a stream: id, then its fields and values.
type RawEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

async fn every_entry(con: &mut drover::store::pool::Con, stream: &str) -> RawEntries {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .unwrap()
}

/// Copies the first entry of `stream` back into it, byte for byte, and
/// returns what the worker's next read of its stream yields for it.
async fn replay_first_entry(ctx: &Context, stream: &str, wid: &str) -> (Entry, AssignBody) {
    let mut con = ctx.store.con().await.unwrap();
    let all = every_entry(&mut con, stream).await;
    let mut copy = redis::cmd("XADD");
    copy.arg(stream).arg("*");
    for (field, value) in &all[0].1 {
        copy.arg(field).arg(value);
    }
    let _: String = copy.query_async(&mut con).await.unwrap();
    let mut entries = ctx
        .store
        .read_group(stream, "worker", wid, 10, None, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let entry = entries.remove(0);
    let body: AssignBody = ctx
        .store
        .open(stream, &entry)
        .expect("the signature is still valid")
        .parse()
        .unwrap();
    (entry, body)
}

#[tokio::test]
async fn a_replayed_assignment_is_not_started_again() {
    let Some((_redis, ctx, mut tasks)) = w1_and_tasks(1).await else {
        return;
    };
    let t = tasks.remove(0);
    let stream = ctx.store.keys.worker_stream("w1");
    let started = assign_and_start(&ctx, "w1", t.id.as_str(), 1).await;

    // While the attempt still runs (same state, version, worker and fence
    // as the original), the copy is refused: it is not the entry that
    // took the lease. This also covers a worker restarted under the same id.
    let (entry, body) = replay_first_entry(&ctx, &stream, "w1").await;
    let r = ctx
        .store
        .claim("w1", &entry.id, entry.batch.as_deref(), &body.tasks)
        .await
        .unwrap();
    assert!(matches!(&r[0], StartReply::Refused(Refusal::Replayed)), "{r:?}");

    let c = Completion {
        task: started,
        outcome: Outcome::Succeeded,
        payload: "null".into(),
        retry_delay_ms: 0,
    };
    ctx.store.complete("w1", &[c]).await.unwrap();
    // After it finished, the batch record went with its last task: a copy
    // names a lease that has ended.
    let (entry, body) = replay_first_entry(&ctx, &stream, "w1").await;
    let r = ctx
        .store
        .claim("w1", &entry.id, entry.batch.as_deref(), &body.tasks)
        .await
        .unwrap();
    assert!(matches!(&r[0], StartReply::Refused(Refusal::LeaseEnded)), "{r:?}");
    let mut con = ctx.store.con().await.unwrap();
    assert_eq!(
        pending_count(&mut con, &stream, "worker").await,
        0,
        "the replays were acknowledged"
    );
    assert_eq!(ctx.store.get_task(&t.id).await.unwrap().unwrap().attempts, 1);
}

/// Assigns queued tasks (each at version 1) to `wid` in one call, which
/// makes them one batch under one lease, and has `wid` accept them.
async fn assign_batch(ctx: &Context, wid: &str, tasks: &[NewTask], lease: Duration) -> (Entry, Vec<StartedTask>) {
    let intake: Vec<IntakeTask> = tasks
        .iter()
        .map(|t| IntakeTask {
            id: t.id.to_string(),
            v: 1,
            h: "noop".into(),
            tags: vec![],
            prio: 0,
        })
        .collect();
    let r = ctx.store.assign(wid, &intake, &[], lease).await.unwrap();
    assert!(r.iter().all(|s| *s == AssignStatus::Assigned), "{r:?}");
    let (entry, replies) = claim_next_entry(ctx, wid).await;
    let started = replies
        .into_iter()
        .map(|r| match r {
            StartReply::Started(t) => *t,
            StartReply::Refused(why) => panic!("claim refused: {why}"),
        })
        .collect();
    (entry, started)
}

/// Reads the one new entry on `wid`'s stream, an assignment, and has `wid`
/// claim it as the worker does.
async fn claim_next_entry(ctx: &Context, wid: &str) -> (Entry, Vec<StartReply>) {
    let stream = ctx.store.keys.worker_stream(wid);
    let mut entries = ctx
        .store
        .read_group(&stream, "worker", wid, 10, None, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let entry = entries.remove(0);
    let body: AssignBody = ctx.store.open(&stream, &entry).unwrap().parse().unwrap();
    let replies = ctx
        .store
        .claim(wid, &entry.id, entry.batch.as_deref(), &body.tasks)
        .await
        .unwrap();
    (entry, replies)
}

/// The tasks a claim started.
fn started(replies: Vec<StartReply>) -> Vec<StartedTask> {
    replies
        .into_iter()
        .filter_map(|r| match r {
            StartReply::Started(t) => Some(*t),
            StartReply::Refused(_) => None,
        })
        .collect()
}

/// The batch record `P b:<token>` and the token's deadline in `P leases`,
/// as (record fields, deadline).
async fn lease_of(ctx: &Context, token: &str) -> (std::collections::HashMap<String, String>, Option<u64>) {
    let mut con = ctx.store.con().await.unwrap();
    let record = redis::cmd("HGETALL")
        .arg(ctx.store.keys.batch(token))
        .query_async(&mut con)
        .await
        .unwrap();
    let deadline = redis::cmd("ZSCORE")
        .arg(ctx.store.keys.leases())
        .arg(token)
        .query_async(&mut con)
        .await
        .unwrap();
    (record, deadline)
}

async fn slots_used(ctx: &Context, wid: &str) -> String {
    let mut con = ctx.store.con().await.unwrap();
    redis::cmd("HGET")
        .arg(ctx.store.keys.worker(wid))
        .arg("used")
        .query_async(&mut con)
        .await
        .unwrap()
}

/// One assign call is one lease: every task carries the batch's token, and
/// the record and its deadline live exactly as long as one task still runs
/// under it, whichever way the tasks end.
#[tokio::test]
async fn a_batch_lease_lives_until_its_last_task_ends() {
    let Some((_redis, ctx, tasks)) = w1_and_tasks(3).await else {
        return;
    };
    let (entry, started) = assign_batch(&ctx, "w1", &tasks, Duration::from_secs(30)).await;
    let token = started[0].token;
    assert!(started.iter().all(|t| t.token == token), "{started:?}");
    let (record, deadline) = lease_of(&ctx, &token.to_string()).await;
    assert_eq!(record.get("w").map(String::as_str), Some("w1"), "{record:?}");
    assert_eq!(record.get("ent"), Some(&entry.id), "{record:?}");
    assert_eq!(record.get("n").map(String::as_str), Some("3"), "{record:?}");
    let ids: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(record.get("ids"), Some(&ids.join(",")), "{record:?}");
    assert!(deadline.is_some());
    let view = ctx.store.get_task(&tasks[0].id).await.unwrap().unwrap();
    assert_eq!(
        view.worker.as_deref(),
        Some("w1"),
        "the API names the holder from the record"
    );
    assert_eq!(view.fence, Some(token.to_string()));

    let end = |i: usize, outcome| [completion(started[i].clone(), outcome, "null")];
    let first = ctx.store.complete("w1", &end(0, Outcome::Succeeded)).await.unwrap();
    assert_eq!(first, vec![FinishedState::Succeeded]);
    let (record, deadline) = lease_of(&ctx, &token.to_string()).await;
    assert_eq!(
        (record.get("n").map(String::as_str), deadline.is_some()),
        (Some("2"), true)
    );
    let second = ctx.store.complete("w1", &end(1, Outcome::Failed)).await.unwrap();
    assert_eq!(second, vec![FinishedState::Scheduled]);
    assert_eq!(
        lease_of(&ctx, &token.to_string()).await.0.get("n").map(String::as_str),
        Some("1")
    );
    assert_eq!(slots_used(&ctx, "w1").await, "1");
    let last = ctx.store.complete("w1", &end(2, Outcome::Released)).await.unwrap();
    assert_eq!(last, vec![FinishedState::Queued]);
    let (record, deadline) = lease_of(&ctx, &token.to_string()).await;
    assert!(record.is_empty() && deadline.is_none(), "{record:?} {deadline:?}");
    assert_eq!(slots_used(&ctx, "w1").await, "0");
    let view = ctx.store.get_task(&tasks[0].id).await.unwrap().unwrap();
    assert_eq!(
        (view.worker, view.fence),
        (None, Some(token.to_string())),
        "a finished task keeps its token"
    );
}

/// The reaper ends an expired batch: only the tasks still running under
/// its token are moved on (a finished one is left alone), their slots come
/// back, and the record and deadline go.
#[tokio::test]
async fn the_reaper_ends_only_the_tasks_still_running_under_an_expired_lease() {
    let Some((_redis, ctx, tasks)) = w1_and_tasks(3).await else {
        return;
    };
    let (_, started) = assign_batch(&ctx, "w1", &tasks, Duration::from_millis(300)).await;
    let done = completion(started[0].clone(), Outcome::Succeeded, "1");
    assert_eq!(
        ctx.store.complete("w1", &[done]).await.unwrap(),
        vec![FinishedState::Succeeded]
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = ctx.store.reap(100, |_| 0).await.unwrap();
    assert_eq!(
        (stats.lease_expired, stats.retried, stats.requeued),
        (2, 2, 0),
        "{stats:?}"
    );
    let states: Vec<(TaskState, u32)> = {
        let mut v = Vec::new();
        for t in &tasks {
            let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
            v.push((view.state, view.attempts));
        }
        v
    };
    assert_eq!(
        states,
        vec![
            (TaskState::Succeeded, 1),
            (TaskState::Scheduled, 1),
            (TaskState::Scheduled, 1)
        ]
    );
    let (record, deadline) = lease_of(&ctx, &started[0].token.to_string()).await;
    assert!(record.is_empty() && deadline.is_none(), "{record:?} {deadline:?}");
    assert_eq!(slots_used(&ctx, "w1").await, "0");
    let counts = ctx.store.counts().await.unwrap();
    assert_eq!(counts.get("running").copied(), Some(0), "{counts:?}");
    let held: Vec<_> = started[1..].iter().map(|t| (t.id.clone(), t.token)).collect();
    let renew = ctx.store.renew("w1", &held, Duration::from_secs(5)).await.unwrap();
    assert_eq!(renew, vec![RenewStatus::Lost, RenewStatus::Lost]);
    assert_eq!(
        ctx.store.reap(100, |_| 0).await.unwrap().lease_expired,
        0,
        "nothing left to reap"
    );
}

/// A task named twice in one assign call (a copied intake entry read with
/// the original) is taken once: one slot, one running task in the batch,
/// and the worker starts it once.
#[tokio::test]
async fn a_task_named_twice_in_one_assign_call_is_taken_once() {
    let Some((_redis, ctx, mut tasks)) = w1_and_tasks(1).await else {
        return;
    };
    let t = tasks.remove(0);
    let it = IntakeTask {
        id: t.id.to_string(),
        v: 1,
        h: "noop".into(),
        tags: vec![],
        prio: 0,
    };
    let r = ctx
        .store
        .assign("w1", &[it.clone(), it], &[], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r, vec![AssignStatus::Assigned, AssignStatus::Conflict]);
    assert_eq!(slots_used(&ctx, "w1").await, "1");
    let started = started(claim_next_entry(&ctx, "w1").await.1);
    assert_eq!(started.len(), 1, "started once");
    let (record, _) = lease_of(&ctx, &started[0].token.to_string()).await;
    assert_eq!(record.get("n").map(String::as_str), Some("1"), "{record:?}");
    let counts = ctx.store.counts().await.unwrap();
    assert_eq!(counts.get("running").copied(), Some(1), "{counts:?}");
}

/// The reaper's limit counts tasks in whole batches, and it says when
/// leases beyond the limit are still due, so the leader calls again even
/// when a call moved few tasks.
#[tokio::test]
async fn the_reaper_says_when_more_leases_are_due() {
    let Some((_redis, ctx, tasks)) = w1_and_tasks(3).await else {
        return;
    };
    for t in &tasks {
        assign_batch(&ctx, "w1", std::slice::from_ref(t), Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = ctx.store.reap(2, |_| 0).await.unwrap();
    assert_eq!((first.lease_expired, first.more_due), (2, true), "{first:?}");
    let second = ctx.store.reap(2, |_| 0).await.unwrap();
    assert_eq!((second.lease_expired, second.more_due), (1, false), "{second:?}");
}

/// The batch token on an assign entry is not signed (assign.lua numbers the
/// batch after the distributor signed). A wrong one must not let a worker
/// run anything: another batch's record names another entry or worker, and
/// a token with no record names nothing.
#[tokio::test]
async fn a_forged_batch_token_on_an_assign_entry_is_refused() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    register(&ctx, "w2").await;
    let tasks: Vec<NewTask> = (0..3).map(|_| new_task("noop")).collect();
    ctx.store.submit(&tasks).await.unwrap();
    let (_, mine) = assign_batch(&ctx, "w1", &tasks[..1], Duration::from_secs(30)).await;
    let (_, theirs) = assign_batch(&ctx, "w2", &tasks[1..2], Duration::from_secs(30)).await;
    let it = IntakeTask {
        id: tasks[2].id.to_string(),
        v: 1,
        h: "noop".into(),
        tags: vec![],
        prio: 0,
    };
    assert_eq!(
        ctx.store
            .assign("w1", &[it], &[], Duration::from_secs(30))
            .await
            .unwrap(),
        vec![AssignStatus::Assigned]
    );
    let stream = ctx.store.keys.worker_stream("w1");
    let mut con = ctx.store.con().await.unwrap();
    let all = every_entry(&mut con, &stream).await;
    let envelope = all.last().unwrap().1.iter().find(|(f, _)| f == "m").unwrap().1.clone();
    let cases = [
        (Some(mine[0].token.to_string()), Refusal::Replayed),
        (Some(theirs[0].token.to_string()), Refusal::OtherWorker),
        (Some("1.999999".to_string()), Refusal::LeaseEnded),
        (Some("not a token".to_string()), Refusal::Replayed),
        (None, Refusal::Replayed),
    ];
    for (token, _) in &cases {
        let mut forged = redis::cmd("XADD");
        forged.arg(&stream).arg("*").arg("m").arg(&envelope);
        if let Some(token) = token {
            forged.arg("b").arg(token);
        }
        let _: String = forged.query_async(&mut con).await.unwrap();
    }
    let entries = ctx
        .store
        .read_group(&stream, "worker", "w1", 10, None, false)
        .await
        .unwrap();
    // The real entry first, then the forged copies in order.
    assert_eq!(entries.len(), 1 + cases.len());
    for (entry, (token, why)) in entries[1..].iter().zip(&cases) {
        let body: AssignBody = ctx.store.open(&stream, entry).unwrap().parse().unwrap();
        let r = ctx
            .store
            .claim("w1", &entry.id, entry.batch.as_deref(), &body.tasks)
            .await
            .unwrap();
        assert!(matches!(&r[0], StartReply::Refused(w) if w == why), "{token:?}: {r:?}");
    }
    let real = &entries[0];
    let body: AssignBody = ctx.store.open(&stream, real).unwrap().parse().unwrap();
    let r = ctx
        .store
        .claim("w1", &real.id, real.batch.as_deref(), &body.tasks)
        .await
        .unwrap();
    assert!(matches!(&r[0], StartReply::Started(_)), "{r:?}");
}

/// Batch numbers restart when `P batches` is new (a Redis that lost it, or
/// the first assign after an upgrade from per-task fences): the epoch
/// begins anew with it, so a later token is still above every earlier one.
#[tokio::test]
async fn a_batch_counter_begun_again_begins_a_new_epoch() {
    let Some((_redis, ctx, tasks)) = w1_and_tasks(3).await else {
        return;
    };
    let (_, first) = assign_batch(&ctx, "w1", &tasks[..1], Duration::from_secs(30)).await;
    let (_, second) = assign_batch(&ctx, "w1", &tasks[1..2], Duration::from_secs(30)).await;
    assert_eq!(
        second[0].token.epoch, first[0].token.epoch,
        "one epoch while the counter lives"
    );
    assert!(second[0].token > first[0].token);
    let mut con = ctx.store.con().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(ctx.store.keys.batches())
        .query_async(&mut con)
        .await
        .unwrap();
    let (_, third) = assign_batch(&ctx, "w1", &tasks[2..], Duration::from_secs(30)).await;
    assert_eq!(third[0].token.fence, 1, "the counter began again");
    assert!(
        third[0].token.epoch > second[0].token.epoch,
        "{:?} after {:?}",
        third[0].token,
        second[0].token
    );
    assert!(third[0].token > second[0].token);
}

/// A cancel names the running attempt by its batch's token, on the stream
/// of the worker the batch record names.
#[tokio::test]
async fn a_cancel_reaches_the_attempt_of_its_batch() {
    let Some((_redis, ctx, mut tasks)) = w1_and_tasks(1).await else {
        return;
    };
    let t = tasks.remove(0);
    let (_, started) = assign_batch(&ctx, "w1", std::slice::from_ref(&t), Duration::from_secs(30)).await;
    assert_eq!(
        ctx.store.cancel(&t.id).await.unwrap(),
        drover::store::CancelOutcome::Requested
    );
    let stream = ctx.store.keys.worker_stream("w1");
    let entries = ctx
        .store
        .read_group(&stream, "worker", "w1", 10, None, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let opened = ctx.store.open(&stream, &entries[0]).unwrap();
    assert_eq!(opened.msg_type(), messages::CANCEL);
    let c: messages::CancelBody = opened.parse().unwrap();
    assert_eq!(
        (c.id.as_str(), c.epoch, c.fence),
        (t.id.as_str(), started[0].token.epoch, started[0].token.fence)
    );
    let held = [(t.id.to_string(), started[0].token)];
    let renew = ctx.store.renew("w1", &held, Duration::from_secs(5)).await.unwrap();
    assert_eq!(renew, vec![RenewStatus::CancelRequested]);
}

/// Finished tasks carry no TTL of their own: each is filed in its queue's
/// index of the state it ended in, scored by its finish time, and the
/// leader's `expire_finished` deletes them once the result TTL has passed,
/// whichever way they ended. Live tasks stay.
#[tokio::test]
async fn finished_tasks_are_deleted_once_their_result_ttl_has_passed() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let ctx = Context::new(settings(&redis.url(), &[("timing.result_ttl", "1s")]), "test", "test").unwrap();
    ctx.store.ping().await.unwrap();
    register(&ctx, "w1").await;
    let once = NewTask {
        max_attempts: 1,
        ..new_task("noop")
    };
    let tasks = vec![new_task("noop"), once, new_task("noop"), new_task("noop")];
    ctx.store.submit(&tasks).await.unwrap();
    // tasks[0] succeeds, tasks[1] fails its only attempt (dead), tasks[2]
    // is cancelled while queued, tasks[3] stays queued.
    let (_, started) = assign_batch(&ctx, "w1", &tasks[..2], Duration::from_secs(30)).await;
    let ends: Vec<Completion> = started
        .into_iter()
        .zip([Outcome::Succeeded, Outcome::Failed])
        .map(|(task, outcome)| completion(task, outcome, "\"x\""))
        .collect();
    assert_eq!(
        ctx.store.complete("w1", &ends).await.unwrap(),
        vec![FinishedState::Succeeded, FinishedState::Dead]
    );
    assert_eq!(
        ctx.store.cancel(&tasks[2].id).await.unwrap(),
        drover::store::CancelOutcome::Cancelled
    );
    let mut con = ctx.store.con().await.unwrap();
    let ttls: Vec<i64> = {
        let mut v = Vec::new();
        for t in &tasks[..3] {
            v.push(
                redis::cmd("PTTL")
                    .arg(ctx.store.keys.task(t.id.as_str()))
                    .query_async(&mut con)
                    .await
                    .unwrap(),
            );
        }
        v
    };
    assert_eq!(ttls, vec![-1, -1, -1], "no TTL of their own");
    // Succeeded tasks are not indexed by default: they go to the expiry
    // lists, by the second their result expires.
    let seconds: Vec<String> = redis::cmd("ZRANGE")
        .arg(ctx.store.keys.done())
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    let mut filed = Vec::new();
    for s in &seconds {
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{}done:{s}", ctx.store.keys.prefix()))
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .unwrap();
        filed.extend(ids);
    }
    assert_eq!(filed, vec![tasks[0].id.to_string()], "the succeeded task, in a list");
    for (state, t) in [("dead", &tasks[1]), ("cancelled", &tasks[2])] {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(ctx.store.keys.index("default", state))
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(
            ids,
            vec![t.id.to_string()],
            "{state}: filed once, in its own state's index"
        );
        filed.extend(ids);
    }
    assert_eq!(filed.len(), 3);

    assert_eq!(ctx.store.expire_finished(1000).await.unwrap(), 0, "not before the TTL");
    assert!(ctx.store.get_task(&tasks[0].id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(ctx.store.expire_finished(2).await.unwrap(), 2, "at most the limit");
    assert_eq!(ctx.store.expire_finished(1000).await.unwrap(), 1);
    for t in &tasks[..3] {
        assert!(ctx.store.get_task(&t.id).await.unwrap().is_none(), "{} deleted", t.id);
    }
    let live = ctx.store.get_task(&tasks[3].id).await.unwrap().unwrap();
    assert_eq!(live.state, TaskState::Queued);
    for pattern in ["q:*", "done*"] {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}{pattern}", ctx.store.keys.prefix()))
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
    assert_eq!(ctx.store.expire_finished(1000).await.unwrap(), 0);
}

/// Builds before the queue indexes filed finished tasks in per-second lists
/// (`P expiring:<second>`): expire.lua still empties those, but leaves a
/// task alone that runs again (an operator retried it since).
#[tokio::test]
async fn lists_of_earlier_builds_are_emptied_but_spare_a_task_that_runs_again() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let ctx = Context::new(settings(&redis.url(), &[("timing.result_ttl", "1s")]), "test", "test").unwrap();
    ctx.store.ping().await.unwrap();
    let tasks = vec![new_task("noop"), new_task("noop")];
    ctx.store.submit(&tasks).await.unwrap();
    let mut con = ctx.store.con().await.unwrap();
    let p = ctx.store.keys.prefix().to_string();
    // As an earlier build left them: tasks[0] finished and filed, tasks[1]
    // filed and then queued again.
    let _: () = redis::cmd("HSET")
        .arg(ctx.store.keys.task(tasks[0].id.as_str()))
        .arg("state")
        .arg("succeeded")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(format!("{p}expiring:1"))
        .arg(tasks[0].id.as_str())
        .arg(tasks[1].id.as_str())
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(ctx.store.keys.expiring())
        .arg(1)
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        ctx.store.expire_finished(1000).await.unwrap(),
        2,
        "both taken off the list"
    );
    assert!(
        ctx.store.get_task(&tasks[0].id).await.unwrap().is_none(),
        "finished: deleted"
    );
    let live = ctx.store.get_task(&tasks[1].id).await.unwrap().unwrap();
    assert_eq!(live.state, TaskState::Queued, "running again: kept");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}expiring*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// The lease is taken at assignment, so a worker that dies before it
/// acknowledges the assign entry never ran the handler: when the lease runs
/// out, the reaper queues such a task again without charging the attempt,
/// whether the entry was never delivered or delivered and not acknowledged.
/// Once acknowledged (the worker may have run it), the attempt counts.
#[tokio::test]
async fn an_expired_lease_on_an_assignment_never_acknowledged_uses_no_attempt() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    let stream = ctx.store.keys.worker_stream("w1");
    let tasks: Vec<NewTask> = (0..3).map(|_| new_task("noop")).collect();
    ctx.store.submit(&tasks).await.unwrap();
    let assign = |t: &NewTask| IntakeTask {
        id: t.id.to_string(),
        v: 1,
        h: "noop".into(),
        tags: vec![],
        prio: 0,
    };
    let lease = Duration::from_millis(1);
    // tasks[0]: read and claimed (acknowledged). tasks[1]: delivered, never
    // acknowledged (the worker died right after reading). tasks[2]: never
    // delivered.
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(
            ctx.store.assign("w1", &[assign(t)], &[], lease).await.unwrap(),
            vec![AssignStatus::Assigned]
        );
        if i == 2 {
            continue;
        }
        let read = ctx
            .store
            .read_group(&stream, "worker", "w1", 10, None, false)
            .await
            .unwrap();
        assert_eq!(read.len(), 1);
        if i == 0 {
            let body: AssignBody = ctx.store.open(&stream, &read[0]).unwrap().parse().unwrap();
            let claimed = ctx
                .store
                .claim("w1", &read[0].id, read[0].batch.as_deref(), &body.tasks)
                .await
                .unwrap();
            assert!(matches!(claimed[0], StartReply::Started(_)), "{claimed:?}");
        }
    }

    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = ctx.store.reap(100, |_| 0).await.unwrap();
    assert_eq!((stats.requeued, stats.lease_expired), (2, 1), "{stats:?}");
    let expect = [
        (TaskState::Scheduled, 1),
        (TaskState::Queued, 0),
        (TaskState::Queued, 0),
    ];
    for (t, (state, attempts)) in tasks.iter().zip(expect) {
        let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
        assert_eq!((view.state, view.attempts), (state, attempts), "{view:?}");
    }
    let counts = ctx.store.counts().await.unwrap();
    assert_eq!(counts.get("queued").copied(), Some(2), "{counts:?}");
    assert_eq!(counts.get("running").copied(), Some(0), "{counts:?}");
    // The two queued again were announced: a distributor reads them.
    let intake = ctx.store.keys.intake();
    ctx.store.ensure_group(&intake, "distributors").await.unwrap();
    let entries = read_intake_from_the_start(&ctx).await;
    let announced: Vec<String> = entries
        .iter()
        .flat_map(|e| ctx.store.open(&intake, e).unwrap().parse::<IntakeBody>().unwrap().tasks)
        .filter(|t| t.v == 3)
        .map(|t| t.id)
        .collect();
    assert_eq!(announced, vec![tasks[1].id.to_string(), tasks[2].id.to_string()]);
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
        let entry = Entry {
            id: "1-1".into(),
            raw,
            batch: None,
        };
        let got = ctx.store.open(&intake, &entry).map(|_| ()).unwrap_err();
        assert_eq!(got, want, "{what}");
    }
    assert!(ctx
        .store
        .open(
            &intake,
            &Entry {
                id: "1-1".into(),
                raw: good,
                batch: None,
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
    // The distributor acknowledges what it cannot verify at once. The
    // worker sets such entries aside unacknowledged for two leases (4 s
    // here), so that any real lease in them runs out unacknowledged and
    // costs no attempt, then acknowledges them.
    eventually(Duration::from_secs(5), "forged intake entries acknowledged", || {
        let mut con = con.clone();
        let intake = intake.clone();
        async move { (pending_count(&mut con, &intake, "distributors").await == 0).then_some(()) }
    })
    .await;
    assert_eq!(
        pending_count(&mut con, &ws, "worker").await,
        2,
        "set aside, not yet acknowledged"
    );
    eventually(Duration::from_secs(15), "forged entries acknowledged", || {
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
    let e = read_intake_from_the_start(&ctx).await;
    let body: IntakeBody = ctx.store.open(&intake, &e[0]).unwrap().parse().unwrap();
    assert_eq!(
        ctx.store
            .assign("w1", &body.tasks, &[], Duration::from_secs(5))
            .await
            .unwrap(),
        vec![AssignStatus::Assigned]
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
    assert_eq!(
        ctx.store.complete("w1", &[done]).await.unwrap(),
        vec![FinishedState::Succeeded]
    );
}

#[tokio::test]
async fn handing_back_a_task_with_a_cancel_request_cancels_it() {
    let Some((_redis, ctx, mut tasks)) = w1_and_tasks(1).await else {
        return;
    };
    let t = tasks.remove(0);
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
    assert_eq!(
        ctx.store.complete("w1", &[back]).await.unwrap(),
        vec![FinishedState::Cancelled]
    );
}

/// Rewinds the distributors' group to the start of the intake stream and
/// reads up to 10 entries as consumer "d".
async fn read_intake_from_the_start(ctx: &Context) -> Vec<Entry> {
    let intake = ctx.store.keys.intake();
    let mut con = ctx.store.con().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&intake)
        .arg("distributors")
        .arg("0")
        .query_async(&mut con)
        .await
        .unwrap();
    ctx.store
        .read_group(&intake, "distributors", "d", 10, None, false)
        .await
        .unwrap()
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

/// A real assignment the worker cannot verify (its keyring lacks the key
/// the distributor signs with: a key rotation done out of order) costs no
/// attempt. The worker leaves the entry unacknowledged, and when the lease
/// runs out the reaper queues the task again. Once a worker that can read
/// it is there, the task runs, on its first attempt.
#[tokio::test]
async fn an_assignment_the_worker_cannot_verify_uses_no_attempt() {
    let Some(mut c) = Cluster::start(&[]).await else {
        return;
    };
    c.add_distributor("dist-1");
    let mut blind = c.settings.clone();
    blind.keyring = Some(Keyring::parse(&format!("other:{}", "3".repeat(64)), None).unwrap());
    let stop = c.shutdown.child_token();
    let spec = drover::roles::worker::WorkerSpec {
        id: "w-blind".into(),
        capacity: 4,
        tags: vec![],
        grace: Duration::from_secs(1),
        registry: Registry::builtins(),
    };
    let blind_worker = tokio::spawn(drover::roles::worker::run(
        Context::new(blind, "worker", "worker").unwrap(),
        spec,
        stop.clone(),
    ));
    let client = c.client();
    eventually(Duration::from_secs(5), "the blind worker registered", || async {
        client
            .workers()
            .await
            .ok()?
            .workers
            .iter()
            .any(|w| w.id == "w-blind")
            .then_some(())
    })
    .await;
    let t = client
        .submit_one(&crate::lifecycle::task("noop", serde_json::Value::Null))
        .await
        .unwrap();
    let view = wait_state(&client, &t.id, TaskState::Running, Duration::from_secs(5)).await;
    assert_eq!(view.worker.as_deref(), Some("w-blind"));
    // The lease (2 s) runs out; the reaper sees the entry unacknowledged.
    eventually(Duration::from_secs(6), "the task queued again", || async {
        let v = client.get(&t.id).await.ok()?;
        (v.state != TaskState::Running || v.version > view.version).then_some(v)
    })
    .await;
    stop.cancel();
    blind_worker.await.unwrap().unwrap();
    c.add_worker("w-ok", 4, &[], Registry::builtins()).await;
    let done = client.wait(&t.id, Duration::from_secs(15)).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    // Every lease the blind worker held gave its attempt back.
    assert_eq!(done.attempts, 1, "{done:?}");
    c.stop().await;
}

/// The assign script acknowledges an intake entry named with its tasks once
/// none of them has to wait ('full' or 'gone'), saving the distributor a
/// round trip; an entry with a task still waiting stays pending.
#[tokio::test]
async fn assign_acknowledges_an_intake_entry_only_when_all_its_tasks_settled() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await; // capacity 4
    let intake = ctx.store.keys.intake();
    ctx.store.ensure_group(&intake, "distributors").await.unwrap();
    let mut con = ctx.store.con().await.unwrap();
    let read_entry = async |n: usize| {
        let tasks: Vec<NewTask> = (0..n).map(|_| new_task("noop")).collect();
        ctx.store.submit(&tasks).await.unwrap();
        let e = ctx
            .store
            .read_group(&intake, "distributors", "d", 10, None, false)
            .await
            .unwrap();
        assert_eq!(e.len(), 1);
        let body: IntakeBody = ctx.store.open(&intake, &e[0]).unwrap().parse().unwrap();
        (e[0].id.clone(), body.tasks)
    };
    // Three tasks, all placed: acknowledged by the script.
    let (first, tasks) = read_entry(3).await;
    let acks = vec![first.as_str(); 3];
    let r = ctx
        .store
        .assign("w1", &tasks, &acks, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![AssignStatus::Assigned, AssignStatus::Assigned, AssignStatus::Assigned]
    );
    assert_eq!(pending_count(&mut con, &intake, "distributors").await, 0);
    // Two more: one slot left, so one waits ('full'): still pending.
    let (second, tasks) = read_entry(2).await;
    let acks = vec![second.as_str(); 2];
    let r = ctx
        .store
        .assign("w1", &tasks, &acks, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r, vec![AssignStatus::Assigned, AssignStatus::Full]);
    assert_eq!(pending_count(&mut con, &intake, "distributors").await, 1);
}

/// `ut` is written by neither assign.lua nor a finish: the reader takes the
/// latest of `ut` (or `ct`), `st` and `fin`, so the update time still moves
/// with every change.
#[tokio::test]
async fn the_update_time_follows_every_change() {
    let Some((_redis, ctx, mut tasks)) = w1_and_tasks(1).await else {
        return;
    };
    let t = tasks.remove(0);
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(view.updated_ms, view.created_ms, "{view:?}");

    tokio::time::sleep(Duration::from_millis(5)).await;
    let started = assign_and_start(&ctx, "w1", t.id.as_str(), 1).await;
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    let st = view.started_ms.expect("a lease start");
    assert!(st > view.created_ms, "{view:?}");
    assert_eq!(view.updated_ms, st, "assigned: {view:?}");

    // Handing it back writes `ut`; taking it again moves `st` past it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let back = [completion(started, Outcome::Released, "")];
    assert_eq!(
        ctx.store.complete("w1", &back).await.unwrap(),
        vec![FinishedState::Queued]
    );
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert!(view.updated_ms > st, "handed back: {view:?}");
    assert_eq!(view.attempts, 0, "a handed-back attempt is not charged: {view:?}");
    let released_at = view.updated_ms;

    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = assign_and_start(&ctx, "w1", t.id.as_str(), view.version).await;
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert!(view.updated_ms > released_at, "assigned again: {view:?}");
    assert_eq!(Some(view.updated_ms), view.started_ms, "{view:?}");

    tokio::time::sleep(Duration::from_millis(5)).await;
    let done = [completion(again, Outcome::Succeeded, "1")];
    assert_eq!(
        ctx.store.complete("w1", &done).await.unwrap(),
        vec![FinishedState::Succeeded]
    );
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    let fin = view.finished_ms.expect("a finish time");
    assert!(fin > view.started_ms.unwrap(), "{view:?}");
    assert_eq!(view.updated_ms, fin, "finished: {view:?}");
}

/// A finished attempt to report, with no retry delay.
fn completion(task: StartedTask, outcome: Outcome, payload: &str) -> Completion {
    Completion {
        task,
        outcome,
        payload: payload.into(),
        retry_delay_ms: 0,
    }
}

/// submit, assign and complete take their tasks in runs of shared settings
/// and list only the unusual statuses by position: each task's status must
/// still come back in its own place, across runs and within one.
#[tokio::test]
async fn each_task_keeps_its_status_across_runs() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    let keyed = |key: &str| NewTask {
        idempotency_key: Some(key.into()),
        ..new_task("noop")
    };
    let (a, b, d) = (new_task("noop"), keyed("k"), keyed("k"));
    let c = NewTask {
        priority: 5,
        ..new_task("noop")
    };
    let e = NewTask {
        run_at_ms: Some(ctx.store.clock().now_ms() + 3_600_000),
        ..new_task("noop")
    };
    let f = new_task("noop");
    let batch = [a.clone(), b.clone(), c.clone(), d, e.clone(), f.clone()];
    let status = |t: &NewTask, status| SubmitReply {
        id: t.id.to_string(),
        status,
    };
    assert_eq!(
        ctx.store.submit(&batch).await.unwrap(),
        vec![
            status(&a, SubmitStatus::Queued),
            status(&b, SubmitStatus::Queued),
            status(&c, SubmitStatus::Queued),
            status(&b, SubmitStatus::Duplicate),
            status(&e, SubmitStatus::Scheduled),
            status(&f, SubmitStatus::Queued),
        ]
    );

    // Assign: two runs (no entry, then one entry), a missing and a stale
    // task between placed ones, and the worker's 4 slots run out at the end.
    let intake = ctx.store.keys.intake();
    ctx.store.ensure_group(&intake, "distributors").await.unwrap();
    let placed = |t: &NewTask, v: u64| IntakeTask {
        id: t.id.to_string(),
        v,
        h: "noop".into(),
        tags: vec![],
        prio: 0,
    };
    let ghost = IntakeTask {
        id: TaskId::generate().to_string(),
        ..placed(&a, 1)
    };
    let offered = [placed(&a, 1), ghost, placed(&b, 2), placed(&c, 1), placed(&f, 1)];
    let acks = ["", "", "0-1", "0-1", "0-1"];
    let r = ctx
        .store
        .assign("w1", &offered, &acks, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![
            AssignStatus::Assigned,
            AssignStatus::Missing,
            AssignStatus::Conflict,
            AssignStatus::Assigned,
            AssignStatus::Assigned
        ]
    );

    // Complete: a success, a failure with attempts left, and a stale
    // fence, in three runs.
    let started = started(claim_next_entry(&ctx, "w1").await.1);
    assert_eq!(started.len(), 3, "a, c and f run");
    let mut stale = started[2].clone();
    stale.token.fence += 1;
    let done = [
        completion(started[0].clone(), Outcome::Succeeded, "1"),
        completion(started[1].clone(), Outcome::Failed, "boom"),
        completion(stale, Outcome::Succeeded, "2"),
    ];
    assert_eq!(
        ctx.store.complete("w1", &done).await.unwrap(),
        vec![FinishedState::Succeeded, FinishedState::Scheduled, FinishedState::Stale]
    );
}

/// `submit` stores neither `max` nor `to` at 3 attempts and 5 minutes (both
/// when either differs), and every reader takes a missing field as that.
#[tokio::test]
async fn a_task_stored_without_max_and_timeout_reads_as_their_defaults() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    let t = NewTask {
        max_attempts: 3,
        timeout_ms: 300_000,
        ..new_task("noop")
    };
    // Either one away from its default: both are stored.
    let other = NewTask {
        max_attempts: 3,
        timeout_ms: 10_000,
        ..new_task("noop")
    };
    ctx.store.submit(&[t.clone(), other.clone()]).await.unwrap();
    let mut con = ctx.store.con().await.unwrap();
    for (task, stored) in [(&t, 0), (&other, 1)] {
        let mut pipe = redis::pipe();
        for field in ["max", "to"] {
            pipe.cmd("HEXISTS")
                .arg(ctx.store.keys.task(task.id.as_str()))
                .arg(field);
        }
        let exists: Vec<u8> = pipe.query_async(&mut con).await.unwrap();
        assert_eq!(exists, [stored, stored], "max and to stored for {:?}", task.timeout_ms);
    }
    let view = ctx.store.get_task(&other.id).await.unwrap().unwrap();
    assert_eq!((view.max_attempts, view.timeout_ms), (3, 10_000), "{view:?}");

    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!((view.max_attempts, view.timeout_ms), (3, 300_000), "{view:?}");
    let started = assign_and_start(&ctx, "w1", t.id.as_str(), 1).await;
    assert_eq!((started.max_attempts, started.timeout_ms), (3, 300_000));
    // One attempt of three used: a failure is retried, not final.
    let failed = [completion(started, Outcome::Failed, "boom")];
    assert_eq!(
        ctx.store.complete("w1", &failed).await.unwrap(),
        vec![FinishedState::Scheduled]
    );
}

/// A task whose input and result are over Redis' default 64-byte listpack
/// limit stays one compact listpack through its whole life, with Redis set
/// up as drover sets it up (`hash-max-listpack-value 2048`, as in
/// deploy/redis/redis.conf): as a hash table it would cost about 400 bytes
/// more (BENCHMARKS.md, "Task hashes").
#[tokio::test]
async fn a_task_with_a_kilobyte_input_and_result_stays_a_listpack() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    register(&ctx, "w1").await;
    let input = format!("\"{}\"", "i".repeat(998));
    let t = NewTask {
        input,
        ..new_task("noop")
    };
    ctx.store.submit(std::slice::from_ref(&t)).await.unwrap();
    let key = ctx.store.keys.task(t.id.as_str());
    let mut con = ctx.store.con().await.unwrap();
    async fn encoding(con: &mut drover::store::pool::Con, key: &str) -> String {
        redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query_async(con)
            .await
            .unwrap()
    }
    assert_eq!(encoding(&mut con, &key).await, "listpack", "queued");
    let started = assign_and_start(&ctx, "w1", t.id.as_str(), 1).await;
    assert_eq!(encoding(&mut con, &key).await, "listpack", "running");
    let result = format!("\"{}\"", "r".repeat(998));
    let done = [completion(started, Outcome::Succeeded, &result)];
    assert_eq!(
        ctx.store.complete("w1", &done).await.unwrap(),
        vec![FinishedState::Succeeded]
    );
    assert_eq!(encoding(&mut con, &key).await, "listpack", "succeeded");
    let stored: String = redis::cmd("HGET")
        .arg(&key)
        .arg("res")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored, result);
}

/// The leader warns about Redis settings that lose tasks or cost memory:
/// nothing with drover's own settings; an eviction policy, and Redis'
/// default listpack limit, once they are set.
#[tokio::test]
async fn redis_settings_that_lose_tasks_or_memory_are_named() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    assert_eq!(ctx.store.redis_advice().await, Vec::<String>::new());
    let mut con = ctx.store.con().await.unwrap();
    for (name, value) in [("maxmemory-policy", "allkeys-lru"), ("hash-max-listpack-value", "64")] {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let advice = ctx.store.redis_advice().await;
    assert_eq!(advice.len(), 2, "{advice:?}");
    assert!(
        advice[0].contains("maxmemory-policy allkeys-lru") && advice[0].contains("noeviction"),
        "{advice:?}"
    );
    assert!(
        advice[1].contains("hash-max-listpack-value 64") && advice[1].contains("2048"),
        "{advice:?}"
    );
}
