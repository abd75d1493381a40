//! A distributor's ear on Redis: it blocks on the two streams whose
//! entries mean a round may now place something — `P wake` (tasks were
//! queued, or a queue was resumed or its limits changed) and `P events`
//! (attempts ended: slots and queue limits freed up; issue "Slot
//! turnover": waking on them instead of a timed look 1–5 ms apart cut the
//! time between a task ending on a slot and the next one starting there)
//! — and wakes the distributor.
//!
//! Entries are only hints here: nothing in them is read or trusted (a
//! forged or lost one costs one early or one late look), and the timed
//! look stays as the fallback.

use crate::context::Context;
use crate::store::WakeCursor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long one read blocks.
const BLOCK: Duration = Duration::from_secs(1);

/// Follows both streams from their newest entries and calls
/// `wake.notify_one()` whenever entries arrive, until `shutdown`.
pub fn watch(ctx: Context, wake: Arc<Notify>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursor: Option<WakeCursor> = None;
        while !shutdown.is_cancelled() {
            let mut from = match cursor.take() {
                Some(c) => c,
                None => match ctx.store.wake_cursor().await {
                    Ok(c) => c,
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
                r = ctx.store.wait_for_wake(&mut from, BLOCK) => r,
            };
            match read {
                Ok(woken) => {
                    if woken {
                        wake.notify_one();
                    }
                    cursor = Some(from);
                }
                Err(_) => {
                    if !super::pause(BLOCK, &shutdown).await {
                        return;
                    }
                }
            }
        }
    })
}
