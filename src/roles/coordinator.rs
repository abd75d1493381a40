//! The coordinator: the HTTP API, the events reader that wakes waiters, and
//! — in the one coordinator holding the leader lease — the reaper (expired
//! assignments and leases), the scheduler (delayed tasks and retries) and
//! the janitor (workers silent too long). Any number of coordinators can
//! serve the API; when the leader dies its lease runs out and another takes
//! over within `timing.leader_ttl`. With `coordinator.tls_*` set the API is
//! served over HTTPS (`crate::tls`).

use super::{pause, retry_backoff_ms, RetryDelay};
use crate::api::waiters::Waiters;
use crate::api::{self, ApiState};
use crate::context::Context;
use crate::messages::{EventBody, EVENT};
use crate::store::EVENTS_READ_COUNT;
use crate::task::TaskState;
use crate::telemetry::catalog;
use crate::tls::{self, TlsListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Task keys the reconciler looks at on each leader pass (every
/// `timing.tick`): 2,000 keys a second at the default tick. One small step
/// per pass instead of a large sweep every few seconds, because a burst of
/// 10 steps of 1,000 showed as a 15-20 ms pause in task latency at half of
/// peak throughput (BENCHMARKS.md).
const RECONCILE_STEP: usize = 200;

/// Runs until `shutdown`: then stops accepting (503), finishes open
/// requests, gives up the leader lease and returns.
pub async fn run(ctx: Context, listener: TcpListener, id: String, shutdown: CancellationToken) -> anyhow::Result<()> {
    if ctx.settings.api_tokens.is_none() {
        anyhow::bail!("config: api_tokens: the API needs tokens: set DROVER_API_TOKENS or DROVER_API_TOKENS_FILE (e.g. \"$(drover keygen --token):admin\")");
    }
    // TLS is set up before anything else runs, so a bad certificate fails
    // the start (leaving no task behind) instead of every handshake.
    let tls = match &ctx.settings.coordinator.tls {
        None => None,
        Some(files) => {
            let (config, cert) = tls::server_config(files).map_err(|e| anyhow::anyhow!("API TLS: {e}"))?;
            tokio::spawn(cert.watch(tls::RELOAD_EVERY, shutdown.clone()));
            Some(config)
        }
    };
    ctx.health.role_starting();
    let waiters = Arc::new(Waiters::new(ctx.settings.coordinator.max_waits));
    let state = Arc::new(ApiState::new(ctx.clone(), waiters.clone()));
    let events = tokio::spawn(read_events(ctx.clone(), waiters.clone(), shutdown.clone()));
    let leader = tokio::spawn(lead(ctx.clone(), id.clone(), shutdown.clone()));
    let gauges = tokio::spawn(publish_backlog(ctx.clone(), shutdown.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, scheme, coordinator = %id, "API listening");
    ctx.health.role_started();

    let drain = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            state.accepting.store(false, Ordering::SeqCst);
            state.ctx.health.set_draining();
            state.waiters.wake_all();
            tracing::info!("coordinator draining: new submissions get 503, open requests finish");
        }
    };
    let router = api::router(state);
    match tls {
        None => axum::serve(listener, router).with_graceful_shutdown(drain).await?,
        Some(config) => {
            axum::serve(TlsListener::new(listener, config), router)
                .with_graceful_shutdown(drain)
                .await?
        }
    }
    for t in [events, leader, gauges] {
        let _ = t.await;
    }
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Follows the events stream and wakes waiters of the tasks it names.
/// Waits are woken by nothing else, so wherever events may have been
/// missed every waiter is woken to read its task again: after a failed
/// read, after a full read that trimming may have overtaken, and (at most
/// once a second) while events are refused, since a refused event's tasks
/// cannot be known.
async fn read_events(ctx: Context, waiters: Arc<Waiters>, shutdown: CancellationToken) {
    let stream = ctx.store.keys.events();
    let mut last = None;
    let mut retry = RetryDelay::default();
    let mut woke_all_for_refused: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        let from = match &last {
            Some(id) => id,
            None => match ctx.store.last_event_id().await {
                Ok(id) => {
                    last = Some(id);
                    continue;
                }
                Err(e) => {
                    retry.failed("reading the events stream", &e, &shutdown).await;
                    continue;
                }
            },
        };
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = ctx.store.read_events(from, Duration::from_secs(1)) => r,
        };
        match read {
            Ok(entries) => {
                retry.success();
                let mut refused = false;
                for entry in &entries {
                    metrics::counter!(catalog::MESSAGES_RECEIVED.name, "stream" => "events").increment(1);
                    let Ok(verified) = ctx.store.open(&stream, entry) else {
                        refused = true;
                        continue;
                    };
                    if verified.msg_type() != EVENT {
                        ctx.store.reject(&stream, &entry.id, "malformed");
                        refused = true;
                        continue;
                    }
                    match verified.parse::<EventBody>() {
                        Ok(body) => waiters.wake(&body.ids),
                        Err(r) => {
                            ctx.store.reject(&stream, &entry.id, r.reason());
                            refused = true;
                        }
                    }
                }
                if refused && woke_all_for_refused.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    waiters.wake_all();
                    woke_all_for_refused = Some(Instant::now());
                }
                // A full read may mean the reader fell behind far enough for
                // trimming to drop events it never saw: waits rely on events
                // alone, so every waiter re-reads once.
                if entries.len() >= EVENTS_READ_COUNT && !ctx.store.event_still_there(from).await.unwrap_or(false) {
                    waiters.wake_all();
                }
                if let Some(e) = entries.last() {
                    last = Some(e.id.clone());
                }
            }
            Err(e) => {
                // Events may have been missed: every waiter re-reads.
                waiters.wake_all();
                last = None;
                retry.failed("reading the events stream", &e, &shutdown).await;
            }
        }
    }
}

