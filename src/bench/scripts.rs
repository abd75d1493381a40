//! The `scripts` scenario: Redis' cost of each step of a task's life,
//! measured one step at a time. No roles run: the bench itself submits
//! batches of tasks, assigns every batch to one worker, accepts each assign
//! entry as a worker does, and completes every batch, through the same
//! store calls the roles make. Each step runs over all batches before the
//! next begins, and `INFO commandstats` is read around it, so a step's cost
//! is not mixed with the others' and the end-to-end run's queueing noise is
//! absent.
//!
//! For each step it prints µs per task inside Redis: all of it, the part
//! spent in the Redis commands the step runs (inside its script or sent
//! directly), and what is left for a script's own work: the Lua code, and
//! turning each `redis.call`'s arguments and reply between Lua and Redis.
//! That last part is what a script spends per call it makes, so it shows
//! how much fewer calls per task would save.

use super::cluster::new_task;
use super::report::{redis_usage, RedisUsage};
use crate::context::Context;
use crate::messages::{AssignBody, ASSIGN};
use crate::store::keys::WORKER_GROUP;
use crate::store::{Completion, FinishedState, Heartbeat, Outcome, StartReply, StartedTask, SubmitStatus};
use serde_json::{json, Value};
use std::time::Duration;

const WORKER: &str = "bench-scripts";
/// Long enough that no lease runs out while the steps run.
const LEASE: Duration = Duration::from_secs(600);

/// Runs `rounds` batches of `batch` tasks through submit, assign, accept
/// and complete, and returns each step's cost per task.
pub async fn run(ctx: &Context, rounds: usize, batch: usize, input: &str) -> anyhow::Result<Value> {
    let store = &ctx.store;
    let n = rounds * batch;
    let stream = store.keys.worker_stream(WORKER);
    store.ensure_group(&stream, WORKER_GROUP).await?;
    store
        .heartbeat(&Heartbeat {
            worker_id: WORKER,
            capacity: n as u32,
            handlers: &["noop".to_string()],
            tags: &[],
            queues: &[],
            in_flight: 0,
            draining: false,
        })
        .await?;
    let mut steps = serde_json::Map::new();

    let before = redis_usage(ctx).await?;
    submit(ctx, rounds, batch, input).await?;
    steps.insert("submit".into(), cost(&before, &redis_usage(ctx).await?, n));

    let backlogs = store.active_backlogs().await?;
    let before = redis_usage(ctx).await?;
    assign(ctx, rounds, batch, &backlogs).await?;
    steps.insert("assign".into(), cost(&before, &redis_usage(ctx).await?, n));

    // Reading the stream is the worker's part too, but it is one call per
    // many entries: it is left out so that "accept" is the per-task part.
    let entries = read_assign_entries(ctx, &stream, rounds).await?;
    let before = redis_usage(ctx).await?;
    let started = accept(ctx, &entries).await?;
    steps.insert("accept".into(), cost(&before, &redis_usage(ctx).await?, n));

    let before = redis_usage(ctx).await?;
    complete(ctx, started).await?;
    steps.insert("complete".into(), cost(&before, &redis_usage(ctx).await?, n));

    let total: f64 = steps.values().filter_map(|s| s["us_per_task"].as_f64()).sum();
    Ok(json!({ "tasks": n, "batch": batch, "us_per_task": total, "steps": steps }))
}

/// An assign entry as the worker reads it: its id, batch token and tasks.
type AssignEntry = (String, Option<String>, Vec<String>);

async fn submit(ctx: &Context, rounds: usize, batch: usize, input: &str) -> anyhow::Result<()> {
    for _ in 0..rounds {
        let tasks: Vec<_> = (0..batch).map(|_| new_task(input)).collect();
        let replies = ctx.store.submit(&tasks).await?;
        anyhow::ensure!(
            replies.iter().all(|r| r.status == SubmitStatus::Queued),
            "submit: {replies:?}"
        );
    }
    Ok(())
}

