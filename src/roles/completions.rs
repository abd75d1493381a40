//! A distributor's ear on the events stream: attempts that end free their
//! worker's slots in the same script that appends their event, so an event
//! is the earliest sign that a waiting task may now fit. The watcher
//! blocks on the stream and wakes the distributor, which then places at
//! once instead of at its next timed look (issue "Slot turnover": that
//! look, 1–5 ms apart, was most of the time between a task ending on a
//! slot and the next one starting there).
//!
//! Events are only a hint here: nothing in them is trusted or even
//! verified (a forged or lost one costs one early or one late look), and
//! the timed look stays as the fallback.

use crate::context::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long one read of the events stream blocks.
const BLOCK: Duration = Duration::from_secs(1);

/// Follows the events stream from its newest entry and calls
/// `wake.notify_one()` whenever entries arrive, until `shutdown`.
pub fn watch(ctx: Context, wake: Arc<Notify>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        while !shutdown.is_cancelled() {
            let from = match &last {
                Some(id) => id.clone(),
                None => match ctx.store.last_event_id().await {
                    Ok(id) => id,
                    Err(_) => {
                        // Redis is away: the distributor's own retries say so.
                        if !super::pause(BLOCK, &shutdown).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = ctx.store.read_events(&from, BLOCK) => r,
            };
            match read {
                Ok(entries) => {
                    if let Some(e) = entries.last() {
                        last = Some(e.id.clone());
                        wake.notify_one();
                    } else {
                        last = Some(from);
                    }
                }
                Err(_) => {
                    last = None;
                    if !super::pause(BLOCK, &shutdown).await {
                        return;
                    }
                }
            }
        }
    })
}
