//! The distributor: matches workers to the backlog. The backlog itself is
//! in Redis (docs/QUEUES.md, "The backlog as built": ready lists per queue,
//! class and priority level), so a distributor holds no task: each round
//! it reads which backlogs have ready tasks and the live workers, and for
//! each worker with free slots (the most free first) asks assign.lua to
//! take up to [`PLACEMENT_CHUNK`] tasks from the backlogs that worker can
//! run. The script picks the tasks (highest priority first), checks the
//! worker's credit and each queue's pause and limits, and takes the lease,
//! so any number of distributors can run side by side and a crash loses
//! nothing.
//!
//! Between rounds it waits for a wake-up (`wakes`: tasks were queued, or
//! attempts ended and freed slots), or a timed look: soon while tasks wait
//! for room, at a rate limit's next token, and at most [`IDLE_LOOK`] apart
//! otherwise (a worker that starts sends no wake-up).

use super::RetryDelay;
use crate::context::Context;
use crate::names::QueueWeight;
use crate::store::{Backlog, BacklogStop, StoreError, WorkerRoom, WorkerView};
use crate::telemetry::catalog;
use crate::telemetry::queue_labels::QueueLabels;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Most tasks one assign call takes for a worker before the next worker
/// with the most free slots is served. A round at a moderate rate then
/// makes one call and wakes one worker instead of spreading task by task
/// over all of them: every call and wake-up has a fixed cost in Redis,
/// which at half of peak throughput was most of it (BENCHMARKS.md). Over
/// rounds the load still evens out, since each chunk goes to the worker
/// with the most free slots.
pub const PLACEMENT_CHUNK: usize = 64;
/// How long a read of the live workers serves placements.
const VIEW_TTL: Duration = Duration::from_millis(20);
/// The longest wait between rounds: new workers, a queue's limit that
/// rose, and anything else that sends no wake-up are seen within it.
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// While tasks wait for room, how long to wait before looking again, per
/// live worker: each look re-reads every worker's hash (an `HGETALL` each,
/// a few µs of Redis), so this keeps those reads to a few percent of Redis
/// however many workers there are. Within [`ROOM_WAIT_MIN`],
/// [`ROOM_WAIT_MAX`]. Attempts that end wake the distributor earlier.
const ROOM_WAIT_PER_WORKER: Duration = Duration::from_micros(50);
const ROOM_WAIT_MIN: Duration = Duration::from_millis(1);
const ROOM_WAIT_MAX: Duration = Duration::from_millis(5);
/// How often the count of tasks no worker can run is taken again (it
/// reads the lengths of their lists).
const UNPLACEABLE_EVERY: Duration = Duration::from_secs(5);

/// How long to wait for room before placing again, with `workers` live
/// workers in view.
fn room_wait(workers: usize) -> Duration {
    (ROOM_WAIT_PER_WORKER * workers as u32).clamp(ROOM_WAIT_MIN, ROOM_WAIT_MAX)
}

/// What a round leaves for the next one to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Tasks wait for a worker's free slot.
    Room,
    /// Tasks wait for a queue's next token, this long from now.
    Token(Duration),
    /// No task waits that a live worker could take now.
    Idle,
}

struct Distributor {
    ctx: Context,
    id: String,
    workers: Vec<WorkerView>,
    /// When `workers` was read, and whether a placement since found it behind.
    viewed: Option<Instant>,
    view_behind: bool,
    /// What each backlog named in `P active` is (a backlog never changes).
    described: HashMap<String, Backlog>,
    /// Rotates which backlog is named first to assign.lua, so backlogs of
    /// equal priority take turns.
    turn: usize,
    unplaceable_logged: HashSet<String>,
    unplaceable_counted: Option<Instant>,
    /// The queues' metric label values, read again with the unplaceable
    /// count (telemetry/queue_labels.rs).
    queue_labels: QueueLabels,
    /// Woken by new tasks and by attempts that end (`wakes`).
    woken: Arc<Notify>,
}

