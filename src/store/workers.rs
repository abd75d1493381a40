//! Workers' presence: written by each worker's heartbeat, read by the
//! distributors and the API.

use super::decode::{num, string_list};
use super::{Result, Store};
use crate::names::QueueWeight;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::time::Duration;

/// A worker as its heartbeats describe it. The API serves it as
/// `api::WorkerBody`, its own type.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub id: String,
    pub handlers: Vec<String>,
    pub tags: Vec<String>,
    /// The queues it takes tasks from, weighted; empty: every queue.
    pub queues: Vec<QueueWeight>,
    pub capacity: u32,
    /// Slots held by tasks assigned or running (the assign script's credit).
    pub used: u32,
    pub in_flight: u32,
    pub draining: bool,
    pub last_heartbeat_ms: u64,
    pub version: String,
}

/// What a worker announces in each heartbeat.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub worker_id: &'a str,
    pub capacity: u32,
    pub handlers: &'a [String],
    pub tags: &'a [String],
    /// The queues it takes tasks from; empty: every queue.
    pub queues: &'a [QueueWeight],
    pub in_flight: u32,
    pub draining: bool,
}

impl Store {
    pub async fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<()> {
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(self.keys.worker(hb.worker_id))
            .key(self.keys.workers())
            .key(self.keys.handlers())
            .arg(hb.worker_id)
            .arg(hb.capacity)
            .arg(serde_json::to_string(hb.handlers).expect("strings serialize"))
            .arg(serde_json::to_string(hb.tags).expect("strings serialize"))
            .arg(hb.in_flight)
            .arg(if hb.draining { 1 } else { 0 })
            .arg(env!("CARGO_PKG_VERSION"))
            .arg(
                hb.queues
                    .iter()
                    .map(QueueWeight::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        Self::int("heartbeat", self.call_raw("heartbeat", &inv).await?)?;
        Ok(())
    }

    /// Workers heard from within `ttl`.
    pub async fn workers(&self, ttl: Duration) -> Result<Vec<WorkerView>> {
        let mut con = self.con().await?;
        let since = self.clock.now_ms().saturating_sub(ttl.as_millis() as u64);
        let ids: Vec<String> = con.zrangebyscore(self.keys.workers(), since, "+inf").await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.worker(id));
        }
        let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await?;
        Ok(ids
            .into_iter()
            .zip(maps)
            .filter(|(_, m)| m.contains_key("cap"))
            .map(|(id, m)| WorkerView {
                id,
                handlers: string_list(m.get("handlers")),
                tags: string_list(m.get("tags")),
                queues: m
                    .get("queues")
                    .map(|q| q.split(',').filter_map(|w| QueueWeight::parse(w).ok()).collect())
                    .unwrap_or_default(),
                capacity: num(m.get("cap")),
                used: num(m.get("used")),
                in_flight: num(m.get("inflight")),
                draining: m.get("draining").is_some_and(|d| d == "1"),
                last_heartbeat_ms: num(m.get("hb")),
                version: m.get("version").cloned().unwrap_or_default(),
            })
            .collect())
    }

    /// Handler names workers have offered, with when each was last offered.
    pub async fn known_handlers(&self) -> Result<HashMap<String, u64>> {
        let mut con = self.con().await?;
        Ok(con.hgetall(self.keys.handlers()).await?)
    }
}
