//! The admin tools: `keygen`, `config check`, `redis-acl`, `snapshot
//! export|import` and `bench`, one function each. They run once and exit;
//! none of them starts a role.

use super::args::{BenchArgs, KeygenArgs, RedisAclArgs, ServerArgs};
use super::role::settings;
use crate::context::Context;
use crate::envelope::Keyring;
use crate::handlers::Registry;
use std::path::Path;

/// The scenarios `--scenario` takes.
const SCENARIOS: [&str; 6] = ["throughput", "latency", "memory", "scripts", "turnover", "all"];

pub(super) fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    if args.token {
        println!("{}", crate::api::auth::generate_token());
        return Ok(());
    }
    let spec = Keyring::generate().to_spec();
    let secret = spec.split_once(':').map(|(_, s)| s).unwrap_or_default();
    let line = format!("{}:{secret}", args.kid);
    // The keyring's own parser judges the key id, so what it prints loads.
    Keyring::parse(&line, None).map_err(|e| anyhow::anyhow!("--kid: {e}"))?;
    println!("{line}");
    Ok(())
}

/// Validates the configuration (handlers included) and prints every
/// effective value with where it came from, secrets redacted.
pub(super) fn config_check(common: ServerArgs) -> anyhow::Result<()> {
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

pub(super) fn redis_acl(args: RedisAclArgs) -> anyhow::Result<()> {
    let out = crate::acl::run(&crate::acl::Options {
        namespace: args.namespace,
        worker_ids: args.worker_ids,
        shared_worker: !args.no_shared_worker,
        password_dir: args.password_dir,
        format: if args.aclfile {
            crate::acl::Format::AclFile
        } else {
            crate::acl::Format::Commands
        },
    })?;
    eprint!("{}", out.notes);
    print!("{}", out.rules);
    Ok(())
}

pub(super) async fn snapshot_export(common: ServerArgs, out: &Path, results: bool) -> anyhow::Result<()> {
    let ctx = snapshot_context(&common).await?;
    let (live, finished) = crate::snapshot::export(&ctx.store, &ctx.settings.namespace, out, results).await?;
    println!(
        "exported {live} live and {finished} finished tasks to {}",
        out.display()
    );
    Ok(())
}

pub(super) async fn snapshot_import(common: ServerArgs, input: &Path, force: bool) -> anyhow::Result<()> {
    let ctx = snapshot_context(&common).await?;
    let counts = crate::snapshot::import(&ctx.store, input, force).await?;
    let mut parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    parts.sort();
    println!("imported from {}: {}", input.display(), parts.join(", "));
    Ok(())
}

/// A store for the snapshot tools, checked to answer before any work.
async fn snapshot_context(common: &ServerArgs) -> anyhow::Result<Context> {
    let ctx = Context::new(settings(&common.layers()?)?, "snapshot", "snapshot")?;
    ctx.store
        .ping()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach redis: {e}"))?;
    Ok(ctx)
}

pub(super) async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(bad) = args.scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        anyhow::bail!("--scenario: {bad:?} is not throughput, latency, memory, scripts, turnover or all");
    }
    // The bench prints one JSON line; the roles it starts keep quiet
    // unless RUST_LOG asks otherwise.
    if std::env::var("RUST_LOG").is_err() {
        std::env::set_var("RUST_LOG", "warn");
    }
    crate::telemetry::init_logs(false);
    crate::telemetry::metrics_handle();
    let opts = crate::bench::BenchOptions {
        scenarios: args.scenarios,
        quick: args.quick,
        aof: args.aof,
        workers: args.workers,
        capacity: args.capacity,
        distributors: args.distributors,
        tasks: args.tasks,
        processes: args.processes,
        input_bytes: args.input_bytes.map(|n| n as usize),
        redis_args: args.redis_args,
    };
    let out = crate::bench::run(opts).await?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
