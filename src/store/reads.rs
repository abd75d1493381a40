//! Reads of tasks: one task, pages of tasks (from the queues' indexes and
//! the scheduled set, or a scan), the snapshot scan, counts.

use super::decode::task_view;
use super::pool::Con;
use super::{Result, Store, StoreError};
use crate::names::QueueName;
use crate::task::{TaskId, TaskState, TaskView};
use redis::{AsyncCommands, Value};
use std::collections::HashMap;
use std::fmt;

/// Where a page of an index ended: the last member's score (ms) and id.
/// Members sort by (score, id), so the next page starts right after it,
/// wherever members were added or removed meanwhile. Written `<ms>-<id>`.
/// A cursor of digits only, `<ms>`, starts after every member of that
/// score or lower ("finished after this time").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub score: u64,
    /// Only a position: any id-shaped text (base-62, or an earlier
    /// release's UUID) is one, whether or not such a task exists.
    pub id: Option<String>,
}

impl PageCursor {
    pub fn parse(s: &str) -> Option<Self> {
        let digits = |t: &str, max: usize| !t.is_empty() && t.len() <= max && t.bytes().all(|b| b.is_ascii_digit());
        let id_like =
            |t: &str| (1..=36).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        match s.split_once('-') {
            None if digits(s, 19) => Some(PageCursor {
                score: s.parse().ok()?,
                id: None,
            }),
            Some((score, id)) if digits(score, 16) && id_like(id) => Some(PageCursor {
                score: score.parse().ok()?,
                id: Some(id.to_string()),
            }),
            _ => None,
        }
    }
}

impl fmt::Display for PageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}-{id}", self.score),
            None => write!(f, "{}", self.score),
        }
    }
}

/// One page read from indexes: the tasks, and where the next page starts
/// (None at the end).
#[derive(Debug)]
pub struct Page {
    pub tasks: Vec<TaskView>,
    pub next: Option<PageCursor>,
}

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

    /// One page of the tasks finished in `state` (succeeded, dead or
    /// cancelled), oldest first, of one queue or of every queue merged
    /// (see `lua/page.lua`).
    pub async fn finished_page(
        &self,
        queue: Option<&QueueName>,
        state: TaskState,
        after: Option<&PageCursor>,
        limit: usize,
    ) -> Result<Page> {
        let queues = match queue {
            Some(q) => vec![q.clone()],
            None => self.queue_names().await?,
        };
        let keys: Vec<String> = queues
            .iter()
            .map(|q| self.keys.index(q.as_str(), state.as_str()))
            .collect();
        self.page(&keys, None, after, limit).await
    }

    /// One page of the scheduled tasks, soonest first, optionally of one
    /// queue only (see `lua/page.lua`).
    pub async fn scheduled_page(
        &self,
        queue: Option<&QueueName>,
        after: Option<&PageCursor>,
        limit: usize,
    ) -> Result<Page> {
        self.page(&[self.keys.scheduled()], queue, after, limit).await
    }

    async fn page(
        &self,
        sets: &[String],
        queue: Option<&QueueName>,
        after: Option<&PageCursor>,
        limit: usize,
    ) -> Result<Page> {
        if sets.is_empty() {
            return Ok(Page {
                tasks: Vec::new(),
                next: None,
            });
        }
        let mut inv = self.scripts.page.prepare_invoke();
        for key in sets {
            inv.key(key);
        }
        inv.arg(self.keys.prefix())
            .arg(after.map(|c| c.score.to_string()).unwrap_or_default())
            .arg(after.and_then(|c| c.id.clone()).unwrap_or_default())
            .arg(limit)
            .arg(queue.map(QueueName::as_str).unwrap_or(""));
        let reply = self.call_raw("page", &inv).await?;
        decode_page(reply)
    }

    /// One page of tasks, optionally in one state and queue. The cursor is Redis'
    /// SCAN cursor ("0" starts and ends), so a page may hold fewer than
    /// `limit` tasks while more remain.
    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        queue: Option<&QueueName>,
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
                    if state.is_none_or(|s| s == view.state) && queue.is_none_or(|q| view.queue == q.as_str()) {
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

/// page.lua's reply: the next cursor, then (id, fields) per task.
fn decode_page(reply: Value) -> Result<Page> {
    let bad = |detail: String| StoreError::Reply { script: "page", detail };
    let Value::Array(items) = reply else {
        return Err(bad(format!("not an array: {reply:?}")));
    };
    let mut items = items.into_iter();
    let mut text = |what: &str| -> Result<String> {
        let v = items.next().ok_or_else(|| bad(format!("no {what}")))?;
        redis::from_redis_value::<String>(v).map_err(|e| bad(e.to_string()))
    };
    let (score, id) = (text("cursor score")?, text("cursor id")?);
    let next = if score.is_empty() {
        None
    } else {
        Some(PageCursor::parse(&format!("{score}-{id}")).ok_or_else(|| bad(format!("cursor {score}-{id}")))?)
    };
    let rest: Vec<Value> = items.collect();
    let mut tasks = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        let [id, fields] = pair else {
            return Err(bad("an id without its fields".into()));
        };
        let id: String = redis::from_redis_value(id.clone()).map_err(|e| bad(e.to_string()))?;
        let fields: HashMap<String, String> =
            redis::from_redis_value(fields.clone()).map_err(|e| bad(e.to_string()))?;
        if let Some(view) = task_view(&id, &fields, None) {
            tasks.push(view);
        }
    }
    Ok(Page { tasks, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_cursors_read_back_as_written_and_refuse_other_text() {
        let id = TaskId::generate();
        let c = PageCursor::parse(&format!("1733580000000-{id}")).unwrap();
        assert_eq!((c.score, c.id.as_deref()), (1_733_580_000_000, Some(id.as_str())));
        assert_eq!(PageCursor::parse(&c.to_string()), Some(c));
        // A canonical UUID (earlier releases' ids) holds dashes of its own.
        let uuid = "0193a0a0-0000-7000-8000-000000000000";
        assert_eq!(
            PageCursor::parse(&format!("5-{uuid}")).unwrap().id.as_deref(),
            Some(uuid)
        );
        let after = PageCursor::parse("42").unwrap();
        assert_eq!((after.score, after.id.as_deref()), (42, None));
        assert_eq!(after.to_string(), "42");
        for bad in [
            "",
            "-x",
            "5-",
            "a-b",
            "12345678901234567-x",
            "5-t:*",
            "5-{x}",
            "12345678901234567890",
        ] {
            assert_eq!(PageCursor::parse(bad), None, "{bad:?}");
        }
    }
}
