//! The distributor: reads the intake stream in a consumer group (replicas
//! share the load), keeps a live view of workers from their heartbeats, and
//! assigns each task to a worker that has its handler and all its tags,
//! preferring the one with the most free slots, in chunks of up to
//! [`PLACEMENT_CHUNK`] tasks per round. The free-slot check that
//! counts is the one inside the assign script; the view here only aims.
//!
//! A task no worker can take now waits here, and its intake entry stays
//! pending until every task in it is settled, so a distributor that dies
//! loses nothing: another claims its entries once they sit idle, or it
//! re-reads them itself after a restart.

use super::RetryDelay;
use crate::context::Context;
use crate::messages::{IntakeBody, IntakeTask, SUBMIT};
use crate::store::keys::DISTRIBUTORS_GROUP;
use crate::store::{AssignStatus, StoreError, WorkerView};
use crate::telemetry::catalog;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Most tasks one distributor holds while they wait for a worker; beyond
/// it, entries stay unread in the stream (for this or another distributor)
/// instead of in this process' memory.
const MAX_HELD: usize = 10_000;
/// Most tasks of one round that go to a worker before the next worker with
/// the most free slots is chosen. A round at a moderate rate (a few to a
/// few dozen tasks) then makes one assign call and wakes one worker instead
/// of spreading task by task over all of them: every call and wake-up has
/// a fixed cost in Redis, which at half of peak throughput was most of it
/// (BENCHMARKS.md). Over rounds the load still evens out, since each chunk
/// goes to the worker with the most free slots.
pub const PLACEMENT_CHUNK: usize = 64;
/// How long a read of the live workers serves placements.
const VIEW_TTL: Duration = Duration::from_millis(20);
/// Entries idle this long in another consumer's hands are taken over; tasks
/// waiting this long here are announced again.
const CLAIM_AFTER: Duration = Duration::from_secs(30);
/// How often held entries are touched, claimed entries looked for, and the
/// intake stream trimmed.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// While tasks wait for room, how long to wait before looking again, per
/// live worker: each look re-reads every worker's hash (an `HGETALL` each,
/// a few µs of Redis), so this keeps those reads to a few percent of Redis
/// however many workers there are. Within [`ROOM_WAIT_MIN`,
/// `ROOM_WAIT_MAX`].
const ROOM_WAIT_PER_WORKER: Duration = Duration::from_micros(50);
/// Slots free up as fast as workers finish, so the first look comes soon:
/// 1 ms instead of 5 gave 29.0k–31.9k noop tasks/s instead of 25.5k–26.7k
/// with two workers (BENCHMARKS.md, 2026-11-23).
const ROOM_WAIT_MIN: Duration = Duration::from_millis(1);
const ROOM_WAIT_MAX: Duration = Duration::from_millis(5);

/// How long to wait for room (or new entries) before placing again, with
/// `workers` live workers in view.
fn room_wait(workers: usize) -> Duration {
    (ROOM_WAIT_PER_WORKER * workers as u32).clamp(ROOM_WAIT_MIN, ROOM_WAIT_MAX)
}

struct Waiting {
    entry: String,
    task: IntakeTask,
    since: Instant,
}

struct Distributor {
    ctx: Context,
    id: String,
    stream: String,
    waiting: Vec<Waiting>,
    /// Whether tasks arrived since `waiting` was last sorted by priority.
    unsorted: bool,
    /// Tasks of each held entry not yet settled.
    open: HashMap<String, usize>,
    workers: Vec<WorkerView>,
    /// When `workers` was read, and whether a placement since found it behind.
    viewed: Option<Instant>,
    view_behind: bool,
    unplaceable_logged: HashSet<String>,
    /// Woken when attempts end (`completions`): slots are free again.
    slots_freed: Arc<Notify>,
}

