//! The client subcommands — `submit`, `status`, `cancel`, `tasks`,
//! `workers` — each turning its flags into one call of `crate::client`.
//! Flags are checked here only where the API cannot say it better (JSON
//! input, wait times); names and tags go to the API as given, which judges
//! them.

use super::args::{CancelArgs, StatusArgs, SubmitArgs, TasksArgs, WorkersArgs};
use crate::api::SubmitRequest;
use crate::client;
use std::time::Duration;

pub(super) async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let input: serde_json::Value =
        serde_json::from_str(&args.input).map_err(|e| anyhow::anyhow!("--input: not JSON: {e}"))?;
    let wait_timeout = duration_flag("--wait-timeout", &args.wait_timeout)?;
    let req = SubmitRequest {
        handler: args.handler,
        input,
        tags: args.tags.as_deref().map(crate::config::split_list).unwrap_or_default(),
        queue: args.queue,
        priority: args.priority.unwrap_or(0),
        max_attempts: args.max_attempts,
        timeout: args.timeout,
        run_at_ms: None,
        delay: args.delay,
        idempotency_key: args.idempotency_key,
        unique_key: args.unique_key,
        unique_for: args.unique_for,
    };
    let wait = args.wait.then_some(wait_timeout);
    client::submit(&args.api.client()?, req, args.count, wait, args.json).await
}

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let wait = args.wait.as_deref().map(|w| duration_flag("--wait", w)).transpose()?;
    client::status(&args.api.client()?, &args.id, wait, args.json).await
}

pub(super) async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    client::cancel(&args.api.client()?, &args.id, args.json).await
}

pub(super) async fn tasks(args: TasksArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    client::tasks(
        &client,
        args.state.as_deref(),
        args.queue.as_deref(),
        args.limit,
        args.cursor.as_deref(),
        args.json,
    )
    .await
}

pub(super) async fn workers(args: WorkersArgs) -> anyhow::Result<()> {
    client::workers(&args.api.client()?, args.json).await
}

/// A duration given to `flag`, e.g. `30s`.
fn duration_flag(flag: &str, text: &str) -> anyhow::Result<Duration> {
    crate::units::parse_duration(text).ok_or_else(|| anyhow::anyhow!("{flag}: {text:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_name_the_flag_when_they_do_not_parse() {
        assert_eq!(duration_flag("--wait", "30s").unwrap(), Duration::from_secs(30));
        let err = duration_flag("--wait-timeout", "soon").unwrap_err().to_string();
        assert_eq!(err, "--wait-timeout: \"soon\" is not a duration");
    }
}
