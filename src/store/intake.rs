//! Intake: writing tasks into the backlog — `submit` (new tasks),
//! `requeue` (queued tasks no ready list holds) and `restore` (tasks from
//! a snapshot).

use super::outcomes::{expand_positions, id_pairs, Announced, RestoreOutcome, SubmitReply, SubmitStatus};
use super::{Result, Store, StoreError};
use crate::task::NewTask;
use std::collections::HashMap;

/// Most tasks one script call handles where the caller's list can be long
/// (requeues): keeps scripts short.
const SCRIPT_BATCH: usize = 500;

impl Store {
    /// Writes new tasks, the immediate ones into their ready lists, in one
    /// script. Returns how each task was taken, in order; a duplicate
    /// names the earlier task. A call naming a draining queue writes
    /// nothing ([`StoreError::Draining`]).
    pub async fn submit(&self, tasks: &[NewTask]) -> Result<Vec<SubmitReply>> {
        // Each task's run_at as the script takes it: 0 to queue now.
        let now = self.clock.now_ms();
        let timed: Vec<(&NewTask, u64)> = tasks
            .iter()
            .map(|t| (t, t.run_at_ms.filter(|at| *at > now).unwrap_or(0)))
            .collect();
        let mut inv = self.scripts.submit.prepare_invoke();
        inv.key(self.keys.scheduled())
            .key(self.keys.counts())
            .arg(self.keys.prefix())
            .arg(self.opts.idempotency_ttl.as_millis() as u64);
        // Runs of tasks that share every setting: the settings once, then
        // id and input per task (submit.lua's header).
        fn settings<'a>(&(t, at): &(&'a NewTask, u64)) -> impl PartialEq + 'a {
            (
                &t.handler,
                &t.tags,
                t.priority,
                t.max_attempts,
                t.timeout_ms,
                at,
                &t.idempotency_key,
                &t.queue,
                &t.unique_key,
                t.unique_for_ms,
            )
        }
        for run in timed.chunk_by(|a, b| settings(a) == settings(b)) {
            let (t, at) = run[0];
            inv.arg(run.len())
                .arg(&t.handler)
                .arg(serde_json::to_string(&t.tags).expect("tags serialize"))
                .arg(t.priority)
                .arg(t.max_attempts)
                .arg(t.timeout_ms)
                .arg(at)
                .arg(t.idempotency_key.as_deref().unwrap_or(""))
                .arg(t.queue.as_str())
                .arg(t.unique_key.as_deref().unwrap_or(""))
                .arg(t.unique_for_ms);
            for (t, _) in run {
                inv.arg(t.id.as_str()).arg(&t.input);
            }
        }
        let duplicates = self.call("submit", &inv).await?;
        if let Some(queue) = draining(&duplicates) {
            return Err(StoreError::Draining(queue));
        }
        // Only duplicates are listed, with the earlier task's id.
        let listed = expand_positions("submit", tasks.len(), None, &duplicates, |_, id| {
            Ok(Some(id.to_string()))
        })?;
        Ok(timed
            .iter()
            .zip(listed)
            .map(|((t, at), prior)| match prior {
                Some(id) => SubmitReply {
                    id,
                    status: SubmitStatus::Duplicate,
                },
                None => SubmitReply {
                    id: t.id.to_string(),
                    status: if *at == 0 {
                        SubmitStatus::Queued
                    } else {
                        SubmitStatus::Scheduled
                    },
                },
            })
            .collect())
    }

    /// Puts queued tasks into their ready lists (see `lua/requeue.lua`);
    /// each task carries the version it was read at. Returns how many were
    /// queued.
    pub async fn requeue(&self, tasks: &[(String, u64)]) -> Result<u64> {
        let mut queued = 0;
        for chunk in tasks.chunks(SCRIPT_BATCH) {
            let mut inv = self.scripts.requeue.prepare_invoke();
            inv.arg(self.keys.prefix());
            for (id, v) in chunk {
                inv.arg(id).arg(v);
            }
            let statuses = self.call_each("requeue", &inv, chunk.len(), Announced::parse).await?;
            queued += statuses.iter().filter(|s| **s == Announced::Queued).count() as u64;
        }
        Ok(queued)
    }

    /// Writes tasks read from a snapshot (see `lua/restore.lua`); returns
    /// (id, outcome) per task.
    pub async fn restore(&self, tasks: &[(String, HashMap<String, String>)]) -> Result<Vec<(String, RestoreOutcome)>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.restore.prepare_invoke();
        inv.key(self.keys.scheduled())
            .key(self.keys.counts())
            .arg(self.keys.prefix())
            .arg(self.opts.result_ttl.as_millis() as u64)
            .arg(if self.opts.index_succeeded { "1" } else { "0" });
        for (id, fields) in tasks {
            inv.arg(id)
                .arg(serde_json::to_string(fields).expect("string maps serialize"));
        }
        let v = self.call("restore", &inv).await?;
        id_pairs("restore", &v, RestoreOutcome::parse)
    }
}

/// The queue named in submit.lua's refusal `{ 0, 'draining:<queue>' }`
/// (a duplicate's position is never 0).
fn draining(reply: &[String]) -> Option<String> {
    match reply {
        [zero, word] if zero == "0" => word.strip_prefix("draining:").map(str::to_string),
        _ => None,
    }
}
