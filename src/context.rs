//! What every role is handed: the [`Context`] (validated settings, the
//! store, the process's health) and the [`Health`] it carries, which the
//! admin port reports. Kept apart from `roles` so that the API, the admin
//! port and the benchmarks can take a context without depending on the
//! roles that run them.

use crate::config::Settings;
use crate::store::{Store, StoreOptions};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
            index_succeeded: settings.index_succeeded,
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
    /// What the Redis watchdog (`roles::watch_redis`) last saw.
    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(up, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_starting_redis_and_draining() {
        let h = Health::new("worker", "w1");
        h.role_starting();
        assert_eq!(h.not_ready_reason(), Some("redis unreachable"));
        h.set_redis_up(true);
        assert_eq!(h.not_ready_reason(), Some("starting"));
        h.role_started();
        assert!(h.is_ready());
        h.set_draining();
        assert_eq!(h.not_ready_reason(), Some("draining"));
    }
}
