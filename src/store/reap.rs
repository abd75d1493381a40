//! The reaper, a leader duty (lua/reap.lua): ends the leases of batches
//! whose deadline passed. Their tasks still running go back to queued when
//! no handler of the batch ran, else to a retry, dead or cancelled.

use super::decode::{DueBatch, TaskRow};
use super::keys;
use super::outcomes::{id_pairs, ReapOutcome};
use super::pool::Con;
use super::{Result, Store};
use crate::messages::{self, EventBody};
use crate::task::TaskState;
use crate::telemetry::catalog;
use redis::Value;
use std::collections::HashMap;

#[derive(Debug, Default, Clone, Copy)]
pub struct ReapStats {
    pub requeued: u64,
    pub lease_expired: u64,
    pub retried: u64,
    pub dead: u64,
    /// Leases were due beyond this call's limit: call again. (Tasks moved
    /// say nothing of that: a due batch may hold few tasks still running.)
    pub more_due: bool,
}

impl ReapStats {
    fn count(&mut self, outcome: ReapOutcome) {
        if outcome.lease_expired() {
            self.lease_expired += 1;
        }
        match outcome {
            ReapOutcome::Queued => self.requeued += 1,
            ReapOutcome::Scheduled => self.retried += 1,
            ReapOutcome::Dead => self.dead += 1,
            ReapOutcome::Conflict => metrics::counter!(catalog::STATE_CONFLICTS.name, "op" => "reap").increment(1),
            ReapOutcome::Cancelled | ReapOutcome::Renewed => {}
        }
    }
}

/// One due batch as reap.lua takes it: its token, whether no handler of it
/// ran, and its tasks still running (id, version, retry delay ms).
struct ReapRun {
    token: String,
    never_ran: bool,
    tasks: Vec<(String, u64, u64)>,
}

/// What one reap call asks of reap.lua.
#[derive(Default)]
struct ReapPlan {
    runs: Vec<ReapRun>,
    /// Every task of the runs, for the events envelope.
    named: Vec<String>,
}

impl Store {
    /// Ends the leases of batches whose deadline passed: their tasks still
    /// running go back to queued (never run) or to a retry, dead or
    /// cancelled. `retry_delay` gives the backoff for a task's next attempt
    /// from its attempt count. `limit` bounds the tasks read in one call,
    /// in whole batches (at least one).
    pub async fn reap(&self, limit: usize, retry_delay: impl Fn(u32) -> u64) -> Result<ReapStats> {
        let mut con = self.con().await?;
        let (batches, more_due) = self.due_batches(&mut con, limit).await?;
        if batches.is_empty() {
            return Ok(ReapStats {
                more_due,
                ..ReapStats::default()
            });
        }
        let plan = self.plan_reap(&mut con, batches, retry_delay).await?;
        drop(con);
        let outcomes = self.run_reap(plan).await?;
        let mut stats = ReapStats {
            more_due,
            ..ReapStats::default()
        };
        for (id, outcome) in outcomes {
            stats.count(outcome);
            if outcome != ReapOutcome::Renewed {
                tracing::debug!(task_id = %id, outcome = outcome.label(), "reaped");
            }
        }
        Ok(stats)
    }

    /// The batches whose deadline passed, with their records, in whole
    /// batches up to `limit` tasks (at least one batch); and whether more
    /// are due than this call takes.
    async fn due_batches(&self, con: &mut Con, limit: usize) -> Result<(Vec<(String, DueBatch)>, bool)> {
        let tokens = self.due_members(con, &self.keys.leases(), limit).await?;
        let record_keys: Vec<String> = tokens.iter().map(|t| self.keys.batch(t)).collect();
        let records: Vec<DueBatch> = self.rows(con, "reap", &record_keys).await?;
        let mut more_due = tokens.len() == limit;
        let mut batches = Vec::new();
        let mut tasks = 0;
        for (token, record) in tokens.into_iter().zip(records) {
            if tasks > 0 && tasks + record.ids.len() > limit {
                more_due = true;
                break;
            }
            tasks += record.ids.len();
            batches.push((token, record));
        }
        Ok((batches, more_due))
    }