/// One assign call per submitted batch, each taking `batch` tasks, as a
/// distributor's call for a worker with that many free slots does.
async fn assign(ctx: &Context, rounds: usize, batch: usize, backlogs: &[String]) -> anyhow::Result<()> {
    let names: Vec<&str> = backlogs.iter().map(String::as_str).collect();
    for _ in 0..rounds {
        let assigned = ctx.store.assign(WORKER, batch, &names, LEASE).await?;
        anyhow::ensure!(assigned.taken == batch, "assign: {assigned:?}");
    }
    Ok(())
}

async fn read_assign_entries(ctx: &Context, stream: &str, rounds: usize) -> anyhow::Result<Vec<AssignEntry>> {
    let store = &ctx.store;
    let mut entries = Vec::with_capacity(rounds);
    while entries.len() < rounds {
        let read = store
            .read_group(stream, WORKER_GROUP, WORKER, rounds, None, false)
            .await?;
        anyhow::ensure!(
            !read.is_empty(),
            "the worker stream holds {} of {rounds} entries",
            entries.len()
        );
        for entry in read {
            let _: AssignBody = store
                .open(stream, &entry)
                .map_err(|r| anyhow::anyhow!("assign entry: {}", r.reason()))
                .and_then(|v| {
                    anyhow::ensure!(v.msg_type() == ASSIGN, "not an assign entry");
                    v.parse().map_err(|r| anyhow::anyhow!("assign body: {}", r.reason()))
                })?;
            let ids = entry.task_ids();
            entries.push((entry.id, entry.batch, ids));
        }
    }
    Ok(entries)
}

async fn accept(ctx: &Context, entries: &[AssignEntry]) -> anyhow::Result<Vec<Vec<StartedTask>>> {
    let mut started = Vec::with_capacity(entries.len());
    for (entry_id, batch, tasks) in entries {
        let mut batch_started = Vec::with_capacity(tasks.len());
        for reply in ctx.store.claim(WORKER, entry_id, batch.as_deref(), tasks).await? {
            match reply {
                StartReply::Started(t) => batch_started.push(*t),
                StartReply::Refused(why) => anyhow::bail!("accept refused a task: {why}"),
            }
        }
        started.push(batch_started);
    }
    Ok(started)
}

async fn complete(ctx: &Context, started: Vec<Vec<StartedTask>>) -> anyhow::Result<()> {
    for tasks in started {
        let done: Vec<Completion> = tasks
            .into_iter()
            .map(|task| Completion {
                task,
                outcome: Outcome::Succeeded,
                payload: "null".into(),
                retry_delay_ms: 0,
            })
            .collect();
        let replies = ctx.store.complete(WORKER, &done).await?;
        anyhow::ensure!(
            replies.iter().all(|s| *s == FinishedState::Succeeded),
            "complete: {replies:?}"
        );
    }
    Ok(())
}

/// One step's cost per task, from two `INFO commandstats` readings.
/// `INFO` counts as a command: assign.lua runs `INFO server` once per call
/// (the epoch check). The delta also holds one of the bench's own
/// readings, a few hundred µs over the whole step.
fn cost(before: &RedisUsage, after: &RedisUsage, n: usize) -> Value {
    let n = n.max(1) as f64;
    let (mut scripts, mut commands, mut calls) = (0u64, 0u64, 0u64);
    let mut by_command = serde_json::Map::new();
    for (name, (c1, u1)) in &after.commands {
        let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
        let (c, u) = (c1.saturating_sub(c0), u1.saturating_sub(u0));
        if c == 0 {
            continue;
        }
        if name == "evalsha" || name == "eval" {
            scripts += u;
        } else {
            commands += u;
            calls += c;
            by_command.insert(name.clone(), json!(u as f64 / n));
        }
    }
    // Commands a script runs are counted under their own names and inside
    // the script's time, so the script's own work is the difference.
    let direct_and_inner = commands as f64 / n;
    let script = scripts as f64 / n;
    let total = if scripts > 0 { script } else { direct_and_inner };
    json!({
        "us_per_task": total,
        "commands_us_per_task": direct_and_inner,
        "script_own_us_per_task": (script - direct_and_inner).max(0.0),
        "commands_per_task": calls as f64 / n,
        "by_command_us_per_task": by_command,
    })
}
