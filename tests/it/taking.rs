//! Taking tasks from the backlog by hand, as a distributor and a worker
//! do, for tests that drive the store directly: a store on its own Redis,
//! a registered worker, one assign call over every backlog that may hold
//! tasks, then the worker's read and claim of its assign entries.

use crate::support::{redis, settings};
use drover::context::Context;
use drover::messages::AssignBody;
use drover::names::QueueName;
use drover::redis_server::{Persistence, RedisServer};
use drover::store::{Assigned, Entry, Heartbeat, StartReply, StartedTask};
use drover::task::{NewTask, TaskId};
use std::time::Duration;

/// A task of `handler` with no input, in the default queue, as the API
/// would store it: 3 attempts, a 10 s timeout.
pub fn new_task(handler: &str) -> NewTask {
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

/// A Redis of its own and a context on it, for tests that drive the store.
pub async fn store_ctx() -> Option<(RedisServer, Context)> {
    let redis = redis(Persistence::None)?;
    let ctx = Context::new(settings(&redis.url(), &[]), "test", "test").unwrap();
    ctx.store.ping().await.unwrap();
    Some((redis, ctx))
}

/// Registers worker `wid` as a worker does at start: its stream's group,
/// and a heartbeat offering `noop` in 4 slots.
pub async fn register(ctx: &Context, wid: &str) {
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
            queues: &[],
            in_flight: 0,
            draining: false,
        })
        .await
        .unwrap();
}

/// One assign call for `wid`, taking up to `want` tasks from every backlog
/// in `P active` (in the order Redis lists them).
pub async fn take(ctx: &Context, wid: &str, want: usize, lease: Duration) -> Assigned {
    let names = ctx.store.active_backlogs().await.unwrap();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    ctx.store.assign(wid, want, &names, lease).await.unwrap()
}

/// Reads the one new entry on `wid`'s stream, an assignment, and has `wid`
/// claim its tasks as the worker does.
pub async fn claim_next_entry(ctx: &Context, wid: &str) -> (Entry, Vec<StartReply>) {
    let stream = ctx.store.keys.worker_stream(wid);
    let mut entries = ctx
        .store
        .read_group(&stream, "worker", wid, 10, None, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "one new entry on {stream}");
    let entry = entries.remove(0);
    let replies = claim(ctx, wid, &entry).await;
    (entry, replies)
}

/// `wid`'s claim of one entry of its stream: its signature is checked as
/// the worker checks it, then the tasks its `ids` field names are claimed.
pub async fn claim(ctx: &Context, wid: &str, entry: &Entry) -> Vec<StartReply> {
    let stream = ctx.store.keys.worker_stream(wid);
    let _: AssignBody = ctx.store.open(&stream, entry).unwrap().parse().unwrap();
    ctx.store
        .claim(wid, &entry.id, entry.batch.as_deref(), &entry.task_ids())
        .await
        .unwrap()
}

/// The tasks a claim started.
pub fn started(replies: Vec<StartReply>) -> Vec<StartedTask> {
    replies
        .into_iter()
        .filter_map(|r| match r {
            StartReply::Started(t) => Some(*t),
            StartReply::Refused(_) => None,
        })
        .collect()
}

/// Takes `ids.len()` tasks for `wid` in one call, one batch under one
/// lease, has `wid` claim them, and checks they are the tasks `ids` names
/// in that order (the oldest queued, at one priority level).
pub async fn take_batch(ctx: &Context, wid: &str, ids: &[&str], lease: Duration) -> (Entry, Vec<StartedTask>) {
    let assigned = take(ctx, wid, ids.len(), lease).await;
    assert_eq!(assigned.taken, ids.len(), "{assigned:?}");
    let (entry, replies) = claim_next_entry(ctx, wid).await;
    let started: Vec<StartedTask> = replies
        .into_iter()
        .map(|r| match r {
            StartReply::Started(t) => *t,
            StartReply::Refused(why) => panic!("claim refused: {why}"),
        })
        .collect();
    let got: Vec<&str> = started.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(got, ids, "the oldest queued tasks, in order");
    (entry, started)
}

/// The key of the ready list at `level` of `queue`'s one backlog in
/// `P active` (a test whose tasks share one handler and no tags has one).
pub async fn ready_list(ctx: &Context, queue: &str, level: i32) -> String {
    let names = ctx.store.active_backlogs().await.unwrap();
    let prefix = format!("{queue} ");
    let classes: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix(&prefix)).collect();
    assert_eq!(classes.len(), 1, "one backlog of {queue} in {names:?}");
    ctx.store.keys.ready(queue, classes[0], &level.to_string())
}

/// The ids in a ready list, oldest first.
pub async fn ready_ids(ctx: &Context, list: &str) -> Vec<String> {
    let mut con = ctx.store.con().await.unwrap();
    redis::cmd("LRANGE")
        .arg(list)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap()
}

/// Asserts that the backlog is drained: no ready list of any queue holds an
/// id, and every queue's counts of queued and running tasks are back to 0.
pub async fn assert_backlog_drained(con: &mut redis::aio::MultiplexedConnection) {
    let lists: Vec<String> = redis::cmd("KEYS")
        .arg("{drover:0}:q:*:ready:*")
        .query_async(con)
        .await
        .unwrap();
    assert!(lists.is_empty(), "ready lists left: {lists:?}");
    let metas: Vec<String> = redis::cmd("KEYS")
        .arg("{drover:0}:q:*:meta")
        .query_async(con)
        .await
        .unwrap();
    assert!(!metas.is_empty(), "a queue was used");
    for meta in metas {
        let counts: (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(&meta)
            .arg("queued")
            .arg("run")
            .query_async(con)
            .await
            .unwrap();
        assert_eq!(
            (counts.0.unwrap_or(0), counts.1.unwrap_or(0)),
            (0, 0),
            "{meta}: queued and running"
        );
    }
}