    /// Reads the tasks of due batches and decides, per batch, which are
    /// still running under it and whether any handler of it ran.
    async fn plan_reap(
        &self,
        con: &mut Con,
        batches: Vec<(String, DueBatch)>,
        retry_delay: impl Fn(u32) -> u64,
    ) -> Result<ReapPlan> {
        let ids = ids_of(&batches);
        let rows = self.task_rows(con, "reap", &ids).await?;
        let mut rows = ids.into_iter().zip(rows);
        let mut plan = ReapPlan::default();
        // Each worker stream's group is asked once per call.
        let mut last_delivered = HashMap::new();
        for (token, batch) in batches {
            // Only the tasks still running under this lease: the others
            // finished (or were ended) and left it for good.
            let running: Vec<(String, TaskRow)> = rows
                .by_ref()
                .take(batch.ids.len())
                .filter(|(_, row)| row.is(TaskState::Running) && row.batch.as_deref() == Some(token.as_str()))
                .collect();
            // No handler of the batch ran when the worker never acknowledged
            // its assign entry: the tasks go back to queued (the run flagged
            // for reap.lua) without using an attempt.
            let never_ran = match (&batch.holder.worker, &batch.holder.entry) {
                (Some(wid), Some(ent)) if !running.is_empty() => {
                    !self.assignment_acknowledged(con, &mut last_delivered, wid, ent).await
                }
                _ => false,
            };
            let mut tasks = Vec::with_capacity(running.len());
            for (id, row) in running {
                plan.named.push(id.clone());
                tasks.push((id, row.version, retry_delay(row.attempts)));
            }
            plan.runs.push(ReapRun {
                token,
                never_ran,
                tasks,
            });
        }
        Ok(plan)
    }

    /// Runs reap.lua over the plan; returns each task's outcome.
    async fn run_reap(&self, plan: ReapPlan) -> Result<Vec<(String, ReapOutcome)>> {
        let events = self.keys.events();
        let mut inv = self.scripts.reap.prepare_invoke();
        inv.key(self.keys.leases())
            .key(self.keys.scheduled())
            .key(self.keys.counts())
            .key(&events)
            .arg(self.keys.prefix())
            .arg(self.seal(&events, messages::EVENT, &EventBody { ids: plan.named }))
            .arg(self.opts.events_maxlen);
        for run in &plan.runs {
            inv.arg(&run.token).arg(u8::from(run.never_ran)).arg(run.tasks.len());
            for (id, v, delay) in &run.tasks {
                inv.arg(id).arg(v).arg(delay);
            }
        }
        let reply = self.call("reap", &inv).await?;
        let outcomes = id_pairs("reap", &reply, ReapOutcome::parse)?;
        let moved = |o: &ReapOutcome| !matches!(o, ReapOutcome::Renewed | ReapOutcome::Conflict);
        if outcomes.iter().any(|(_, o)| moved(o)) {
            Self::sent("events");
        }
        Ok(outcomes)
    }

    /// Whether worker `wid` acknowledged the assign entry `ent` on its
    /// stream, which it does before it runs anything (see [`Store::claim`]).
    /// An entry past the group's last delivered id was never read; one in
    /// the pending list was read and not acted on. When the stream or group
    /// is gone it cannot be told, and counts as acknowledged (an attempt is
    /// charged, as for any lease that ran out). `last_delivered` caches each
    /// worker's group position (None: no stream or group) within one reap.
    ///
    /// reap.lua takes this answer as given. A worker that acknowledges in
    /// between (after this read, before the script) finds the lease already
    /// run out, past half of it, and hands the task back without running it
    /// (`Worker::handle`), so the attempt given back was never used.
    async fn assignment_acknowledged(
        &self,
        con: &mut Con,
        last_delivered: &mut HashMap<String, Option<String>>,
        wid: &str,
        ent: &str,
    ) -> bool {
        let stream = self.keys.worker_stream(wid);
        if !last_delivered.contains_key(wid) {
            let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut *con)
                .await;
            let last = groups.ok().and_then(|g| {
                g.groups
                    .into_iter()
                    .find(|g| g.name == keys::WORKER_GROUP)
                    .map(|g| g.last_delivered_id)
            });
            last_delivered.insert(wid.to_string(), last);
        }
        let Some(last) = &last_delivered[wid] else {
            return true;
        };
        if stream_id_after(ent, last) {
            return false;
        }
        let pending: redis::RedisResult<Vec<Value>> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(keys::WORKER_GROUP)
            .arg(ent)
            .arg(ent)
            .arg(1)
            .query_async(con)
            .await;
        pending.map_or(true, |p| p.is_empty())
    }
}

/// The ids of every task of `batches`, in order.
fn ids_of(batches: &[(String, DueBatch)]) -> Vec<String> {
    batches.iter().flat_map(|(_, b)| b.ids.iter().cloned()).collect()
}

/// Whether stream id `a` ("ms-seq") comes after `b`; false if either is
/// not a stream id (an older task's `ent` may name an intake entry).
fn stream_id_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-')?;
        Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?))
    };
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x > y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(stream_id_after("5-1", "5-0"));
        assert!(stream_id_after("6-0", "5-9"));
        assert!(!stream_id_after("5-0", "5-0"));
        assert!(!stream_id_after("5-0", "not-an-id"));
        assert!(!stream_id_after("", "0-0"));
    }
}
