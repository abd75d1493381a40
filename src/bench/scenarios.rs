//! The scenarios that start a cluster and load it: `throughput` (N tasks
//! end to end, as fast as they go), the open loop behind `latency` (a fixed
//! rate, after an uncounted warm-up), and `memory` (tasks queued with no
//! workers, drained, then more rounds to see that nothing is left behind).
//! `scripts` has a module of its own.

use super::cluster::{submit, wait_finished, Bench};
use super::report::{largest_keys, latencies, merge, per_task, redis_usage, settle, split_at_assignment};
use super::BenchOptions;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub(super) async fn throughput(opts: &BenchOptions) -> anyhow::Result<Value> {
    let n = opts.tasks.unwrap_or(if opts.quick { 5_000 } else { 100_000 });
    let mut b = Bench::start(opts, "10m").await?;
    b.start_roles(opts).await?;
    let events = b.follow_events();
    let before = redis_usage(&b.ctx).await?;
    let cpu_before = b.cpu();
    let t0 = Instant::now();
    let ids = submit(&b, n, 500).await?;
    let submit_s = t0.elapsed().as_secs_f64();
    wait_finished(&b.clocks, &ids, Duration::from_secs(600)).await?;
    let total_s = t0.elapsed().as_secs_f64();
    let after = redis_usage(&b.ctx).await?;
    // Where the time goes outside Redis: CPU µs per task of each process.
    let cpu_after = b.cpu();
    let cpu_per_task: serde_json::Map<String, Value> = cpu_after
        .iter()
        .map(|(role, s)| {
            let used = s - cpu_before.get(role).copied().unwrap_or(0.0);
            (role.to_string(), json!(used * 1e6 / n as f64))
        })
        .collect();
    let mut out = json!({
        "tasks": n,
        "submit_per_s": n as f64 / submit_s,
        "end_to_end_per_s": n as f64 / total_s,
        "seconds": total_s,
        "latency": latencies(&b.clocks, &ids),
        "split_at_assignment": split_at_assignment(&b.ctx, &b.clocks, &ids).await?,
        "process_cpu_us_per_task": cpu_per_task,
    });
    merge(&mut out, per_task(&before, &after, n));
    events.abort();
    b.stop().await;
    Ok(out)
}

/// The uncounted start of each open-loop phase.
const WARM_UP: Duration = Duration::from_secs(1);

/// Submits at `rate` tasks/s for `length`, open loop: one tick per
/// millisecond, each submitting what the rate owes by then.
async fn submit_at_rate(b: &Bench, rate: f64, length: Duration) -> anyhow::Result<Vec<String>> {
    let t0 = Instant::now();
    let mut sent = 0usize;
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while t0.elapsed() < length {
        tick.tick().await;
        let owed = (t0.elapsed().as_secs_f64() * rate) as usize;
        if owed > sent {
            ids.extend(submit(b, owed - sent, 500).await?);
            sent = owed;
        }
    }
    Ok(ids)
}

pub(super) async fn open_loop(opts: &BenchOptions, rate: f64, seconds: f64) -> anyhow::Result<Value> {
    let mut b = Bench::start(opts, "10m").await?;
    b.clocks
        .lock()
        .expect("clocks")
        .reserve((rate * (seconds + WARM_UP.as_secs_f64()) * 1.1) as usize);
    b.start_roles(opts).await?;
    let events = b.follow_events();
    // A first second at the same rate, not counted: a fresh cluster opens
    // its pooled connections and loads its scripts on first use, which
    // showed as a 17-21 ms pause in the first 100 ms of every phase.
    let warm_up = submit_at_rate(&b, rate, WARM_UP).await?;
    wait_finished(&b.clocks, &warm_up, Duration::from_secs(120)).await?;
    let before = redis_usage(&b.ctx).await?;
    let ids = submit_at_rate(&b, rate, Duration::from_secs_f64(seconds)).await?;
    wait_finished(&b.clocks, &ids, Duration::from_secs(120)).await?;
    let after = redis_usage(&b.ctx).await?;
    let mut out = json!({
        "rate_per_s": rate,
        "tasks": ids.len(),
        "latency": latencies(&b.clocks, &ids),
        "split_at_assignment": split_at_assignment(&b.ctx, &b.clocks, &ids).await?,
    });
    merge(&mut out, per_task(&before, &after, ids.len()));
    events.abort();
    b.stop().await;
    Ok(out)
}

pub(super) async fn memory(opts: &BenchOptions) -> anyhow::Result<Value> {
    let n = opts.tasks.unwrap_or(if opts.quick { 20_000 } else { 1_000_000 });
    let rounds = if opts.quick { 3 } else { 10 };
    let mut b = Bench::start(opts, "2s").await?;
    let baseline = redis_usage(&b.ctx).await?.used_memory;
    let ids = submit(&b, n, 1000).await?;
    let queued = redis_usage(&b.ctx).await?.used_memory;
    // The task's input is its payload.
    let payload = b.input.len();
    let per_task = (queued.saturating_sub(baseline)) as f64 / n as f64;
    let events = b.follow_events();
    let t0 = Instant::now();
    b.start_roles(opts).await?;
    wait_finished(&b.clocks, &ids, Duration::from_secs(1800)).await?;
    let drain_s = t0.elapsed().as_secs_f64();
    let drained = redis_usage(&b.ctx).await?.used_memory;
    let settle_within = Duration::from_secs(if opts.quick { 30 } else { 120 });
    let mut settled = vec![settle(&b.ctx, settle_within).await?];
    // More runs through the same cluster: what is left after each one
    // settles must not grow.
    let per_round = n.min(100_000);
    for _ in 1..rounds {
        let ids = submit(&b, per_round, 1000).await?;
        wait_finished(&b.clocks, &ids, Duration::from_secs(600)).await?;
        settled.push(settle(&b.ctx, settle_within).await?);
    }
    let remaining = largest_keys(&b.ctx, 5).await?;
    let end = redis_usage(&b.ctx).await?;
    events.abort();
    b.stop().await;
    let first = settled[0];
    let last = *settled.last().expect("at least one round");
    Ok(json!({
        "tasks": n,
        "baseline_bytes": baseline,
        "bytes_per_queued_task": per_task,
        "payload_bytes_per_task": payload,
        "drain_per_s": n as f64 / drain_s,
        "after_drain_bytes": drained,
        "rounds": rounds,
        "tasks_per_later_round": per_round,
        "settled_bytes_per_round": settled,
        // Workers' hashes, consumer groups, cached scripts: fixed, not per task.
        "settled_over_baseline_bytes": first as i64 - baseline as i64,
        "growth_across_rounds_bytes": last as i64 - first as i64,
        "largest_keys_after_ttl": remaining,
        "settled_client_buffers_bytes": end.clients_memory,
        "settled_scripts_bytes": end.scripts_memory,
    }))
}