/// Competes for the leader lease and, while holding it, runs the reaper,
/// the scheduler, the janitor and stream trimming.
async fn lead(ctx: Context, id: String, shutdown: CancellationToken) {
    let t = ctx.settings.timing.clone();
    let mut held_until: Option<Instant> = None;
    let mut last_renew: Option<Instant> = None;
    let mut last_janitor = Instant::now();
    let mut reconcile = ReconcilePass::default();
    let mut retry = RetryDelay::default();
    while !shutdown.is_cancelled() {
        if last_renew.is_none_or(|r| r.elapsed() >= t.leader_ttl / 3) {
            let asked = Instant::now();
            match ctx.store.lead(&id, t.leader_ttl).await {
                Ok(true) => {
                    if held_until.is_none() {
                        tracing::info!(coordinator = %id, "took the leader lease: running reaper and scheduler");
                        // Once per leadership, so one coordinator says it.
                        for advice in ctx.store.redis_advice().await {
                            tracing::warn!("{advice}");
                        }
                    }
                    // Count the lease from before the request, so this
                    // process stops leading before Redis lets it expire.
                    held_until = Some(asked + t.leader_ttl * 2 / 3);
                    last_renew = Some(asked);
                }
                Ok(false) => {
                    if held_until.take().is_some() {
                        tracing::warn!(coordinator = %id, "lost the leader lease");
                    }
                    last_renew = Some(asked);
                }
                Err(e) => {
                    held_until = held_until.filter(|h| *h > Instant::now());
                    metrics::gauge!(catalog::LEADER.name).set(if held_until.is_some() { 1.0 } else { 0.0 });
                    retry.failed("renewing the leader lease", &e, &shutdown).await;
                    continue;
                }
            }
        }
        let leading = held_until.is_some_and(|h| h > Instant::now());
        metrics::gauge!(catalog::LEADER.name).set(if leading { 1.0 } else { 0.0 });
        if leading {
            match leader_pass(&ctx, last_janitor.elapsed() >= Duration::from_secs(5), &mut reconcile).await {
                Ok(janitor_ran) => {
                    retry.success();
                    if janitor_ran {
                        last_janitor = Instant::now();
                    }
                }
                Err(e) => {
                    retry.failed("the reaper/scheduler pass", &e, &shutdown).await;
                    continue;
                }
            }
        }
        if !pause(t.tick, &shutdown).await {
            break;
        }
    }
    if held_until.is_some() {
        let _ = ctx.store.lead(&id, Duration::ZERO).await;
        tracing::info!(coordinator = %id, "gave up the leader lease");
    }
    metrics::gauge!(catalog::LEADER.name).set(0.0);
}

