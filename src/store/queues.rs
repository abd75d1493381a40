//! A queue as an operator sees it: which queues exist, the live counts and
//! settings in `P q:<queue>:meta` (queued and running tasks, paused,
//! draining, the concurrency limit and the token bucket's rate), the age of
//! its oldest queued task, its finished tasks per state, and the changes an
//! operator makes: pause, resume, drain and limits (lua/control.lua).
//! assign.lua obeys the settings on its next call, on every distributor.

use super::operator::FINISHED;
use super::{Result, Store, StoreError};
use crate::names::QueueName;
use crate::units::Rate;
use redis::AsyncCommands;
use std::time::Duration;

/// A queue's limits. `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueLimits {
    /// Most of its tasks running at once, over every worker.
    pub concurrency: Option<u32>,
    /// Most of its tasks started per period: a token bucket refilled at
    /// this rate, holding at most `burst` tokens.
    pub rate: Option<Rate>,
    /// The bucket's size: how many may start at once after a quiet spell.
    /// Defaults to the rate's count (`100/s` lets 100 start at once).
    pub burst: Option<u32>,
}

impl QueueLimits {
    /// The bucket size in force: the given burst, else the rate's count.
    pub fn burst_or_default(&self) -> Option<u64> {
        self.rate.map(|r| self.burst.map_or(r.count, u64::from))
    }
}

/// A change an operator makes to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueChange {
    /// Nothing more starts; queued tasks stay queued.
    Pause,
    /// Tasks start again, and new ones are accepted again after a drain.
    Resume,
    /// New submissions are refused; the queued ones still run.
    Drain,
    /// The limits become exactly these (an unset one is removed).
    Limits(QueueLimits),
}

/// One queue's live state and settings.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    pub name: QueueName,
    pub queued: u64,
    pub running: u64,
    pub paused: bool,
    pub draining: bool,
    pub limits: QueueLimits,
    /// How long its oldest queued task has waited, if it has one.
    pub oldest_queued: Option<Duration>,
    /// Finished tasks whose results are kept, in the order of
    /// [`FINISHED`] (succeeded counted only when indexed).
    pub finished: [u64; 3],
}

/// A queue's counts alone, read in bulk for many queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: u64,
    pub running: u64,
    pub dead: u64,
    pub cancelled: u64,
}

/// The fields of `P q:<queue>:meta` a [`QueueState`] reads, in order.
/// `rt` is the rate as the operator wrote it (assign.lua reads `rate`,
/// tokens a second).
const META_FIELDS: [&str; 7] = ["queued", "run", "paused", "draining", "conc", "rt", "burst"];

impl Store {
    /// Every queue that has had a task, by name.
    pub async fn queue_names(&self) -> Result<Vec<QueueName>> {
        let mut con = self.con().await?;
        let names: Vec<String> = con.smembers(self.keys.queues()).await?;
        let mut names: Vec<QueueName> = names.iter().filter_map(|n| QueueName::parse(n).ok()).collect();
        names.sort();
        Ok(names)
    }

    /// Whether `queue` has had a task.
    pub async fn queue_exists(&self, queue: &QueueName) -> Result<bool> {
        let mut con = self.con().await?;
        Ok(con.sismember(self.keys.queues(), queue.as_str()).await?)
    }

    /// How many finished tasks `queue` holds in each finished state, in
    /// the order of [`FINISHED`].
    pub async fn finished_counts(&self, queue: &QueueName) -> Result<[u64; 3]> {
        let mut pipe = redis::pipe();
        for state in FINISHED {
            pipe.zcard(self.keys.index(queue.as_str(), state.as_str()));
        }
        let mut con = self.con().await?;
        let n: Vec<u64> = pipe.query_async(&mut con).await?;
        Ok([n[0], n[1], n[2]])
    }

