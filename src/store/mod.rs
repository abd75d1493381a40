//! The one door to Redis. Roles call typed methods here; key names live in
//! `keys`, scripts in `scripts`, and every script reply is decoded in this
//! module, so no role indexes a raw reply or builds a key by hand.
//!
//! The pattern for transitions whose message must be signed in Rust (the
//! scripts append the bytes verbatim): read what is needed, predict the
//! versions the tasks will have, sign an envelope naming them, and let the
//! script apply only the tasks whose version still matches. An entry for a
//! task the script did not move carries a version that no longer exists and
//! is refused downstream as stale; nothing is ever applied twice.

pub mod keys;
pub mod pool;
pub mod scripts;

use crate::clock::Clock;
use crate::envelope::{Keyring, Rejection, Verified};
use crate::messages::{self, Assignment, CancelBody, EventBody, IntakeBody, IntakeTask, PerTaskIntakeBody};
use crate::task::{FenceToken, NewTask, TaskId, TaskState, TaskView, UNSTORED_MAX_ATTEMPTS, UNSTORED_TIMEOUT_MS};
use deadpool::managed::Timeouts;
use deadpool::Runtime;
use keys::Keys;
use pool::{Con, Pool, RedisManager};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use scripts::Scripts;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis unavailable: {0}")]
    Pool(String),
    #[error("unexpected reply from {script}: {detail}")]
    Reply { script: &'static str, detail: String },
}

impl From<pool::PoolError> for StoreError {
    fn from(e: pool::PoolError) -> Self {
        StoreError::Pool(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What drover sets Redis' `hash-max-listpack-value` to (deploy/redis/
/// redis.conf, and the Redis it starts itself): a task whose input and
/// result are at most this many bytes stays a compact listpack, about 400
/// bytes smaller than the hash table Redis makes past the limit (64 bytes
/// by default; BENCHMARKS.md, "Task hashes").
pub const TASK_HASH_LISTPACK_VALUE: u64 = 2048;

/// Most tasks one script call handles where the caller's list can be long
/// (re-announcements): keeps scripts short and envelopes small.
const SCRIPT_BATCH: usize = 500;

/// Stream entries as XRANGE returns them: id, then field/value pairs.
type RawEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;
/// state, version and batch token of a task, as cancel reads them.
type CancelFields = (Option<String>, Option<u64>, Option<String>);

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
}

/// The result of starting one assigned task.
#[derive(Debug, Clone)]
pub enum StartReply {
    Started(Box<StartedTask>),
    /// Not started: 'missing', 'conflict', 'state:<s>', 'other-worker'.
    Refused(String),
}

/// A task this worker now holds the lease on.
#[derive(Debug, Clone)]
pub struct StartedTask {
    pub id: String,
    pub version: u64,
    pub token: FenceToken,
    pub handler: String,
    pub input: String,
    pub timeout_ms: u64,
    pub attempt: u32,
    pub max_attempts: u32,
    pub tags: Vec<String>,
    pub priority: i32,
    /// When the task could first run (created, or due), Redis ms.
    pub ready_ms: u64,
    /// When the lease was taken (at assignment), Redis ms.
    pub leased_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewStatus {
    Ok,
    CancelRequested,
    Lost,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    /// Handed back without charging an attempt (graceful shutdown).
    Released,
}

impl Outcome {
    fn as_arg(self) -> &'static str {
        match self {
            Outcome::Succeeded => "ok",
            Outcome::Failed => "fail",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "release",
        }
    }
}

/// One finished attempt, for `complete`.
#[derive(Debug, Clone)]
pub struct Completion {
    pub task: StartedTask,
    pub outcome: Outcome,
    /// The result JSON for success, the error text otherwise.
    pub payload: String,
    pub retry_delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    Requested,
    AlreadyFinished(TaskState),
    Missing,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ReapStats {
    pub requeued: u64,
    pub lease_expired: u64,
    pub retried: u64,
    pub dead: u64,
    /// Leases were due beyond this call's limit: call again. (Tasks moved
    /// say nothing of that: a due batch may hold few tasks still running.)
    pub more_due: bool,
}

/// A worker as its heartbeats describe it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub handlers: Vec<String>,
    pub tags: Vec<String>,
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
    pub in_flight: u32,
    pub draining: bool,
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

/// A script's per-task statuses from a reply that lists only the tasks
/// whose status is not `usual`, as (1-based position, status) pairs.
fn expand_positions(script: &'static str, tasks: usize, usual: &str, reply: &[String]) -> Result<Vec<String>> {
    let mut statuses = vec![usual.to_string(); tasks];
    for pair in reply.chunks(2) {
        let slot = match pair {
            [position, _] => position
                .parse::<usize>()
                .ok()
                .and_then(|p| p.checked_sub(1))
                .and_then(|p| statuses.get_mut(p)),
            _ => None,
        };
        let slot = slot.ok_or_else(|| StoreError::Reply {
            script,
            detail: format!("a status at an unknown position: {pair:?}"),
        })?;
        *slot = pair[1].clone();
    }
    Ok(statuses)
}

/// Whether stream id `a` ("ms-seq") comes after `b`; false if either is
/// not a stream id (an older task's `ent` may name an intake entry).
fn stream_id_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-')?;
        Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?))
    };
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x > y)
}

fn num<T: std::str::FromStr + Default>(s: Option<&String>) -> T {
    num_or(s, T::default())
}

