//! Cancel (lua/cancel.lua): a queued or scheduled task ends at once; a
//! running one is asked to stop through its worker's stream, and ends when
//! the worker reports it (or its lease runs out).

use super::decode::{Row, TaskRow};
use super::{Result, Store, StoreError};
use crate::messages::{self, CancelBody, EventBody};
use crate::task::{FenceToken, TaskId, TaskState};
use crate::telemetry::catalog;
use redis::AsyncCommands;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    Requested,
    AlreadyFinished(TaskState),
    Missing,
}

/// How many times a cancel reads the task again when it moved under it.
const CANCEL_TRIES: usize = 10;

impl Store {
    /// Cancels a task; a running one is asked to stop through its worker's
    /// stream. Retries a few times when the task moves under it.
    pub async fn cancel(&self, id: &TaskId) -> Result<CancelOutcome> {
        for _ in 0..CANCEL_TRIES {
            match self.try_cancel(id).await? {
                Some(outcome) => return Ok(outcome),
                None => metrics::counter!(catalog::STATE_CONFLICTS.name, "op" => "cancel").increment(1),
            }
        }
        Err(StoreError::Reply {
            script: "cancel",
            detail: "the task kept changing; try again".into(),
        })
    }

    /// One read of the task and one cancel.lua call at the version read;
    /// None when the task moved in between.
    async fn try_cancel(&self, id: &TaskId) -> Result<Option<CancelOutcome>> {
        let mut con = self.con().await?;
        let v = redis::cmd("HMGET")
            .arg(self.keys.task(id.as_str()))
            .arg(TaskRow::FIELDS)
            .query_async(&mut con)
            .await?;
        let task = TaskRow::decode("cancel", v)?;
        if task.state.is_none() {
            return Ok(Some(CancelOutcome::Missing));
        }
        // A running task's worker is the one its batch record names.
        let running = task.batch.as_deref().filter(|_| task.is(TaskState::Running));
        let token = running.and_then(FenceToken::parse);
        let worker: String = match (running, token) {
            (Some(b), Some(_)) => con
                .hget::<_, _, Option<String>>(self.keys.batch(b), "w")
                .await?
                .unwrap_or_default(),
            _ => String::new(),
        };
        drop(con);
        let control = match token {
            Some(token) if !worker.is_empty() => {
                let body = CancelBody {
                    id: id.to_string(),
                    epoch: token.epoch,
                    fence: token.fence,
                };
                self.seal(&self.keys.worker_stream(&worker), messages::CANCEL, &body)
            }
            _ => Vec::new(),
        };
        let events = self.keys.events();
        let event = EventBody {
            ids: vec![id.to_string()],
        };
        let mut inv = self.scripts.cancel.prepare_invoke();
        inv.key(self.keys.scheduled())
            .key(self.keys.counts())
            .key(&events)
            .arg(self.keys.prefix())
            .arg(id.as_str())
            .arg(task.version)
            .arg(self.seal(&events, messages::EVENT, &event))
            .arg(self.opts.events_maxlen)
            .arg(&worker)
            .arg(control);
        let reply = self.call("cancel", &inv).await?;
        // Reply: the outcome, then the task's state (lua/cancel.lua).
        let outcome = match reply.first().map(String::as_str) {
            Some("cancelled") => {
                Self::sent("events");
                CancelOutcome::Cancelled
            }
            Some("requested") => {
                Self::sent("worker");
                CancelOutcome::Requested
            }
            Some("missing") => CancelOutcome::Missing,
            Some("terminal") => {
                let state = reply.get(1).and_then(|s| TaskState::parse(s));
                CancelOutcome::AlreadyFinished(state.unwrap_or(TaskState::Cancelled))
            }
            Some("conflict") => return Ok(None),
            other => {
                return Err(StoreError::Reply {
                    script: "cancel",
                    detail: format!("unknown outcome {other:?}"),
                })
            }
        };
        Ok(Some(outcome))
    }
}