pub async fn run(ctx: Context, id: String, shutdown: CancellationToken) -> anyhow::Result<()> {
    ctx.health.role_starting();
    let mut d = Distributor {
        ctx: ctx.clone(),
        id,
        workers: Vec::new(),
        viewed: None,
        view_behind: false,
        described: HashMap::new(),
        turn: 0,
        unplaceable_logged: HashSet::new(),
        unplaceable_counted: None,
        queue_labels: QueueLabels::default(),
        woken: Arc::new(Notify::new()),
    };
    let watcher = super::wakes::watch(ctx.clone(), d.woken.clone(), shutdown.clone());
    let mut retry = RetryDelay::default();
    let mut started = false;
    while !shutdown.is_cancelled() {
        match d.round().await {
            Ok(next) => {
                retry.success();
                if !started {
                    started = true;
                    ctx.health.role_started();
                    tracing::info!(distributor = %d.id, "distributor placing tasks");
                }
                d.wait(next, &shutdown).await;
            }
            Err(e) => retry.failed("placing tasks", &e, &shutdown).await,
        }
    }
    watcher.abort();
    // Nothing is held here: the backlog stays in Redis for the others.
    tracing::info!(distributor = %d.id, "distributor stopped");
    Ok(())
}

/// The workers worth an assign call, by index into `workers`: not
/// draining, with free slots, the most free first (the first on a tie).
fn by_free_slots(workers: &[WorkerView]) -> Vec<usize> {
    let free = |w: &WorkerView| w.capacity as i64 - w.used as i64;
    let mut order: Vec<usize> = (0..workers.len())
        .filter(|&j| !workers[j].draining && free(&workers[j]) > 0)
        .collect();
    order.sort_by_key(|&j| std::cmp::Reverse(free(&workers[j])));
    order
}

/// `names` rotated left by `turn`: who is named first takes turns.
fn rotated(names: &[&str], turn: usize) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    let k = turn % names.len();
    names[k..].iter().chain(&names[..k]).map(|n| n.to_string()).collect()
}

/// The order in which `backlogs` are named to assign.lua for a worker
/// that takes from `weights` (assign.lua takes the highest priority first,
/// and on a tie the backlog named first). The names rotate with `turn`;
/// when the worker weighs its queues, one queue leads each call, chosen
/// from a cycle in which each queue of these backlogs appears as often as
/// its weight, so a queue of weight 3 leads three calls of every four
/// against one of weight 1.
fn offer_order(backlogs: &[&Backlog], weights: &[QueueWeight], turn: usize) -> Vec<String> {
    let names: Vec<&str> = backlogs.iter().map(|b| b.name.as_str()).collect();
    let names = rotated(&names, turn);
    let cycle: Vec<&str> = weights
        .iter()
        .filter(|w| backlogs.iter().any(|b| b.queue == w.queue.as_str()))
        .flat_map(|w| std::iter::repeat_n(w.queue.as_str(), w.weight as usize))
        .collect();
    if cycle.is_empty() {
        return names;
    }
    let lead = cycle[turn % cycle.len()];
    let leads = |n: &String| n.split_once(' ').is_some_and(|(q, _)| q == lead);
    let (first, rest): (Vec<String>, Vec<String>) = names.into_iter().partition(leads);
    first.into_iter().chain(rest).collect()
}

impl Distributor {
    async fn wait(&self, next: Next, shutdown: &CancellationToken) {
        let timeout = match next {
            Next::Room => room_wait(self.workers.len()),
            Next::Token(d) => d.clamp(ROOM_WAIT_MIN, IDLE_LOOK),
            Next::Idle => IDLE_LOOK,
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.woken.notified() => {}
            _ = tokio::time::sleep(timeout) => {}
        }
    }

