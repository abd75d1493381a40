//! The scripts and envelopes against a real Redis, driven through the
//! store: a stale fence cannot complete, a replayed assignment or a forged
//! batch token is not accepted, a batch's lease record lives exactly as
//! long as one of its tasks runs, forged or moved messages are refused with
//! the right reason, and trimming never drops an unacknowledged entry.

use crate::support::*;
use crate::taking::{
    claim, claim_next_entry, new_task, ready_ids, ready_list, register, started, store_ctx, take, take_batch,
};
use drover::context::Context;
use drover::envelope::{Keyring, Rejection};
use drover::handlers::Registry;
use drover::messages::{self, AssignBody};
use drover::redis_server::Persistence;
use drover::store::{
    BacklogStop, Completion, Entry, FinishedState, Outcome, Refusal, RenewStatus, StartReply, StartedTask, SubmitReply,
    SubmitStatus, WorkerRoom,
};
use drover::task::{NewTask, TaskId, TaskState};
use std::time::Duration;

/// A store with worker `w1` registered and `n` noop tasks submitted.
async fn w1_and_tasks(n: usize) -> Option<(drover::redis_server::RedisServer, Context, Vec<NewTask>)> {
    let (redis, ctx) = store_ctx().await?;
    register(&ctx, "w1").await;
    let tasks: Vec<NewTask> = (0..n).map(|_| new_task("noop")).collect();
    ctx.store.submit(&tasks).await.unwrap();
    Some((redis, ctx, tasks))
}

