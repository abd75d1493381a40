//! The cluster a bench run starts: a `redis-server` child and the roles
//! (in-process, or as processes with `--processes`), with signing, leases,
//! fencing and acknowledgements all on; and how the bench feeds it: noop
//! tasks submitted straight to the store, each stamped when submitted,
//! when its handler starts and when the events stream says it finished.

use super::processes::{cpu_seconds, CpuByRole, RoleProcesses};
use super::BenchOptions;
use crate::config::{Layers, Settings};
use crate::context::Context;
use crate::envelope::Keyring;
use crate::handlers::{HandlerError, Registry, TaskContext};
use crate::messages::{EventBody, EVENT};
use crate::names::QueueName;
use crate::redis_server::{Persistence, RedisServer};
use crate::roles::worker::WorkerSpec;
use crate::roles::{coordinator, distributor, worker};
use crate::task::{NewTask, TaskId};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Submit and start/finish instants per task, filled by the submitter, the
/// bench handler and the events reader.
#[derive(Default)]
pub(super) struct Clocks {
    pub(super) submitted: HashMap<String, Instant>,
    pub(super) started: HashMap<String, Instant>,
    pub(super) finished: HashMap<String, Instant>,
}

impl Clocks {
    /// Room for `n` tasks up front. A map that grows rehashes every entry
    /// while the lock is held, and the bench handler, on the workers'
    /// threads, waits for that lock: at 57k and 115k entries the stall
    /// showed as 30-50 ms pauses in every task started then, most of the
    /// half-load p99 measured before this.
    pub(super) fn reserve(&mut self, n: usize) {
        self.submitted.reserve(n);
        self.started.reserve(n);
        self.finished.reserve(n);
    }
}

pub(super) struct Bench {
    settings: Settings,
    pub(super) clocks: Arc<Mutex<Clocks>>,
    pub(super) ctx: Context,
    stop: CancellationToken,
    roles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    processes: Option<RoleProcesses>,
    result_ttl: String,
    /// The input of every task submitted.
    pub(super) input: String,
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
    pub(super) async fn start(opts: &BenchOptions, result_ttl: &str) -> anyhow::Result<Bench> {
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
    pub(super) async fn start_roles(&mut self, opts: &BenchOptions) -> anyhow::Result<()> {
        let clocks = self.clocks.clone();
        self.start_roles_with(opts, move |_| noop_registry(clocks.clone()))
            .await
    }

    /// As `start_roles`, with worker `w`'s handlers from `registry(w)`
    /// (in-process only: processes run the noop registry).
    pub(super) async fn start_roles_with(
        &mut self,
        opts: &BenchOptions,
        registry: impl Fn(usize) -> Registry,
    ) -> anyhow::Result<()> {
        if opts.processes {
            self.processes = Some(RoleProcesses::spawn(
                &self.settings,
                &self.result_ttl,
                opts.distributors,
                opts.workers,
                opts.capacity,
            )?);
        } else {
            self.spawn_roles(opts, registry).await?;
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

    async fn spawn_roles(&mut self, opts: &BenchOptions, registry: impl Fn(usize) -> Registry) -> anyhow::Result<()> {
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
                queues: vec![],
                grace: Duration::from_secs(1),
                registry: registry(w),
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
    pub(super) fn cpu(&self) -> CpuByRole {
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
    pub(super) fn follow_events(&self) -> tokio::task::JoinHandle<()> {
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

    pub(super) async fn stop(self) {
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
pub(super) fn new_task(input: &str) -> NewTask {
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
        queue: QueueName::default_queue(),
        unique_key: None,
        unique_for_ms: 0,
    }
}

/// Submits `n` tasks in batches of `batch` from one loop, stamping each.
pub(super) async fn submit(b: &Bench, n: usize, batch: usize) -> anyhow::Result<Vec<String>> {
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

pub(super) async fn wait_finished(clocks: &Mutex<Clocks>, ids: &[String], within: Duration) -> anyhow::Result<()> {
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