    /// One round: every worker with room gets one assign call for the
    /// backlogs it can run, until no call takes anything more.
    async fn round(&mut self) -> Result<Next, StoreError> {
        let active = self.ctx.store.active_backlogs().await?;
        if active.is_empty() {
            metrics::gauge!(catalog::UNPLACEABLE_TASKS.name).set(0.0);
            return Ok(Next::Idle);
        }
        self.describe(&active).await?;
        self.refresh_view().await?;
        let backlogs: Vec<Backlog> = active.iter().filter_map(|n| self.described.get(n).cloned()).collect();
        self.count_unplaceable(&backlogs).await?;
        // What this round learned: backlogs found empty, queues paused or
        // at a limit (and the soonest next token).
        let mut empty: HashSet<String> = HashSet::new();
        // Queues at a pause or a limit in this round, and which one.
        let mut held: HashMap<String, &'static str> = HashMap::new();
        let mut token: Option<Duration> = None;
        let mut waits_for_room = false;
        let lease = self.ctx.settings.timing.lease_ttl;
        loop {
            let mut placed = 0;
            for j in by_free_slots(&self.workers) {
                let w = &self.workers[j];
                let names: Vec<&Backlog> = backlogs
                    .iter()
                    .filter(|b| !empty.contains(&b.name) && !held.contains_key(&b.queue))
                    .filter(|b| b.taken_by(w))
                    .collect();
                if names.is_empty() {
                    continue;
                }
                let names = offer_order(&names, &w.queues, self.turn);
                self.turn = self.turn.wrapping_add(1);
                let want = (w.capacity.saturating_sub(w.used) as usize).min(PLACEMENT_CHUNK);
                let wid = w.id.clone();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let got = self.ctx.store.assign(&wid, want, &refs, lease).await?;
                for id in &got.ids {
                    tracing::debug!(task_id = %id, worker = %wid, "assigned");
                }
                placed += got.taken;
                let w = &mut self.workers[j];
                w.used += got.taken as u32;
                if got.worker != WorkerRoom::Room {
                    // Full or gone by Redis' count: the view was behind.
                    w.used = w.used.max(w.capacity);
                    self.view_behind = true;
                }
                for (i, stop) in got.stopped {
                    let b = self
                        .described
                        .get(&names[i])
                        .expect("named from the described backlogs");
                    match stop {
                        BacklogStop::Empty => {
                            empty.insert(b.name.clone());
                        }
                        BacklogStop::Paused => {
                            held.insert(b.queue.clone(), "paused");
                        }
                        BacklogStop::Busy => {
                            held.insert(b.queue.clone(), "concurrency");
                        }
                        BacklogStop::Rate(d) => {
                            held.insert(b.queue.clone(), "rate");
                            token = Some(token.map_or(d, |t| t.min(d)));
                        }
                    }
                }
            }
            if placed == 0 {
                break;
            }
        }
        for (queue, limit) in &held {
            let queue = self.queue_labels.of(queue);
            metrics::counter!(catalog::QUEUE_LIMIT_WAITS.name, "queue" => queue, "limit" => *limit).increment(1);
        }
        // Backlogs left with tasks that a worker could run if it had room.
        for b in &backlogs {
            if empty.contains(&b.name) || held.contains_key(&b.queue) {
                continue;
            }
            if self.workers.iter().any(|w| !w.draining && b.taken_by(w)) {
                waits_for_room = true;
            }
        }
        Ok(match (waits_for_room, token) {
            (true, _) => Next::Room,
            (false, Some(d)) => Next::Token(d),
            (false, None) => Next::Idle,
        })
    }

    /// Reads what the backlogs named in `active` are, for those not yet known.
    async fn describe(&mut self, active: &[String]) -> Result<(), StoreError> {
        let unknown: Vec<String> = active
            .iter()
            .filter(|n| !self.described.contains_key(*n))
            .cloned()
            .collect();
        for (name, backlog) in unknown.iter().zip(self.ctx.store.describe_backlogs(&unknown).await?) {
            match backlog {
                Some(b) => {
                    self.described.insert(name.clone(), b);
                }
                None => tracing::warn!(backlog = %name, "a backlog without a description is left alone"),
            }
        }
        Ok(())
    }

    /// Slots free up as fast as workers finish: reads the live workers
    /// again when the view is older than VIEW_TTL or was found behind. At
    /// low rates this saves the read for most rounds; the assign script's
    /// own credit check is what counts.
    async fn refresh_view(&mut self) -> Result<(), StoreError> {
        if self.view_behind || self.viewed.is_none_or(|t| t.elapsed() >= VIEW_TTL) {
            self.workers = self.ctx.store.workers(self.ctx.settings.timing.worker_ttl).await?;
            self.viewed = Some(Instant::now());
            self.view_behind = false;
        }
        Ok(())
    }

