//! Leases: `assign` places tasks on a worker under one batch lease, the
//! worker `claim`s them from its assign entry, `renew`s the lease while
//! handlers run and `complete`s each attempt under its fencing token
//! (docs/BATCH-LEASES.md). Scripts: lua/assign.lua, lua/renew.lua,
//! lua/complete.lua; the claim is a read, no script.

use super::decode::{num, num_or, string_list, BatchHolder, Row, TaskFields};
use super::keys;
use super::outcomes::{expand_positions, Assigned, FinishedState, Refusal, RenewStatus};
use super::{Result, Store};
use crate::messages::{self, EventBody};
use crate::task::{FenceToken, TaskState, UNSTORED_MAX_ATTEMPTS, UNSTORED_TIMEOUT_MS};
use redis::Value;
use std::time::Duration;

/// The result of starting one assigned task.
#[derive(Debug, Clone)]
pub enum StartReply {
    Started(Box<StartedTask>),
    /// Not started, and why.
    Refused(Refusal),
}

/// A task this worker now holds the lease on.
#[derive(Debug, Clone)]
pub struct StartedTask {
    pub id: String,
    pub version: u64,
    pub token: FenceToken,
    pub handler: String,
    pub input: String,
    pub timeout_ms: u64,
    pub attempt: u32,
    pub max_attempts: u32,
    pub tags: Vec<String>,
    pub priority: i32,
    /// When the task could first run (created, or due), Redis ms.
    pub ready_ms: u64,
    /// When the lease was taken (at assignment), Redis ms.
    pub leased_ms: u64,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    /// Handed back without charging an attempt (graceful shutdown).
    Released,
}

impl Outcome {
    /// The name of the outcome in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        }
    }

    /// The outcome as complete.lua takes it.
    fn as_arg(self) -> &'static str {
        match self {
            Outcome::Succeeded => "ok",
            Outcome::Failed => "fail",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "release",
        }
    }
}

/// One finished attempt, for `complete`.
#[derive(Debug, Clone)]
pub struct Completion {
    pub task: StartedTask,
    pub outcome: Outcome,
    /// The result JSON for success, the error text otherwise.
    pub payload: String,
    pub retry_delay_ms: u64,
}

impl Store {
    /// Takes up to `want` ready tasks from `backlogs` (names from
    /// [`Store::active_backlogs`], each a class the worker can run) and
    /// leases them to one worker, in one script (lua/assign.lua): the
    /// highest priority level first, on a tie the backlog named first. The
    /// worker then only reads them: [`Store::claim`].
    pub async fn assign(&self, worker_id: &str, want: usize, backlogs: &[&str], lease: Duration) -> Result<Assigned> {
        let stream = self.keys.worker_stream(worker_id);
        let envelope = self.seal(&stream, messages::ASSIGN, &messages::AssignBody {});
        let mut inv = self.scripts.assign.prepare_invoke();
        inv.key(self.keys.worker(worker_id))
            .key(&stream)
            .key(self.keys.leases())
            .key(self.keys.counts())
            .key(self.keys.epoch())
            .key(self.keys.batches())
            .arg(self.keys.prefix())
            .arg(envelope)
            .arg(lease.as_millis() as u64)
            .arg(worker_id)
            .arg(want);
        for b in backlogs {
            inv.arg(*b);
        }
        let reply = self.call("assign", &inv).await?;
        let assigned = Assigned::parse("assign", &reply, backlogs.len())?;
        if assigned.taken > 0 {
            Self::sent("worker");
        }
        Ok(assigned)
    }

    /// Accepts the tasks an `assign` entry names (its unsigned `ids`,
    /// [`super::Entry::ids`]): assign.lua has already
    /// taken one lease for the batch on this worker, so this only reads the
    /// batch record and each task and acknowledges the entry, in one
    /// pipeline (no script, no write to the task). `batch` is the entry's
    /// unsigned `b` field, the batch's fencing token: it is trusted only
    /// because the record it names must be this worker's and must name this
    /// entry, so a replayed copy of the envelope (another entry) or a forged
    /// `b` (another batch's record, or none) is refused. The ids come from the
    /// entry's unsigned `ids` field, which assign.lua wrote with the record:
    /// a task is accepted only if it is `running` under that token; one that
    /// has moved on since shows another state or token. The entry is
    /// acknowledged before any handler runs, so a worker that restarts
    /// under the same id re-reads (from its pending entries) only
    /// assignments it never acted on.
    pub async fn claim(
        &self,
        worker_id: &str,
        entry_id: &str,
        batch: Option<&str>,
        tasks: &[String],
    ) -> Result<Vec<StartReply>> {
        let stream = self.keys.worker_stream(worker_id);
        let batch = batch.unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(self.keys.batch(batch)).arg(BatchHolder::FIELDS);
        for id in tasks {
            pipe.cmd("HGETALL").arg(self.keys.task(id));
        }
        pipe.cmd("XACK")
            .arg(&stream)
            .arg(keys::WORKER_GROUP)
            .arg(entry_id)
            .ignore();
        let mut con = self.con().await?;
        let mut replies: Vec<Value> = pipe.query_async(&mut con).await?;
        drop(con);
        let hashes = replies.split_off(1.min(replies.len()));
        let holder = BatchHolder::decode("claim", replies.pop().unwrap_or(Value::Nil))?;
        // No token, or one that is not a token: not an entry assign.lua
        // wrote. No record: the lease already ended (its tasks finished or
        // were reaped before this read), or never was.
        let lease = match (FenceToken::parse(batch), &holder.worker) {
            (None, _) => Err(Refusal::Replayed),
            (_, None) => Err(Refusal::LeaseEnded),
            (_, Some(w)) if w != worker_id => Err(Refusal::OtherWorker),
            _ if holder.entry.as_deref() != Some(entry_id) => Err(Refusal::Replayed),
            (Some(token), _) => Ok(token),
        };
        let mut out = Vec::with_capacity(tasks.len());
        // An envelope that names a task twice (assign.lua took it once)
        // starts it once.
        let mut seen = std::collections::HashSet::with_capacity(tasks.len());
        for (t, raw) in tasks.iter().zip(hashes) {
            let fields =
                <TaskFields as redis::FromRedisValue>::from_redis_value(raw).map_err(redis::RedisError::from)?;
            let reply = match lease {
                Err(why) => StartReply::Refused(why),
                Ok(_) if !seen.insert(t.as_str()) => StartReply::Refused(Refusal::Conflict),
                Ok(token) => match started(t, batch, token, fields) {
                    Ok(task) => StartReply::Started(Box::new(task)),
                    Err(why) => StartReply::Refused(why),
                },
            };
            out.push(reply);
        }
        Ok(out)
    }

