//! The command line: one clap tree for the roles, `dev`, the client
//! commands and the admin tools, and `execute`, which turns a parsed command
//! into a running role or a client call. Role settings layer as defaults <
//! `--config` file < `DROVER_*` env < flags (see `config`).
//!
//! - `args`: the clap types, apart from what acts on them.
//! - `role`: starting a role process, the one way all four roles start.
//! - `client`: the client subcommands, one function each.
//! - `queues`: the operator's client subcommands (queues, retry, discard,
//!   purge), one function each.
//! - `tools`: the admin tools, one function each.
//!
//! `drover mcp` runs `crate::mcp::server` with the client its flags name.

mod args;
mod client;
mod queues;
mod role;
mod tools;

pub use args::{
    ApiArgs, BenchArgs, CancelArgs, Cli, Command, ConfigCommand, CoordinatorArgs, DevArgs, DistributorArgs, KeygenArgs,
    McpArgs, QueueArgs, QueueCommand, QueuesArgs, RedisAclArgs, ServerArgs, SnapshotCommand, StatusArgs, SubmitArgs,
    TaskActionArgs, TasksArgs, WorkerArgs, WorkersArgs,
};
pub use role::on_signals;

/// Runs the parsed command to completion.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    if prints_for_a_reader(&cli.command) {
        default_sigpipe();
    }
    match cli.command {
        Command::Coordinator(args) => role::coordinator(args).await,
        Command::Distributor(args) => role::distributor(args).await,
        Command::Worker(args) => role::worker(args).await,
        Command::Dev(args) => role::dev(args).await,
        Command::Submit(args) => client::submit(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Cancel(args) => client::cancel(args).await,
        Command::Tasks(args) => client::tasks(args).await,
        Command::Workers(args) => client::workers(args).await,
        Command::Queues(args) => queues::queues(args).await,
        Command::Mcp(args) => crate::mcp::server::stdio(args.api.client()?).await,
        Command::Queue { command } => match command {
            QueueCommand::Show(args) => queues::show(args).await,
            QueueCommand::Pause(args) => queues::change(args, "pause").await,
            QueueCommand::Resume(args) => queues::change(args, "resume").await,
            QueueCommand::Drain(args) => queues::change(args, "drain").await,
            QueueCommand::Limits {
                queue,
                concurrency,
                rate,
                burst,
            } => {
                let limits = crate::api::QueueLimitsBody {
                    concurrency,
                    rate,
                    burst,
                };
                queues::limits(queue, &limits).await
            }
            QueueCommand::RetryDead(args) => queues::retry_dead(args).await,
            QueueCommand::Purge { queue, state } => queues::purge(queue, &state).await,
        },
        Command::Retry(args) => queues::retry(args).await,
        Command::Discard(args) => queues::discard(args).await,
        Command::Keygen(args) => tools::keygen(args),
        Command::Bench(args) => tools::bench(args).await,
        Command::RedisAcl(args) => tools::redis_acl(args),
        Command::Config {
            command: ConfigCommand::Check { common },
        } => tools::config_check(common),
        Command::Snapshot { command } => match command {
            SnapshotCommand::Export { common, out, results } => tools::snapshot_export(common, &out, results).await,
            SnapshotCommand::Import { common, input, force } => tools::snapshot_import(common, &input, force).await,
        },
    }
}

/// The commands whose output is read by a person or a pipe (not the roles,
/// the bench or the snapshot tools).
fn prints_for_a_reader(command: &Command) -> bool {
    matches!(
        command,
        Command::Submit(_)
            | Command::Status(_)
            | Command::Cancel(_)
            | Command::Tasks(_)
            | Command::Workers(_)
            | Command::Queues(_)
            | Command::Queue { .. }
            | Command::Retry(_)
            | Command::Discard(_)
            | Command::Keygen(_)
            | Command::RedisAcl(_)
            | Command::Config { .. }
    )
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
