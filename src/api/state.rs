//! The state every API handler shares: the context, the long-poll waiters,
//! whether submissions are still taken, and the two caches the hot path
//! reads (handler names workers offer, and the pressure admission control
//! decides on); with the checks made on it before any request is served
//! (token and scope, accepting, admission).

use super::auth::Scope;
use super::error::ApiError;
use super::waiters::Waiters;
use crate::context::Context;
use axum::http::HeaderMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared state of the API handlers.
pub struct ApiState {
    pub ctx: Context,
    pub waiters: Arc<Waiters>,
    /// False once shutdown began: submits get 503 while open requests finish.
    pub accepting: AtomicBool,
    handlers: Mutex<(Option<Instant>, HashSet<String>)>,
    /// Backlog (queued + scheduled) and Redis memory use, read at most
    /// every 250 ms: what admission control decides on.
    pressure: Mutex<(Option<Instant>, Pressure)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Pressure {
    backlog: u64,
    used_memory: u64,
    max_memory: u64,
}

/// Share of Redis' maxmemory past which submissions get 503: with
/// noeviction a full Redis refuses writes, and the rest of the lifecycle
/// (assign, complete) needs room too.
const MEMORY_HIGH_WATER: f64 = 0.9;

impl ApiState {
    pub fn new(ctx: Context, waiters: Arc<Waiters>) -> Self {
        ApiState {
            ctx,
            waiters,
            accepting: AtomicBool::new(true),
            handlers: Mutex::new((None, HashSet::new())),
            pressure: Mutex::new((None, Pressure::default())),
        }
    }

    pub(super) fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .ok_or(ApiError::Unauthorized)?;
        let tokens = self.ctx.settings.api_tokens.as_ref().ok_or(ApiError::Unauthorized)?;
        let grants = tokens.grants(token.trim()).ok_or(ApiError::Unauthorized)?;
        if grants.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }

    /// Handler names a task may use: those some worker profile offers (as
    /// its heartbeats registered them) plus the configured extras. Cached
    /// for two seconds; a miss refreshes at once so a new worker's handler
    /// is accepted without delay.
    pub(super) async fn handler_known(&self, name: &str) -> Result<bool, ApiError> {
        if self.ctx.settings.coordinator.handlers.iter().any(|h| h == name) {
            return Ok(true);
        }
        {
            let cache = self.handlers.lock().expect("handler cache lock");
            let fresh = cache.0.is_some_and(|t| t.elapsed() < Duration::from_secs(2));
            if cache.1.contains(name) && fresh {
                return Ok(true);
            }
        }
        let known = self.ctx.store.known_handlers().await?;
        let mut cache = self.handlers.lock().expect("handler cache lock");
        *cache = (Some(Instant::now()), known.into_keys().collect());
        Ok(cache.1.contains(name))
    }

    /// Admission control: past the backlog high-water mark, 429; with Redis
    /// memory nearly full, 503; both with Retry-After, so producers back off
    /// instead of growing Redis without bound.
    pub(super) async fn admit(&self, n: usize) -> Result<(), ApiError> {
        let cached = {
            let p = self.pressure.lock().expect("pressure lock");
            p.0.filter(|t| t.elapsed() < Duration::from_millis(250)).map(|_| p.1)
        };
        let p = match cached {
            Some(p) => p,
            None => {
                let counts = self.ctx.store.counts().await?;
                let (used_memory, max_memory) = self.ctx.store.memory().await?;
                let backlog = ["queued", "scheduled"]
                    .iter()
                    .map(|s| counts.get(*s).copied().unwrap_or(0).max(0) as u64)
                    .sum();
                let p = Pressure {
                    backlog,
                    used_memory,
                    max_memory,
                };
                *self.pressure.lock().expect("pressure lock") = (Some(Instant::now()), p);
                p
            }
        };
        let max = self.ctx.settings.coordinator.max_backlog;
        if p.backlog + n as u64 > max {
            return Err(ApiError::TooBusy(format!(
                "backlog is full ({} of {max} tasks waiting); retry later",
                p.backlog
            )));
        }
        if p.max_memory > 0 && p.used_memory as f64 > p.max_memory as f64 * MEMORY_HIGH_WATER {
            return Err(ApiError::Unavailable("redis memory is nearly full; retry later".into()));
        }
        // Count what this request adds until the next read.
        self.pressure.lock().expect("pressure lock").1.backlog += n as u64;
        Ok(())
    }

    pub(super) fn check_accepting(&self) -> Result<(), ApiError> {
        if self.accepting.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ApiError::Unavailable("the coordinator is shutting down".into()))
        }
    }
}