pub async fn run(ctx: Context, id: String, shutdown: CancellationToken) -> anyhow::Result<()> {
    ctx.health.role_starting();
    let stream = ctx.store.keys.intake();
    let mut d = Distributor {
        ctx: ctx.clone(),
        id,
        stream,
        waiting: Vec::new(),
        unsorted: false,
        open: HashMap::new(),
        workers: Vec::new(),
        viewed: None,
        view_behind: false,
        unplaceable_logged: HashSet::new(),
        slots_freed: Arc::new(Notify::new()),
    };
    let watcher = super::completions::watch(ctx.clone(), d.slots_freed.clone(), shutdown.clone());
    let mut retry = RetryDelay::default();
    if !d.resume(&mut retry, &shutdown).await {
        return Ok(());
    }
    ctx.health.role_started();
    tracing::info!(distributor = %d.id, "distributor placing tasks");
    let mut last_housekeeping = Instant::now();
    while !shutdown.is_cancelled() {
        match d.step(&mut last_housekeeping, &shutdown).await {
            Ok(()) => retry.success(),
            Err(e) => retry.failed("placing tasks", &e, &shutdown).await,
        }
    }
    watcher.abort();
    // Held entries stay pending: the next distributor (or this one after a
    // restart) takes them over; nothing is lost by stopping here.
    tracing::info!(
        waiting = d.waiting.len(),
        "distributor stopped; unplaced tasks stay pending for another distributor"
    );
    Ok(())
}

/// Where one round's tasks go, by index: what [`plan_round`] decided.
#[derive(Debug, Default, PartialEq)]
struct RoundPlan {
    /// Per worker (index into the view), the tasks it gets, in order.
    by_worker: HashMap<usize, Vec<usize>>,
    /// Tasks no live worker offers a handler and tags for.
    unplaceable: Vec<usize>,
    /// Whether tasks a worker could run were left for want of free slots.
    short_of_room: bool,
}

/// Plans a round from the cached view of the workers: each task goes to a
/// worker that offers its handler and has all its tags and a free slot,
/// the one with the most free slots (the first on a tie), in chunks of up
/// to [`PLACEMENT_CHUNK`] tasks per worker. A draining worker gets nothing.
fn plan_round<'a>(tasks: impl Iterator<Item = &'a IntakeTask>, workers: &[WorkerView]) -> RoundPlan {
    let mut free: Vec<i64> = workers
        .iter()
        .map(|w| {
            if w.draining {
                0
            } else {
                w.capacity as i64 - w.used as i64
            }
        })
        .collect();
    let mut total_free: i64 = free.iter().map(|f| (*f).max(0)).sum();
    // Up to MAX_HELD tasks are looked at on every round, so the workers
    // able to run a kind of task (handler and tags) are worked out once
    // per run of same-kind tasks, not per task.
    let able = |t: &IntakeTask| -> Vec<usize> {
        (0..workers.len())
            .filter(|&j| {
                let w = &workers[j];
                !w.draining && w.handlers.contains(&t.h) && t.tags.iter().all(|tag| w.tags.contains(tag))
            })
            .collect()
    };
    let mut kind: Option<(&IntakeTask, Vec<usize>)> = None;
    // The worker the current chunk goes to, and its room left in it.
    let mut chunk: Option<(usize, usize)> = None;
    let mut plan = RoundPlan::default();
    for (i, t) in tasks.enumerate() {
        if !kind.as_ref().is_some_and(|(k, _)| k.h == t.h && k.tags == t.tags) {
            kind = Some((t, able(t)));
        }
        let candidates = &kind.as_ref().expect("set above").1;
        if candidates.is_empty() {
            plan.unplaceable.push(i);
            continue;
        }
        // The chunk's worker while it can take this task; otherwise the
        // most free slots wins, the first such worker on a tie.
        let mut best = chunk
            .filter(|&(j, left)| left > 0 && free[j] > 0 && candidates.contains(&j))
            .map(|(j, _)| j);
        if best.is_none() && total_free > 0 {
            for &j in candidates {
                if free[j] > 0 && best.is_none_or(|b| free[j] > free[b]) {
                    best = Some(j);
                }
            }
            chunk = best.map(|j| (j, PLACEMENT_CHUNK));
        }
        match best {
            Some(j) => {
                free[j] -= 1;
                total_free -= 1;
                if let Some((_, left)) = chunk.as_mut() {
                    *left -= 1;
                }
                plan.by_worker.entry(j).or_default().push(i);
            }
            None => plan.short_of_room = true,
        }
    }
    plan
}