/// A stored number, or `default` when the field is missing or not one.
fn num_or<T: std::str::FromStr>(s: Option<&String>, default: T) -> T {
    s.and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A stream read's `BLOCK` argument in ms. `BLOCK 0` waits forever, so a
/// wait shorter than 1 ms is rounded up to 1, not down to 0.
fn block_ms(wait: Duration) -> usize {
    (wait.as_millis() as usize).max(1)
}

/// A task's hash as `HGETALL` returns it, looked up by field name. It has
/// a dozen fields at most, so a scan of the pairs is cheaper than hashing
/// every name into a map: the worker reads one per task it runs.
struct TaskFields(Vec<(String, String)>);

impl TaskFields {
    fn get(&self, name: &str) -> Option<&String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.swap_remove(i).1)
    }
}

impl redis::FromRedisValue for TaskFields {
    fn from_redis_value(v: Value) -> std::result::Result<Self, redis::ParsingError> {
        Ok(TaskFields(redis::FromRedisValue::from_redis_value(v)?))
    }
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

    /// Runs a script, timing it, and returns its raw reply.
    async fn call_raw(&self, op: &'static str, inv: &redis::ScriptInvocation<'_>) -> Result<Value> {
        let mut con = self.con().await?;
        let started = std::time::Instant::now();
        let reply = inv.invoke_async(&mut con).await;
        metrics::histogram!("drover_redis_command_seconds", "op" => op).record(started.elapsed().as_secs_f64());
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
        metrics::counter!("drover_messages_sent_total", "stream" => kind).increment(1);
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

    /// Signs an intake message naming `tasks`; no bytes when there are none
    /// (the scripts then append nothing).
    fn seal_intake(&self, tasks: Vec<IntakeTask>) -> Vec<u8> {
        if tasks.is_empty() {
            return Vec::new();
        }
        self.seal(&self.keys.intake(), messages::SUBMIT, &IntakeBody { tasks })
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
        metrics::counter!("drover_messages_rejected_total", "reason" => reason).increment(1);
        tracing::warn!(stream, entry_id, reason, "message rejected");
    }

    // ---- streams -------------------------------------------------------

    /// Creates a consumer group (and its stream) if missing.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<()> {
        let mut con = self.con().await?;
        let r: redis::RedisResult<()> = con.xgroup_create_mkstream(stream, group, "0").await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads entries for `consumer`: its own pending ones first when
    /// `pending` is set (after a restart), else new ones, blocking up to
    /// `block`. A missing group (Redis lost its data) is recreated.
    pub async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
        pending: bool,
    ) -> Result<Vec<Entry>> {
        let mut opts = StreamReadOptions::default().group(group, consumer).count(count);
        if let (Some(b), false) = (block, pending) {
            opts = opts.block(block_ms(b));
        }
        let id = if pending { "0" } else { ">" };
        let mut con = self.con().await?;
        let reply: redis::RedisResult<Option<StreamReadReply>> = con.xread_options(&[stream], &[id], &opts).await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                drop(con);
                self.ensure_group(stream, group).await?;
                return Ok(Vec::new());
            }
            r => r?,
        };
        Ok(Self::entries(reply))
    }

    fn entries(reply: Option<StreamReadReply>) -> Vec<Entry> {
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for e in key.ids {
                let raw = match e.map.get("m") {
                    Some(Value::BulkString(b)) => b.clone(),
                    _ => Vec::new(), // verify() refuses it as malformed
                };
                let batch = match e.map.get("b") {
                    Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                };
                out.push(Entry { id: e.id, raw, batch });
            }
        }
        out
    }

    /// Takes over entries another consumer has left pending for `min_idle`
    /// (it died); returns them for processing.
    pub async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let mut con = self.con().await?;
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut con)
            .await?;
        // Reply: [next-cursor, [[id, [field, value, ...]], ...], deleted-ids]
        let mut out = Vec::new();
        if let Value::Array(parts) = v {
            if let Some(Value::Array(items)) = parts.get(1) {
                for item in items {
                    if let Value::Array(pair) = item {
                        let id = match pair.first() {
                            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                            _ => continue,
                        };
                        let mut raw = Vec::new();
                        if let Some(Value::Array(fields)) = pair.get(1) {
                            for kv in fields.chunks(2) {
                                if let [Value::BulkString(k), Value::BulkString(val)] = kv {
                                    if k == b"m" {
                                        raw = val.clone();
                                    }
                                }
                            }
                        }
                        // Only intake entries are claimed here; they carry
                        // no batch token.
                        out.push(Entry { id, raw, batch: None });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Resets the idle time of entries this consumer still holds, so others
    /// do not claim them while it waits for a worker.
    pub async fn touch(&self, stream: &str, group: &str, consumer: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut con = self.con().await?;
        let _: Value = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async(&mut con)
            .await?;
        Ok(())
    }

    pub async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut con = self.con().await?;
        let _: i64 = con.xack(stream, group, ids).await?;
        Ok(())
    }

    /// Drops acknowledged entries (see `lua/trim.lua`).
    pub async fn trim(&self, stream: &str, group: &str) -> Result<u64> {
        let mut inv = self.scripts.trim.prepare_invoke();
        inv.key(stream).arg(group);
        Ok(Self::int("trim", self.call_raw("trim", &inv).await?)?.max(0) as u64)
    }

    /// Drops events older than `retention` (by their stream ids, which are
    /// Redis times). `~` lets Redis drop whole nodes only: cheap, and never
    /// more than asked. Returns how many entries went.
    pub async fn trim_events(&self, retention: Duration) -> Result<u64> {
        let min_id = self.clock.now_ms().saturating_sub(retention.as_millis() as u64);
        let mut con = self.con().await?;
        let n: u64 = redis::cmd("XTRIM")
            .arg(self.keys.events())
            .arg("MINID")
            .arg("~")
            .arg(min_id)
            .query_async(&mut con)
            .await?;
        Ok(n)
    }

    /// Reads the events stream after `last_id` (no group: every coordinator
    /// reads everything), blocking up to `block`.
    pub async fn read_events(&self, last_id: &str, block: Duration) -> Result<Vec<Entry>> {
        let mut con = self.con().await?;
        let opts = StreamReadOptions::default().count(1000).block(block_ms(block));
        let reply: Option<StreamReadReply> = con.xread_options(&[self.keys.events()], &[last_id], &opts).await?;
        Ok(Self::entries(reply))
    }

    /// The id of the newest events entry, to start reading after it.
    pub async fn last_event_id(&self) -> Result<String> {
        let mut con = self.con().await?;
        let v: RawEntries = redis::cmd("XREVRANGE")
            .arg(self.keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut con)
            .await?;
        Ok(v.into_iter().next().map(|e| e.0).unwrap_or_else(|| "0-0".into()))
    }

    // ---- transitions ---------------------------------------------------

    /// Writes new tasks and announces the immediate ones on the intake
    /// stream, in one script. Returns (id, status) per task, where status is
    /// 'queued', 'scheduled' or 'duplicate' (then id is the earlier task).
    pub async fn submit(&self, tasks: &[NewTask]) -> Result<Vec<(String, String)>> {
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
                .arg(t.idempotency_key.as_deref().unwrap_or(""));
            for (t, _) in run {
                inv.arg(t.id.as_str()).arg(&t.input);
            }
        }
        let duplicates = self.call("submit", &inv).await?;
        if announces {
            Self::sent("intake");
        }
        // Only duplicates are listed, with the earlier task's id.
        let listed = expand_positions("submit", tasks.len(), "", &duplicates)?;
        Ok(timed
            .iter()
            .zip(listed)
            .map(|((t, at), prior)| match prior.as_str() {
                "" if *at == 0 => (t.id.to_string(), "queued".to_string()),
                "" => (t.id.to_string(), "scheduled".to_string()),
                _ => (prior, "duplicate".to_string()),
            })
            .collect())
    }

    /// Places tasks on one worker and takes the lease for it there (the
    /// worker then only reads them: [`Store::claim`]). Returns one status
    /// per task: 'ok', 'full', 'missing', 'gone', 'conflict' or 'state:<s>'.
    ///
    /// `acks` names, per task, an intake entry for the script to acknowledge
    /// ('' or missing for none) once none of the tasks named with it came
    /// back 'full' or 'gone'. The caller names an entry only when the call
    /// holds every task of it still to place.
    pub async fn assign(
        &self,
        worker_id: &str,
        tasks: &[IntakeTask],
        acks: &[&str],
        lease: Duration,
    ) -> Result<Vec<String>> {
        let stream = self.keys.worker_stream(worker_id);
        let body = messages::AssignBody {
            tasks: tasks
                .iter()
                .map(|t| Assignment {
                    id: t.id.clone(),
                    v: t.v + 1,
                })
                .collect(),
        };
        let envelope = self.seal(&stream, messages::ASSIGN, &body);
        let mut inv = self.scripts.assign.prepare_invoke();
        inv.key(self.keys.worker(worker_id))
            .key(&stream)
            .key(self.keys.leases())
            .key(self.keys.counts())
            .key(self.keys.epoch())
            .key(self.keys.intake())
            .key(self.keys.batches())
            .arg(self.keys.prefix())
            .arg(envelope)
            .arg(lease.as_millis() as u64)
            .arg(worker_id)
            .arg(keys::DISTRIBUTORS_GROUP);
        // Runs of tasks named with one intake entry: the entry and the
        // count once, then id and version per task (assign.lua's header).
        let named: Vec<(&IntakeTask, &str)> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t, acks.get(i).copied().unwrap_or("")))
            .collect();
        for run in named.chunk_by(|a, b| a.1 == b.1) {
            inv.arg(run[0].1).arg(run.len());
            for (t, _) in run {
                inv.arg(&t.id).arg(t.v);
            }
        }
        let reply = self.call("assign", &inv).await?;
        let statuses = expand_positions("assign", tasks.len(), "ok", &reply)?;
        if statuses.iter().any(|x| x == "ok") {
            Self::sent("worker");
        }
        Ok(statuses)
    }

    /// Accepts the tasks an `assign` entry names: assign.lua has already
    /// taken one lease for the batch on this worker, so this only reads the
    /// batch record and each task and acknowledges the entry, in one
    /// pipeline (no script, no write to the task). `batch` is the entry's
    /// unsigned `b` field, the batch's fencing token: it is trusted only
    /// because the record it names must be this worker's and must name this
    /// entry, so a replayed copy of the envelope (another entry) or a forged
    /// `b` (another batch's record, or none) is refused. A task is accepted only if
    /// it is `running` at the named version under that token; one that has
    /// moved on since shows another state, version or token. The entry is
    /// acknowledged before any handler runs, so a worker that restarts
    /// under the same id re-reads (from its pending entries) only
    /// assignments it never acted on.
    pub async fn claim(
        &self,
        worker_id: &str,
        entry_id: &str,
        batch: Option<&str>,
        tasks: &[Assignment],
    ) -> Result<Vec<StartReply>> {
        let stream = self.keys.worker_stream(worker_id);
        let batch = batch.unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(self.keys.batch(batch)).arg(&["w", "ent"]);
        for t in tasks {
            pipe.cmd("HGETALL").arg(self.keys.task(&t.id));
        }
        pipe.cmd("XACK")
            .arg(&stream)
            .arg(keys::WORKER_GROUP)
            .arg(entry_id)
            .ignore();
        let mut con = self.con().await?;
        let mut replies: Vec<Value> = pipe.query_async(&mut con).await?;
        drop(con);
        let hashes = replies.split_off(1.min(replies.len()));
        let record: (Option<String>, Option<String>) =
            redis::FromRedisValue::from_redis_value(replies.pop().unwrap_or(Value::Nil))
                .map_err(redis::RedisError::from)?;
        let token = FenceToken::parse(batch);
        // No token, or one that is not a token: not an entry assign.lua
        // wrote. No record: the lease already ended (its tasks finished or
        // were reaped before this read), or never was.
        let refusal = match (&record, token) {
            (_, None) => Some("replayed"),
            ((None, _), _) => Some("lease-ended"),
            ((Some(w), _), _) if w != worker_id => Some("other-worker"),
            ((_, ent), _) if ent.as_deref() != Some(entry_id) => Some("replayed"),
            _ => None,
        };
        let mut out = Vec::with_capacity(tasks.len());
        // An envelope that names a task twice (assign.lua took it once)
        // starts it once.
        let mut seen = std::collections::HashSet::with_capacity(tasks.len());
        for (t, raw) in tasks.iter().zip(hashes) {
            let mut f =
                <TaskFields as redis::FromRedisValue>::from_redis_value(raw).map_err(redis::RedisError::from)?;
            // An empty map: the task is gone.
            let state = f.remove("state");
            let reply = match (refusal, state.as_deref(), token) {
                (Some(why), _, _) => StartReply::Refused(why.into()),
                _ if !seen.insert(t.id.as_str()) => StartReply::Refused("conflict".into()),
                (_, None, _) => StartReply::Refused("missing".into()),
                (_, Some("running"), _) if num::<u64>(f.get("v")) != t.v => StartReply::Refused("conflict".into()),
                (_, Some("running"), _) if f.get("b").map(String::as_str) != Some(batch) => {
                    StartReply::Refused("other-batch".into())
                }
                (_, Some("running"), Some(token)) => {
                    let created: u64 = num(f.get("ct"));
                    StartReply::Started(Box::new(StartedTask {
                        id: t.id.clone(),
                        version: t.v,
                        token,
                        handler: f.remove("h").unwrap_or_default(),
                        input: f.remove("in").unwrap_or_default(),
                        timeout_ms: num_or(f.get("to"), UNSTORED_TIMEOUT_MS),
                        attempt: num(f.get("att")),
                        max_attempts: num_or(f.get("max"), UNSTORED_MAX_ATTEMPTS),
                        tags: f
                            .get("tags")
                            .map_or_else(Vec::new, |j| serde_json::from_str(j).unwrap_or_default()),
                        priority: num(f.get("prio")),
                        ready_ms: created.max(num(f.get("run_at"))),
                        leased_ms: num(f.get("st")),
                    }))
                }
                (_, Some(other), _) => StartReply::Refused(format!("state:{other}")),
            };
            out.push(reply);
        }
        Ok(out)
    }

    /// Extends the leases of the batches this worker runs `held` tasks of.
    /// Returns one status per task of `held`, in its order.
    pub async fn renew(
        &self,
        worker_id: &str,
        held: &[(String, FenceToken)],
        lease: Duration,
    ) -> Result<Vec<RenewStatus>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        // One run per batch (renew.lua): the token once, then its tasks.
        let mut order: Vec<usize> = (0..held.len()).collect();
        order.sort_by_key(|&i| held[i].1);
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.key(self.keys.leases())
            .arg(self.keys.prefix())
            .arg(worker_id)
            .arg(lease.as_millis() as u64);
        for run in order.chunk_by(|&a, &b| held[a].1 == held[b].1) {
            inv.arg(held[run[0]].1.to_string()).arg(run.len());
            for &i in run {
                inv.arg(&held[i].0);
            }
        }
        let v = self.call("renew", &inv).await?;
        if v.len() != held.len() {
            return Err(StoreError::Reply {
                script: "renew",
                detail: format!("{} statuses for {} tasks", v.len(), held.len()),
            });
        }
        let mut statuses = vec![RenewStatus::Lost; held.len()];
        for (&i, s) in order.iter().zip(&v) {
            statuses[i] = match s.as_str() {
                "ok" => RenewStatus::Ok,
                "cancel" => RenewStatus::CancelRequested,
                _ => RenewStatus::Lost,
            };
        }
        Ok(statuses)
    }

    /// Reports finished attempts. Returns the new state per task, or
    /// 'stale' where this worker no longer held the lease.
    pub async fn complete(&self, worker_id: &str, done: &[Completion]) -> Result<Vec<String>> {
        let events = self.keys.events();
        let intake = self.keys.intake();
        let event = EventBody {
            ids: done.iter().map(|c| c.task.id.clone()).collect(),
        };
        let released: Vec<IntakeTask> = done
            .iter()
            .filter(|c| c.outcome == Outcome::Released)
            .map(|c| IntakeTask {
                id: c.task.id.clone(),
                v: c.task.version + 1,
                h: c.task.handler.clone(),
                tags: c.task.tags.clone(),
                prio: c.task.priority,
            })
            .collect();
        // Workers are updated before distributors: per-task form (messages.rs).
        let intake_env = if released.is_empty() {
            Vec::new()
        } else {
            self.seal(&intake, messages::SUBMIT, &PerTaskIntakeBody { tasks: &released })
        };
        let mut inv = self.scripts.complete.prepare_invoke();
        inv.key(self.keys.leases())
            .key(self.keys.scheduled())
            .key(self.keys.counts())
            .key(self.keys.worker(worker_id))
            .key(&events)
            .key(&intake)
            .arg(self.keys.prefix())
            .arg(worker_id)
            .arg(self.opts.result_ttl.as_millis() as u64)
            .arg(self.seal(&events, messages::EVENT, &event))
            .arg(self.opts.events_maxlen)
            .arg(intake_env);
        // Runs of attempts that ended the same way under one lease: the
        // outcome and token once, then per task what differs (complete.lua).
        for run in done.chunk_by(|a, b| (a.outcome, a.task.token) == (b.outcome, b.task.token)) {
            inv.arg(run[0].outcome.as_arg())
                .arg(run[0].task.token.to_string())
                .arg(run.len());
            for c in run {
                inv.arg(&c.task.id).arg(&c.payload);
                if c.outcome == Outcome::Failed {
                    inv.arg(c.retry_delay_ms);
                }
            }
        }
        let reply = self.call("complete", &inv).await?;
        let states = expand_positions("complete", done.len(), "succeeded", &reply)?;
        if states.iter().any(|x| x != "stale") {
            Self::sent("events");
        }
        if states.iter().any(|x| x == "queued") {
            Self::sent("intake");
        }
        Ok(states)
    }

    /// Cancels a task; a running one is asked to stop through its worker's
    /// stream. Retries a few times when the task moves under it.
    pub async fn cancel(&self, id: &TaskId) -> Result<CancelOutcome> {
        let key = self.keys.task(id.as_str());
        let events = self.keys.events();
        for _ in 0..10 {
            let mut con = self.con().await?;
            let (state, v, b): CancelFields = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["state", "v", "b"])
                .query_async(&mut con)
                .await?;
            let Some(state) = state else {
                return Ok(CancelOutcome::Missing);
            };
            // A running task's worker is the one its batch record names.
            let running = b.filter(|_| state == "running");
            let token = running.as_deref().and_then(FenceToken::parse);
            let worker: String = match &running {
                Some(b) if token.is_some() => con
                    .hget::<_, _, Option<String>>(self.keys.batch(b), "w")
                    .await?
                    .unwrap_or_default(),
                _ => String::new(),
            };
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
            let event = self.seal(
                &events,
                messages::EVENT,
                &EventBody {
                    ids: vec![id.to_string()],
                },
            );
            let mut inv = self.scripts.cancel.prepare_invoke();
            inv.key(self.keys.scheduled())
                .key(self.keys.counts())
                .key(&events)
                .arg(self.keys.prefix())
                .arg(id.as_str())
                .arg(v.unwrap_or(0))
                .arg(self.opts.result_ttl.as_millis() as u64)
                .arg(event)
                .arg(self.opts.events_maxlen)
                .arg(&worker)
                .arg(control);
            drop(con);
            let r = self.call("cancel", &inv).await?;
            match r.first().map(String::as_str) {
                Some("cancelled") => {
                    Self::sent("events");
                    return Ok(CancelOutcome::Cancelled);
                }
                Some("requested") => {
                    Self::sent("worker");
                    return Ok(CancelOutcome::Requested);
                }
                Some("missing") => return Ok(CancelOutcome::Missing),
                Some("terminal") => {
                    let st = r
                        .get(1)
                        .and_then(|s| TaskState::parse(s))
                        .unwrap_or(TaskState::Cancelled);
                    return Ok(CancelOutcome::AlreadyFinished(st));
                }
                _ => {
                    metrics::counter!("drover_state_conflicts_total", "op" => "cancel").increment(1);
                    continue;
                }
            }
        }
        Err(StoreError::Reply {
            script: "cancel",
            detail: "the task kept changing; try again".into(),
        })
    }

    /// Up to `limit` members of a sorted set whose score (a time, ms of
    /// Redis time) has passed, by the leader's estimate of Redis time.
    async fn due_members(&self, con: &mut Con, zset: &str, limit: usize) -> Result<Vec<String>> {
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

    /// `fields` of each task of `ids`, in one pipeline.
    async fn task_fields(&self, con: &mut Con, ids: &[String], fields: &[&str]) -> Result<Vec<Vec<Option<String>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.keys.task(id)).arg(fields);
        }
        Ok(pipe.query_async(con).await?)
    }

    /// Ends the leases of batches whose deadline passed: their tasks still
    /// running go back to queued (never run) or to a retry, dead or
    /// cancelled. `retry_delay` gives the backoff for a task's next attempt
    /// from its attempt count. `limit` bounds the tasks read in one call,
    /// in whole batches (at least one).
    pub async fn reap(&self, limit: usize, retry_delay: impl Fn(u32) -> u64) -> Result<ReapStats> {
        let mut con = self.con().await?;
        let tokens = self.due_members(&mut con, &self.keys.leases(), limit).await?;
        if tokens.is_empty() {
            return Ok(ReapStats::default());
        }
        let mut pipe = redis::pipe();
        for token in &tokens {
            pipe.cmd("HMGET").arg(self.keys.batch(token)).arg(&["w", "ent", "ids"]);
        }
        let records: Vec<(Option<String>, Option<String>, Option<String>)> = pipe.query_async(&mut con).await?;
        // Whole batches, up to `limit` tasks; the rest wait for the next pass.
        let mut batches = Vec::new();
        let mut ids = Vec::new();
        let mut more_due = tokens.len() == limit;
        for (token, (w, ent, listed)) in tokens.into_iter().zip(records) {
            let mine: Vec<String> = listed
                .as_deref()
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if !ids.is_empty() && ids.len() + mine.len() > limit {
                more_due = true;
                break;
            }
            batches.push((token, w, ent, mine.len()));
            ids.extend(mine);
        }
        let rows = self
            .task_fields(&mut con, &ids, &["state", "v", "h", "tags", "prio", "att", "b"])
            .await?;
        let mut rows = ids.into_iter().zip(rows);
        let mut requeue = Vec::new();
        let mut named = Vec::new();
        let mut runs = Vec::new();
        // Each worker stream's group is asked once per call.
        let mut last_delivered = HashMap::new();
        for (token, w, ent, n) in batches {
            // Only the tasks still running under this lease: the others
            // finished (or were ended) and left it for good.
            let running: Vec<(String, Vec<Option<String>>)> = rows
                .by_ref()
                .take(n)
                .filter(|(_, f)| f[0].as_deref() == Some("running") && f[6].as_deref() == Some(token.as_str()))
                .collect();
            // No handler of the batch ran when the worker never acknowledged
            // its assign entry: the tasks go back to queued (listed in the
            // intake envelope, flagged for reap.lua) without using an attempt.
            let never_ran = match (w, ent) {
                (Some(wid), Some(ent)) if !running.is_empty() => {
                    !self
                        .assignment_acknowledged(&mut con, &mut last_delivered, &wid, &ent)
                        .await
                }
                _ => false,
            };
            let mut tasks = Vec::with_capacity(running.len());
            for (id, f) in running {
                let v: u64 = num(f[1].as_ref());
                if never_ran {
                    requeue.push(intake_task(id.clone(), v + 1, &f[2], &f[3], &f[4]));
                }
                let att: u32 = num_or(f[5].as_ref(), 1);
                named.push(id.clone());
                tasks.push((id, v, retry_delay(att)));
            }
            runs.push((token, never_ran, tasks));
        }
        drop(con);
        let intake = self.keys.intake();
        let events = self.keys.events();
        let intake_env = self.seal_intake(requeue);
        let mut inv = self.scripts.reap.prepare_invoke();
        inv.key(self.keys.leases())
            .key(self.keys.scheduled())
            .key(self.keys.counts())
            .key(&intake)
            .key(&events)
            .arg(self.keys.prefix())
            .arg(self.opts.result_ttl.as_millis() as u64)
            .arg(intake_env)
            .arg(self.seal(&events, messages::EVENT, &EventBody { ids: named }))
            .arg(self.opts.events_maxlen);
        for (token, never_ran, tasks) in &runs {
            inv.arg(token).arg(u8::from(*never_ran)).arg(tasks.len());
            for (id, v, delay) in tasks {
                inv.arg(id).arg(v).arg(delay);
            }
        }
        let v = self.call("reap", &inv).await?;
        let outcomes = || v.chunks(2).map(|p| p[1].as_str());
        if outcomes().any(|o| !matches!(o, "renewed" | "conflict")) {
            Self::sent("events");
        }
        if outcomes().any(|o| o == "queued") {
            Self::sent("intake");
        }
        let mut stats = ReapStats {
            more_due,
            ..ReapStats::default()
        };
        for pair in v.chunks(2) {
            match pair[1].as_str() {
                "queued" => stats.requeued += 1,
                "scheduled" => {
                    stats.lease_expired += 1;
                    stats.retried += 1
                }
                "dead" => {
                    stats.lease_expired += 1;
                    stats.dead += 1
                }
                "cancelled" => stats.lease_expired += 1,
                "conflict" => metrics::counter!("drover_state_conflicts_total", "op" => "reap").increment(1),
                _ => {}
            }
            if pair[1] != "renewed" {
                tracing::debug!(task_id = %pair[0], outcome = %pair[1], "reaped");
            }
        }
        Ok(stats)
    }

    /// Whether worker `wid` acknowledged the assign entry `ent` on its
    /// stream, which it does before it runs anything (see [`Store::claim`]).
    /// An entry past the group's last delivered id was never read; one in
    /// the pending list was read and not acted on. When the stream or group
    /// is gone it cannot be told, and counts as acknowledged (an attempt is
    /// charged, as for any lease that ran out). `last_delivered` caches each
    /// worker's group position (None: no stream or group) within one reap.
    ///
    /// reap.lua takes this answer as given. A worker that acknowledges in
    /// between (after this read, before the script) finds the lease already
    /// run out, past half of it, and hands the task back without running it
    /// (`Worker::handle`), so the attempt given back was never used.
    async fn assignment_acknowledged(
        &self,
        con: &mut Con,
        last_delivered: &mut HashMap<String, Option<String>>,
        wid: &str,
        ent: &str,
    ) -> bool {
        let stream = self.keys.worker_stream(wid);
        if !last_delivered.contains_key(wid) {
            let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut *con)
                .await;
            let last = groups.ok().and_then(|g| {
                g.groups
                    .into_iter()
                    .find(|g| g.name == keys::WORKER_GROUP)
                    .map(|g| g.last_delivered_id)
            });
            last_delivered.insert(wid.to_string(), last);
        }
        let Some(last) = &last_delivered[wid] else {
            return true;
        };
        if stream_id_after(ent, last) {
            return false;
        }
        let pending: redis::RedisResult<Vec<Value>> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(keys::WORKER_GROUP)
            .arg(ent)
            .arg(ent)
            .arg(1)
            .query_async(con)
            .await;
        pending.map_or(true, |p| p.is_empty())
    }

    /// Deletes finished tasks whose result TTL has passed, at most `limit`
    /// (lua/expire.lua); returns how many.
    pub async fn expire_finished(&self, limit: usize) -> Result<u64> {
        let mut inv = self.scripts.expire.prepare_invoke();
        inv.key(self.keys.expiring()).arg(self.keys.prefix()).arg(limit);
        let v = self.call_raw("expire", &inv).await?;
        Self::int("expire", v).map(|n| n.max(0) as u64)
    }

    /// Queues delayed tasks and retries whose time has come; returns how many.
    pub async fn promote(&self, limit: usize) -> Result<u64> {
        let mut con = self.con().await?;
        let ids = self.due_members(&mut con, &self.keys.scheduled(), limit).await?;
        let rows = self
            .task_fields(&mut con, &ids, &["state", "v", "h", "tags", "prio"])
            .await?;
        drop(con);
        let due: Vec<(String, Vec<Option<String>>)> = ids.into_iter().zip(rows).collect();
        if due.is_empty() {
            return Ok(0);
        }
        let intake = self.keys.intake();
        let tasks: Vec<IntakeTask> = due
            .iter()
            .map(|(id, f)| {
                intake_task(
                    id.clone(),
                    f[1].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0) + 1,
                    &f[2],
                    &f[3],
                    &f[4],
                )
            })
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
        let v = self.call("promote", &inv).await?;
        if v.iter().any(|x| x == "queued") {
            Self::sent("intake");
        }
        for (s, t) in v.iter().zip(&tasks) {
            if s == "queued" {
                tracing::debug!(task_id = %t.id, "promoted to queued");
            }
        }
        Ok(v.iter().filter(|s| *s == "queued").count() as u64)
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
        let v = self.call("reannounce", &inv).await?;
        if v.iter().any(|x| x == "queued") {
            Self::sent("intake");
        }
        for (s, t) in v.iter().zip(tasks) {
            if s == "queued" {
                tracing::debug!(task_id = %t.id, "announced again on the intake stream");
            }
        }
        Ok(v.iter().filter(|s| *s == "queued").count() as u64)
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
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("HMGET").arg(k).arg(&["state", "ut", "ct", "ent"]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut con).await?;
        let cutoff = self.clock.now_ms().saturating_sub(grace.as_millis() as u64);
        let candidates: Vec<(&String, String)> = keys
            .iter()
            .zip(rows)
            .filter(|(_, f)| f[0].as_deref() == Some("queued"))
            .filter(|(_, f)| {
                // `ut` is not stored until the task first changes.
                f[1].as_deref()
                    .or(f[2].as_deref())
                    .and_then(|u| u.parse::<u64>().ok())
                    .is_some_and(|u| u < cutoff)
            })
            .map(|(k, f)| (k, f[3].clone().unwrap_or_default()))
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
        let found: Vec<redis::Value> = pipe.query_async(&mut con).await?;
        let orphan_keys: Vec<&String> = candidates
            .into_iter()
            .zip(found)
            .filter(|(_, v)| matches!(v, Value::Array(a) if a.is_empty()))
            .map(|((k, _), _)| k)
            .collect();
        if orphan_keys.is_empty() {
            return Ok((next, 0));
        }
        let mut pipe = redis::pipe();
        for k in &orphan_keys {
            pipe.cmd("HMGET").arg(*k).arg(&["v", "h", "tags", "prio"]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut con).await?;
        let prefix_len = self.keys.task("").len();
        // reannounce.lua checks the version read here: a task that moved on
        // since the first read is left alone.
        let orphans: Vec<IntakeTask> = orphan_keys
            .iter()
            .zip(rows)
            .map(|(k, f)| {
                let v = f[0].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
                intake_task(k[prefix_len..].to_string(), v, &f[1], &f[2], &f[3])
            })
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
            .arg(env!("CARGO_PKG_VERSION"));
        Self::int("heartbeat", self.call_raw("heartbeat", &inv).await?)?;
        Ok(())
    }

    /// Takes or keeps the leader lease (`ttl` zero gives it up).
    pub async fn lead(&self, candidate: &str, ttl: Duration) -> Result<bool> {
        let mut inv = self.scripts.leader.prepare_invoke();
        inv.key(self.keys.leader()).arg(candidate).arg(ttl.as_millis() as u64);
        Ok(Self::int("leader", self.call_raw("leader", &inv).await?)? == 1)
    }

    pub async fn forget_workers(&self, silent_for: Duration) -> Result<Vec<String>> {
        let mut inv = self.scripts.forget_workers.prepare_invoke();
        inv.key(self.keys.workers())
            .key(self.keys.handlers())
            .arg(self.keys.prefix())
            .arg(silent_for.as_millis() as u64);
        self.call("forget_workers", &inv).await
    }

    /// Writes tasks read from a snapshot (see `lua/restore.lua`); returns
    /// (id, outcome) per task.
    pub async fn restore(&self, tasks: &[(String, HashMap<String, String>)]) -> Result<Vec<(String, String)>> {
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
                tags: f
                    .get("tags")
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or_default(),
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
            .arg(envelope);
        for (id, fields) in tasks {
            inv.arg(id)
                .arg(serde_json::to_string(fields).expect("string maps serialize"));
        }
        let v = self.call("restore", &inv).await?;
        if v.chunks(2).any(|p| p[1] == "queued") {
            Self::sent("intake");
        }
        Ok(v.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
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
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("HGETALL").arg(k);
        }
        let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await?;
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

    /// One SCAN step over task hashes: the next cursor and the keys found.
    async fn scan_task_keys(&self, con: &mut Con, cursor: &str, count: usize) -> Result<(String, Vec<String>)> {
        Ok(redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(self.keys.task_pattern())
            .arg("COUNT")
            .arg(count)
            .query_async(con)
            .await?)
    }

    // ---- reads ---------------------------------------------------------

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
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("HGETALL").arg(k);
            }
            let maps: Vec<HashMap<String, String>> = if keys.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut con).await?
            };
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
                handlers: m
                    .get("handlers")
                    .and_then(|h| serde_json::from_str(h).ok())
                    .unwrap_or_default(),
                tags: m
                    .get("tags")
                    .and_then(|h| serde_json::from_str(h).ok())
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

    /// Warnings about Redis settings that lose tasks or cost memory, one
    /// line each, for the leader to log:
    /// - a `maxmemory-policy` other than `noeviction`: a full Redis then
    ///   deletes keys, and an evicted task is a lost task. Read from `INFO
    ///   memory`, which every coordinator may run.
    /// - a `hash-max-listpack-value` below [`TASK_HASH_LISTPACK_VALUE`]:
    ///   tasks with larger inputs or results take about 400 bytes more.
    ///   Read with `CONFIG GET`, and only as Redis' default user: drover's
    ///   ACL users get no `CONFIG`, and a refused command would show as a
    ///   denial in `ACL LOG`, which operators watch.
    pub async fn redis_advice(&self) -> Vec<String> {
        let mut advice = Vec::new();
        let Ok(mut con) = self.con().await else {
            return advice;
        };
        let memory: Option<String> = redis::cmd("INFO").arg("memory").query_async(&mut con).await.ok();
        let policy = memory.as_deref().and_then(|info| info_field(info, "maxmemory_policy"));
        if let Some(policy) = policy.filter(|p| *p != "noeviction") {
            advice.push(format!(
                "Redis has maxmemory-policy {policy}: when full it deletes keys, and an evicted task is a lost task; \
                 set noeviction (docs/DEPLOYMENT.md, Production Redis)"
            ));
        }
        let info = redis::IntoConnectionInfo::into_connection_info(self.opts.redis_url.as_str());
        let default_user = info.is_ok_and(|i| i.redis_settings().username().is_none_or(|u| u == "default"));
        if !default_user {
            return advice;
        }
        let reply: Option<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("hash-max-listpack-value")
            .query_async(&mut con)
            .await
            .ok();
        let limit = reply.and_then(|kv| kv.get(1).and_then(|v| v.parse::<u64>().ok()));
        if let Some(limit) = limit.filter(|l| *l < TASK_HASH_LISTPACK_VALUE) {
            advice.push(format!(
                "Redis has hash-max-listpack-value {limit}: each task with an input or result over {limit} bytes \
                 takes about 400 bytes more memory; set it to {TASK_HASH_LISTPACK_VALUE} (docs/DEPLOYMENT.md, Production Redis)"
            ));
        }
        advice
    }

    /// Redis `used_memory` and `maxmemory` (0 when unlimited), in bytes.
    pub async fn memory(&self) -> Result<(u64, u64)> {
        let mut con = self.con().await?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await?;
        let field = |name| info_field(&info, name).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((field("used_memory"), field("maxmemory")))
    }

    /// Backlog per live state.
    pub async fn counts(&self) -> Result<HashMap<String, i64>> {
        let mut con = self.con().await?;
        Ok(con.hgetall(self.keys.counts()).await?)
    }
}

