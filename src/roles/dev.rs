//! `drover dev`: all three roles in one process plus, unless a Redis URL is
//! given, a `redis-server` child on a free port in a temp dir — the
//! embedded cluster a newcomer runs first. It makes a signing key, and an
//! API token unless `DROVER_API_TOKEN` is set, and prints how to reach it.

use super::worker::WorkerSpec;
use super::{coordinator, distributor, worker};
use crate::api::auth::{generate_token, ApiTokens};
use crate::config::Settings;
use crate::context::Context;
use crate::envelope::Keyring;
use crate::handlers::Registry;
use crate::redis_server::{Persistence, RedisServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct DevOptions {
    pub workers: usize,
}

/// Prepares settings for a dev cluster: a Redis of its own when none is
/// given, a generated key and token when none are set. Returns the Redis
/// child (kept alive by the caller) and the token to print, if generated.
pub fn prepare(settings: &mut Settings, own_redis: bool) -> anyhow::Result<(Option<RedisServer>, Option<String>)> {
    let redis = if own_redis {
        let server = RedisServer::start(Persistence::None)?;
        settings.redis_url.0 = server.url();
        Some(server)
    } else {
        None
    };
    if settings.keyring.is_none() {
        settings.keyring = Some(Keyring::generate());
    }
    let mut printed = None;
    if settings.api_tokens.is_none() {
        let token = match std::env::var("DROVER_API_TOKEN") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = generate_token();
                printed = Some(t.clone());
                t
            }
        };
        settings.api_tokens = Some(ApiTokens::single_admin(&token));
    }
    Ok((redis, printed))
}

/// Runs coordinator, distributor and `workers` workers until `shutdown`.
pub async fn run(
    ctx: Context,
    listener: TcpListener,
    opts: DevOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = if ctx.settings.worker.handlers.is_empty() {
        Registry::builtins()
    } else {
        Registry::from_specs(&ctx.settings.worker.handlers)?
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(coordinator::run(
        ctx.clone(),
        listener,
        "dev-coordinator".into(),
        shutdown.clone(),
    ));
    tasks.spawn(distributor::run(
        ctx.clone(),
        "dev-distributor".into(),
        shutdown.clone(),
    ));
    for n in 1..=opts.workers.max(1) {
        let spec = WorkerSpec {
            id: format!("dev-worker-{n}"),
            capacity: ctx.settings.worker.capacity,
            tags: ctx.settings.worker.tags.clone(),
            queues: ctx.settings.worker.queues.clone(),
            grace: ctx.settings.worker.grace,
            registry: registry.clone(),
        };
        tasks.spawn(worker::run(ctx.clone(), spec, shutdown.clone()));
    }
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = r {
            // One role failing stops the others: a half cluster misleads.
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
