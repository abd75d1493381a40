//! Starting a role process. Every role — coordinator, distributor, worker
//! and `dev` — starts the same way, in [`run_role`]: settings resolved with
//! logs and metrics set up, the [`Context`] built, SIGTERM and SIGINT wired
//! to drain, the role's own port (the API, or none) bound, the admin port
//! and Redis watchdog started, and the role run until it has drained. The
//! functions here only say what differs: the flags that layer on top and
//! what the role needs before it runs.

use super::args::{CoordinatorArgs, DevArgs, DistributorArgs, WorkerArgs};
use crate::admin;
use crate::config::{Layers, Settings};
use crate::context::Context;
use crate::handlers::Registry;
use crate::roles::dev::{self, DevOptions};
use crate::roles::worker::WorkerSpec;
use crate::roles::{self, coordinator, distributor, worker};
use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(super) async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let mut layers = args.common.layers()?;
    layers.set_flag("coordinator.http_addr", "--http-addr", args.http_addr);
    let settings = settings(&layers)?;
    let id = process_id("coordinator", args.common.id.as_deref());
    run_role(settings, "coordinator", &id, |ctx, api, shutdown| {
        coordinator::run(ctx, api, id.clone(), shutdown)
    })
    .await
}

pub(super) async fn distributor(args: DistributorArgs) -> anyhow::Result<()> {
    let settings = settings(&args.common.layers()?)?;
    let id = process_id("distributor", args.common.id.as_deref());
    run_role(settings, "distributor", &id, |ctx, (), shutdown| {
        distributor::run(ctx, id.clone(), shutdown)
    })
    .await
}

pub(super) async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let mut layers = args.common.layers()?;
    layers.set_flag("worker.id", "--id", args.common.id.clone());
    layers.set_flag("worker.capacity", "--capacity", args.capacity);
    layers.set_flag("worker.tags", "--tags", args.tags);
    let settings = settings(&layers)?;
    let registry = Registry::from_specs(&settings.worker.handlers)?;
    let w = &settings.worker;
    let spec = WorkerSpec {
        id: w.id.clone(),
        capacity: w.capacity,
        tags: w.tags.clone(),
        queues: w.queues.clone(),
        grace: w.grace,
        registry,
    };
    let id = spec.id.clone();
    run_role(settings, "worker", &id, |ctx, (), shutdown| {
        worker::run(ctx, spec, shutdown)
    })
    .await
}

pub(super) async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let mut layers = args.common.layers()?;
    layers.set_flag("coordinator.http_addr", "--http", args.http);
    layers.set_flag("worker.capacity", "--capacity", args.capacity);
    let mut settings = settings(&layers)?;
    let own_redis = args.common.redis_url.is_none() && std::env::var("DROVER_REDIS_URL").is_err();
    let (redis, token) = dev::prepare(&mut settings, own_redis)?;
    let workers = args.workers;
    run_role(settings, "dev", "dev", |ctx, api: TcpListener, shutdown| async move {
        print_dev_banner(&ctx, &api, token)?;
        let r = dev::run(ctx, api, DevOptions { workers }, shutdown).await;
        // The Redis child stops once the roles have drained, not before.
        drop(redis);
        r
    })
    .await
}

/// How to reach a dev cluster, on stderr.
fn print_dev_banner(ctx: &Context, api: &TcpListener, token: Option<String>) -> anyhow::Result<()> {
    let scheme = if ctx.settings.coordinator.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let api = format!("{scheme}://{}", api.local_addr()?);
    eprintln!(
        "drover dev: API {api}, admin http://{}, redis {}",
        ctx.settings.admin_addr,
        crate::config::redact_url(&ctx.settings.redis_url.0)
    );
    match token {
        Some(t) => eprintln!("  export DROVER_API={api} DROVER_API_TOKEN={t}"),
        None => eprintln!("  export DROVER_API={api}   (token: your DROVER_API_TOKEN)"),
    }
    Ok(())
}

/// The port a role serves besides the admin port: none (`()`), or the API
/// (a bound [`TcpListener`]). Binding it before the admin port means a
/// process whose API port is taken never reports ready.
pub(super) trait RolePort: Sized {
    async fn bind(settings: &Settings) -> anyhow::Result<Self>;
}

impl RolePort for () {
    async fn bind(_: &Settings) -> anyhow::Result<()> {
        Ok(())
    }
}

impl RolePort for TcpListener {
    async fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
        bind(settings.coordinator.http_addr, "API").await
    }
}

/// Starts a role process and runs it: builds the [`Context`], drains on
/// SIGTERM or SIGINT, binds the role's port, serves the admin port, then
/// awaits `run`. The admin port closes only after `run` returns.
pub(super) async fn run_role<P, F, Fut>(settings: Settings, role: &str, id: &str, run: F) -> anyhow::Result<()>
where
    P: RolePort,
    F: FnOnce(Context, P, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let ctx = Context::new(settings, role, id)?;
    let shutdown = CancellationToken::new();
    on_signals(shutdown.clone());
    let port = P::bind(&ctx.settings).await?;
    let _admin = start_admin(&ctx).await?;
    run(ctx, port, shutdown).await
}

/// Types and checks the settings, then sets up logs (in the format they
/// ask for) and metrics.
pub(super) fn settings(layers: &Layers) -> anyhow::Result<Settings> {
    let settings = layers.resolve()?;
    crate::telemetry::init_logs(settings.log_format == "json");
    crate::telemetry::metrics_handle();
    Ok(settings)
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
async fn start_admin(ctx: &Context) -> anyhow::Result<tokio_util::sync::DropGuard> {
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

/// The id given, or `<role>-<hostname>-<pid>`.
fn process_id(role: &str, given: Option<&str>) -> String {
    given.map(String::from).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{role}-{}-{}", host.trim(), std::process::id())
    })
}