/// The value of `name` in an `INFO` reply (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// An intake entry for a task, from the handler, tags JSON and priority
/// fields as HMGET returns them.
/// How `submit` announces a task it queues now: at version 1.
pub(crate) fn submitted_intake(t: &NewTask) -> IntakeTask {
    IntakeTask {
        id: t.id.to_string(),
        v: 1,
        h: t.handler.clone(),
        tags: t.tags.clone(),
        prio: t.priority,
    }
}

fn intake_task(id: String, v: u64, h: &Option<String>, tags: &Option<String>, prio: &Option<String>) -> IntakeTask {
    IntakeTask {
        id,
        v,
        h: h.clone().unwrap_or_default(),
        tags: tags
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
        prio: prio.as_deref().and_then(|p| p.parse().ok()).unwrap_or(0),
    }
}

/// The API's view of a task hash. `holder` is the worker its batch record
/// names, for a running task.
fn task_view(id: &str, m: &HashMap<String, String>, holder: Option<String>) -> Option<TaskView> {
    let state = TaskState::parse(m.get("state")?)?;
    let opt_num = |k: &str| m.get(k).and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0);
    Some(TaskView {
        id: id.to_string(),
        state,
        handler: m.get("h").cloned().unwrap_or_default(),
        input: m
            .get("in")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null),
        tags: m
            .get("tags")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
        priority: num(m.get("prio")),
        attempts: num(m.get("att")),
        max_attempts: num_or(m.get("max"), UNSTORED_MAX_ATTEMPTS),
        timeout_ms: num_or(m.get("to"), UNSTORED_TIMEOUT_MS),
        version: num(m.get("v")),
        run_at_ms: opt_num("run_at"),
        created_ms: num(m.get("ct")),
        // `ut` is not stored until the task first changes (then it is the
        // creation time), and neither assign.lua nor a finish writes it:
        // the lease start `st` and the finish time `fin` are the times of
        // those changes, so the latest of the three is the last write.
        updated_ms: num::<u64>(m.get("ut").or(m.get("ct")))
            .max(num(m.get("st")))
            .max(num(m.get("fin"))),
        started_ms: opt_num("st"),
        finished_ms: opt_num("fin"),
        // The lease of the latest attempt: its batch's token, and while it
        // runs, the worker the batch record names.
        worker: holder.filter(|w| !w.is_empty()),
        fence: m.get("b").cloned(),
        result: m
            .get("res")
            .map(|s| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.clone()))),
        error: m.get("err").cloned(),
        cancel_requested: m.get("cr").is_some_and(|c| c == "1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn info_fields_are_found_by_their_whole_name() {
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "maxmemory_policy"), Some("noeviction"));
        assert_eq!(info_field(info, "maxmemory"), None);
    }

    #[test]
    fn a_wait_under_a_millisecond_never_blocks_forever() {
        assert_eq!(block_ms(Duration::from_micros(250)), 1);
        assert_eq!(block_ms(Duration::ZERO), 1);
        assert_eq!(block_ms(Duration::from_millis(5)), 5);
    }

    #[test]
    fn listed_statuses_land_in_their_places() {
        let got = expand_positions("assign", 4, "ok", &strings(&["2", "missing", "4", "full"])).unwrap();
        assert_eq!(got, strings(&["ok", "missing", "ok", "full"]));
        assert_eq!(
            expand_positions("assign", 2, "ok", &[]).unwrap(),
            strings(&["ok", "ok"])
        );
    }

    #[test]
    fn a_reply_naming_no_task_of_the_call_is_an_error() {
        for bad in [&["0", "full"][..], &["3", "full"], &["x", "full"], &["1"]] {
            let err = expand_positions("assign", 2, "ok", &strings(bad)).unwrap_err();
            assert!(err.to_string().contains("unknown position"), "{bad:?}: {err}");
        }
    }
}
