//! The one door to Redis. Roles call typed methods here; key names live in
//! `keys`, scripts in `scripts`, and every script reply is decoded in this
//! module's files, so no role indexes a raw reply or builds a key by hand.
//! One file per concern, each an `impl Store` block beside the scripts it
//! runs: `intake` (submit, requeue, restore), `leases` (assign, claim,
//! renew, complete), `queues` (a queue's settings and counts), `cancel`,
//! `reap` and `leader` (the leader's duties),
//! `reads` (tasks), `workers` (heartbeats and the live workers), `streams`,
//! `redis_info` (what Redis says of itself); replies become types in
//! `outcomes` (per-task script statuses) and `decode` (hashes and rows).
//! docs/ARCHITECTURE.md draws the whole.
//!
//! The pattern for transitions whose message must be signed in Rust (the
//! scripts append the bytes verbatim): read what is needed, predict the
//! versions the tasks will have, sign an envelope naming them, and let the
//! script apply only the tasks whose version still matches. An entry for a
//! task the script did not move carries a version that no longer exists and
//! is refused downstream as stale; nothing is ever applied twice.

mod backlog;
mod cancel;
mod decode;
mod intake;
pub mod keys;
mod leader;
mod leases;
mod operator;
mod outcomes;
pub mod pool;
mod queues;
mod reads;
mod reap;
mod redis_info;
pub mod scripts;
mod streams;
mod workers;

pub use backlog::{Backlog, WakeCursor};
pub use cancel::CancelOutcome;
pub use leases::{Completion, Outcome, StartReply, StartedTask};
pub use outcomes::{
    Assigned, BacklogStop, DiscardOutcome, FinishedState, ReapOutcome, Refusal, RenewStatus, RestoreOutcome,
    RetryOutcome, SubmitReply, SubmitStatus, WorkerRoom,
};
pub use queues::{QueueChange, QueueCounts, QueueLimits, QueueState};
pub use reads::{Page, PageCursor};
pub use reap::ReapStats;
pub use redis_info::TASK_HASH_LISTPACK_VALUE;
pub use streams::EVENTS_READ_COUNT;
pub use workers::{Heartbeat, WorkerView};

use crate::clock::Clock;
use crate::envelope::{Keyring, Rejection, Verified};
use crate::telemetry::catalog;
use deadpool::managed::Timeouts;
use deadpool::Runtime;
use keys::Keys;
use pool::{Con, Pool, RedisManager};
use redis::Value;
use scripts::Scripts;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis unavailable: {0}")]
    Pool(String),
    #[error("unexpected reply from {script}: {detail}")]
    Reply { script: &'static str, detail: String },
    /// A submit named a queue that is draining: nothing was written.
    #[error("queue {0:?} is draining: it takes no new tasks")]
    Draining(String),
}

