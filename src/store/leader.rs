//! The leader's duties besides the reaper (`reap`): taking the leader
//! lease, promoting due tasks (lua/promote.lua), the expiry sweep
//! (lua/expire.lua), the reconciler, and forgetting silent workers
//! (lua/forget_workers.lua) and idle stream consumers.

use super::decode::{QueuedUnlisted, Row, TaskRow};
use super::outcomes::Announced;
use super::pool::Con;
use super::{Result, Store};
use crate::task::TaskState;
use redis::AsyncCommands;
use redis::Value;
use std::time::Duration;

impl Store {
    /// Takes or keeps the leader lease (`ttl` zero gives it up).
    pub async fn lead(&self, candidate: &str, ttl: Duration) -> Result<bool> {
        let mut inv = self.scripts.leader.prepare_invoke();
        inv.key(self.keys.leader()).arg(candidate).arg(ttl.as_millis() as u64);
        Ok(Self::int("leader", self.call_raw("leader", &inv).await?)? == 1)
    }

    /// Up to `limit` members of a sorted set whose score (a time, ms of
    /// Redis time) has passed, by the leader's estimate of Redis time.
    pub(super) async fn due_members(&self, con: &mut Con, zset: &str, limit: usize) -> Result<Vec<String>> {
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(zset)
            .arg("-inf")
            .arg(self.clock.now_ms())
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(con)
            .await?)
    }

    /// A row of each hash of `keys`, in one pipeline.
    pub(super) async fn rows<R: Row>(&self, con: &mut Con, op: &'static str, keys: &[String]) -> Result<Vec<R>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HMGET").arg(k).arg(R::FIELDS);
        }
        let replies: Vec<Value> = pipe.query_async(con).await?;
        replies.into_iter().map(|v| R::decode(op, v)).collect()
    }

    /// A [`TaskRow`] of each task of `ids`, in one pipeline.
    pub(super) async fn task_rows(&self, con: &mut Con, op: &'static str, ids: &[String]) -> Result<Vec<TaskRow>> {
        let keys: Vec<String> = ids.iter().map(|id| self.keys.task(id)).collect();
        self.rows(con, op, &keys).await
    }

    /// Deletes finished tasks whose result TTL has passed, at most `limit`
    /// (lua/expire.lua); returns how many.
    pub async fn expire_finished(&self, limit: usize) -> Result<u64> {
        let mut inv = self.scripts.expire.prepare_invoke();
        inv.key(self.keys.queues())
            .key(self.keys.done())
            .key(self.keys.expiring())
            .arg(self.keys.prefix())
            .arg(limit)
            .arg(self.opts.result_ttl.as_millis() as u64);
        let v = self.call_raw("expire", &inv).await?;
        Self::int("expire", v).map(|n| n.max(0) as u64)
    }

    /// Queues delayed tasks and retries whose time has come; returns how many.
    pub async fn promote(&self, limit: usize) -> Result<u64> {
        let mut con = self.con().await?;
        let ids = self.due_members(&mut con, &self.keys.scheduled(), limit).await?;
        let rows = self.task_rows(&mut con, "promote", &ids).await?;
        drop(con);
        if ids.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts.promote.prepare_invoke();
        inv.key(self.keys.scheduled())
            .key(self.keys.counts())
            .arg(self.keys.prefix());
        for (id, row) in ids.iter().zip(&rows) {
            inv.arg(id).arg(row.version);
        }
        let statuses = self.call_each("promote", &inv, ids.len(), Announced::parse).await?;
        Ok(self.count_queued(&statuses, &ids, "promoted to queued"))
    }

    /// One step of the reconciler: scans up to `count` task keys from
    /// `cursor` and puts into its ready list every queued task that still
    /// carries an intake entry (`ent`): one written by a build whose
    /// backlog was the intake stream, which no ready list holds. Returns
    /// the next cursor ("0" when a sweep is complete) and how many tasks
    /// were queued. (A task queued by this build is in its list from the
    /// script that queued it; nothing else removes it there.)
    pub async fn reconcile(&self, cursor: &str, count: usize) -> Result<(String, u64)> {
        let mut con = self.con().await?;
        let (next, keys) = self.scan_task_keys(&mut con, cursor, count).await?;
        if keys.is_empty() {
            return Ok((next, 0));
        }
        let rows: Vec<QueuedUnlisted> = self.rows(&mut con, "reconcile", &keys).await?;
        drop(con);
        let prefix_len = self.keys.task("").len();
        // requeue.lua checks the version read here: a task that moved on
        // since is left alone.
        let unlisted: Vec<(String, u64)> = keys
            .iter()
            .zip(rows)
            .filter(|(_, r)| r.state.as_deref() == Some(TaskState::Queued.as_str()) && r.entry.is_some())
            .map(|(k, r)| (k[prefix_len..].to_string(), r.version))
            .collect();
        if unlisted.is_empty() {
            return Ok((next, 0));
        }
        let n = self.requeue(&unlisted).await?;
        if n > 0 {
            tracing::info!(
                tasks = n,
                "reconciler: queued tasks from the intake stream's backlog moved into their ready lists"
            );
        }
        Ok((next, n))
    }

    /// Deletes the intake stream of an earlier build, whose backlog it
    /// was. Called once a whole reconciler pass found no queued task that
    /// still names one of its entries: nothing reads it any more.
    pub async fn retire_intake(&self) -> Result<()> {
        let mut con = self.con().await?;
        let gone: i64 = con.unlink(self.keys.intake()).await?;
        if gone > 0 {
            tracing::info!("deleted the intake stream of an earlier build: every task it held is in a ready list");
        }
        Ok(())
    }

    pub async fn forget_workers(&self, silent_for: Duration) -> Result<Vec<String>> {
        let mut inv = self.scripts.forget_workers.prepare_invoke();
        inv.key(self.keys.workers())
            .key(self.keys.handlers())
            .arg(self.keys.prefix())
            .arg(silent_for.as_millis() as u64);
        self.call("forget_workers", &inv).await
    }
}
