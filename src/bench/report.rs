//! What a bench run reports and how it is measured: latency quantiles from
//! HDR histograms of µs, a task's life split at its assignment, Redis'
//! calls, CPU and memory from `INFO` deltas (per task, with the costliest
//! commands), and what memory is left once the tasks are gone.

use super::cluster::Clocks;
use crate::context::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// p50/p99/p99.9/max in ms of submit→start and submit→finish for `ids`.
pub(super) fn latencies(clocks: &Mutex<Clocks>, ids: &[String]) -> Value {
    let c = clocks.lock().expect("clocks");
    let mut start = Histogram::<u64>::new(3).expect("histogram");
    let mut finish = Histogram::<u64>::new(3).expect("histogram");
    for id in ids {
        let Some(s) = c.submitted.get(id) else { continue };
        if let Some(t) = c.started.get(id) {
            let _ = start.record(t.saturating_duration_since(*s).as_micros() as u64);
        }
        if let Some(t) = c.finished.get(id) {
            let _ = finish.record(t.saturating_duration_since(*s).as_micros() as u64);
        }
    }
    json!({ "submit_to_start": quantiles(&start), "submit_to_finish": quantiles(&finish) })
}

/// p50, p99, p99.9 and max of a histogram of µs, in ms; null when empty
/// (not measured: with --processes the handler runs elsewhere).
fn quantiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
        "p999_ms": h.value_at_quantile(0.999) as f64 / 1000.0,
        "max_ms": h.max() as f64 / 1000.0,
    })
}

/// Splits a task's life at its assignment, to show where time goes:
/// submit → assign (the ready lists, the distributor woken by the wake
/// stream, the assign script), assign →
/// start (worker stream, the worker's claim, handler start), start → the
/// complete script, and the time the task held its worker's slot
/// (assignment → complete). With every slot busy, throughput is at most
/// slots / the time a slot is held. Assignment and completion times are the
/// task's `st` and `fin` (Redis ms), so every part has millisecond
/// resolution; the bench's instants are mapped to Redis time through the
/// store's clock.
pub(super) async fn split_at_assignment(
    ctx: &Context,
    clocks: &Mutex<Clocks>,
    ids: &[String],
) -> anyhow::Result<Value> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HMGET").arg(ctx.store.keys.task(id)).arg("st").arg("fin");
    }
    let times: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut ctx.store.con().await?).await?;
    let (now, now_ms) = (Instant::now(), ctx.store.clock().now_ms());
    let redis_ms = |i: &Instant| now_ms.saturating_sub(now.saturating_duration_since(*i).as_millis() as u64);
    let histogram = || Histogram::<u64>::new(3).expect("histogram");
    let (mut to_assign, mut to_start, mut to_complete, mut held) = (histogram(), histogram(), histogram(), histogram());
    let c = clocks.lock().expect("clocks");
    for (id, (st, fin)) in ids.iter().zip(times) {
        let Some(st) = st else { continue };
        if let Some(fin) = fin {
            let _ = held.record(fin.saturating_sub(st) * 1000);
        }
        if let Some(submitted) = c.submitted.get(id) {
            let _ = to_assign.record(st.saturating_sub(redis_ms(submitted)) * 1000);
        }
        if let Some(started) = c.started.get(id) {
            let _ = to_start.record(redis_ms(started).saturating_sub(st) * 1000);
            if let Some(fin) = fin {
                let _ = to_complete.record(fin.saturating_sub(redis_ms(started)) * 1000);
            }
        }
    }
    Ok(json!({
        "submit_to_assign": quantiles(&to_assign),
        "assign_to_start": quantiles(&to_start),
        "start_to_complete": quantiles(&to_complete),
        "slot_held": quantiles(&held),
    }))
}

/// What Redis has done so far: calls, CPU seconds, memory.
#[derive(Debug, Clone, Default)]
pub(super) struct RedisUsage {
    pub(super) calls: u64,
    pub(super) cpu_s: f64,
    pub(super) used_memory: u64,
    /// Parts of `used_memory` that do not depend on tasks held: client
    /// buffers (the roles' pooled connections) and cached scripts.
    pub(super) clients_memory: u64,
    pub(super) scripts_memory: u64,
    /// Per command: (calls, µs inside Redis), from INFO commandstats.
    pub(super) commands: HashMap<String, (u64, u64)>,
}

