//! The clap tree: every subcommand and flag `drover` takes, and nothing that
//! acts on them. Each leaf subcommand holds one `…Args` struct, so the
//! function that runs it (in `roles`, `client` or `tools`) takes one value.

use crate::client::{Client, ClientTls};
use crate::config::Layers;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version,
    about = "A distributed task system on Redis Streams: coordinator, distributor and worker roles."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API; the leader among coordinators also reaps and schedules.
    Coordinator(CoordinatorArgs),
    /// Place queued tasks on workers.
    Distributor(DistributorArgs),
    /// Run tasks with the handlers of this worker's profile.
    Worker(WorkerArgs),
    /// All three roles in one process, with a Redis of its own unless --redis-url is given.
    Dev(DevArgs),
    /// Submit tasks.
    Submit(SubmitArgs),
    /// Show one task.
    Status(StatusArgs),
    /// Cancel a task.
    Cancel(CancelArgs),
    /// List tasks.
    Tasks(TasksArgs),
    /// List live workers.
    Workers(WorkersArgs),
    /// List queues with their counts.
    Queues(QueuesArgs),
    /// Serve MCP on stdin/stdout: tools for an agent to submit, wait for, read and cancel tasks.
    Mcp(McpArgs),
    /// Show, pause, resume, drain or limit one queue, or act on its finished tasks.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Run a dead or cancelled task again (attempts reset).
    Retry(TaskActionArgs),
    /// Delete a finished task before its result TTL.
    Discard(TaskActionArgs),
    /// Print a new signing key entry (KID:HEXSECRET) or, with --token, an API token.
    Keygen(KeygenArgs),
    /// Start a cluster of its own, run workloads, print one JSON line of measurements.
    Bench(BenchArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print Redis ACL users, one per role, each limited to the commands and keys that role needs.
    RedisAcl(RedisAclArgs),
    /// Back up and restore task state.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

/// The flags of `drover coordinator`.
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub common: ServerArgs,
    /// API address (DROVER_HTTP_ADDR).
    #[arg(long)]
    pub http_addr: Option<String>,
}

/// The flags of `drover distributor`.
#[derive(Args, Debug)]
pub struct DistributorArgs {
    #[command(flatten)]
    pub common: ServerArgs,
}

/// The flags of `drover worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: ServerArgs,
    /// Tasks run at once (DROVER_WORKER_CAPACITY).
    #[arg(long)]
    pub capacity: Option<String>,
    /// Comma-separated tags (DROVER_WORKER_TAGS).
    #[arg(long)]
    pub tags: Option<String>,
}

/// The flags of `drover dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    #[command(flatten)]
    pub common: ServerArgs,
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// API address (DROVER_HTTP_ADDR).
    #[arg(long)]
    pub http: Option<String>,
    /// Slots per worker (DROVER_WORKER_CAPACITY).
    #[arg(long)]
    pub capacity: Option<String>,
}

/// The flags of `drover submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Handler name, as a worker profile offers it.
    pub handler: String,
    /// JSON input.
    #[arg(long, default_value = "null")]
    pub input: String,
    /// How many copies to submit (in batches).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Wait until every task has finished and report the outcome.
    #[arg(long)]
    pub wait: bool,
    /// Longest total wait with --wait, e.g. 10m.
    #[arg(long, default_value = "10m")]
    pub wait_timeout: String,
    /// Required worker tags, comma-separated.
    #[arg(long)]
    pub tags: Option<String>,
    /// Queue to put the tasks in (default: default).
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub priority: Option<i32>,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Time limit of one attempt, e.g. 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Run after this delay, e.g. 5m.
    #[arg(long)]
    pub delay: Option<String>,
    /// Repeat-safe submission key (single task only).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// While a task with this key is live, submitting it again returns that task.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// With --unique-key: it also holds this long from submission, e.g. 10m.
    #[arg(long)]
    pub unique_for: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The flags of `drover status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    pub id: String,
    /// Wait up to this long for the task to finish first, e.g. 30s.
    #[arg(long)]
    pub wait: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The flags of `drover cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

/// The flags of `drover tasks`.
#[derive(Args, Debug)]
pub struct TasksArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub state: Option<String>,
    /// Only tasks of this queue.
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[arg(long)]
    pub cursor: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The flags of `drover queues`.
#[derive(Args, Debug)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub json: bool,
}

/// The flags of `drover mcp`: the API and the token its tools act with.
#[derive(Args, Debug)]
pub struct McpArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The flags of `drover retry` and `drover discard`: one task.
#[derive(Args, Debug)]
pub struct TaskActionArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Show the queue: counts, whether it is paused or draining, limits.
    Show(QueueArgs),
    /// Stop starting the queue's tasks (they stay queued).
    Pause(QueueArgs),
    /// Start the queue's tasks again, and accept new ones after a drain.
    Resume(QueueArgs),
    /// Refuse new submissions while the queued tasks run.
    Drain(QueueArgs),
    /// Set the queue's limits; a limit not given is removed.
    Limits {
        #[command(flatten)]
        queue: QueueArgs,
        /// Most of its tasks running at once.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Most tasks started per period: 100/s, 5000/m, 30/10s.
        #[arg(long)]
        rate: Option<String>,
        /// How many may start at once after a quiet spell (with --rate).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Run every dead task of the queue again.
    RetryDead(QueueArgs),
    /// Delete the queue's tasks finished in one state.
    Purge {
        #[command(flatten)]
        queue: QueueArgs,
        /// succeeded, dead or cancelled.
        #[arg(long)]
        state: String,
    },
}

