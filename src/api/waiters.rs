//! Long-poll waiters of `/v1/tasks/{id}/wait`, woken by the coordinator's
//! events reader. Entries are reference-counted so the map holds only tasks
//! someone is waiting on right now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Waiters {
    /// Starts waiting on `id`; pair with [`Waiters::release`].
    pub fn register(&self, id: &str) -> Arc<Notify> {
        let mut map = self.map.lock().expect("waiters lock");
        let entry = map
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        entry.0.clone()
    }

    pub fn release(&self, id: &str) {
        let mut map = self.map.lock().expect("waiters lock");
        if let Some(entry) = map.get_mut(id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(id);
            }
        }
    }

    /// Wakes everyone waiting on any of `ids`.
    pub fn wake<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let map = self.map.lock().expect("waiters lock");
        for id in ids {
            if let Some((n, _)) = map.get(id) {
                n.notify_waiters();
            }
        }
    }

    /// Wakes every waiter (shutdown, or events were lost).
    pub fn wake_all(&self) {
        for (n, _) in self.map.lock().expect("waiters lock").values() {
            n.notify_waiters();
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("waiters lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wake_reaches_a_registered_waiter_and_release_cleans_up() {
        let w = Arc::new(Waiters::default());
        let n = w.register("a");
        let notified = n.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        w.wake([&"a".to_string()]);
        tokio::time::timeout(std::time::Duration::from_secs(1), notified)
            .await
            .expect("woken");
        w.release("a");
        assert!(w.is_empty());
    }
}
