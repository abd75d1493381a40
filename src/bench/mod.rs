//! `drover bench`: starts a cluster of its own (a `redis-server` child and
//! the roles in-process, with signing, leases, fencing and acknowledgements
//! all on), runs workloads and prints one JSON line with what it measured.
//!
//! Scenarios: `throughput` (N noop tasks end to end, as fast as they go),
//! `latency` (an open-loop rate: 1k/s and half of the measured throughput),
//! `memory` (M tasks queued with no workers, then drained), `scripts`
//! (Redis' cost of each step of a task's life, one step at a time; see
//! `scripts`). Latencies are
//! taken in this process: submit → the handler starting, and submit → the
//! events stream reporting the task finished, into HDR histograms in µs.
//! Redis cost comes from `INFO commandstats`, `INFO cpu` and `INFO memory`
//! deltas. Numbers are for reading and comparing, never asserted.
//!
//! With `--processes` the roles run as separate processes of this binary
//! (see `processes`) and the throughput scenario also reports each role's
//! CPU per task; submit → start is then not measured (the handler runs in
//! another process).

mod processes;
mod scripts;

use crate::config::{Layers, Settings};
use crate::context::Context;
use crate::envelope::Keyring;
use crate::handlers::{HandlerError, Registry, TaskContext};
use crate::messages::{EventBody, EVENT};
use crate::redis_server::{Persistence, RedisServer};
use crate::roles::worker::WorkerSpec;
use crate::roles::{coordinator, distributor, worker};
use crate::task::{NewTask, TaskId};
use hdrhistogram::Histogram;
use processes::{cpu_seconds, CpuByRole, RoleProcesses};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scenarios: Vec<String>,
    pub quick: bool,
    pub aof: bool,
    pub workers: usize,
    pub capacity: u32,
    pub distributors: usize,
    pub tasks: Option<usize>,
    /// Roles as separate processes instead of in-process.
    pub processes: bool,
    /// Each task's input: a JSON string this many bytes long, quotes
    /// included; `None` is `null` (4 bytes).
    pub input_bytes: Option<usize>,
    /// Extra `redis-server` arguments, after drover's own.
    pub redis_args: Vec<String>,
}

impl BenchOptions {
    /// The input every task of the run carries.
    fn input(&self) -> String {
        match self.input_bytes {
            None => "null".to_string(),
            Some(n) => format!("\"{}\"", "x".repeat(n.saturating_sub(2))),
        }
    }
}

/// Submit and start/finish instants per task, filled by the submitter, the
/// bench handler and the events reader.
#[derive(Default)]
struct Clocks {
    submitted: HashMap<String, Instant>,
    started: HashMap<String, Instant>,
    finished: HashMap<String, Instant>,
}

impl Clocks {
    /// Room for `n` tasks up front. A map that grows rehashes every entry
    /// while the lock is held, and the bench handler, on the workers'
    /// threads, waits for that lock: at 57k and 115k entries the stall
    /// showed as 30-50 ms pauses in every task started then, most of the
    /// half-load p99 measured before this.
    fn reserve(&mut self, n: usize) {
        self.submitted.reserve(n);
        self.started.reserve(n);
        self.finished.reserve(n);
    }
}

struct Bench {
    settings: Settings,
    clocks: Arc<Mutex<Clocks>>,
    ctx: Context,
    stop: CancellationToken,
    roles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    processes: Option<RoleProcesses>,
    result_ttl: String,
    /// The input of every task submitted.
    input: String,
    _redis: RedisServer,
}

fn settings(url: &str, result_ttl: &str) -> anyhow::Result<Settings> {
    let mut layers = Layers::load(None)?;
    for (k, v) in [
        ("redis_url", url),
        ("coordinator.http_addr", "127.0.0.1:0"),
        ("timing.result_ttl", result_ttl),
        // Finished tasks and their events leave Redis together.
        ("limits.events_retention", result_ttl),
        ("distributor.batch", "1024"),
    ] {
        layers.set_flag(k, "bench", Some(v.to_string()));
    }
    let mut s = layers.resolve()?;
    s.keyring = Some(Keyring::generate());
    s.api_tokens = Some(crate::api::auth::ApiTokens::single_admin(
        &crate::api::auth::generate_token(),
    ));
    Ok(s)
}

fn noop_registry(clocks: Arc<Mutex<Clocks>>) -> Registry {
    let mut r = Registry::default();
    r.register(
        "noop",
        Arc::new(move |ctx: TaskContext, _input: Value| {
            clocks
                .lock()
                .expect("clocks")
                .started
                .entry(ctx.task_id)
                .or_insert_with(Instant::now);
            async { Ok::<_, HandlerError>(Value::Null) }
        }),
    );
    r
}

