//! What an operator does to finished tasks: run dead or cancelled ones
//! again (lua/retry.lua) and delete finished ones before their result TTL
//! (lua/discard.lua, lua/purge.lua), from the queues' indexes of finished
//! tasks.

use super::decode::TaskRow;
use super::outcomes::{id_pairs, DiscardOutcome, RetryOutcome};
use super::{Result, Store};
use crate::messages::{self, EventBody};
use crate::names::QueueName;
use crate::task::{TaskId, TaskState};
use redis::AsyncCommands;

/// Most tasks one retry, discard or purge call handles: the scripts stay
/// short, so Redis never blocks long for an operator's bulk action.
const OPERATOR_BATCH: usize = 500;

/// The finished states, each with an index per queue.
pub const FINISHED: [TaskState; 3] = [TaskState::Succeeded, TaskState::Dead, TaskState::Cancelled];

impl Store {
    /// Queues dead or cancelled tasks again, attempts reset (see
    /// `lua/retry.lua`); returns (id, outcome) per task, in order.
    pub async fn retry(&self, ids: &[TaskId]) -> Result<Vec<(String, RetryOutcome)>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(OPERATOR_BATCH) {
            out.extend(self.retry_batch(chunk).await?);
        }
        Ok(out)
    }

    async fn retry_batch(&self, ids: &[TaskId]) -> Result<Vec<(String, RetryOutcome)>> {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let mut con = self.con().await?;
        let rows: Vec<TaskRow> = self.task_rows(&mut con, "retry", &ids).await?;
        drop(con);
        let events = self.keys.events();
        let mut inv = self.scripts.retry.prepare_invoke();
        inv.key(self.keys.counts())
            .key(&events)
            .arg(self.keys.prefix())
            .arg(self.seal(&events, messages::EVENT, &EventBody { ids: ids.clone() }))
            .arg(self.opts.events_maxlen);
        for (id, row) in ids.iter().zip(&rows) {
            inv.arg(id).arg(row.version);
        }
        let reply = self.call("retry", &inv).await?;
        let outcomes = id_pairs("retry", &reply, RetryOutcome::parse)?;
        if outcomes.iter().any(|(_, o)| *o == RetryOutcome::Queued) {
            Self::sent("events");
        }
        Ok(outcomes)
    }

    /// Queues again every dead task of `queue`, oldest first, in batches;
    /// returns how many were queued.
    pub async fn retry_dead(&self, queue: &QueueName) -> Result<u64> {
        let index = self.keys.index(queue.as_str(), TaskState::Dead.as_str());
        let mut queued = 0;
        loop {
            let mut con = self.con().await?;
            let ids: Vec<String> = con.zrange(&index, 0, OPERATOR_BATCH as isize - 1).await?;
            drop(con);
            let ids: Vec<TaskId> = ids.iter().filter_map(|id| TaskId::parse(id)).collect();
            if ids.is_empty() {
                return Ok(queued);
            }
            let done = self.retry_batch(&ids).await?;
            let now_queued = done.iter().filter(|(_, o)| *o == RetryOutcome::Queued).count() as u64;
            queued += now_queued;
            // Every retried task leaves the index; a batch that queued none
            // (each moved on meanwhile) is left for the next call.
            if now_queued == 0 {
                return Ok(queued);
            }
        }
    }

    /// Deletes finished tasks (see `lua/discard.lua`), one outcome per id.
    pub async fn discard(&self, ids: &[TaskId]) -> Result<Vec<DiscardOutcome>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(OPERATOR_BATCH) {
            let mut inv = self.scripts.discard.prepare_invoke();
            inv.arg(self.keys.prefix());
            for id in chunk {
                inv.arg(id.as_str());
            }
            out.extend(
                self.call_each("discard", &inv, chunk.len(), DiscardOutcome::parse)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Deletes every task of `queue` finished in `state`, oldest first, in
    /// batches (see `lua/purge.lua`); returns how many.
    pub async fn purge(&self, queue: &QueueName, state: TaskState) -> Result<u64> {
        let index = self.keys.index(queue.as_str(), state.as_str());
        let mut purged = 0;
        loop {
            let mut inv = self.scripts.purge.prepare_invoke();
            inv.key(&index).arg(self.keys.prefix()).arg(OPERATOR_BATCH);
            let n = Self::int("purge", self.call_raw("purge", &inv).await?)?.max(0) as u64;
            purged += n;
            if n < OPERATOR_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}