    /// Extends the leases of the batches this worker runs `held` tasks of.
    /// Returns one status per task of `held`, in its order.
    pub async fn renew(
        &self,
        worker_id: &str,
        held: &[(String, FenceToken)],
        lease: Duration,
    ) -> Result<Vec<RenewStatus>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        // One run per batch (renew.lua): the token once, then its tasks.
        let mut order: Vec<usize> = (0..held.len()).collect();
        order.sort_by_key(|&i| held[i].1);
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.key(self.keys.leases())
            .arg(self.keys.prefix())
            .arg(worker_id)
            .arg(lease.as_millis() as u64);
        for run in order.chunk_by(|&a, &b| held[a].1 == held[b].1) {
            inv.arg(held[run[0]].1.to_string()).arg(run.len());
            for &i in run {
                inv.arg(&held[i].0);
            }
        }
        // The reply follows the runs' order; put it back in `held`'s.
        let in_runs = self.call_each("renew", &inv, held.len(), RenewStatus::parse).await?;
        let mut statuses = vec![RenewStatus::Lost; held.len()];
        for (&i, status) in order.iter().zip(in_runs) {
            statuses[i] = status;
        }
        Ok(statuses)
    }

    /// Reports finished attempts. Returns the new state per task, or
    /// `Stale` where this worker no longer held the lease.
    pub async fn complete(&self, worker_id: &str, done: &[Completion]) -> Result<Vec<FinishedState>> {
        let events = self.keys.events();
        let event = EventBody {
            ids: done.iter().map(|c| c.task.id.clone()).collect(),
        };
        let mut inv = self.scripts.complete.prepare_invoke();
        inv.key(self.keys.leases())
            .key(self.keys.scheduled())
            .key(self.keys.counts())
            .key(self.keys.worker(worker_id))
            .key(&events)
            .arg(self.keys.prefix())
            .arg(worker_id)
            .arg(self.opts.result_ttl.as_millis() as u64)
            .arg(if self.opts.index_succeeded { "1" } else { "0" })
            .arg(self.seal(&events, messages::EVENT, &event))
            .arg(self.opts.events_maxlen);
        // Runs of attempts that ended the same way under one lease: the
        // outcome and token once, then per task what differs (complete.lua).
        for run in done.chunk_by(|a, b| (a.outcome, a.task.token) == (b.outcome, b.task.token)) {
            inv.arg(run[0].outcome.as_arg())
                .arg(run[0].task.token.to_string())
                .arg(run.len());
            for c in run {
                inv.arg(&c.task.id).arg(&c.payload);
                if c.outcome == Outcome::Failed {
                    inv.arg(c.retry_delay_ms);
                }
            }
        }
        let reply = self.call("complete", &inv).await?;
        let states = expand_positions(
            "complete",
            done.len(),
            FinishedState::Succeeded,
            &reply,
            FinishedState::parse,
        )?;
        if states.iter().any(|s| *s != FinishedState::Stale) {
            Self::sent("events");
        }
        Ok(states)
    }
}

/// The task an assign entry names, from its hash, if it runs under this
/// entry's lease: `running` under `batch` (a token is never reused, so the
/// token alone says it is this attempt). One that has moved on since shows
/// another state or token. An empty hash: the task is gone.
fn started(id: &str, batch: &str, token: FenceToken, mut f: TaskFields) -> std::result::Result<StartedTask, Refusal> {
    match f.remove("state").as_deref() {
        None => return Err(Refusal::Missing),
        Some("running") => {}
        Some(other) => {
            return Err(TaskState::parse(other).map_or(Refusal::Missing, Refusal::WrongState));
        }
    }
    if f.get("b").map(String::as_str) != Some(batch) {
        return Err(Refusal::OtherBatch);
    }
    let created: u64 = num(f.get("ct"));
    Ok(StartedTask {
        id: id.to_string(),
        version: num(f.get("v")),
        token,
        handler: f.remove("h").unwrap_or_default(),
        input: f.remove("in").unwrap_or_default(),
        timeout_ms: num_or(f.get("to"), UNSTORED_TIMEOUT_MS),
        attempt: num(f.get("att")),
        max_attempts: num_or(f.get("max"), UNSTORED_MAX_ATTEMPTS),
        tags: string_list(f.get("tags")),
        priority: num(f.get("prio")),
        ready_ms: created.max(num(f.get("run_at"))),
        leased_ms: num(f.get("st")),
    })
}
