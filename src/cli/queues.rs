//! The operator's client subcommands — `queues`, `queue retry-dead`,
//! `queue purge`, `retry`, `discard` — each one call of `crate::client`,
//! printed as a line for people or as the API's JSON with `--json`.

use super::args::{QueueArgs, QueuesArgs, TaskActionArgs};
use crate::client::{print_either, print_json};

pub(super) async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let list = args.api.client()?.queues().await?;
    if args.json {
        return print_json(&list);
    }
    for q in &list.queues {
        let succeeded = q.succeeded.map(|n| format!("succeeded={n}  ")).unwrap_or_default();
        println!("{}  {succeeded}dead={}  cancelled={}", q.name, q.dead, q.cancelled);
    }
    Ok(())
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