impl Bench {
    async fn start(opts: &BenchOptions, result_ttl: &str) -> anyhow::Result<Bench> {
        let persistence = if opts.aof {
            Persistence::AofEverySec
        } else {
            Persistence::None
        };
        let redis = RedisServer::start_with(persistence, &opts.redis_args)?;
        let settings = settings(&redis.url(), result_ttl)?;
        let ctx = Context::new(settings.clone(), "bench", "bench")?;
        ctx.store.ping().await?;
        let bench = Bench {
            settings,
            clocks: Arc::default(),
            ctx,
            stop: CancellationToken::new(),
            roles: Vec::new(),
            processes: None,
            result_ttl: result_ttl.to_string(),
            input: opts.input(),
            _redis: redis,
        };
        Ok(bench)
    }

    fn role_ctx(&self, role: &str) -> anyhow::Result<Context> {
        Context::new(self.settings.clone(), role, role)
    }

    /// Coordinator (leader duties), distributors and workers, in-process or
    /// as processes.
    async fn start_roles(&mut self, opts: &BenchOptions) -> anyhow::Result<()> {
        if opts.processes {
            self.processes = Some(RoleProcesses::spawn(
                &self.settings,
                &self.result_ttl,
                opts.distributors,
                opts.workers,
                opts.capacity,
            )?);
        } else {
            self.spawn_roles(opts).await?;
        }
        // Wait until every worker has announced itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ctx.store.workers(self.settings.timing.worker_ttl).await?.len() < opts.workers.max(1) {
            if let Some(p) = self.processes.as_mut() {
                p.check_running()?;
            }
            anyhow::ensure!(Instant::now() < deadline, "bench workers did not register");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn spawn_roles(&mut self, opts: &BenchOptions) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.roles.push(tokio::spawn(coordinator::run(
            self.role_ctx("coordinator")?,
            listener,
            "bench-c".into(),
            self.stop.clone(),
        )));
        for d in 0..opts.distributors.max(1) {
            self.roles.push(tokio::spawn(distributor::run(
                self.role_ctx("distributor")?,
                format!("bench-d{d}"),
                self.stop.clone(),
            )));
        }
        for w in 0..opts.workers.max(1) {
            let spec = WorkerSpec {
                id: format!("bench-w{w}"),
                capacity: opts.capacity,
                tags: Vec::new(),
                grace: Duration::from_secs(1),
                registry: noop_registry(self.clocks.clone()),
            };
            self.roles.push(tokio::spawn(worker::run(
                self.role_ctx("worker")?,
                spec,
                self.stop.clone(),
            )));
        }
        Ok(())
    }

    /// CPU seconds so far: this process (with the roles when they run
    /// in-process) and, with `--processes`, each role's processes.
    fn cpu(&self) -> CpuByRole {
        let mut cpu = self.processes.as_ref().map(RoleProcesses::cpu).unwrap_or_default();
        let me = if self.processes.is_some() {
            "bench"
        } else {
            "bench_and_roles"
        };
        cpu.insert(me, cpu_seconds(std::process::id()).unwrap_or(0.0));
        cpu
    }

    /// Follows the events stream and stamps finish times.
    fn follow_events(&self) -> tokio::task::JoinHandle<()> {
        let ctx = self.ctx.clone();
        let clocks = self.clocks.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let stream = ctx.store.keys.events();
            let mut last = ctx.store.last_event_id().await.unwrap_or_else(|_| "0-0".into());
            while !stop.is_cancelled() {
                let Ok(entries) = ctx.store.read_events(&last, Duration::from_millis(200)).await else {
                    continue;
                };
                let now = Instant::now();
                for e in &entries {
                    if let Ok(v) = ctx.store.open(&stream, e) {
                        if v.msg_type() == EVENT {
                            if let Ok(body) = v.parse::<EventBody>() {
                                let mut c = clocks.lock().expect("clocks");
                                for id in body.ids {
                                    c.finished.entry(id).or_insert(now);
                                }
                            }
                        }
                    }
                }
                if let Some(e) = entries.last() {
                    last = e.id.clone();
                }
            }
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        for r in self.roles {
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
        if let Some(p) = self.processes {
            let _ = tokio::task::spawn_blocking(move || p.stop()).await;
        }
    }
}

/// A noop task with the API's default settings (3 attempts, 5 minutes), as
/// most tasks are submitted.
fn new_task(input: &str) -> NewTask {
    NewTask {
        id: TaskId::generate(),
        handler: "noop".into(),
        input: input.into(),
        tags: Vec::new(),
        priority: 0,
        max_attempts: crate::task::UNSTORED_MAX_ATTEMPTS,
        timeout_ms: crate::task::UNSTORED_TIMEOUT_MS,
        run_at_ms: None,
        idempotency_key: None,
    }
}

/// Submits `n` tasks in batches of `batch` from one loop, stamping each.
async fn submit(b: &Bench, n: usize, batch: usize) -> anyhow::Result<Vec<String>> {
    let (ctx, clocks) = (&b.ctx, &b.clocks);
    clocks.lock().expect("clocks").reserve(n);
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let tasks: Vec<NewTask> = (0..left.min(batch)).map(|_| new_task(&b.input)).collect();
        let now = Instant::now();
        {
            let mut c = clocks.lock().expect("clocks");
            for t in &tasks {
                c.submitted.insert(t.id.to_string(), now);
            }
        }
        ctx.store.submit(&tasks).await?;
        left -= tasks.len();
        ids.extend(tasks.into_iter().map(|t| t.id.to_string()));
    }
    Ok(ids)
}

