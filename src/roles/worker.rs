//! The worker: reads its own stream, accepts each assigned task (the
//! distributor took one lease for the whole assign batch, with a new
//! fencing token, at assignment), runs the handler, renews the leases of
//! the batches it runs tasks of, and completes with the batch's token. It sends heartbeats with its handlers,
//! tags, capacity and load. A cancel message or a renew that reports the
//! lease lost stops the handler; a worker cut off from Redis for longer than
//! its lease stops its handlers on its own clock, because by then another
//! worker may own them.
//!
//! On shutdown it stops taking work, lets running tasks finish within the
//! grace period, and hands back the rest without charging an attempt.

use super::{pause, retry_backoff_ms, RetryDelay};
use crate::context::Context;
use crate::handlers::{run_catching_panics, HandlerError, Registry, TaskContext};
use crate::messages::{AssignBody, CancelBody, ASSIGN, CANCEL};
use crate::names::QueueWeight;
use crate::store::keys::WORKER_GROUP;
use crate::store::{
    Completion, Entry, FinishedState, Heartbeat, Outcome, Refusal, RenewStatus, StartReply, StartedTask, StoreError,
};
use crate::task::FenceToken;
use crate::telemetry::catalog;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What one worker offers.
#[derive(Clone)]
pub struct WorkerSpec {
    pub id: String,
    pub capacity: u32,
    pub tags: Vec<String>,
    /// The queues it takes tasks from, weighted; empty: every queue.
    pub queues: Vec<QueueWeight>,
    pub grace: Duration,
    pub registry: Registry,
}

/// Why a running handler was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A cancel was requested: report the task cancelled.
    Cancelled,
    /// The lease is no longer ours: report nothing, it would be refused.
    Lost,
    /// Shutdown: hand the task back without using an attempt.
    Released,
}

/// One attempt running here: a task and the token of the lease it runs
/// under. A task can have two: an old attempt whose lease was taken back
/// (its handler not yet stopped, or its completion not yet answered) and a
/// new one placed on this same worker. Each is added and removed under its
/// own key, so the old one ending never touches the new one.
type AttemptKey = (String, FenceToken);

/// An attempt whose handler runs here: what renewals and cancel messages
/// need, not the task itself (its input may be large).
struct Running {
    cancel: CancellationToken,
    stop: Arc<Mutex<Option<Stop>>>,
    /// The handler has returned; only the completion report is pending.
    finished: Arc<AtomicBool>,
}

impl Running {
    fn stop(&self, why: Stop) {
        let mut s = self.stop.lock().expect("stop lock");
        if s.is_none() {
            *s = Some(why);
        }
        self.cancel.cancel();
    }
}

struct Worker {
    ctx: Context,
    spec: WorkerSpec,
    stream: String,
    running: Mutex<HashMap<AttemptKey, Running>>,
    completions: mpsc::UnboundedSender<Completion>,
    draining: AtomicBool,
    /// Entries this worker could not act on (they failed verification, or
    /// an assign body did not parse), left unacknowledged until any lease
    /// they might carry has run out: the reaper gives a task whose assign
    /// entry was never acknowledged back without charging an attempt, so a
    /// real assignment this worker could not read (a keyring not yet
    /// rotated in, say) costs no attempt. See `ack_set_aside`.
    set_aside: Mutex<Vec<String>>,
}

pub async fn run(ctx: Context, spec: WorkerSpec, shutdown: CancellationToken) -> anyhow::Result<()> {
    if spec.registry.names().is_empty() {
        anyhow::bail!(
            "config: handlers: worker {} offers no handlers; add a [handlers] section to its profile",
            spec.id
        );
    }
    ctx.health.role_starting();
    // Container handlers label what they start with this worker's id, so a
    // restarted worker can sweep what a crashed one left behind.
    let spec = WorkerSpec {
        registry: spec.registry.for_worker(&spec.id),
        ..spec
    };
    sweep_leftovers(&spec).await;
    let stream = ctx.store.keys.worker_stream(&spec.id);
    let (tx, rx) = mpsc::unbounded_channel();
    let w = Arc::new(Worker {
        ctx: ctx.clone(),
        spec,
        stream,
        running: Mutex::new(HashMap::new()),
        completions: tx,
        draining: AtomicBool::new(false),
        set_aside: Mutex::new(Vec::new()),
    });
    // Background loops stop on `stopped`, after the drain, not on shutdown.
    let stopped = CancellationToken::new();
    let mut retry = RetryDelay::default();
    if !w.announce(&mut retry, &shutdown).await {
        return Ok(());
    }
    let heartbeat = tokio::spawn(w.clone().heartbeat_loop(stopped.clone()));
    let renew = tokio::spawn(w.clone().renew_loop(stopped.clone()));
    let completer = tokio::spawn(w.clone().complete_loop(rx, stopped.clone()));
    tracing::info!(worker = %w.spec.id, capacity = w.spec.capacity, handlers = ?w.spec.registry.names(), tags = ?w.spec.tags, "worker taking tasks");
    ctx.health.role_started();

    w.clone().take_tasks(&mut retry, &shutdown).await;
    w.drain().await;
    stopped.cancel();
    for t in [heartbeat, renew, completer] {
        let _ = t.await;
    }
    tracing::info!(worker = %w.spec.id, "worker stopped");
    Ok(())
}