impl From<pool::PoolError> for StoreError {
    fn from(e: pool::PoolError) -> Self {
        StoreError::Pool(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How to reach Redis and what to call things there.
#[derive(Clone)]
pub struct StoreOptions {
    pub redis_url: String,
    pub redis_password: Option<String>,
    pub redis_tls: crate::config::RedisTls,
    pub namespace: String,
    pub keyring: Keyring,
    pub message_ttl: Duration,
    pub max_message: usize,
    pub events_maxlen: u64,
    pub result_ttl: Duration,
    /// `limits.index_succeeded`.
    pub index_succeeded: bool,
    pub idempotency_ttl: Duration,
    pub pool_size: usize,
}

/// A stream entry as read: its id and the raw envelope bytes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub raw: Vec<u8>,
    /// The unsigned `b` field assign.lua adds to an assign entry: the
    /// fencing token of the batch (checked against the batch record by
    /// [`Store::claim`], not trusted).
    pub batch: Option<String>,
    /// The unsigned `ids` field of an assign entry: the tasks assign.lua
    /// took, comma-joined (trusted only as [`Entry::batch`] is).
    pub ids: Option<String>,
}

impl Entry {
    /// The task ids of an assign entry's unsigned `ids` field (empty when
    /// it has none). Claiming them checks each against the batch record.
    pub fn task_ids(&self) -> Vec<String> {
        match self.ids.as_deref() {
            Some(ids) if !ids.is_empty() => ids.split(',').map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }
}

pub struct Store {
    pool: Pool,
    pub keys: Keys,
    scripts: Scripts,
    keyring: Arc<Keyring>,
    clock: Clock,
    opts: StoreOptions,
}

/// Latency buckets of Redis calls, in seconds.
pub const REDIS_LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

fn to_strings(script: &'static str, v: Value) -> Result<Vec<String>> {
    redis::from_redis_value::<Vec<String>>(v).map_err(|e| StoreError::Reply {
        script,
        detail: e.to_string(),
    })
}

impl Store {
    /// Builds the pool; no connection is made until first use, so a role
    /// can start while Redis is still down and report itself not ready.
    pub fn new(opts: StoreOptions) -> Result<Self> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(opts.redis_url.as_str())?;
        if let Some(pw) = &opts.redis_password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        // Scripts over big batches and blocking stream reads (up to 2 s)
        // must not trip the client's 500 ms default response timeout.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let manager = RedisManager::new(info, config, &opts.redis_tls)?;
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(Duration::from_secs(5)),
                create: Some(Duration::from_secs(3)),
                recycle: Some(Duration::from_secs(2)),
            })
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Store {
            pool,
            keys: Keys::new(&opts.namespace, 0),
            scripts: Scripts::load(),
            keyring: Arc::new(opts.keyring.clone()),
            clock: Clock::default(),
            opts,
        })
    }

    /// Runs a script, timing it (`drover_redis_command_seconds{op}`), and
    /// returns its reply as strings.
    async fn call(&self, op: &'static str, inv: &redis::ScriptInvocation<'_>) -> Result<Vec<String>> {
        to_strings(op, self.call_raw(op, inv).await?)
    }

    /// Runs a script whose reply is one status word per task of `tasks`, in
    /// order, and parses each.
    async fn call_each<T>(
        &self,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
        tasks: usize,
        parse: impl Fn(&'static str, &str) -> Result<T>,
    ) -> Result<Vec<T>> {
        let words = self.call(op, inv).await?;
        if words.len() != tasks {
            return Err(StoreError::Reply {
                script: op,
                detail: format!("{} statuses for {tasks} tasks", words.len()),
            });
        }
        words.iter().map(|w| parse(op, w)).collect()
    }

    /// Counts the tasks a promote put into their ready lists, and logs
    /// each with `what`.
    fn count_queued(&self, statuses: &[outcomes::Announced], ids: &[String], what: &str) -> u64 {
        let mut n = 0;
        for (status, id) in statuses.iter().zip(ids) {
            if *status == outcomes::Announced::Queued {
                tracing::debug!(task_id = %id, "{what}");
                n += 1;
            }
        }
        n
    }

    /// Runs a script, timing it, and returns its raw reply.
    async fn call_raw(&self, op: &'static str, inv: &redis::ScriptInvocation<'_>) -> Result<Value> {
        let mut con = self.con().await?;
        let started = std::time::Instant::now();
        let reply = inv.invoke_async(&mut con).await;
        metrics::histogram!(catalog::REDIS_COMMAND.name, "op" => op).record(started.elapsed().as_secs_f64());
        Ok(reply?)
    }

    fn int(op: &'static str, v: Value) -> Result<i64> {
        redis::from_redis_value::<i64>(v).map_err(|e| StoreError::Reply {
            script: op,
            detail: e.to_string(),
        })
    }

    /// Counts one message appended to a stream of `kind`.
    fn sent(kind: &'static str) {
        metrics::counter!(catalog::MESSAGES_SENT.name, "stream" => kind).increment(1);
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub async fn con(&self) -> Result<Con> {
        Ok(self.pool.get().await?.into())
    }

    /// PING plus a clock sync: what readiness and reconnect loops call.
    pub async fn ping(&self) -> Result<()> {
        let mut con = self.con().await?;
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
        self.clock.sync(&mut con).await?;
        Ok(())
    }

    fn expiry(&self) -> u64 {
        self.clock.now_ms() + self.opts.message_ttl.as_millis() as u64
    }

    /// Signs a message body for one stream.
    pub fn seal<T: Serialize>(&self, stream: &str, msg_type: &str, body: &T) -> Vec<u8> {
        let bytes = serde_json::to_vec(body).expect("message bodies always serialize");
        self.keyring.sign(stream, msg_type, self.expiry(), &bytes)
    }

    /// Verifies an entry read from `stream`; failures are counted by reason
    /// and logged without the body.
    pub fn open<'a>(&self, stream: &str, entry: &'a Entry) -> std::result::Result<Verified<'a>, Rejection> {
        self.keyring
            .verify(stream, &entry.raw, self.clock.now_ms(), self.opts.max_message)
            .inspect_err(|r| self.reject(stream, &entry.id, r.reason()))
    }

    /// Counts and logs a refused message (`reason` is a metric label).
    pub fn reject(&self, stream: &str, entry_id: &str, reason: &'static str) {
        metrics::counter!(catalog::MESSAGES_REJECTED.name, "reason" => reason).increment(1);
        tracing::warn!(stream, entry_id, reason, "message rejected");
    }
}