    /// The live and finished counts of each of `queues`, in two pipelined
    /// reads however many queues: what the `other` metric series sums.
    pub async fn queue_counts(&self, queues: &[QueueName]) -> Result<Vec<QueueCounts>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con().await?;
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("HMGET")
                .arg(self.keys.meta(q.as_str()))
                .arg("queued")
                .arg("run");
        }
        let live: Vec<(Option<i64>, Option<i64>)> = pipe.query_async(&mut con).await?;
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.zcard(self.keys.index(q.as_str(), "dead"));
            pipe.zcard(self.keys.index(q.as_str(), "cancelled"));
        }
        let finished: Vec<u64> = pipe.query_async(&mut con).await?;
        Ok(live
            .into_iter()
            .zip(finished.chunks(2))
            .map(|((queued, run), f)| QueueCounts {
                queued: queued.unwrap_or(0).max(0) as u64,
                running: run.unwrap_or(0).max(0) as u64,
                dead: f[0],
                cancelled: f[1],
            })
            .collect())
    }

    /// `queue`'s counts, settings and oldest queued task.
    pub async fn queue_state(&self, queue: &QueueName) -> Result<QueueState> {
        let mut con = self.con().await?;
        let meta: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.meta(queue.as_str()))
            .arg(&META_FIELDS[..])
            .query_async(&mut con)
            .await?;
        drop(con);
        let num = |i: usize| {
            meta[i]
                .as_deref()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                .max(0) as u64
        };
        let flag = |i: usize| meta[i].as_deref() == Some("1");
        let limits = QueueLimits {
            concurrency: meta[4].as_deref().and_then(|v| v.parse().ok()),
            rate: meta[5].as_deref().and_then(Rate::parse),
            burst: meta[6].as_deref().and_then(|v| v.parse().ok()),
        };
        Ok(QueueState {
            name: queue.clone(),
            queued: num(0),
            running: num(1),
            paused: flag(2),
            draining: flag(3),
            limits,
            oldest_queued: self.oldest_queued(queue).await?,
            finished: self.finished_counts(queue).await?,
        })
    }

    /// How long the oldest task at the head of one of `queue`'s ready
    /// lists has waited since it was queued. The heads are read, not the
    /// lists: a head whose task is no longer queued (cancelled, dropped by
    /// assign.lua when popped) is passed over.
    async fn oldest_queued(&self, queue: &QueueName) -> Result<Option<Duration>> {
        let q = queue.as_str();
        let prefix = format!("{q} ");
        let classes: Vec<String> = self
            .active_backlogs()
            .await?
            .into_iter()
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        if classes.is_empty() {
            return Ok(None);
        }
        let mut con = self.con().await?;
        let mut pipe = redis::pipe();
        for class in &classes {
            pipe.zrange(self.keys.levels(q, class), 0, -1);
        }
        let levels: Vec<Vec<String>> = pipe.query_async(&mut con).await?;
        if levels.iter().all(Vec::is_empty) {
            // Backlogs named in `P active` but empty (assign.lua drops a
            // name only when it finds its backlog empty).
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for (class, levels) in classes.iter().zip(&levels) {
            for level in levels {
                pipe.cmd("LINDEX").arg(self.keys.ready(q, class, level)).arg(0);
            }
        }
        let heads: Vec<Option<String>> = pipe.query_async(&mut con).await?;
        let heads: Vec<String> = heads.into_iter().flatten().collect();
        if heads.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for id in &heads {
            pipe.cmd("HMGET")
                .arg(self.keys.task(id))
                .arg("state")
                .arg("ut")
                .arg("ct");
        }
        let rows: Vec<(Option<String>, Option<u64>, Option<u64>)> = pipe.query_async(&mut con).await?;
        let now = self.clock().now_ms();
        let oldest = rows
            .into_iter()
            .filter(|(state, _, _)| state.as_deref() == Some("queued"))
            .filter_map(|(_, updated, created)| updated.or(created))
            .min();
        Ok(oldest.map(|since| Duration::from_millis(now.saturating_sub(since))))
    }

    /// Applies an operator's change to `queue` (lua/control.lua) and wakes
    /// the distributors, so a resume or a raised limit takes effect at
    /// once; a pause holds from every distributor's next assign call.
    pub async fn change_queue(&self, queue: &QueueName, change: QueueChange) -> Result<()> {
        let mut inv = self.scripts.control.prepare_invoke();
        inv.key(self.keys.meta(queue.as_str())).key(self.keys.wake());
        let mut set = |field: &str, value: String| {
            inv.arg(field).arg(value);
        };
        match change {
            QueueChange::Pause => set("paused", "1".into()),
            QueueChange::Resume => {
                set("paused", String::new());
                set("draining", String::new());
            }
            QueueChange::Drain => set("draining", "1".into()),
            QueueChange::Limits(l) => {
                set("conc", l.concurrency.map(|n| n.to_string()).unwrap_or_default());
                set("rate", l.rate.map(|r| r.per_second().to_string()).unwrap_or_default());
                set("rt", l.rate.map(|r| r.to_string()).unwrap_or_default());
                set("burst", l.burst_or_default().map(|n| n.to_string()).unwrap_or_default());
            }
        }
        let reply = self.call_raw("control", &inv).await?;
        match reply {
            redis::Value::Array(v) if v.len() == 5 => Ok(()),
            other => Err(StoreError::Reply {
                script: "control",
                detail: format!("{other:?}"),
            }),
        }
    }
}