    /// Warns once per backlog that no live worker can run, and counts its
    /// tasks for `drover_unplaceable_tasks` every few seconds.
    async fn count_unplaceable(&mut self, backlogs: &[Backlog]) -> Result<(), StoreError> {
        if self
            .unplaceable_counted
            .is_some_and(|t| t.elapsed() < UNPLACEABLE_EVERY)
        {
            return Ok(());
        }
        self.unplaceable_counted = Some(Instant::now());
        let names = self.ctx.store.queue_names().await?;
        self.queue_labels = QueueLabels::new(names.iter().map(|q| q.as_str()), self.ctx.settings.metric_queues);
        let mut tasks = 0;
        for b in backlogs {
            if self.workers.iter().any(|w| !w.draining && b.taken_by(w)) {
                continue;
            }
            tasks += self.ctx.store.ready_count(b).await?;
            if self.unplaceable_logged.insert(b.name.clone()) {
                tracing::warn!(handler = %b.handler, tags = ?b.tags, queue = %b.queue,
                    "no live worker offers this handler with these tags; tasks wait");
            }
        }
        metrics::gauge!(catalog::UNPLACEABLE_TASKS.name).set(tasks as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, capacity: u32, used: u32, draining: bool) -> WorkerView {
        WorkerView {
            id: id.into(),
            handlers: vec!["noop".into()],
            tags: vec![],
            queues: vec![],
            capacity,
            used,
            in_flight: used,
            draining,
            last_heartbeat_ms: 0,
            version: String::new(),
        }
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
    fn workers_are_served_most_free_slots_first_and_never_full_or_draining() {
        let workers = [
            worker("a", 256, 10, false),
            worker("b", 256, 3, false),
            worker("c", 8, 8, false),
            worker("d", 512, 0, true),
            worker("e", 256, 3, false),
        ];
        assert_eq!(by_free_slots(&workers), [1, 4, 0], "b and e tie: the first comes first");
    }

    #[test]
    fn backlogs_take_turns_at_being_named_first() {
        let names = ["a", "b", "c"];
        assert_eq!(rotated(&names, 0), ["a", "b", "c"]);
        assert_eq!(rotated(&names, 1), ["b", "c", "a"]);
        assert_eq!(rotated(&names, 5), ["c", "a", "b"]);
        assert!(rotated(&[], 3).is_empty());
    }

    fn backlog(queue: &str, class: &str) -> Backlog {
        Backlog {
            name: format!("{queue} {class}"),
            queue: queue.into(),
            handler: "noop".into(),
            tags: vec![],
        }
    }

    #[test]
    fn a_weighted_queue_leads_calls_in_proportion_to_its_weight() {
        let (m1, m2, d) = (backlog("media", "c1"), backlog("media", "c2"), backlog("default", "c1"));
        let all = [&m1, &d, &m2];
        let w = |s: &str| QueueWeight::parse(s).unwrap();
        let weights = [w("media:3"), w("default")];
        let mut leads = std::collections::HashMap::new();
        for turn in 0..400 {
            let order = offer_order(&all, &weights, turn);
            assert_eq!(order.len(), 3);
            *leads
                .entry(order[0].split(' ').next().unwrap().to_string())
                .or_insert(0) += 1;
        }
        assert_eq!((leads["media"], leads["default"]), (300, 100), "{leads:?}");
        // No weights: plain rotation. A weighted queue with no backlog here
        // does not lead.
        assert_eq!(offer_order(&all, &[], 1), ["default c1", "media c2", "media c1"]);
        assert_eq!(offer_order(&[&d], &weights, 0), ["default c1"]);
        // A worker taking from one queue only sees that queue's backlogs.
        let mut wv = worker("w", 4, 0, false);
        wv.queues = vec![w("default")];
        assert!(d.taken_by(&wv) && !m1.taken_by(&wv));
        wv.queues.clear();
        assert!(m1.taken_by(&wv), "no queues named: every queue");
    }
}