/// One queue, named.
#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    pub queue: String,
    #[arg(long)]
    pub json: bool,
}

/// The flags of `drover workers`.
#[derive(Args, Debug)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub json: bool,
}

/// The flags of `drover keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Key id for the signing key.
    #[arg(long, default_value = "k1")]
    pub kid: String,
    #[arg(long)]
    pub token: bool,
}

/// The flags of `drover bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Small workloads that finish in seconds.
    #[arg(long)]
    pub quick: bool,
    /// throughput, latency, memory, scripts, turnover or all (repeatable; all = every one but turnover).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// Redis with AOF (appendfsync everysec) instead of no persistence.
    #[arg(long)]
    pub aof: bool,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 256)]
    pub capacity: u32,
    #[arg(long, default_value_t = 1)]
    pub distributors: usize,
    /// Tasks for the throughput and memory scenarios (default 100000 and 1000000; 5000 and 20000 with --quick).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Run the roles as separate processes of this binary and report each role's CPU per task
    /// (submit → start is then not measured).
    #[arg(long)]
    pub processes: bool,
    /// Each task's input: a JSON string of this many bytes, quotes included (default: null, 4 bytes).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16_000_000))]
    pub input_bytes: Option<u32>,
    /// An extra redis-server argument, after drover's own (repeatable; e.g. --redis-arg=--io-threads --redis-arg=2).
    #[arg(long = "redis-arg", allow_hyphen_values = true)]
    pub redis_args: Vec<String>,
}

/// The flags of `drover redis-acl`.
#[derive(Args, Debug)]
pub struct RedisAclArgs {
    /// Key namespace (DROVER_NAMESPACE).
    #[arg(long, env = "DROVER_NAMESPACE", default_value = "drover")]
    pub namespace: String,
    /// Also a user limited to this worker id's own hash and stream (repeatable).
    #[arg(long = "worker-id")]
    pub worker_ids: Vec<String>,
    /// Leave out the worker user that any worker id can use.
    #[arg(long)]
    pub no_shared_worker: bool,
    /// Keep each password in DIR/<user>: read if present, else created (mode 0600).
    /// Without it, new passwords are printed on stderr.
    #[arg(long)]
    pub password_dir: Option<PathBuf>,
    /// Print `user ...` lines for a Redis aclfile instead of `ACL SETUSER` commands.
    #[arg(long)]
    pub aclfile: bool,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Write every live task (and with --results, finished ones) to a file.
    Export {
        #[command(flatten)]
        common: ServerArgs,
        /// The snapshot file to write.
        #[arg(long)]
        out: PathBuf,
        /// Include finished tasks and their results.
        #[arg(long)]
        results: bool,
    },
    /// Restore a snapshot into an empty namespace; live tasks run again.
    Import {
        #[command(flatten)]
        common: ServerArgs,
        /// The snapshot file to read.
        #[arg(long = "in")]
        input: PathBuf,
        /// Import even if the namespace holds tasks (existing ids are left alone).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration and print the effective values, secrets redacted.
    Check {
        #[command(flatten)]
        common: ServerArgs,
    },
}

/// Settings every server role takes.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Role profile (TOML), e.g. roles/worker.toml.
    #[arg(long, env = "DROVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL (DROVER_REDIS_URL).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Key namespace (DROVER_NAMESPACE).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Admin address for /health, /ready, /metrics (DROVER_ADMIN_ADDR).
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// Worker or distributor id (DROVER_WORKER_ID for workers).
    #[arg(long)]
    pub id: Option<String>,
}

/// Where the client commands find the API.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    #[arg(long, env = "DROVER_API", default_value = "http://127.0.0.1:7070")]
    pub api: String,
    #[arg(long, env = "DROVER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificates to trust for an https:// API, instead of the
    /// built-in roots.
    #[arg(long, env = "DROVER_API_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for an API that requires one (may hold the key too).
    #[arg(long, env = "DROVER_API_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert, when not in that file.
    #[arg(long, env = "DROVER_API_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

impl ServerArgs {
    /// The configuration layers with this command's flags on top.
    pub(super) fn layers(&self) -> anyhow::Result<Layers> {
        let mut layers = Layers::load(self.config.as_deref())?;
        layers.set_flag("redis_url", "--redis-url", self.redis_url.clone());
        layers.set_flag("namespace", "--namespace", self.namespace.clone());
        layers.set_flag("admin_addr", "--admin-addr", self.admin_addr.clone());
        Ok(layers)
    }
}

impl ApiArgs {
    /// A client of the API these flags name.
    pub(super) fn client(self) -> anyhow::Result<Client> {
        let tls = ClientTls {
            ca_file: self.ca_file,
            cert_file: self.client_cert,
            key_file: self.client_key,
        };
        Client::with_tls(&self.api, self.token, &tls)
    }
}