/// Assigns the oldest queued task, which must be `id`, to `wid` under a
/// 300 ms lease, and has `wid` accept it.
async fn assign_and_start(ctx: &Context, wid: &str, id: &str) -> StartedTask {
    take_batch(ctx, wid, &[id], Duration::from_millis(300))
        .await
        .1
        .remove(0)
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
    let first = assign_and_start(&ctx, "w1", t.id.as_str()).await;

    // w1 stalls past its lease; the reaper charges the attempt and
    // schedules a retry, the scheduler queues it, w2 takes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = ctx.store.reap(100, |_| 0).await.unwrap();
    assert_eq!(stats.lease_expired, 1);
    assert_eq!(ctx.store.promote(100).await.unwrap(), 1);
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!(view.state, TaskState::Queued);
    let second = assign_and_start(&ctx, "w2", t.id.as_str()).await;
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
async fn replay_first_entry(ctx: &Context, stream: &str, wid: &str) -> Entry {
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
    let _: AssignBody = ctx
        .store
        .open(stream, &entry)
        .expect("the signature is still valid")
        .parse()
        .unwrap();
    entry
}

#[tokio::test]
async fn a_replayed_assignment_is_not_started_again() {
    let Some((_redis, ctx, mut tasks)) = w1_and_tasks(1).await else {
        return;
    };
    let t = tasks.remove(0);
    let stream = ctx.store.keys.worker_stream("w1");
    let started = assign_and_start(&ctx, "w1", t.id.as_str()).await;

    // While the attempt still runs (same state, version, worker and fence
    // as the original), the copy is refused: it is not the entry that
    // took the lease. This also covers a worker restarted under the same id.
    let entry = replay_first_entry(&ctx, &stream, "w1").await;
    let r = ctx
        .store
        .claim("w1", &entry.id, entry.batch.as_deref(), &entry.task_ids())
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
    let entry = replay_first_entry(&ctx, &stream, "w1").await;
    let r = ctx
        .store
        .claim("w1", &entry.id, entry.batch.as_deref(), &entry.task_ids())
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

/// Assigns queued tasks, the oldest, to `wid` in one call, which makes them
/// one batch under one lease, and has `wid` accept them.
async fn assign_batch(ctx: &Context, wid: &str, tasks: &[NewTask], lease: Duration) -> (Entry, Vec<StartedTask>) {
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    take_batch(ctx, wid, &ids, lease).await
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

/// An id found twice in a ready list (pushed again by hand, as a bug or an
/// attacker could), or one with no task behind it, is taken once or not at
/// all: one slot, one running task in the batch, and the worker starts it
/// once. assign.lua takes only tasks it finds `queued`.
#[tokio::test]
async fn an_id_found_twice_in_a_ready_list_is_taken_once() {
    let Some((_redis, ctx, mut tasks)) = w1_and_tasks(1).await else {
        return;
    };
    let t = tasks.remove(0);
    let list = ready_list(&ctx, "default", 0).await;
    let mut con = ctx.store.con().await.unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(t.id.as_str())
        .arg("no-such-task")
        .query_async(&mut con)
        .await
        .unwrap();
    let r = take(&ctx, "w1", 4, Duration::from_secs(30)).await;
    assert_eq!(r.taken, 1, "{r:?}");
    assert_eq!(slots_used(&ctx, "w1").await, "1");
    assert!(
        ready_ids(&ctx, &list).await.is_empty(),
        "the copies were popped and dropped"
    );
    let started = started(claim_next_entry(&ctx, "w1").await.1);
    assert_eq!(started.len(), 1, "started once");
    let (record, _) = lease_of(&ctx, &started[0].token.to_string()).await;
    assert_eq!(record.get("n").map(String::as_str), Some("1"), "{record:?}");
    let counts = ctx.store.counts().await.unwrap();
    assert_eq!(counts.get("running").copied(), Some(1), "{counts:?}");
    assert_eq!(counts.get("queued").copied(), Some(0), "{counts:?}");
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
    assert_eq!(take(&ctx, "w1", 1, Duration::from_secs(30)).await.taken, 1);
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
        forged
            .arg(&stream)
            .arg("*")
            .arg("m")
            .arg(&envelope)
            .arg("ids")
            .arg(tasks[2].id.as_str());
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
        let r = claim(&ctx, "w1", entry).await;
        assert!(matches!(&r[0], StartReply::Refused(w) if w == why), "{token:?}: {r:?}");
    }
    let r = claim(&ctx, "w1", &entries[0]).await;
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
    // Of the queue's keys only the indexes go: its meta hash and the live
    // task's ready list stay.
    for pattern in ["q:*:idx:*", "done*"] {
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
    let lease = Duration::from_millis(1);
    // tasks[0]: read and claimed (acknowledged). tasks[1]: delivered, never
    // acknowledged (the worker died right after reading). tasks[2]: never
    // delivered. Each call takes the oldest queued task.
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(take(&ctx, "w1", 1, lease).await.taken, 1);
        if i == 2 {
            continue;
        }
        let read = ctx
            .store
            .read_group(&stream, "worker", "w1", 10, None, false)
            .await
            .unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].task_ids(), vec![t.id.to_string()]);
        if i == 0 {
            let claimed = claim(&ctx, "w1", &read[0]).await;
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
    // The two queued again are back in their ready list, in the order they
    // were reaped, for the next assign call to take.
    let list = ready_list(&ctx, "default", 0).await;
    assert_eq!(
        ready_ids(&ctx, &list).await,
        vec![tasks[1].id.to_string(), tasks[2].id.to_string()]
    );
}

#[tokio::test]
async fn forged_expired_moved_and_truncated_messages_are_refused_by_reason() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    let stream = ctx.store.keys.worker_stream("w1");
    let body = serde_json::to_vec(&AssignBody {}).unwrap();
    let ours = Keyring::parse(SIGNING_KEYS, None).unwrap();
    let theirs = Keyring::generate();
    let far = u64::MAX / 2;
    let good = ours.sign(&stream, messages::ASSIGN, far, &body);
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Rejection)> = vec![
        ("unsigned", b"{\"tasks\":[]}".to_vec(), Rejection::Malformed),
        (
            "other key",
            theirs.sign(&stream, messages::ASSIGN, far, &body),
            Rejection::Signature,
        ),
        (
            "moved from another stream",
            ours.sign(&ctx.store.keys.events(), messages::ASSIGN, far, &body),
            Rejection::Signature,
        ),
        (
            "expired",
            ours.sign(&stream, messages::ASSIGN, 1, &body),
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
            ids: None,
        };
        let got = ctx.store.open(&stream, &entry).map(|_| ()).unwrap_err();
        assert_eq!(got, want, "{what}");
    }
    assert!(ctx
        .store
        .open(
            &stream,
            &Entry {
                id: "1-1".into(),
                raw: good,
                batch: None,
                ids: None,
            }
        )
        .is_ok());
}

