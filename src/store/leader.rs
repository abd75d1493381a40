//! The leader's duties besides the reaper (`reap`): taking the leader
//! lease, promoting due tasks (lua/promote.lua), the expiry sweep
//! (lua/expire.lua), the reconciler, and forgetting silent workers
//! (lua/forget_workers.lua) and idle stream consumers.

use super::decode::{QueuedSince, Row, TaskRow};
use super::outcomes::Announced;
use super::pool::Con;
use super::{Result, Store};
use crate::messages::{self, IntakeBody, IntakeTask};
use crate::task::TaskState;
use redis::Value;
use std::collections::HashMap;
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
        let intake = self.keys.intake();
        let tasks: Vec<IntakeTask> = ids
            .iter()
            .zip(&rows)
            .map(|(id, row)| row.intake(id, row.version + 1))
            .collect();
        let mut inv = self.scripts.promote.prepare_invoke();
        inv.key(self.keys.scheduled())
            .key(self.keys.counts())
            .key(&intake)
            .arg(self.keys.prefix())
            .arg(self.seal(&intake, messages::SUBMIT, &IntakeBody { tasks: tasks.clone() }));
        for t in &tasks {
            inv.arg(&t.id).arg(t.v - 1);
        }
        let statuses = self.call_each("promote", &inv, tasks.len(), Announced::parse).await?;
        Ok(self.count_announced(&statuses, &tasks, "promoted to queued"))
    }

    /// One step of the reconciler: scans up to `count` task keys from
    /// `cursor` and announces again every task that has been queued for
    /// longer than `grace` while its intake entry is gone (lost with a Redis
    /// restart, or refused as expired and trimmed). Returns the next cursor
    /// ("0" when a sweep is complete) and how many tasks were announced.
    pub async fn reconcile(&self, cursor: &str, count: usize, grace: Duration) -> Result<(String, u64)> {
        let mut con = self.con().await?;
        let (next, keys) = self.scan_task_keys(&mut con, cursor, count).await?;
        if keys.is_empty() {
            return Ok((next, 0));
        }
        // Most keys are not queued: read only what decides that first, and
        // the fields to announce a task with only for the rare orphan.
        let rows: Vec<QueuedSince> = self.rows(&mut con, "reconcile", &keys).await?;
        let cutoff = self.clock.now_ms().saturating_sub(grace.as_millis() as u64);
        let candidates: Vec<(&String, String)> = keys
            .iter()
            .zip(rows)
            .filter(|(_, r)| r.state.as_deref() == Some(TaskState::Queued.as_str()))
            .filter(|(_, r)| r.changed_ms.is_some_and(|u| u < cutoff))
            .map(|(k, r)| (k, r.entry))
            .collect();
        if candidates.is_empty() {
            return Ok((next, 0));
        }
        let intake = self.keys.intake();
        let mut pipe = redis::pipe();
        for (_, ent) in &candidates {
            // An id that is not a stream id ('' for a task never announced)
            // matches nothing; XRANGE would refuse it, so ask for "0-0".
            let ent = if ent.contains('-') { ent.as_str() } else { "0-0" };
            pipe.cmd("XRANGE").arg(&intake).arg(ent).arg(ent).arg("COUNT").arg(1);
        }
        let found: Vec<Value> = pipe.query_async(&mut con).await?;
        let orphan_keys: Vec<String> = candidates
            .into_iter()
            .zip(found)
            .filter(|(_, v)| matches!(v, Value::Array(a) if a.is_empty()))
            .map(|((k, _), _)| k.clone())
            .collect();
        if orphan_keys.is_empty() {
            return Ok((next, 0));
        }
        let rows: Vec<TaskRow> = self.rows(&mut con, "reconcile", &orphan_keys).await?;
        let prefix_len = self.keys.task("").len();
        // reannounce.lua checks the version read here: a task that moved on
        // since the first read is left alone.
        let orphans: Vec<IntakeTask> = orphan_keys
            .iter()
            .zip(rows)
            .map(|(k, row)| row.intake(&k[prefix_len..], row.version))
            .collect();
        drop(con);
        let n = self.reannounce(&orphans).await?;
        if n > 0 {
            tracing::warn!(
                tasks = n,
                "reconciler: queued tasks had lost their intake entry; announced them again"
            );
        }
        Ok((next, n))
    }

    /// Removes consumers of `group` that hold nothing and have been idle for
    /// `idle` (e.g. distributors that were restarted under a new id).
    pub async fn forget_idle_consumers(&self, stream: &str, group: &str, idle: Duration) -> Result<u64> {
        let mut con = self.con().await?;
        let info: redis::RedisResult<Vec<HashMap<String, Value>>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .query_async(&mut con)
            .await;
        let Ok(consumers) = info else { return Ok(0) };
        let mut n = 0;
        for c in consumers {
            let field = |k: &str| {
                c.get(k)
                    .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                    .unwrap_or(0)
            };
            let name = c
                .get("name")
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
            if let Some(name) = name {
                if field("pending") == 0 && field("idle") as u128 >= idle.as_millis() {
                    let _: i64 = redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(stream)
                        .arg(group)
                        .arg(&name)
                        .query_async(&mut con)
                        .await?;
                    n += 1;
                }
            }
        }
        Ok(n)
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