async fn wait_finished(clocks: &Mutex<Clocks>, ids: &[String], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    // Tasks finish roughly in submission order: `done` only moves forward,
    // so the whole wait looks each id up about once instead of rescanning
    // every id on every tick (which cost the bench a core at 100k tasks).
    // The lock is held for at most 1,000 look-ups at a time, and the
    // runtime gets its thread back in between: the bench handler takes the
    // lock on the workers' threads, and one pass over 100k ids kept every
    // task started meanwhile waiting 20-30 ms (it showed at the end of each
    // open-loop phase, when this wait begins).
    let mut done = 0;
    loop {
        let stop = (done + 1000).min(ids.len());
        {
            let c = clocks.lock().expect("clocks");
            while done < stop && c.finished.contains_key(&ids[done]) {
                done += 1;
            }
        }
        if done == ids.len() {
            return Ok(());
        }
        if done == stop {
            tokio::task::yield_now().await;
            continue;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {} tasks finished within {within:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// p50/p99/p99.9/max in ms of submit→start and submit→finish for `ids`.
fn latencies(clocks: &Mutex<Clocks>, ids: &[String]) -> Value {
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
/// submit → assign (intake stream, distributor, assign script), assign →
/// start (worker stream, the worker's claim, handler start), start → the
/// complete script, and the time the task held its worker's slot
/// (assignment → complete). With every slot busy, throughput is at most
/// slots / the time a slot is held. Assignment and completion times are the
/// task's `st` and `fin` (Redis ms), so every part has millisecond
/// resolution; the bench's instants are mapped to Redis time through the
/// store's clock.
async fn split_at_assignment(ctx: &Context, clocks: &Mutex<Clocks>, ids: &[String]) -> anyhow::Result<Value> {
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
struct RedisUsage {
    calls: u64,
    cpu_s: f64,
    used_memory: u64,
    /// Parts of `used_memory` that do not depend on tasks held: client
    /// buffers (the roles' pooled connections) and cached scripts.
    clients_memory: u64,
    scripts_memory: u64,
    /// Per command: (calls, µs inside Redis), from INFO commandstats.
    commands: HashMap<String, (u64, u64)>,
}

async fn redis_usage(ctx: &Context) -> anyhow::Result<RedisUsage> {
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

fn per_task(before: &RedisUsage, after: &RedisUsage, n: usize) -> Value {
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

async fn throughput(opts: &BenchOptions) -> anyhow::Result<Value> {
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

async fn open_loop(opts: &BenchOptions, rate: f64, seconds: f64) -> anyhow::Result<Value> {
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

async fn memory(opts: &BenchOptions) -> anyhow::Result<Value> {
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

/// Waits until finished tasks have expired (result TTL) and the streams are
/// trimmed (housekeeping every 5 s), then returns `used_memory`: what the
/// cluster keeps when it holds no tasks.
async fn settle(ctx: &Context, within: Duration) -> anyhow::Result<u64> {
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
        for s in streams.iter().chain([k.intake(), k.events()].iter()) {
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
async fn largest_keys(ctx: &Context, top: usize) -> anyhow::Result<Value> {
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

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// Runs the chosen scenarios and returns the one JSON object to print.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Value> {
    let mut out = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "quick": opts.quick,
        "aof": if opts.aof { "everysec" } else { "off" },
        "workers": opts.workers,
        "capacity": opts.capacity,
        "distributors": opts.distributors,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "input_bytes": opts.input().len(),
        "redis_args": opts.redis_args,
    });
    let all = opts.scenarios.is_empty() || opts.scenarios.iter().any(|s| s == "all");
    let want = |s: &str| all || opts.scenarios.iter().any(|x| x == s);
    let mut measured_rate = None;
    if want("throughput") {
        let t = throughput(&opts).await?;
        measured_rate = t["end_to_end_per_s"].as_f64();
        out["throughput"] = t;
    }
    if want("latency") {
        let secs = if opts.quick { 2.0 } else { 10.0 };
        let idle = open_loop(&opts, if opts.quick { 200.0 } else { 1000.0 }, secs).await?;
        let half = match measured_rate {
            Some(r) => r / 2.0,
            None => {
                if opts.quick {
                    1000.0
                } else {
                    5000.0
                }
            }
        };
        let loaded = open_loop(&opts, half, secs).await?;
        out["latency"] = json!({ "idle": idle, "half_load": loaded });
    }
    if want("memory") {
        out["memory"] = memory(&opts).await?;
    }
    if want("scripts") {
        let b = Bench::start(&opts, "10m").await?;
        let rounds = if opts.quick { 20 } else { 500 };
        out["scripts"] = scripts::run(&b.ctx, rounds, crate::roles::distributor::PLACEMENT_CHUNK, &b.input).await?;
        b.stop().await;
    }
    Ok(out)
}