pub(super) async fn redis_usage(ctx: &Context) -> anyhow::Result<RedisUsage> {
    let mut con = ctx.store.con().await?;
    let info: String = redis::cmd("INFO").arg("all").query_async(&mut con).await?;
    let mut u = RedisUsage::default();
    for line in info.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            // cmdstat_xadd:calls=3,usec=…,…
            let mut parts = rest.splitn(2, ':');
            let (Some(name), Some(fields)) = (parts.next(), parts.next()) else {
                continue;
            };
            let field = |k: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(k))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (calls, usec) = (field("calls="), field("usec="));
            u.calls += calls;
            u.commands.insert(name.to_string(), (calls, usec));
        } else if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            u.cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("used_memory:") {
            u.used_memory = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("mem_clients_normal:") {
            u.clients_memory = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("used_memory_scripts:") {
            u.scripts_memory = v.trim().parse().unwrap_or(0);
        }
    }
    Ok(u)
}

pub(super) fn per_task(before: &RedisUsage, after: &RedisUsage, n: usize) -> Value {
    let n = n.max(1) as f64;
    // Where Redis spends its time, per task: the costliest commands (the
    // commands a script runs are counted under their own names too).
    let mut top: Vec<(String, f64, f64)> = after
        .commands
        .iter()
        .map(|(name, (calls, usec))| {
            let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
            (
                name.clone(),
                calls.saturating_sub(c0) as f64 / n,
                usec.saturating_sub(u0) as f64 / n,
            )
        })
        .filter(|(_, calls, _)| *calls > 0.0)
        .collect();
    top.sort_by(|a, b| b.2.total_cmp(&a.2));
    top.truncate(12);
    json!({
        "redis_commands_per_task": (after.calls.saturating_sub(before.calls)) as f64 / n,
        "redis_cpu_us_per_task": (after.cpu_s - before.cpu_s) * 1e6 / n,
        "redis_top_commands": top
            .iter()
            .map(|(name, calls, usec)| json!({"cmd": name, "calls_per_task": calls, "usec_per_task": usec}))
            .collect::<Vec<_>>(),
    })
}

/// Waits until finished tasks have expired (result TTL) and the streams are
/// trimmed (housekeeping every 5 s), then returns `used_memory`: what the
/// cluster keeps when it holds no tasks.
pub(super) async fn settle(ctx: &Context, within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    let k = &ctx.store.keys;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut con = ctx.store.con().await?;
        let tasks: Vec<String> = redis::cmd("KEYS").arg(k.task("*")).query_async(&mut con).await?;
        let streams: Vec<String> = redis::cmd("KEYS")
            .arg(k.worker_stream("*"))
            .query_async(&mut con)
            .await?;
        let mut longest = 0u64;
        // `P wake` is left out: it keeps its last ~1000 entries (MAXLEN), a
        // fixed cost that is part of the baseline.
        for s in streams.iter().chain([k.events()].iter()) {
            let len: u64 = redis::cmd("XLEN").arg(s).query_async(&mut con).await?;
            longest = longest.max(len);
        }
        // A trimmed stream keeps its last-delivered entry.
        if (tasks.is_empty() && longest <= 1) || Instant::now() >= deadline {
            return Ok(redis_usage(ctx).await?.used_memory);
        }
    }
}

/// The `top` biggest keys by `MEMORY USAGE`: what memory above the
/// baseline is made of once the tasks are gone.
pub(super) async fn largest_keys(ctx: &Context, top: usize) -> anyhow::Result<Value> {
    let mut con = ctx.store.con().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut con).await?;
    let mut sized = Vec::with_capacity(keys.len());
    for k in keys.into_iter().take(1000) {
        let bytes: Option<u64> = redis::cmd("MEMORY").arg("USAGE").arg(&k).query_async(&mut con).await?;
        sized.push((bytes.unwrap_or(0), k));
    }
    sized.sort_unstable_by(|a, b| b.cmp(a));
    Ok(sized
        .into_iter()
        .take(top)
        .map(|(bytes, key)| json!({ "key": key, "bytes": bytes }))
        .collect())
}

pub(super) fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}