/// One pass of the leader's duties; returns whether the janitor ran. Every
/// pass also advances the reconciler by one small SCAN step, so a whole
/// sweep is spread evenly over time.
async fn leader_pass(
    ctx: &Context,
    janitor: bool,
    reconcile: &mut ReconcilePass,
) -> Result<bool, crate::store::StoreError> {
    let t = &ctx.settings.timing;
    metrics::counter!(catalog::REAPER_RUNS.name).increment(1);
    // Drain what is due in bounded batches, so one pass never blocks Redis long.
    for _ in 0..10 {
        let stats = ctx
            .store
            .reap(500, |attempt| retry_backoff_ms(attempt, t.backoff_base, t.backoff_max))
            .await?;
        metrics::counter!(catalog::LEASE_EXPIRED.name).increment(stats.lease_expired);
        metrics::counter!(catalog::ASSIGNMENTS_EXPIRED.name).increment(stats.requeued);
        metrics::counter!(catalog::RETRIES.name).increment(stats.retried);
        if stats.lease_expired > 0 || stats.requeued > 0 {
            tracing::info!(
                requeued = stats.requeued,
                lease_expired = stats.lease_expired,
                retried = stats.retried,
                dead = stats.dead,
                "reaper moved tasks on"
            );
        }
        if !stats.more_due {
            break;
        }
    }
    for _ in 0..10 {
        if ctx.store.promote(500).await? < 500 {
            break;
        }
    }
    // Results whose TTL passed: up to 10 × 1000 task hashes a pass (100k
    // a second at the default tick), the same bound as the reaper's.
    for _ in 0..10 {
        if ctx.store.expire_finished(1000).await? < 1000 {
            break;
        }
    }
    if janitor {
        let gone = ctx.store.forget_workers(t.forget_worker_after).await?;
        if !gone.is_empty() {
            tracing::info!(workers = ?gone, "forgot workers silent for too long");
        }
        ctx.store.trim_events(ctx.settings.events_retention).await?;
    }
    let (next, moved) = ctx.store.reconcile(&reconcile.cursor, RECONCILE_STEP).await?;
    reconcile.moved += moved;
    if next == "0" {
        // A whole pass over the keyspace found no task of an earlier
        // build's intake stream left: that stream is nobody's backlog now.
        if reconcile.moved == 0 {
            ctx.store.retire_intake().await?;
        }
        reconcile.moved = 0;
    }
    reconcile.cursor = next;
    Ok(janitor)
}

/// Where the reconciler's walk over the task keys is, and how many queued
/// tasks of an earlier build it moved into ready lists in this pass.
struct ReconcilePass {
    cursor: String,
    moved: u64,
}

impl Default for ReconcilePass {
    fn default() -> Self {
        Self {
            cursor: "0".into(),
            moved: 0,
        }
    }
}

/// Publishes backlog and worker gauges every second.
async fn publish_backlog(ctx: Context, shutdown: CancellationToken) {
    while pause(Duration::from_secs(1), &shutdown).await {
        if let Ok(counts) = ctx.store.counts().await {
            for st in TaskState::LIVE {
                let n = counts.get(st.as_str()).copied().unwrap_or(0).max(0);
                metrics::gauge!(catalog::BACKLOG.name, "state" => st.as_str()).set(n as f64);
            }
        }
        if let Err(e) = super::queue_gauges::publish(&ctx).await {
            tracing::debug!(error = %e, "could not read the queues for their gauges");
        }
        if let Ok(workers) = ctx.store.workers(ctx.settings.timing.worker_ttl).await {
            metrics::gauge!(catalog::WORKERS.name).set(workers.len() as f64);
            metrics::gauge!(catalog::WORKER_CAPACITY.name).set(workers.iter().map(|w| w.capacity as f64).sum::<f64>());
        }
    }
}
