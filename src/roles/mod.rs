//! The three roles and `drover dev`, each a `run(ctx, shutdown)` entry point,
//! plus what they share: the Redis watchdog that keeps the context's
//! health current, and the delays used when Redis fails (reconnect) and
//! when a task fails (retry). The [`Context`] they are handed lives in
//! [`crate::context`].

pub mod coordinator;
pub mod dev;
pub mod distributor;
mod queue_gauges;
mod wakes;
pub mod worker;

use crate::context::Context;
use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pings Redis every second: keeps `Health::redis_up`, the `drover_redis_up`
/// gauge and the Redis clock offset current, and says once when Redis goes
/// away and once when it is back.
pub async fn watch_redis(ctx: Context, shutdown: CancellationToken) {
    let mut was_up: Option<bool> = None;
    loop {
        let up = match tokio::time::timeout(Duration::from_secs(3), ctx.store.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                if was_up != Some(false) {
                    tracing::warn!(error = %e, "redis unreachable; retrying every second");
                }
                false
            }
            Err(_) => {
                if was_up != Some(false) {
                    tracing::warn!("redis did not answer within 3s; retrying every second");
                }
                false
            }
        };
        if up && was_up == Some(false) {
            tracing::info!("redis reachable again");
        }
        ctx.health.set_redis_up(up);
        metrics::gauge!(crate::telemetry::catalog::REDIS_UP.name).set(if up { 1.0 } else { 0.0 });
        was_up = Some(up);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Delay before retrying a Redis call that failed: doubles from 100 ms to
/// 5 s, reset after a success.
#[derive(Debug, Default)]
pub struct RetryDelay {
    failures: u32,
}

impl RetryDelay {
    pub fn success(&mut self) {
        self.failures = 0;
    }

    /// Logs the error (the first time at warn, then at debug) and sleeps,
    /// or returns early on shutdown.
    pub async fn failed(&mut self, what: &str, error: &(dyn std::fmt::Display + Sync), shutdown: &CancellationToken) {
        self.failures = self.failures.saturating_add(1);
        let delay = Duration::from_millis((100u64 << self.failures.min(6)).min(5000));
        if self.failures == 1 {
            tracing::warn!(error = %error, "{what} failed; retrying with backoff");
        } else {
            tracing::debug!(error = %error, attempt = self.failures, "{what} failed again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Delay before attempt `attempt + 1` after `attempt` failed: exponential
/// from `base`, capped at `max`, with full jitter over its upper half so
/// retries of many tasks that failed together spread out.
pub fn retry_backoff_ms(attempt: u32, base: Duration, max: Duration) -> u64 {
    let exp = base
        .as_millis()
        .saturating_mul(1u128 << attempt.saturating_sub(1).min(30));
    let capped = exp.min(max.as_millis()) as u64;
    let half = capped / 2;
    half + rand::rng().random_range(0..=half.max(1)).min(capped - half)
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
pub async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..100 {
            let first = retry_backoff_ms(1, base, max);
            assert!((50..=100).contains(&first), "{first}");
            let third = retry_backoff_ms(3, base, max);
            assert!((200..=400).contains(&third), "{third}");
            let late = retry_backoff_ms(40, base, max);
            assert!((500..=1000).contains(&late), "{late}");
        }
    }
}
