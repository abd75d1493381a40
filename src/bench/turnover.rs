//! The `turnover` scenario: how soon a worker's slot runs its next task
//! after the last one ended, with tasks that do real work (issue "Slot
//! turnover"). For each work time (1, 5 and 50 ms) and slot count (10, 20
//! and 100, over two workers), a backlog is submitted first and then the
//! roles start, so every slot always has a task waiting. The bench handler
//! sleeps the work time and stamps its start and end per worker.
//!
//! Reported per case: efficiency (tasks/s achieved ÷ slots / work time),
//! the overhead per task that implies (slots / rate − work), and the
//! turnover gaps themselves: each start on a worker past its first
//! `capacity` is matched with the earliest end on that worker not matched
//! yet (the slot it reused), and the gap is start − end. The part of a gap
//! before the next task's lease was taken (`st`, Redis ms) is reported too,
//! to show whether the time goes before assignment or after it.
//! In-process only: the stamps are taken in this process.

use super::cluster::{submit, wait_finished, Bench};
use super::BenchOptions;
use crate::handlers::{HandlerError, Registry, TaskContext};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The work times and slot counts of the matrix.
const WORK_MS: [u64; 3] = [1, 5, 50];
const SLOTS: [u32; 3] = [10, 20, 100];
const WORKERS: usize = 2;

/// One task's run on a worker.
struct Stamp {
    worker: usize,
    id: String,
    start: Instant,
    end: Instant,
}

type Stamps = Arc<Mutex<Vec<Stamp>>>;

/// Worker `worker`'s handlers: `noop` (what the bench submits) works for
/// `work` and stamps its run.
fn work_registry(stamps: Stamps, worker: usize, work: Duration) -> Registry {
    let mut r = Registry::default();
    r.register(
        "noop",
        Arc::new(move |ctx: TaskContext, _input: Value| {
            let stamps = stamps.clone();
            async move {
                let start = Instant::now();
                // A blocking sleep on the blocking pool: tokio's timer
                // rounds up to its millisecond ticks (a 1 ms sleep took
                // 2.2 ms on average), which would count as overhead.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(work)).await;
                let end = Instant::now();
                stamps.lock().expect("stamps").push(Stamp {
                    worker,
                    id: ctx.task_id,
                    start,
                    end,
                });
                Ok::<_, HandlerError>(Value::Null)
            }
        }),
    );
    r
}

pub(super) async fn run(opts: &BenchOptions) -> anyhow::Result<Value> {
    let mut cases = Vec::new();
    for work_ms in WORK_MS {
        for slots in SLOTS {
            cases.push(case(opts, work_ms, slots).await?);
        }
    }
    Ok(json!({ "workers": WORKERS, "cases": cases }))
}

/// Enough tasks for about 3 s of ideal running (a third with --quick),
/// between 300 and 30,000.
fn tasks_for(opts: &BenchOptions, work_ms: u64, slots: u32) -> usize {
    let ideal_per_s = u64::from(slots) * 1000 / work_ms;
    let n = if opts.quick { ideal_per_s } else { 3 * ideal_per_s };
    (n as usize).clamp(300, 30_000)
}

async fn case(opts: &BenchOptions, work_ms: u64, slots: u32) -> anyhow::Result<Value> {
    let n = tasks_for(opts, work_ms, slots);
    let capacity = slots / WORKERS as u32;
    let opts = BenchOptions {
        workers: WORKERS,
        capacity,
        processes: false,
        ..opts.clone()
    };
    let mut b = Bench::start(&opts, "10m").await?;
    let ids = submit(&b, n, 500).await?;
    let stamps: Stamps = Arc::default();
    let work = Duration::from_millis(work_ms);
    let s = stamps.clone();
    let events = b.follow_events();
    b.start_roles_with(&opts, move |w| work_registry(s.clone(), w, work))
        .await?;
    wait_finished(&b.clocks, &ids, Duration::from_secs(600)).await?;
    events.abort();
    let lease_starts = lease_starts(&b, &ids).await?;
    b.stop().await;
    let stamps = std::mem::take(&mut *stamps.lock().expect("stamps"));
    Ok(report(&stamps, &lease_starts, work_ms, slots, capacity as usize))
}

/// Each task's lease start (`st`, Redis ms), mapped onto this process'
/// clock.
async fn lease_starts(b: &Bench, ids: &[String]) -> anyhow::Result<HashMap<String, Instant>> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HGET").arg(b.ctx.store.keys.task(id)).arg("st");
    }
    let st: Vec<Option<u64>> = pipe.query_async(&mut b.ctx.store.con().await?).await?;
    let (now, now_ms) = (Instant::now(), b.ctx.store.clock().now_ms());
    Ok(ids
        .iter()
        .zip(st)
        .filter_map(|(id, st)| {
            let ago = Duration::from_millis(now_ms.saturating_sub(st?));
            Some((id.clone(), now.checked_sub(ago)?))
        })
        .collect())
}

fn report(
    stamps: &[Stamp],
    lease_starts: &HashMap<String, Instant>,
    work_ms: u64,
    slots: u32,
    capacity: usize,
) -> Value {
    let first = stamps.iter().map(|s| s.start).min();
    let last = stamps.iter().map(|s| s.end).max();
    let (Some(first), Some(last)) = (first, last) else {
        return Value::Null;
    };
    let seconds = last.duration_since(first).as_secs_f64().max(1e-9);
    let rate = stamps.len() as f64 / seconds;
    let ideal = f64::from(slots) * 1000.0 / work_ms as f64;
    let histogram = || Histogram::<u64>::new(3).expect("histogram");
    let (mut gaps, mut before_lease) = (histogram(), histogram());
    for worker in 0..WORKERS {
        let mut runs: Vec<&Stamp> = stamps.iter().filter(|s| s.worker == worker).collect();
        runs.sort_by_key(|s| s.start);
        let mut ends: Vec<Instant> = runs.iter().map(|s| s.end).collect();
        ends.sort();
        // Each start past the first `capacity` reuses the slot of the
        // earliest end not matched yet.
        for (next, freed) in runs.iter().skip(capacity).zip(ends.iter()) {
            let gap = next.start.saturating_duration_since(*freed);
            let _ = gaps.record(gap.as_micros() as u64);
            if let Some(leased) = lease_starts.get(&next.id) {
                let _ = before_lease.record(leased.saturating_duration_since(*freed).as_micros() as u64);
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let handler_ms: f64 = stamps
        .iter()
        .map(|s| s.end.duration_since(s.start).as_secs_f64() * 1000.0)
        .sum::<f64>()
        / stamps.len() as f64;
    json!({
        "work_ms": work_ms,
        "slots": slots,
        "tasks": stamps.len(),
        "tasks_per_s": rate,
        "ideal_per_s": ideal,
        "efficiency": rate / ideal,
        "overhead_ms_per_task": f64::from(slots) * 1000.0 / rate - work_ms as f64,
        "handler_ms_mean": handler_ms,
        "turnover_gap": { "p50_ms": ms(&gaps, 0.5), "p99_ms": ms(&gaps, 0.99), "samples": gaps.len() },
        "gap_before_lease": { "p50_ms": ms(&before_lease, 0.5), "p99_ms": ms(&before_lease, 0.99) },
    })
}
