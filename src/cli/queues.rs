//! The operator's client subcommands — `queues`, `queue show|pause|resume|
//! drain|limits|retry-dead|purge`, `retry`, `discard` — each one call of
//! `crate::client`, printed as a line for people or as the API's JSON with
//! `--json`.

use super::args::{QueueArgs, QueuesArgs, TaskActionArgs};
use crate::api::{QueueBody, QueueLimitsBody};
use crate::client::{print_either, print_json};

pub(super) async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let list = args.api.client()?.queues().await?;
    if args.json {
        return print_json(&list);
    }
    for q in &list.queues {
        println!("{}", queue_line(q));
    }
    Ok(())
}

/// One queue as a line: its name, what stops it, its counts and limits.
fn queue_line(q: &QueueBody) -> String {
    let mut words = vec![q.name.clone()];
    if q.paused {
        words.push("PAUSED".into());
    }
    if q.draining {
        words.push("DRAINING".into());
    }
    words.push(format!("queued={}", q.queued));
    words.push(format!("running={}", q.running));
    if let Some(n) = q.succeeded {
        words.push(format!("succeeded={n}"));
    }
    words.push(format!("dead={}", q.dead));
    words.push(format!("cancelled={}", q.cancelled));
    if let Some(ms) = q.oldest_queued_ms {
        words.push(format!("oldest={:.1}s", ms as f64 / 1000.0));
    }
    if let Some(n) = q.limits.concurrency {
        words.push(format!("concurrency<={n}"));
    }
    if let Some(r) = &q.limits.rate {
        let burst = q.limits.burst.map(|b| format!(" (burst {b})")).unwrap_or_default();
        words.push(format!("rate<={r}{burst}"));
    }
    words.join("  ")
}

pub(super) async fn show(args: QueueArgs) -> anyhow::Result<()> {
    let q = args.api.client()?.queue(&args.queue).await?;
    print_either(&q, args.json, queue_line)
}

/// `pause`, `resume` or `drain`.
pub(super) async fn change(args: QueueArgs, action: &str) -> anyhow::Result<()> {
    let q = args.api.client()?.change_queue(&args.queue, action).await?;
    print_either(&q, args.json, queue_line)
}

pub(super) async fn limits(args: QueueArgs, limits: &QueueLimitsBody) -> anyhow::Result<()> {
    let q = args.api.client()?.set_queue_limits(&args.queue, limits).await?;
    print_either(&q, args.json, queue_line)
}

pub(super) async fn retry_dead(args: QueueArgs) -> anyhow::Result<()> {
    let r = args.api.client()?.retry_dead(&args.queue).await?;
    print_either(&r, args.json, |r| {
        format!("{}: {} dead tasks queued again", r.queue, r.queued)
    })
}

pub(super) async fn purge(args: QueueArgs, state: &str) -> anyhow::Result<()> {
    let r = args.api.client()?.purge(&args.queue, state).await?;
    print_either(&r, args.json, |r| {
        format!("{}: {} {} tasks deleted", r.queue, r.purged, r.state)
    })
}

pub(super) async fn retry(args: TaskActionArgs) -> anyhow::Result<()> {
    let r = args.api.client()?.retry(&args.id).await?;
    print_either(&r, args.json, |r| format!("{}: {}", r.id, r.state))
}

pub(super) async fn discard(args: TaskActionArgs) -> anyhow::Result<()> {
    let r = args.api.client()?.discard(&args.id).await?;
    print_either(&r, args.json, |r| format!("{}: discarded", r.id))
}
