//! The command line: one clap tree for the roles, `dev`, the client
//! commands and the admin tools, and `execute`, which turns a parsed command
//! into a running role or a client call. Role settings layer as defaults <
//! `--config` file < `DROVER_*` env < flags (see `config`).

use crate::admin;
use crate::client::{self, Client};
use crate::config::{Layers, Settings};
use crate::envelope::Keyring;
use crate::handlers::Registry;
use crate::roles::dev::{self, DevOptions};
use crate::roles::worker::WorkerSpec;
use crate::roles::{self, coordinator, distributor, worker, Context};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    Coordinator {
        #[command(flatten)]
        common: ServerArgs,
        /// API address (DROVER_HTTP_ADDR).
        #[arg(long)]
        http_addr: Option<String>,
    },
    /// Place queued tasks on workers.
    Distributor {
        #[command(flatten)]
        common: ServerArgs,
    },
    /// Run tasks with the handlers of this worker's profile.
    Worker {
        #[command(flatten)]
        common: ServerArgs,
        /// Tasks run at once (DROVER_WORKER_CAPACITY).
        #[arg(long)]
        capacity: Option<String>,
        /// Comma-separated tags (DROVER_WORKER_TAGS).
        #[arg(long)]
        tags: Option<String>,
    },
    /// All three roles in one process, with a Redis of its own unless --redis-url is given.
    Dev {
        #[command(flatten)]
        common: ServerArgs,
        /// Number of workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// API address (DROVER_HTTP_ADDR).
        #[arg(long)]
        http: Option<String>,
        /// Slots per worker (DROVER_WORKER_CAPACITY).
        #[arg(long)]
        capacity: Option<String>,
    },
    /// Submit tasks.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        /// Handler name, as a worker profile offers it.
        handler: String,
        /// JSON input.
        #[arg(long, default_value = "null")]
        input: String,
        /// How many copies to submit (in batches).
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Wait until every task has finished and report the outcome.
        #[arg(long)]
        wait: bool,
        /// Longest total wait with --wait, e.g. 10m.
        #[arg(long, default_value = "10m")]
        wait_timeout: String,
        /// Required worker tags, comma-separated.
        #[arg(long)]
        tags: Option<String>,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Time limit of one attempt, e.g. 30s.
        #[arg(long)]
        timeout: Option<String>,
        /// Run after this delay, e.g. 5m.
        #[arg(long)]
        delay: Option<String>,
        /// Repeat-safe submission key (single task only).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one task.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        /// Wait up to this long for the task to finish first, e.g. 30s.
        #[arg(long)]
        wait: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List tasks.
    Tasks {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List live workers.
    Workers {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Print a new signing key entry (KID:HEXSECRET) or, with --token, an API token.
    Keygen {
        /// Key id for the signing key.
        #[arg(long, default_value = "k1")]
        kid: String,
        #[arg(long)]
        token: bool,
    },
    /// Start a cluster of its own, run workloads, print one JSON line of measurements.
    Bench {
        /// Small workloads that finish in seconds.
        #[arg(long)]
        quick: bool,
        /// throughput, latency, memory, scripts or all (repeatable).
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Redis with AOF (appendfsync everysec) instead of no persistence.
        #[arg(long)]
        aof: bool,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Slots per worker.
        #[arg(long, default_value_t = 256)]
        capacity: u32,
        #[arg(long, default_value_t = 1)]
        distributors: usize,
        /// Tasks for the throughput and memory scenarios (default 100000 and 1000000; 5000 and 20000 with --quick).
        #[arg(long)]
        tasks: Option<usize>,
        /// Run the roles as separate processes of this binary and report each role's CPU per task
        /// (submit → start is then not measured).
        #[arg(long)]
        processes: bool,
        /// Each task's input: a JSON string of this many bytes, quotes included (default: null, 4 bytes).
        #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16_000_000))]
        input_bytes: Option<u32>,
        /// An extra redis-server argument, after drover's own (repeatable; e.g. --redis-arg=--io-threads --redis-arg=2).
        #[arg(long = "redis-arg", allow_hyphen_values = true)]
        redis_args: Vec<String>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print Redis ACL users, one per role, each limited to the commands and keys that role needs.
    RedisAcl {
        /// Key namespace (DROVER_NAMESPACE).
        #[arg(long, env = "DROVER_NAMESPACE", default_value = "drover")]
        namespace: String,
        /// Also a user limited to this worker id's own hash and stream (repeatable).
        #[arg(long = "worker-id")]
        worker_ids: Vec<String>,
        /// Leave out the worker user that any worker id can use.
        #[arg(long)]
        no_shared_worker: bool,
        /// Keep each password in DIR/<user>: read if present, else created (mode 0600).
        /// Without it, new passwords are printed on stderr.
        #[arg(long)]
        password_dir: Option<PathBuf>,
        /// Print `user ...` lines for a Redis aclfile instead of `ACL SETUSER` commands.
        #[arg(long)]
        aclfile: bool,
    },
    /// Back up and restore task state.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
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
}

impl ServerArgs {
    fn layers(&self) -> anyhow::Result<Layers> {
        let mut layers = Layers::load(self.config.as_deref())?;
        layers.set_flag("redis_url", "--redis-url", self.redis_url.clone());
        layers.set_flag("namespace", "--namespace", self.namespace.clone());
        layers.set_flag("admin_addr", "--admin-addr", self.admin_addr.clone());
        Ok(layers)
    }
}

/// Waits for SIGTERM or SIGINT, then cancels `token`; a second signal exits at once.
pub fn on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot listen for signals");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown requested: draining (a second signal exits at once)");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the {what}: {e}"))
}

