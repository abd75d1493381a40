//! Long-poll waiters of `/v1/tasks/{id}/wait`, woken by the coordinator's
//! events reader.
//!
//! A wait holds a [`WaitGuard`] from [`Waiters::try_register`] for as long
//! as it lasts; dropping the guard releases it, so a wait whose client goes
//! away (axum drops the handler's future) leaves nothing behind. Entries
//! are reference-counted per task, so the map holds only tasks someone is
//! waiting on right now. The number of open waits is capped
//! (`coordinator.max_waits`): past it [`Waiters::try_register`] refuses,
//! and the API answers 429. Waits are woken only through [`Waiters::wake`]
//! (an event names their task) and [`Waiters::wake_all`] (events may have
//! been missed, or shutdown): nothing polls Redis per wait.

use crate::telemetry::catalog;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

pub struct Waiters {
    inner: Mutex<Inner>,
    max: usize,
}

#[derive(Default)]
struct Inner {
    /// Per task: who to wake, and how many waits are open on it.
    tasks: HashMap<String, (Arc<Notify>, usize)>,
    /// Open waits over all tasks.
    open: usize,
}

/// Every open wait is already taken: the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub max: usize,
}

/// One open wait; released when dropped.
pub struct WaitGuard {
    waiters: Arc<Waiters>,
    id: String,
    notify: Arc<Notify>,
}

impl WaitGuard {
    /// A wake-up of this wait's task. Enable it (or poll it) before reading
    /// the task, so a change between the read and the wait still wakes it.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut inner = self.waiters.inner.lock().expect("waiters lock");
        if let Some(entry) = inner.tasks.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                inner.tasks.remove(&self.id);
            }
        }
        inner.open -= 1;
        metrics::gauge!(catalog::API_WAITS.name).set(inner.open as f64);
    }
}

impl Waiters {
    /// At most `max` waits open at once.
    pub fn new(max: usize) -> Waiters {
        Waiters {
            inner: Mutex::new(Inner::default()),
            max,
        }
    }

    /// Opens a wait on `id`, unless `max` are open already.
    pub fn try_register(self: &Arc<Self>, id: &str) -> Result<WaitGuard, Full> {
        let mut inner = self.inner.lock().expect("waiters lock");
        if inner.open >= self.max {
            return Err(Full { max: self.max });
        }
        inner.open += 1;
        metrics::gauge!(catalog::API_WAITS.name).set(inner.open as f64);
        let entry = inner
            .tasks
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Ok(WaitGuard {
            waiters: Arc::clone(self),
            id: id.to_string(),
            notify: entry.0.clone(),
        })
    }

    /// Wakes everyone waiting on any of `ids`.
    pub fn wake<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let inner = self.inner.lock().expect("waiters lock");
        for id in ids {
            if let Some((n, _)) = inner.tasks.get(id) {
                n.notify_waiters();
            }
        }
    }

    /// Wakes every waiter (shutdown, or events were lost).
    pub fn wake_all(&self) {
        for (n, _) in self.inner.lock().expect("waiters lock").tasks.values() {
            n.notify_waiters();
        }
    }

    /// Open waits.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("waiters lock").open
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tasks with at least one open wait.
    pub fn tasks(&self) -> usize {
        self.inner.lock().expect("waiters lock").tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wake_reaches_a_registered_waiter_and_drop_cleans_up() {
        let w = Arc::new(Waiters::new(10));
        let guard = w.try_register("a").unwrap();
        {
            let notified = guard.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            w.wake([&"a".to_string()]);
            tokio::time::timeout(Duration::from_secs(1), notified)
                .await
                .expect("woken");
        }
        assert_eq!((w.len(), w.tasks()), (1, 1));
        drop(guard);
        assert!(w.is_empty());
        assert_eq!(w.tasks(), 0);
    }

    #[tokio::test]
    async fn a_wait_dropped_mid_wait_is_released() {
        let w = Arc::new(Waiters::new(10));
        let waits: Vec<_> = (0..5)
            .map(|_| {
                let w = w.clone();
                tokio::spawn(async move {
                    let guard = w.try_register("a").unwrap();
                    guard.notified().await;
                })
            })
            .collect();
        while w.len() < 5 {
            tokio::task::yield_now().await;
        }
        for t in &waits {
            t.abort();
        }
        for t in waits {
            let _ = t.await;
        }
        assert!(w.is_empty());
        assert_eq!(w.tasks(), 0);
    }

    #[test]
    fn past_the_cap_registering_is_refused_until_one_is_released() {
        let w = Arc::new(Waiters::new(2));
        let a = w.try_register("a").unwrap();
        let _b = w.try_register("b").unwrap();
        assert_eq!(w.try_register("a").err(), Some(Full { max: 2 }));
        drop(a);
        assert!(w.try_register("c").is_ok());
    }
}