#[tokio::test]
async fn forged_worker_and_wake_messages_are_never_executed() {
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
    let fake = serde_json::to_vec(&AssignBody {}).unwrap();
    let forged = attacker.sign(&ws, messages::ASSIGN, u64::MAX / 2, &fake);
    let _: String = redis::cmd("XADD")
        .arg(&ws)
        .arg("*")
        .arg("m")
        .arg(forged)
        .arg("ids")
        .arg(format!("{},{}", real.id, fresh.id))
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
    // 2 MiB written straight into the worker's stream: refused by size
    // before any verification, and set aside like the rest.
    let _: String = redis::cmd("XADD")
        .arg(&ws)
        .arg("*")
        .arg("m")
        .arg(vec![b'x'; 2 << 20])
        .query_async(&mut con)
        .await
        .unwrap();
    // A forged wake entry is only a hint: a distributor looks at the
    // backlogs once more and finds nothing to place.
    let _: String = redis::cmd("XADD")
        .arg(ctx.store.keys.wake())
        .arg("*")
        .arg("n")
        .arg("1000")
        .query_async(&mut con)
        .await
        .unwrap();
    // The worker sets entries it cannot verify aside unacknowledged for two
    // leases (4 s here), so that any real lease in them runs out
    // unacknowledged and costs no attempt, then acknowledges them.
    eventually(Duration::from_secs(5), "forged entries set aside", || {
        let mut con = con.clone();
        let ws = ws.clone();
        async move { (pending_count(&mut con, &ws, "worker").await == 3).then_some(()) }
    })
    .await;
    eventually(Duration::from_secs(15), "forged entries acknowledged", || {
        let mut con = con.clone();
        let ws = ws.clone();
        async move {
            let pending = pending_count(&mut con, &ws, "worker").await;
            let len: u64 = redis::cmd("XLEN").arg(&ws).query_async(&mut con).await.unwrap();
            (pending == 0 && len >= 1).then_some(())
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
    let Some((_redis, ctx, _tasks)) = w1_and_tasks(4).await else {
        return;
    };
    // Four assign entries on w1's stream, one task each.
    for _ in 0..4 {
        assert_eq!(take(&ctx, "w1", 1, Duration::from_secs(30)).await.taken, 1);
    }
    let stream = ctx.store.keys.worker_stream("w1");
    // Deliver three, acknowledge the second only.
    let got = ctx
        .store
        .read_group(&stream, "worker", "w1", 3, None, false)
        .await
        .unwrap();
    ctx.store.ack(&stream, "worker", &[got[1].id.clone()]).await.unwrap();
    ctx.store.trim(&stream, "worker").await.unwrap();
    let mut con = ctx.store.con().await.unwrap();
    let len: u64 = redis::cmd("XLEN").arg(&stream).query_async(&mut con).await.unwrap();
    assert_eq!(len, 4, "the oldest pending entry bounds the trim");
    // Acknowledge the rest of the delivered ones: only delivered, acked
    // entries go; the one never delivered stays.
    ctx.store
        .ack(&stream, "worker", &[got[0].id.clone(), got[2].id.clone()])
        .await
        .unwrap();
    ctx.store.trim(&stream, "worker").await.unwrap();
    let len: u64 = redis::cmd("XLEN").arg(&stream).query_async(&mut con).await.unwrap();
    assert_eq!(len, 2, "the last delivered entry and the undelivered one remain");
    let rest = ctx
        .store
        .read_group(&stream, "worker", "w1", 10, None, false)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
}

/// A build before the ready lists kept queued tasks in the intake stream
/// (each task naming its entry in `ent`). The reconciler puts such a task
/// into its ready list, once, so an upgrade loses none; the intake stream
/// is deleted after a pass that found no such task left.
#[tokio::test]
async fn the_reconciler_moves_a_task_of_the_intake_stream_into_its_ready_list() {
    let Some((_redis, ctx)) = store_ctx().await else {
        return;
    };
    let t = new_task("noop");
    ctx.store.submit(std::slice::from_ref(&t)).await.unwrap();
    let list = ready_list(&ctx, "default", 0).await;
    let mut con = ctx.store.con().await.unwrap();
    // As the earlier build left it: queued, named by an intake entry, in
    // no ready list.
    let _: () = redis::cmd("DEL").arg(&list).query_async(&mut con).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(ctx.store.keys.task(t.id.as_str()))
        .arg("ent")
        .arg("1-0")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(ctx.store.keys.intake())
        .arg("*")
        .arg("m")
        .arg("an entry of the earlier build")
        .query_async(&mut con)
        .await
        .unwrap();
    let (cursor, n) = ctx.store.reconcile("0", 1000).await.unwrap();
    assert_eq!((cursor.as_str(), n), ("0", 1));
    assert_eq!(ready_ids(&ctx, &list).await, vec![t.id.to_string()], "in its list");
    let view = ctx.store.get_task(&t.id).await.unwrap().unwrap();
    assert_eq!((view.state, view.version), (TaskState::Queued, 2));
    // It no longer names an entry: a second pass leaves it alone.
    let (_, n) = ctx.store.reconcile("0", 1000).await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(ready_ids(&ctx, &list).await.len(), 1, "queued once");
    ctx.store.retire_intake().await.unwrap();
    let gone: bool = redis::cmd("EXISTS")
        .arg(ctx.store.keys.intake())
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!gone, "the intake stream was deleted");
    // And it runs from there.
    register(&ctx, "w1").await;
    assert_eq!(take(&ctx, "w1", 4, Duration::from_secs(5)).await.taken, 1);
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
    let first = assign_and_start(&ctx, "w1", a.id.as_str()).await;
    redis.restart().unwrap();
    // The pool reconnects on the next call.
    let b = new_task("noop");
    eventually(Duration::from_secs(10), "redis back", || async {
        ctx.store.submit(std::slice::from_ref(&b)).await.ok().map(|_| ())
    })
    .await;
    let second = assign_and_start(&ctx, "w1", b.id.as_str()).await;
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
    let started = assign_and_start(&ctx, "w1", t.id.as_str()).await;
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
        queues: vec![],
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

/// An assign call says how it ended: how many it took, whether the worker
/// has room left, and which backlogs had nothing more to give, so the
/// distributor knows whom to ask next.
#[tokio::test]
async fn assign_says_whether_the_worker_or_the_backlog_ran_out() {
    let Some((_redis, ctx, _tasks)) = w1_and_tasks(3).await else {
        return;
    };
    // Capacity 4, three queued: all taken, room left, the backlog empty.
    let r = take(&ctx, "w1", 10, Duration::from_secs(5)).await;
    assert_eq!(
        (r.taken, r.worker, r.stopped),
        (3, WorkerRoom::Room, vec![(0, BacklogStop::Empty)])
    );
    assert!(
        ctx.store.active_backlogs().await.unwrap().is_empty(),
        "an empty backlog leaves P active"
    );
    // Two more: one slot left, so one waits in its list.
    let more: Vec<NewTask> = (0..2).map(|_| new_task("noop")).collect();
    ctx.store.submit(&more).await.unwrap();
    let r = take(&ctx, "w1", 10, Duration::from_secs(5)).await;
    assert_eq!((r.taken, r.worker, r.stopped), (1, WorkerRoom::Full, vec![]));
    let r = take(&ctx, "w1", 10, Duration::from_secs(5)).await;
    assert_eq!((r.taken, r.worker), (0, WorkerRoom::Full));
    let names = ctx.store.active_backlogs().await.unwrap();
    let r = ctx
        .store
        .assign("nobody", 1, &[names[0].as_str()], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((r.taken, r.worker), (0, WorkerRoom::Gone), "an unknown worker");
    let counts = ctx.store.counts().await.unwrap();
    assert_eq!(counts.get("queued").copied(), Some(1), "{counts:?}");
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
    let started = assign_and_start(&ctx, "w1", t.id.as_str()).await;
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
    let again = assign_and_start(&ctx, "w1", t.id.as_str()).await;
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

    // Assign: the higher level first, then level 0 oldest first, past an
    // id with no task behind it; the worker's 4 slots run out at f.
    let list = ready_list(&ctx, "default", 0).await;
    let mut con = ctx.store.con().await.unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg(&list)
        .arg(TaskId::generate().to_string())
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(take(&ctx, "w1", 10, Duration::from_secs(5)).await.taken, 4);

    // Complete: a success, a failure with attempts left, and a stale
    // fence, in three runs.
    let started = started(claim_next_entry(&ctx, "w1").await.1);
    let ids: Vec<&str> = started.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [&c, &a, &b, &f].map(|t| t.id.as_str()), "c (priority 5) first");
    let mut stale = started[2].clone();
    stale.token.fence += 1;
    let done = [
        completion(started[0].clone(), Outcome::Succeeded, "1"),
        completion(started[1].clone(), Outcome::Failed, "boom"),
        completion(stale, Outcome::Succeeded, "2"),
        completion(started[3].clone(), Outcome::Succeeded, "3"),
    ];
    assert_eq!(
        ctx.store.complete("w1", &done).await.unwrap(),
        vec![
            FinishedState::Succeeded,
            FinishedState::Scheduled,
            FinishedState::Stale,
            FinishedState::Succeeded
        ]
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
    let started = assign_and_start(&ctx, "w1", t.id.as_str()).await;
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
    let started = assign_and_start(&ctx, "w1", t.id.as_str()).await;
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