/// Container handlers label what they start with this worker's id, so a
/// restarted worker sweeps what a crashed one left behind.
async fn sweep_leftovers(spec: &WorkerSpec) {
    match spec.registry.sweep_orphans(&spec.id).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            containers = n,
            "removed containers left by an earlier run of this worker"
        ),
        Err(e) => tracing::warn!(error = %e, "could not sweep leftover containers"),
    }
}

impl Worker {
    /// Waits for Redis, makes this worker's stream group and sends the
    /// first heartbeat. False when shut down first.
    async fn announce(&self, retry: &mut RetryDelay, shutdown: &CancellationToken) -> bool {
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            let setup = async {
                self.ctx.store.ensure_group(&self.stream, WORKER_GROUP).await?;
                self.heartbeat().await
            };
            match setup.await {
                Ok(()) => return true,
                Err(e) => retry.failed("worker setup", &e, shutdown).await,
            }
        }
    }

    /// Reads this worker's stream and starts what it is assigned, until
    /// shutdown. Entries read before a restart and not yet started come
    /// first, each read once: the walk goes on from the last id read, so
    /// entries set aside (left pending) are not read again and again before
    /// new assignments.
    async fn take_tasks(self: Arc<Self>, retry: &mut RetryDelay, shutdown: &CancellationToken) {
        // While re-reading own pending entries: the id to read after.
        let mut pending_after = Some("0".to_string());
        let mut last_trim = Instant::now();
        let count = self.spec.capacity as usize;
        while !shutdown.is_cancelled() {
            let store = &self.ctx.store;
            let read = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = async {
                    match &pending_after {
                        Some(after) => store.read_pending_after(&self.stream, WORKER_GROUP, &self.spec.id, count, after).await,
                        None => store.read_group(&self.stream, WORKER_GROUP, &self.spec.id, count, Some(Duration::from_secs(1)), false).await,
                    }
                } => r,
            };
            match read {
                Ok(entries) => {
                    retry.success();
                    let last = entries.last().map(|e| e.id.clone());
                    let mut all_handled = true;
                    for entry in entries {
                        if let Err(e) = self.clone().handle(entry).await {
                            all_handled = false;
                            retry.failed("starting tasks", &e, shutdown).await;
                        }
                    }
                    // A pending entry that failed for want of Redis is read
                    // again (its batch with it); the walk ends on an empty read.
                    if pending_after.is_some() && (all_handled || last.is_none()) {
                        pending_after = last;
                    }
                    if last_trim.elapsed() > Duration::from_secs(5) {
                        self.ack_set_aside().await;
                        let _ = self.ctx.store.trim(&self.stream, WORKER_GROUP).await;
                        last_trim = Instant::now();
                    }
                }
                Err(e) => retry.failed("reading the worker stream", &e, shutdown).await,
            }
        }
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let in_flight = self.running.lock().expect("running lock").len() as u32;
        metrics::gauge!(catalog::WORKER_IN_FLIGHT.name).set(in_flight as f64);
        // Handlers that cannot run now (e.g. Docker unreachable) are not
        // offered, so nothing is placed here that would only fail.
        let unavailable = self.spec.registry.unavailable().await;
        let offered: Vec<String> = self
            .spec
            .registry
            .names()
            .into_iter()
            .filter(|n| !unavailable.iter().any(|(u, _)| u == n))
            .collect();
        self.ctx.health.set_notes(
            unavailable
                .iter()
                .map(|(name, why)| format!("handler {name} unavailable: {why}"))
                .collect(),
        );
        self.ctx
            .store
            .heartbeat(&Heartbeat {
                worker_id: &self.spec.id,
                capacity: self.spec.capacity,
                handlers: &offered,
                tags: &self.spec.tags,
                queues: &self.spec.queues,
                in_flight,
                draining: self.draining.load(Ordering::SeqCst),
            })
            .await
    }

    async fn heartbeat_loop(self: Arc<Self>, stopped: CancellationToken) {
        let mut retry = RetryDelay::default();
        while pause(self.ctx.settings.timing.heartbeat, &stopped).await {
            match self.heartbeat().await {
                Ok(()) => retry.success(),
                Err(e) => retry.failed("heartbeat", &e, &stopped).await,
            }
        }
    }

    /// One stream entry: an assignment to start, or a cancel to obey.
    async fn handle(self: Arc<Self>, entry: Entry) -> Result<(), StoreError> {
        metrics::counter!(catalog::MESSAGES_RECEIVED.name, "stream" => "worker").increment(1);
        let verified = match self.ctx.store.open(&self.stream, &entry) {
            Ok(v) => v,
            Err(_) => {
                self.set_aside.lock().expect("set-aside lock").push(entry.id);
                return Ok(());
            }
        };
        match verified.msg_type() {
            ASSIGN => {
                // The body names no task (assign.lua chose them); parsing
                // it still refuses an envelope of another shape.
                let _: AssignBody = match verified.parse() {
                    Ok(b) => b,
                    Err(r) => {
                        self.ctx.store.reject(&self.stream, &entry.id, r.reason());
                        self.set_aside.lock().expect("set-aside lock").push(entry.id);
                        return Ok(());
                    }
                };
                let lease = self.ctx.settings.timing.lease_ttl;
                let ids = entry.task_ids();
                let replies = self
                    .ctx
                    .store
                    .claim(&self.spec.id, &entry.id, entry.batch.as_deref(), &ids)
                    .await?;
                let now = self.ctx.store.clock().now_ms();
                let mut late = Vec::new();
                for (reply, id) in replies.into_iter().zip(&ids) {
                    match reply {
                        // The lease was taken at assignment. If more than
                        // half of it was used before this worker even read
                        // it (it was stalled, far behind, or on a slow
                        // link), the first timed renewal may come too late:
                        // renew at once instead (below).
                        StartReply::Started(task)
                            if now.saturating_sub(task.leased_ms) >= lease.as_millis() as u64 / 2 =>
                        {
                            late.push(*task);
                        }
                        StartReply::Started(task) => {
                            let waited = now.saturating_sub(task.ready_ms);
                            metrics::histogram!(catalog::TASK_WAIT.name).record(waited as f64 / 1000.0);
                            self.clone().launch(*task)
                        }
                        StartReply::Refused(why) => {
                            tracing::debug!(task_id = %id, why = %why, "assignment refused: stale");
                            if why == Refusal::Conflict {
                                metrics::counter!(catalog::STATE_CONFLICTS.name, "op" => "start").increment(1);
                            }
                            self.ctx.store.reject(&self.stream, &entry.id, "stale");
                        }
                    }
                }
                self.start_late(late).await
            }
            CANCEL => {
                match verified.parse::<CancelBody>() {
                    Ok(c) => {
                        let running = self.running.lock().expect("running lock");
                        let token = FenceToken {
                            epoch: c.epoch,
                            fence: c.fence,
                        };
                        match running.get(&(c.id.clone(), token)) {
                            Some(r) => {
                                tracing::info!(task_id = %c.id, "cancel requested: stopping the handler");
                                r.stop(Stop::Cancelled);
                            }
                            _ => {
                                tracing::debug!(task_id = %c.id, "cancel for an attempt not running here")
                            }
                        }
                    }
                    Err(r) => self.ctx.store.reject(&self.stream, &entry.id, r.reason()),
                }
                self.ctx.store.ack(&self.stream, WORKER_GROUP, &[entry.id]).await
            }
            _ => {
                self.ctx.store.reject(&self.stream, &entry.id, "malformed");
                self.ctx.store.ack(&self.stream, WORKER_GROUP, &[entry.id]).await
            }
        }
    }

    /// Acknowledges set-aside entries written more than two leases ago: by
    /// then the reaper has seen any lease in them run out unacknowledged.
    /// (Stream entry ids begin with the Redis time they were written at.)
    async fn ack_set_aside(&self) {
        let lease_ms = self.ctx.settings.timing.lease_ttl.as_millis() as u64;
        let cutoff = self.ctx.store.clock().now_ms().saturating_sub(2 * lease_ms);
        let written = |id: &String| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()).unwrap_or(0);
        let due: Vec<String> = {
            let mut held = self.set_aside.lock().expect("set-aside lock");
            let (due, keep) = held.drain(..).partition(|id| written(id) < cutoff);
            *held = keep;
            due
        };
        if due.is_empty() {
            return;
        }
        if self.ctx.store.ack(&self.stream, WORKER_GROUP, &due).await.is_err() {
            self.set_aside.lock().expect("set-aside lock").extend(due);
        }
    }

    /// Gives tasks this worker holds but will not run back without charging
    /// an attempt (`complete` with `release`): they are queued again at once
    /// instead of waiting for the reaper.
    /// Starts tasks whose assignment was read with more than half of its
    /// lease used, once their leases are renewed; hands back those whose
    /// lease is no longer this worker's to renew (ended, or cancelled).
    async fn start_late(self: Arc<Self>, tasks: Vec<StartedTask>) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let held: Vec<(String, FenceToken)> = tasks.iter().map(|t| (t.id.clone(), t.token)).collect();
        let lease = self.ctx.settings.timing.lease_ttl;
        let statuses = self.ctx.store.renew(&self.spec.id, &held, lease).await?;
        let mut back = Vec::new();
        for (task, status) in tasks.into_iter().zip(statuses) {
            if status == RenewStatus::Ok {
                tracing::info!(task_id = %task.id, "assignment read late: lease renewed before starting");
                let waited = self.ctx.store.clock().now_ms().saturating_sub(task.ready_ms);
                metrics::histogram!(catalog::TASK_WAIT.name).record(waited as f64 / 1000.0);
                self.clone().launch(task);
            } else {
                tracing::warn!(task_id = %task.id, status = status.label(), "assignment read late: handing it back");
                back.push(task);
            }
        }
        self.hand_back(back).await
    }

    async fn hand_back(&self, tasks: Vec<StartedTask>) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let back: Vec<Completion> = tasks
            .into_iter()
            .map(|task| Completion {
                task,
                outcome: Outcome::Released,
                payload: String::new(),
                retry_delay_ms: 0,
            })
            .collect();
        let states = self.ctx.store.complete(&self.spec.id, &back).await?;
        for state in states {
            let outcome = match state {
                FinishedState::Queued => Outcome::Released.label(),
                FinishedState::Cancelled => Outcome::Cancelled.label(),
                _ => FinishedState::Stale.label(),
            };
            metrics::counter!(catalog::TASKS_FINISHED.name, "outcome" => outcome).increment(1);
        }
        tracing::info!(tasks = back.len(), "handed back tasks this worker will not run");
        Ok(())
    }

    /// Runs one task's handler in its own tokio task.
    fn launch(self: Arc<Self>, task: StartedTask) {
        let cancel = CancellationToken::new();
        let stop = Arc::new(Mutex::new(None));
        let finished = Arc::new(AtomicBool::new(false));
        let key: AttemptKey = (task.id.clone(), task.token);
        {
            let mut running = self.running.lock().expect("running lock");
            if running.contains_key(&key) {
                // The claim script starts an attempt once; a second start
                // of the same one would run its handler twice.
                tracing::warn!(task_id = %task.id, fence = %task.token, "attempt already running here: not started again");
                return;
            }
            running.insert(
                key.clone(),
                Running {
                    cancel: cancel.clone(),
                    stop: stop.clone(),
                    finished: finished.clone(),
                },
            );
        }
        let span = tracing::info_span!("task", task_id = %task.id, handler = %task.handler, attempt = task.attempt, fence = %task.token);
        let run = async move {
            let started = Instant::now();
            let result = self.execute(&task, cancel).await;
            finished.store(true, Ordering::SeqCst);
            let elapsed = started.elapsed();
            metrics::histogram!(catalog::TASK_DURATION.name, "handler" => task.handler.clone())
                .record(elapsed.as_secs_f64());
            let stop = *stop.lock().expect("stop lock");
            let (outcome, payload) = match (result, stop) {
                (_, Some(Stop::Lost)) => {
                    tracing::warn!("lease lost: the result is dropped, another attempt owns the task");
                    self.running.lock().expect("running lock").remove(&key);
                    metrics::counter!(catalog::TASKS_FINISHED.name, "outcome" => "lost").increment(1);
                    return;
                }
                (Ok(v), _) => (Outcome::Succeeded, v.to_string()),
                (Err(HandlerError::Cancelled), Some(Stop::Cancelled)) => (Outcome::Cancelled, "cancelled".to_string()),
                (Err(HandlerError::Cancelled), Some(Stop::Released)) => (Outcome::Released, String::new()),
                (Err(e), _) => (Outcome::Failed, e.to_string()),
            };
            tracing::debug!(outcome = ?outcome, ms = elapsed.as_millis() as u64, "attempt ended");
            let t = &self.ctx.settings.timing;
            let retry_delay_ms = retry_backoff_ms(task.attempt, t.backoff_base, t.backoff_max);
            let _ = self.completions.send(Completion {
                task,
                outcome,
                payload,
                retry_delay_ms,
            });
        };
        tokio::spawn(run.instrument(span));
    }

    async fn execute(&self, task: &StartedTask, cancel: CancellationToken) -> Result<serde_json::Value, HandlerError> {
        let Some(handler) = self.spec.registry.get(&task.handler) else {
            return Err(HandlerError::Failed(format!(
                "handler {:?} is not offered by worker {}",
                task.handler, self.spec.id
            )));
        };
        let mut timeout = Duration::from_millis(task.timeout_ms.max(1));
        if let Some(t) = self.spec.registry.spec_timeout(&task.handler) {
            timeout = timeout.min(t);
        }
        let input = serde_json::from_str(&task.input).unwrap_or(serde_json::Value::Null);
        let ctx = TaskContext {
            task_id: task.id.clone(),
            handler: task.handler.clone(),
            attempt: task.attempt,
            epoch: task.token.epoch,
            fence: task.token.fence,
            timeout,
            cancel: cancel.clone(),
        };
        // Handlers stop themselves at the timeout; this outer bound only
        // guards against one that does not. A panic fails the attempt
        // instead of leaving it in `running` with its lease renewed for ever.
        let run = run_catching_panics(handler.as_ref(), ctx, input);
        match tokio::time::timeout(timeout + Duration::from_secs(5), run).await {
            Ok(r) => r,
            Err(_) => {
                cancel.cancel();
                Err(HandlerError::Timeout(timeout))
            }
        }
    }

    /// Reports finished attempts in batches: whatever has finished by the
    /// time the previous report returns goes in the next one.
    async fn complete_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Completion>, stopped: CancellationToken) {
        let mut retry = RetryDelay::default();
        loop {
            let first = tokio::select! {
                c = rx.recv() => c,
                _ = stopped.cancelled() => None,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while batch.len() < 256 {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            loop {
                match self.ctx.store.complete(&self.spec.id, &batch).await {
                    Ok(states) => {
                        retry.success();
                        let mut running = self.running.lock().expect("running lock");
                        for (c, state) in batch.iter().zip(&states) {
                            running.remove(&(c.task.id.clone(), c.task.token));
                            // A hand-back of a task with a cancel request ends
                            // it cancelled: count what happened, not what was asked.
                            let outcome = match state {
                                FinishedState::Stale => FinishedState::Stale.label(),
                                FinishedState::Cancelled => Outcome::Cancelled.label(),
                                _ => c.outcome.label(),
                            };
                            metrics::counter!(catalog::TASKS_FINISHED.name, "outcome" => outcome).increment(1);
                            if *state == FinishedState::Scheduled {
                                metrics::counter!(catalog::RETRIES.name).increment(1);
                            }
                            if *state == FinishedState::Stale {
                                tracing::warn!(task_id = %c.task.id, fence = %c.task.token, "completion refused: this worker no longer holds the lease");
                            } else {
                                tracing::debug!(task_id = %c.task.id, fence = %c.task.token, state = state.label(), "completed");
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        // Keep the batch: the leases may still be ours when
                        // Redis answers again; if not, the reply says stale.
                        retry.failed("reporting completions", &e, &stopped).await;
                        if stopped.is_cancelled() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Renews leases every third of the lease; obeys cancel requests seen
    /// there; stops every handler once Redis has been out of reach for a
    /// whole lease.
    async fn renew_loop(self: Arc<Self>, stopped: CancellationToken) {
        let lease = self.ctx.settings.timing.lease_ttl;
        // When the last renewal that succeeded was sent: the leases it
        // extended run out one lease after that, by this worker's clock.
        let mut last_ok = Instant::now();
        // Wake every third of a lease, and no later than the local deadline.
        let next = |last_ok: Instant| {
            (lease / 3)
                .min(lease.saturating_sub(last_ok.elapsed()))
                .max(Duration::from_millis(1))
        };
        while pause(next(last_ok), &stopped).await {
            let held: Vec<(String, FenceToken)> = self
                .running
                .lock()
                .expect("running lock")
                .iter()
                .filter(|(_, r)| r.stop.lock().expect("stop lock").is_none())
                .map(|(key, _)| key.clone())
                .collect();
            if held.is_empty() {
                last_ok = Instant::now();
                continue;
            }
            let left = lease.saturating_sub(last_ok.elapsed());
            if left.is_zero() {
                tracing::error!("cut off from redis for a whole lease: stopping every handler (another worker may own the tasks now)");
                for r in self.running.lock().expect("running lock").values() {
                    r.stop(Stop::Lost);
                }
                continue;
            }
            // Bounded: a link that swallows packets must not hold the renewal
            // past the local deadline.
            let sent = Instant::now();
            let renewal =
                tokio::time::timeout(left.min(lease / 3), self.ctx.store.renew(&self.spec.id, &held, lease)).await;
            match renewal {
                Ok(Ok(statuses)) => {
                    last_ok = sent;
                    let running = self.running.lock().expect("running lock");
                    for (key, status) in held.iter().zip(statuses) {
                        let Some(r) = running.get(key) else { continue };
                        let id = &key.0;
                        match status {
                            RenewStatus::Ok => {}
                            RenewStatus::CancelRequested => {
                                tracing::info!(task_id = %id, "cancel requested: stopping the handler");
                                r.stop(Stop::Cancelled);
                            }
                            // The handler is done and its report is on its way:
                            // the report's reply says what happened.
                            RenewStatus::Lost if r.finished.load(Ordering::SeqCst) => {
                                tracing::debug!(task_id = %id, "lease already moved on while the completion was pending");
                            }
                            RenewStatus::Lost => {
                                tracing::warn!(task_id = %id, "lease lost: stopping the handler");
                                r.stop(Stop::Lost);
                            }
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
                Err(_) => tracing::warn!("lease renewal timed out"),
            }
        }
    }

    /// Stops taking work, waits for running tasks up to the grace period,
    /// then hands the rest back.
    async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.ctx.health.set_draining();
        let _ = self.heartbeat().await;
        let held = self.running.lock().expect("running lock").len();
        tracing::info!(worker = %self.spec.id, running = held, grace = ?self.spec.grace, "worker draining");
        let deadline = Instant::now() + self.spec.grace;
        while Instant::now() < deadline && !self.running.lock().expect("running lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<String> = {
            let running = self.running.lock().expect("running lock");
            for r in running.values() {
                r.stop(Stop::Released);
            }
            running.keys().map(|(id, token)| format!("{id}@{token}")).collect()
        };
        if !left.is_empty() {
            tracing::info!(tasks = ?left, "grace period over: handing tasks back");
        }
        // Give the handlers and the completer a bounded time to report.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !self.running.lock().expect("running lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Assignments that arrived but were never read go back too.
        for _ in 0..100 {
            match self
                .ctx
                .store
                .read_group(&self.stream, WORKER_GROUP, &self.spec.id, 100, None, false)
                .await
            {
                Ok(entries) if !entries.is_empty() => {
                    for entry in entries {
                        // What cannot be read stays unacknowledged, as in
                        // `handle`: the reaper gives its tasks back.
                        let Ok(v) = self.ctx.store.open(&self.stream, &entry) else {
                            continue;
                        };
                        if v.msg_type() != ASSIGN {
                            let _ = self.ctx.store.ack(&self.stream, WORKER_GROUP, &[entry.id]).await;
                            continue;
                        }
                        if v.parse::<AssignBody>().is_err() {
                            continue;
                        }
                        let ids = entry.task_ids();
                        let claimed = self
                            .ctx
                            .store
                            .claim(&self.spec.id, &entry.id, entry.batch.as_deref(), &ids);
                        if let Ok(replies) = claimed.await {
                            let held = replies.into_iter().filter_map(|r| match r {
                                StartReply::Started(task) => Some(*task),
                                StartReply::Refused(_) => None,
                            });
                            let _ = self.hand_back(held.collect()).await;
                        }
                    }
                }
                _ => break,
            }
        }
    }
}