impl Distributor {
    /// Waits for Redis, then takes back what this consumer held before a
    /// restart. False when shut down first.
    async fn resume(&mut self, retry: &mut RetryDelay, shutdown: &CancellationToken) -> bool {
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            let setup = async {
                self.ctx.store.ensure_group(&self.stream, DISTRIBUTORS_GROUP).await?;
                self.ctx
                    .store
                    .read_group(&self.stream, DISTRIBUTORS_GROUP, &self.id, 500, None, true)
                    .await
            };
            match setup.await {
                Ok(mine) => {
                    if !mine.is_empty() {
                        tracing::info!(entries = mine.len(), "re-reading intake entries held before a restart");
                    }
                    self.take(mine).await;
                    return true;
                }
                Err(e) => retry.failed("distributor setup", &e, shutdown).await,
            }
        }
    }

    /// One round: reads new intake entries (while holding fewer than
    /// MAX_HELD), places what it can, and now and then keeps house.
    async fn step(&mut self, last_housekeeping: &mut Instant, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let batch = self.ctx.settings.distributor.batch;
        if self.waiting.is_empty() {
            // Nothing held: wait for new entries.
            let entries = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.ctx.store.read_group(&self.stream, DISTRIBUTORS_GROUP, &self.id, batch, Some(Duration::from_secs(1)), false) => r?,
            };
            self.take(entries).await;
        } else {
            // Tasks wait for free slots: take what is new without waiting,
            // and when nothing is, wait until an attempt ends (its event),
            // or at most the timed look, since slots may also free up
            // without an event (a worker that starts, or grows).
            let mut fresh = 0;
            if self.waiting.len() < MAX_HELD {
                let entries = self
                    .ctx
                    .store
                    .read_group(&self.stream, DISTRIBUTORS_GROUP, &self.id, batch, None, false)
                    .await?;
                fresh = entries.len();
                self.take(entries).await;
            }
            if fresh == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = self.slots_freed.notified() => self.view_behind = true,
                    _ = tokio::time::sleep(room_wait(self.workers.len())) => {}
                }
            }
        }
        self.place().await?;
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            self.housekeeping().await?;
            *last_housekeeping = Instant::now();
        }
        Ok(())
    }

    /// Verifies entries and queues their tasks for placement.
    async fn take(&mut self, entries: Vec<crate::store::Entry>) {
        let mut refused = Vec::new();
        for entry in entries {
            metrics::counter!(catalog::MESSAGES_RECEIVED.name, "stream" => "intake").increment(1);
            let tasks = match self.ctx.store.open(&self.stream, &entry) {
                Ok(v) if v.msg_type() == SUBMIT => match v.parse::<IntakeBody>() {
                    Ok(body) => body.tasks,
                    Err(r) => {
                        self.ctx.store.reject(&self.stream, &entry.id, r.reason());
                        Vec::new()
                    }
                },
                Ok(_) => {
                    self.ctx.store.reject(&self.stream, &entry.id, "malformed");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            if tasks.is_empty() {
                refused.push(entry.id);
                continue;
            }
            if self.open.contains_key(&entry.id) {
                continue; // already held (claimed twice)
            }
            self.open.insert(entry.id.clone(), tasks.len());
            self.unsorted = true;
            for task in tasks {
                tracing::debug!(task_id = %task.id, entry = %entry.id, "received for placement");
                self.waiting.push(Waiting {
                    entry: entry.id.clone(),
                    task,
                    since: Instant::now(),
                });
            }
        }
        if let Err(e) = self.ctx.store.ack(&self.stream, DISTRIBUTORS_GROUP, &refused).await {
            tracing::warn!(error = %e, "could not acknowledge refused intake entries; they will be refused again");
        }
    }

    /// Assigns what it can; what no worker can take now keeps waiting.
    async fn place(&mut self) -> Result<(), StoreError> {
        if self.waiting.is_empty() {
            metrics::gauge!(catalog::UNPLACEABLE_TASKS.name).set(0.0);
            return Ok(());
        }
        self.refresh_view().await?;
        // Highest priority first; the sort is stable, so arrival order
        // holds within a priority.
        if self.unsorted {
            self.waiting.sort_by_key(|w| std::cmp::Reverse(w.task.prio));
            self.unsorted = false;
        }
        let round = plan_round(self.waiting.iter().map(|w| &w.task), &self.workers);
        self.warn_unplaceable(&round.unplaceable);
        // Tasks left for want of room: slots may have freed since the read.
        self.view_behind |= round.short_of_room;
        metrics::gauge!(catalog::UNPLACEABLE_TASKS.name).set(round.unplaceable.len() as f64);
        if round.by_worker.is_empty() {
            return Ok(());
        }
        let mut settled = vec![false; self.waiting.len()];
        let mut acked = HashSet::new();
        for (j, idx) in round.by_worker {
            self.assign_to(j, &idx, &mut settled, &mut acked).await?;
        }
        self.settle(&settled, &acked).await
    }

    /// Slots free up as fast as workers finish: reads the live workers
    /// again when the view is older than VIEW_TTL or was found behind (a
    /// worker full or gone, or tasks left for want of room). At low rates
    /// this saves the read for most placements; the assign script's own
    /// credit check is what counts.
    async fn refresh_view(&mut self) -> Result<(), StoreError> {
        if self.view_behind || self.viewed.is_none_or(|t| t.elapsed() >= VIEW_TTL) {
            self.workers = self.ctx.store.workers(self.ctx.settings.timing.worker_ttl).await?;
            self.viewed = Some(Instant::now());
            self.view_behind = false;
        }
        Ok(())
    }

    /// Warns once per handler name of tasks no live worker can take: up to
    /// MAX_HELD such tasks come by every round, so look before cloning the name.
    fn warn_unplaceable(&mut self, unplaceable: &[usize]) {
        for &i in unplaceable {
            let t = &self.waiting[i].task;
            if !self.unplaceable_logged.contains(&t.h) {
                self.unplaceable_logged.insert(t.h.clone());
                tracing::warn!(handler = %t.h, tags = ?t.tags, "no live worker offers this handler with these tags; tasks wait");
            }
        }
    }

    /// One assign call: the waiting tasks `idx` to worker `j` of the view.
    /// Marks in `settled` the tasks that need not wait any more, and adds
    /// to `acked` the intake entries the script acknowledged.
    async fn assign_to(
        &mut self,
        j: usize,
        idx: &[usize],
        settled: &mut [bool],
        acked: &mut HashSet<String>,
    ) -> Result<(), StoreError> {
        let wid = self.workers[j].id.clone();
        let tasks: Vec<IntakeTask> = idx.iter().map(|&i| self.waiting[i].task.clone()).collect();
        let acks = self.entries_to_ack(idx);
        let lease = self.ctx.settings.timing.lease_ttl;
        let replies = self.ctx.store.assign(&wid, &tasks, &acks, lease).await?;
        let waits: HashSet<&str> = acks
            .iter()
            .zip(&replies)
            .filter(|(_, r)| r.worker_was_unable())
            .map(|(e, _)| *e)
            .collect();
        acked.extend(
            acks.iter()
                .filter(|e| !e.is_empty() && !waits.contains(*e))
                .map(|e| e.to_string()),
        );
        for (&i, status) in idx.iter().zip(&replies) {
            match status {
                AssignStatus::Assigned => {
                    tracing::debug!(task_id = %self.waiting[i].task.id, worker = %wid, "assigned");
                    // Keep the cached view's credit in step with what was spent.
                    self.workers[j].used += 1;
                    settled[i] = true;
                }
                AssignStatus::Full | AssignStatus::Gone => self.view_behind = true, // next round reads afresh
                other => {
                    // Cancelled, already moved on, or a replay: stale.
                    tracing::debug!(task_id = %self.waiting[i].task.id, status = other.label(), "not assigned: stale");
                    if *other == AssignStatus::Conflict {
                        metrics::counter!(catalog::STATE_CONFLICTS.name, "op" => "assign").increment(1);
                    }
                    self.ctx.store.reject(&self.stream, &self.waiting[i].entry, "stale");
                    settled[i] = true;
                }
            }
        }
        Ok(())
    }

    /// Per task of `idx`, the intake entry for the assign script to
    /// acknowledge, or '': an entry all of whose waiting tasks go in this
    /// call is acknowledged by the script itself (one round trip fewer),
    /// unless one of them comes back full or gone.
    fn entries_to_ack(&self, idx: &[usize]) -> Vec<&str> {
        let mut in_call: HashMap<&str, usize> = HashMap::new();
        for &i in idx {
            *in_call.entry(self.waiting[i].entry.as_str()).or_default() += 1;
        }
        idx.iter()
            .map(|&i| {
                let e = self.waiting[i].entry.as_str();
                if self.open.get(e) == in_call.get(e) {
                    e
                } else {
                    ""
                }
            })
            .collect()
    }

    /// Drops the waiting tasks marked settled and acknowledges every entry
    /// none of whose tasks wait any more, except those `acked` already.
    async fn settle(&mut self, settled: &[bool], acked: &HashSet<String>) -> Result<(), StoreError> {
        if !settled.contains(&true) {
            return Ok(());
        }
        // In place: up to MAX_HELD tasks wait, and this runs every round, so
        // building a new list each time cost a fresh allocation of that
        // size per round (page faults showed in profiles at saturation).
        let mut done_entries = Vec::new();
        let mut flags = settled.iter();
        let open = &mut self.open;
        self.waiting.retain(|w| {
            if !flags.next().copied().unwrap_or(false) {
                return true;
            }
            if let Some(n) = open.get_mut(&w.entry) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&w.entry);
                    if !acked.contains(&w.entry) {
                        done_entries.push(w.entry.clone());
                    }
                }
            }
            false
        });
        self.ctx
            .store
            .ack(&self.stream, DISTRIBUTORS_GROUP, &done_entries)
            .await
    }

    /// Keeps held entries ours, takes over entries of dead distributors,
    /// and drops acknowledged entries from the stream.
    async fn housekeeping(&mut self) -> Result<(), StoreError> {
        // Tasks that waited long for a worker go to the tail of the stream
        // under a new version, so their old entries can be acknowledged and
        // trimmed: one stuck task must not pin the whole stream.
        let long: Vec<bool> = self.waiting.iter().map(|w| w.since.elapsed() >= CLAIM_AFTER).collect();
        if long.iter().any(|l| *l) {
            let tasks: Vec<IntakeTask> = self
                .waiting
                .iter()
                .zip(&long)
                .filter(|(_, l)| **l)
                .map(|(w, _)| w.task.clone())
                .collect();
            let n = self.ctx.store.reannounce(&tasks).await?;
            tracing::info!(
                tasks = tasks.len(),
                announced = n,
                "tasks waiting long for a worker moved to the end of the intake stream"
            );
            self.settle(&long, &HashSet::new()).await?;
        }
        let held: Vec<String> = self.open.keys().cloned().collect();
        for chunk in held.chunks(500) {
            self.ctx
                .store
                .touch(&self.stream, DISTRIBUTORS_GROUP, &self.id, chunk)
                .await?;
        }
        let claimed = self
            .ctx
            .store
            .claim_idle(&self.stream, DISTRIBUTORS_GROUP, &self.id, CLAIM_AFTER, 500)
            .await?;
        if !claimed.is_empty() {
            tracing::info!(
                entries = claimed.len(),
                "took over intake entries left by another distributor"
            );
            self.take(claimed).await;
        }
        self.ctx.store.trim(&self.stream, DISTRIBUTORS_GROUP).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, handlers: &[&str], tags: &[&str], capacity: u32, used: u32) -> WorkerView {
        WorkerView {
            id: id.into(),
            handlers: handlers.iter().map(|h| h.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            capacity,
            used,
            in_flight: used,
            draining: false,
            last_heartbeat_ms: 0,
            version: String::new(),
        }
    }

    fn tasks(n: usize, h: &str, tags: &[&str]) -> Vec<IntakeTask> {
        (0..n)
            .map(|i| IntakeTask {
                id: format!("{h}{i}"),
                v: 1,
                h: h.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                prio: 0,
            })
            .collect()
    }

    fn counts(plan: &RoundPlan, workers: usize) -> Vec<usize> {
        (0..workers)
            .map(|j| plan.by_worker.get(&j).map_or(0, Vec::len))
            .collect()
    }

    #[test]
    fn the_wait_for_room_grows_with_the_workers_it_rereads() {
        assert_eq!(room_wait(0), Duration::from_millis(1));
        assert_eq!(room_wait(2), Duration::from_millis(1));
        assert_eq!(room_wait(40), Duration::from_millis(2));
        assert_eq!(room_wait(100), Duration::from_millis(5));
        assert_eq!(room_wait(10_000), Duration::from_millis(5));
    }

    #[test]
    fn a_small_round_goes_to_one_worker_the_one_with_most_free_slots() {
        let workers = [
            worker("a", &["noop"], &[], 256, 10),
            worker("b", &["noop"], &[], 256, 3),
        ];
        let plan = plan_round(tasks(7, "noop", &[]).iter(), &workers);
        assert_eq!(counts(&plan, 2), [0, 7]);
        assert_eq!(plan.by_worker[&1], (0..7).collect::<Vec<_>>(), "arrival order kept");
        assert!(plan.unplaceable.is_empty() && !plan.short_of_room);
    }

    #[test]
    fn a_large_round_is_spread_in_chunks_and_never_past_capacity() {
        let even = [worker("a", &["noop"], &[], 256, 0), worker("b", &["noop"], &[], 256, 0)];
        let plan = plan_round(tasks(150, "noop", &[]).iter(), &even);
        // a chunk to a, then to b (256 free against 192), then to a again.
        assert_eq!(counts(&plan, 2), [86, 64]);
        let workers = [worker("a", &["noop"], &[], 256, 0), worker("b", &["noop"], &[], 100, 0)];
        let plan = plan_round(tasks(150, "noop", &[]).iter(), &workers);
        assert_eq!(counts(&plan, 2), [150, 0], "a keeps the most free slots throughout");
        let plan = plan_round(tasks(400, "noop", &[]).iter(), &workers);
        assert_eq!(counts(&plan, 2), [256, 100]);
        assert!(plan.short_of_room, "44 tasks left for want of room");
    }

    #[test]
    fn handlers_tags_and_draining_decide_who_may_take_a_task() {
        let mut draining = worker("c", &["noop", "gpu-job"], &["gpu"], 256, 0);
        draining.draining = true;
        let workers = [
            worker("a", &["noop"], &[], 8, 0),
            worker("b", &["gpu-job"], &["gpu"], 8, 0),
            draining,
        ];
        let mut round = tasks(3, "gpu-job", &["gpu"]);
        round.extend(tasks(2, "noop", &["gpu"]));
        round.extend(tasks(2, "noop", &[]));
        let plan = plan_round(round.iter(), &workers);
        assert_eq!(plan.by_worker[&1], [0, 1, 2]);
        assert_eq!(plan.unplaceable, [3, 4], "no live worker offers noop with tag gpu");
        assert_eq!(plan.by_worker[&0], [5, 6]);
        assert!(!plan.by_worker.contains_key(&2), "a draining worker gets nothing");
    }
}
