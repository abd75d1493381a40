//! Reads of tasks: one task, pages of tasks, the snapshot scan, counts.

use super::decode::task_view;
use super::pool::Con;
use super::{Result, Store};
use crate::task::{TaskId, TaskState, TaskView};
use redis::AsyncCommands;
use std::collections::HashMap;

impl Store {
    pub async fn get_task(&self, id: &TaskId) -> Result<Option<TaskView>> {
        let mut con = self.con().await?;
        let map: HashMap<String, String> = con.hgetall(self.keys.task(id.as_str())).await?;
        let holders = self.holders(&mut con, std::slice::from_ref(&map)).await?;
        Ok(task_view(id.as_str(), &map, holders.into_iter().next().flatten()))
    }

    /// The worker holding each running task of `tasks` (their hashes), from
    /// its batch record; None for the others. One pipelined read.
    async fn holders(&self, con: &mut Con, tasks: &[HashMap<String, String>]) -> Result<Vec<Option<String>>> {
        fn batch_of(m: &HashMap<String, String>) -> Option<&String> {
            m.get("b").filter(|_| m.get("state").is_some_and(|s| s == "running"))
        }
        let mut pipe = redis::pipe();
        for b in tasks.iter().filter_map(batch_of) {
            pipe.cmd("HGET").arg(self.keys.batch(b)).arg("w");
        }
        let found: Vec<Option<String>> = if pipe.cmd_iter().next().is_none() {
            Vec::new()
        } else {
            pipe.query_async(con).await?
        };
        let mut found = found.into_iter();
        Ok(tasks
            .iter()
            .map(|m| batch_of(m).and_then(|_| found.next().flatten()))
            .collect())
    }

    /// One page of tasks, optionally in one state. The cursor is Redis'
    /// SCAN cursor ("0" starts and ends), so a page may hold fewer than
    /// `limit` tasks while more remain.
    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        cursor: &str,
        limit: usize,
    ) -> Result<(Vec<TaskView>, String)> {
        let mut con = self.con().await?;
        let mut cursor = cursor.to_string();
        let mut out = Vec::new();
        let prefix_len = self.keys.task("").len();
        // Keep scanning until the page has something or the scan ends, but
        // bound the work done for one request.
        for _ in 0..20 {
            let (next, keys) = self.scan_task_keys(&mut con, &cursor, limit.max(10)).await?;
            let maps = Self::hashes(&mut con, &keys).await?;
            let holders = self.holders(&mut con, &maps).await?;
            for ((k, map), holder) in keys.iter().zip(&maps).zip(holders) {
                if let Some(view) = task_view(&k[prefix_len..], map, holder) {
                    if state.is_none_or(|s| s == view.state) {
                        out.push(view);
                    }
                }
            }
            cursor = next;
            if !out.is_empty() || cursor == "0" {
                break;
            }
        }
        Ok((out, cursor))
    }

    /// One SCAN step over task records, with every field: for snapshots.
    pub async fn scan_tasks(
        &self,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<(String, HashMap<String, String>)>)> {
        let mut con = self.con().await?;
        let (next, keys) = self.scan_task_keys(&mut con, cursor, count).await?;
        if keys.is_empty() {
            return Ok((next, Vec::new()));
        }
        let maps = Self::hashes(&mut con, &keys).await?;
        let prefix_len = self.keys.task("").len();
        Ok((
            next,
            keys.iter()
                .zip(maps)
                .filter(|(_, m)| m.contains_key("state"))
                .map(|(k, m)| (k[prefix_len..].to_string(), m))
                .collect(),
        ))
    }

    /// Whether the namespace holds any task record. SCAN steps until one
    /// is found or the whole keyspace has been walked: in a Redis shared
    /// with other keys one step can come back empty while tasks remain.
    pub async fn holds_any_task(&self) -> Result<bool> {
        let mut con = self.con().await?;
        let mut cursor = "0".to_string();
        loop {
            let (next, keys) = self.scan_task_keys(&mut con, &cursor, 1000).await?;
            if !keys.is_empty() {
                return Ok(true);
            }
            if next == "0" {
                return Ok(false);
            }
            cursor = next;
        }
    }

    /// Every field of each hash of `keys`, in one pipeline.
    async fn hashes(con: &mut Con, keys: &[String]) -> Result<Vec<HashMap<String, String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HGETALL").arg(k);
        }
        Ok(pipe.query_async(con).await?)
    }

    /// One SCAN step over task hashes: the next cursor and the keys found.
    pub(super) async fn scan_task_keys(
        &self,
        con: &mut Con,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<String>)> {
        Ok(redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(self.keys.task_pattern())
            .arg("COUNT")
            .arg(count)
            .query_async(con)
            .await?)
    }

    /// Backlog per live state.
    pub async fn counts(&self) -> Result<HashMap<String, i64>> {
        let mut con = self.con().await?;
        Ok(con.hgetall(self.keys.counts()).await?)
    }
}