/// Starts the admin server and the Redis watchdog for a role process.
/// The admin port and the watchdog live until the returned guard drops, after
/// the role has drained, so `/ready` answers 503 "draining" meanwhile.
async fn start_common(ctx: &Context) -> anyhow::Result<tokio_util::sync::DropGuard> {
    let admin = bind(ctx.settings.admin_addr, "admin port").await?;
    tracing::info!(addr = %admin.local_addr()?, "admin port: /health /ready /metrics");
    let health = ctx.health.clone();
    let admin_stop = CancellationToken::new();
    let stop = admin_stop.clone();
    tokio::spawn(async move {
        if let Err(e) = admin::serve(admin, health, async move { stop.cancelled().await }).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    tokio::spawn(roles::watch_redis(ctx.clone(), admin_stop.clone()));
    Ok(admin_stop.drop_guard())
}

fn resolve(layers: &Layers) -> anyhow::Result<Settings> {
    let settings = layers.resolve()?;
    crate::telemetry::init_logs(settings.log_format == "json");
    crate::telemetry::metrics_handle();
    Ok(settings)
}

fn process_id(role: &str, given: Option<&str>) -> String {
    given.map(String::from).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{role}-{}-{}", host.trim(), std::process::id())
    })
}

/// Client commands print to stdout: let `drover tasks | head` end quietly
/// when the reader goes away, as command-line tools do, instead of failing
/// on a broken pipe.
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of SIGPIPE has no
    // preconditions; it only changes what a write to a closed pipe does.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the parsed command to completion.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    if matches!(
        cli.command,
        Command::Submit { .. }
            | Command::Status { .. }
            | Command::Cancel { .. }
            | Command::Tasks { .. }
            | Command::Workers { .. }
            | Command::Keygen { .. }
            | Command::RedisAcl { .. }
            | Command::Config { .. }
    ) {
        default_sigpipe();
    }
    match cli.command {
        Command::Coordinator { common, http_addr } => {
            let mut layers = common.layers()?;
            layers.set_flag("coordinator.http_addr", "--http-addr", http_addr);
            let settings = resolve(&layers)?;
            let id = process_id("coordinator", common.id.as_deref());
            let ctx = Context::new(settings, "coordinator", &id)?;
            let shutdown = CancellationToken::new();
            on_signals(shutdown.clone());
            let listener = bind(ctx.settings.coordinator.http_addr, "API").await?;
            let _admin = start_common(&ctx).await?;
            coordinator::run(ctx, listener, id, shutdown).await
        }
        Command::Distributor { common } => {
            let settings = resolve(&common.layers()?)?;
            let id = process_id("distributor", common.id.as_deref());
            let ctx = Context::new(settings, "distributor", &id)?;
            let shutdown = CancellationToken::new();
            on_signals(shutdown.clone());
            let _admin = start_common(&ctx).await?;
            distributor::run(ctx, id, shutdown).await
        }
        Command::Worker { common, capacity, tags } => {
            let mut layers = common.layers()?;
            layers.set_flag("worker.id", "--id", common.id.clone());
            layers.set_flag("worker.capacity", "--capacity", capacity);
            layers.set_flag("worker.tags", "--tags", tags);
            let settings = resolve(&layers)?;
            let registry = Registry::from_specs(&settings.worker.handlers)?;
            let w = &settings.worker;
            let spec = WorkerSpec {
                id: w.id.clone(),
                capacity: w.capacity,
                tags: w.tags.clone(),
                grace: w.grace,
                registry,
            };
            let ctx = Context::new(settings, "worker", &spec.id)?;
            let shutdown = CancellationToken::new();
            on_signals(shutdown.clone());
            let _admin = start_common(&ctx).await?;
            worker::run(ctx, spec, shutdown).await
        }
        Command::Dev {
            common,
            workers,
            http,
            capacity,
        } => {
            let mut layers = common.layers()?;
            layers.set_flag("coordinator.http_addr", "--http", http);
            layers.set_flag("worker.capacity", "--capacity", capacity);
            let mut settings = resolve(&layers)?;
            let own_redis = common.redis_url.is_none() && std::env::var("DROVER_REDIS_URL").is_err();
            let (redis, token) = dev::prepare(&mut settings, own_redis)?;
            let ctx = Context::new(settings, "dev", "dev")?;
            let shutdown = CancellationToken::new();
            on_signals(shutdown.clone());
            let listener = bind(ctx.settings.coordinator.http_addr, "API").await?;
            let _admin = start_common(&ctx).await?;
            let api = format!("http://{}", listener.local_addr()?);
            eprintln!(
                "drover dev: API {api}, admin http://{}, redis {}",
                ctx.settings.admin_addr,
                crate::config::redact_url(&ctx.settings.redis_url.0)
            );
            match token {
                Some(t) => eprintln!("  export DROVER_API={api} DROVER_API_TOKEN={t}"),
                None => eprintln!("  export DROVER_API={api}   (token: your DROVER_API_TOKEN)"),
            }
            let r = dev::run(ctx, listener, DevOptions { workers }, shutdown).await;
            drop(redis);
            r
        }
        Command::Submit {
            api,
            handler,
            input,
            count,
            wait,
            wait_timeout,
            tags,
            priority,
            max_attempts,
            timeout,
            delay,
            idempotency_key,
            json,
        } => {
            let input: serde_json::Value =
                serde_json::from_str(&input).map_err(|e| anyhow::anyhow!("--input: not JSON: {e}"))?;
            let wait_timeout = crate::units::parse_duration(&wait_timeout)
                .ok_or_else(|| anyhow::anyhow!("--wait-timeout: {wait_timeout:?} is not a duration"))?;
            let req = crate::api::SubmitRequest {
                handler,
                input,
                tags: tags
                    .map(|t| {
                        t.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                priority: priority.unwrap_or(0),
                max_attempts,
                timeout,
                run_at_ms: None,
                delay,
                idempotency_key,
            };
            client::submit(
                &Client::new(&api.api, api.token)?,
                req,
                count,
                wait.then_some(wait_timeout),
                json,
            )
            .await
        }
        Command::Status { api, id, wait, json } => {
            let wait = match wait {
                None => None,
                Some(w) => Some(
                    crate::units::parse_duration(&w)
                        .ok_or_else(|| anyhow::anyhow!("--wait: {w:?} is not a duration"))?,
                ),
            };
            client::status(&Client::new(&api.api, api.token)?, &id, wait, json).await
        }
        Command::Cancel { api, id, json } => client::cancel(&Client::new(&api.api, api.token)?, &id, json).await,
        Command::Tasks {
            api,
            state,
            limit,
            cursor,
            json,
        } => {
            client::tasks(
                &Client::new(&api.api, api.token)?,
                state.as_deref(),
                limit,
                cursor.as_deref(),
                json,
            )
            .await
        }
        Command::Workers { api, json } => client::workers(&Client::new(&api.api, api.token)?, json).await,
        Command::Keygen { kid, token } => {
            if token {
                println!("{}", crate::api::auth::generate_token());
            } else {
                let spec = Keyring::generate().to_spec();
                let secret = spec.split_once(':').map(|(_, s)| s).unwrap_or_default();
                let line = format!("{kid}:{secret}");
                Keyring::parse(&line, None).map_err(|e| anyhow::anyhow!("--kid: {e}"))?;
                println!("{line}");
            }
            Ok(())
        }
        Command::Bench {
            quick,
            scenarios,
            aof,
            workers,
            capacity,
            distributors,
            tasks,
            processes,
            input_bytes,
            redis_args,
        } => {
            if let Some(bad) = scenarios
                .iter()
                .find(|s| !["throughput", "latency", "memory", "scripts", "all"].contains(&s.as_str()))
            {
                anyhow::bail!("--scenario: {bad:?} is not throughput, latency, memory, scripts or all");
            }
            if std::env::var("RUST_LOG").is_err() {
                std::env::set_var("RUST_LOG", "warn");
            }
            crate::telemetry::init_logs(false);
            crate::telemetry::metrics_handle();
            let opts = crate::bench::BenchOptions {
                scenarios,
                quick,
                aof,
                workers,
                capacity,
                distributors,
                tasks,
                processes,
                input_bytes: input_bytes.map(|n| n as usize),
                redis_args,
            };
            let out = crate::bench::run(opts).await?;
            println!("{}", serde_json::to_string(&out)?);
            Ok(())
        }
        Command::RedisAcl {
            namespace,
            worker_ids,
            no_shared_worker,
            password_dir,
            aclfile,
        } => {
            let out = crate::acl::run(&crate::acl::Options {
                namespace,
                worker_ids,
                shared_worker: !no_shared_worker,
                password_dir,
                format: if aclfile {
                    crate::acl::Format::AclFile
                } else {
                    crate::acl::Format::Commands
                },
            })?;
            eprint!("{}", out.notes);
            print!("{}", out.rules);
            Ok(())
        }
        Command::Snapshot { command } => {
            let common = match &command {
                SnapshotCommand::Export { common, .. } | SnapshotCommand::Import { common, .. } => common,
            };
            let settings = resolve(&common.layers()?)?;
            let namespace = settings.namespace.clone();
            let ctx = Context::new(settings, "snapshot", "snapshot")?;
            ctx.store
                .ping()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach redis: {e}"))?;
            match command {
                SnapshotCommand::Export { out, results, .. } => {
                    let (live, finished) = crate::snapshot::export(&ctx.store, &namespace, &out, results).await?;
                    println!(
                        "exported {live} live and {finished} finished tasks to {}",
                        out.display()
                    );
                }
                SnapshotCommand::Import { input, force, .. } => {
                    let counts = crate::snapshot::import(&ctx.store, &input, force).await?;
                    let mut parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
                    parts.sort();
                    println!("imported from {}: {}", input.display(), parts.join(", "));
                }
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { common },
        } => {
            let layers = common.layers()?;
            let settings = layers.resolve()?;
            if !settings.worker.handlers.is_empty() {
                Registry::from_specs(&settings.worker.handlers)?;
            }
            for (key, value, origin) in layers.describe() {
                println!("{key} = {value}    # {origin}");
            }
            println!("# ok: configuration is valid");
            Ok(())
        }
    }
}
