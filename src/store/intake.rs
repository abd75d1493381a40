//! Intake: writing tasks and announcing them on the intake stream —
//! `submit` (new tasks), `reannounce` (queued tasks whose entry is gone or
//! old) and `restore` (tasks from a snapshot).

use super::decode::{num, string_list, submitted_intake};
use super::outcomes::{expand_positions, id_pairs, Announced, RestoreOutcome, SubmitReply, SubmitStatus};
use super::{Result, Store};
use crate::messages::{self, IntakeBody, IntakeTask};
use crate::task::NewTask;
use std::collections::HashMap;

/// Most tasks one script call handles where the caller's list can be long
/// (re-announcements): keeps scripts short and envelopes small.
const SCRIPT_BATCH: usize = 500;

impl Store {
    /// Writes new tasks and announces the immediate ones on the intake
    /// stream, in one script. Returns how each task was taken, in order;
    /// a duplicate names the earlier task.
    pub async fn submit(&self, tasks: &[NewTask]) -> Result<Vec<SubmitReply>> {
        // Each task's run_at as the script takes it: 0 to queue now.
        let now = self.clock.now_ms();
        let timed: Vec<(&NewTask, u64)> = tasks
            .iter()
            .map(|t| (t, t.run_at_ms.filter(|at| *at > now).unwrap_or(0)))
            .collect();
        let intake = self.keys.intake();
        let immediate: Vec<IntakeTask> = timed
            .iter()
            .filter(|(_, at)| *at == 0)
            .map(|(t, _)| submitted_intake(t))
            .collect();
        let envelope = self.seal_intake(immediate);
        let announces = !envelope.is_empty();
        let mut inv = self.scripts.submit.prepare_invoke();
        inv.key(&intake)
            .key(self.keys.scheduled())
            .key(self.keys.counts())
            .arg(self.keys.prefix())
            .arg(envelope)
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
        if announces {
            Self::sent("intake");
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

    /// Announces queued tasks again (see `lua/reannounce.lua`); each task
    /// carries its current version. Returns how many were announced.
    pub async fn reannounce(&self, tasks: &[IntakeTask]) -> Result<u64> {
        let mut announced = 0;
        // Bounded scripts and envelopes: a huge batch would block Redis and
        // exceed the message size limit.
        for chunk in tasks.chunks(SCRIPT_BATCH) {
            announced += self.reannounce_batch(chunk).await?;
        }
        Ok(announced)
    }

    async fn reannounce_batch(&self, tasks: &[IntakeTask]) -> Result<u64> {
        let intake = self.keys.intake();
        let next: Vec<IntakeTask> = tasks
            .iter()
            .map(|t| IntakeTask {
                v: t.v + 1,
                ..t.clone()
            })
            .collect();
        let mut inv = self.scripts.reannounce.prepare_invoke();
        inv.key(&intake)
            .arg(self.keys.prefix())
            .arg(self.seal(&intake, messages::SUBMIT, &IntakeBody { tasks: next }));
        for t in tasks {
            inv.arg(&t.id).arg(t.v);
        }
        let statuses = self
            .call_each("reannounce", &inv, tasks.len(), Announced::parse)
            .await?;
        Ok(self.count_announced(&statuses, tasks, "announced again on the intake stream"))
    }

    /// Writes tasks read from a snapshot (see `lua/restore.lua`); returns
    /// (id, outcome) per task.
    pub async fn restore(&self, tasks: &[(String, HashMap<String, String>)]) -> Result<Vec<(String, RestoreOutcome)>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let intake = self.keys.intake();
        let runnable: Vec<IntakeTask> = tasks
            .iter()
            .filter(|(_, f)| {
                matches!(
                    f.get("state").map(String::as_str),
                    Some("queued" | "assigned" | "running")
                )
            })
            .map(|(id, f)| IntakeTask {
                id: id.clone(),
                v: num::<u64>(f.get("v")) + 1,
                h: f.get("h").cloned().unwrap_or_default(),
                tags: string_list(f.get("tags")),
                prio: num(f.get("prio")),
            })
            .collect();
        let envelope = self.seal_intake(runnable);
        let mut inv = self.scripts.restore.prepare_invoke();
        inv.key(&intake)
            .key(self.keys.scheduled())
            .key(self.keys.counts())
            .arg(self.keys.prefix())
            .arg(self.opts.result_ttl.as_millis() as u64)
            .arg(if self.opts.index_succeeded { "1" } else { "0" })
            .arg(envelope);
        for (id, fields) in tasks {
            inv.arg(id)
                .arg(serde_json::to_string(fields).expect("string maps serialize"));
        }
        let v = self.call("restore", &inv).await?;
        let outcomes = id_pairs("restore", &v, RestoreOutcome::parse)?;
        if outcomes.iter().any(|(_, o)| *o == RestoreOutcome::Queued) {
            Self::sent("intake");
        }
        Ok(outcomes)
    }
}
