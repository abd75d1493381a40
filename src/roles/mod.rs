//! The three roles and `drover dev`, each a `run(ctx, shutdown)` entry point,
//! plus what they share: the [`Context`] handed to every role, the
//! [`Health`] the admin port reports, the Redis watchdog, and the delays
//! used when Redis fails (reconnect) and when a task fails (retry).

pub mod coordinator;
pub mod dev;
pub mod distributor;
pub mod worker;

use crate::config::Settings;
use crate::store::{Store, StoreOptions};
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Everything a role needs: validated settings, the store, the health it
/// reports. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub store: Arc<Store>,
    pub health: Arc<Health>,
}

impl Context {
    /// Builds the store from settings. Fails only on bad settings (no keys,
    /// unparsable URL); an unreachable Redis is reported later by health.
    pub fn new(settings: Settings, role: &str, id: &str) -> anyhow::Result<Context> {
        let keyring = settings.require_keyring()?;
        let store = Store::new(StoreOptions {
            redis_url: settings.redis_url.0.clone(),
            redis_password: settings.redis_password.as_ref().map(|p| p.0.clone()),
            redis_tls: settings.redis_tls.clone(),
            namespace: settings.namespace.clone(),
            keyring,
            message_ttl: settings.timing.message_ttl,
            max_message: settings.max_message,
            events_maxlen: settings.events_maxlen,
            result_ttl: settings.timing.result_ttl,
            idempotency_ttl: settings.timing.idempotency_ttl,
            pool_size: 32,
        })?;
        Ok(Context {
            settings: Arc::new(settings),
            store: Arc::new(store),
            health: Arc::new(Health::new(role, id)),
        })
    }
}

/// Liveness and readiness of one process (which may run several roles).
pub struct Health {
    role: String,
    id: String,
    started: Instant,
    redis_up: AtomicBool,
    draining: AtomicBool,
    /// Roles that have not finished starting.
    starting: AtomicUsize,
    notes: Mutex<Vec<String>>,
}

impl Health {
    pub fn new(role: &str, id: &str) -> Self {
        Health {
            role: role.to_string(),
            id: id.to_string(),
            started: Instant::now(),
            redis_up: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            starting: AtomicUsize::new(0),
            notes: Mutex::new(Vec::new()),
        }
    }

    pub fn role_starting(&self) {
        self.starting.fetch_add(1, Ordering::SeqCst);
    }
    pub fn role_started(&self) {
        self.starting.fetch_sub(1, Ordering::SeqCst);
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::SeqCst)
    }
    /// Replaces the lines `/health` adds about this process (e.g. handlers
    /// that cannot run here now, and why).
    pub fn set_notes(&self, lines: Vec<String>) {
        *self.notes.lock().expect("notes lock") = lines;
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    pub fn not_ready_reason(&self) -> Option<&'static str> {
        // Redis first: a role that cannot reach it at start is also still
        // starting, and the cause is what an operator needs to see.
        if !self.redis_up() {
            Some("redis unreachable")
        } else if self.starting.load(Ordering::SeqCst) > 0 {
            Some("starting")
        } else if self.is_draining() {
            Some("draining")
        } else {
            None
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "role": self.role,
            "id": self.id,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "redis_connected": self.redis_up(),
            "ready": self.is_ready(),
            "notes": *self.notes.lock().expect("notes lock"),
        })
    }
}

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
        ctx.health.redis_up.store(up, Ordering::SeqCst);
        metrics::gauge!("drover_redis_up").set(if up { 1.0 } else { 0.0 });
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

    #[test]
    fn readiness_follows_starting_redis_and_draining() {
        let h = Health::new("worker", "w1");
        h.role_starting();
        assert_eq!(h.not_ready_reason(), Some("redis unreachable"));
        h.redis_up.store(true, Ordering::SeqCst);
        assert_eq!(h.not_ready_reason(), Some("starting"));
        h.role_started();
        assert!(h.is_ready());
        h.set_draining();
        assert_eq!(h.not_ready_reason(), Some("draining"));
    }
}
