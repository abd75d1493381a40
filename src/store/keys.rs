//! Every Redis key name drover uses, in one place (mirrored by the helpers
//! in `lua/prelude.lua` and mapped in `lua/README.md`). All keys share one
//! hash tag, `{namespace:partition}`, so each script touches one slot only.

/// Key templates for one namespace and partition.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(namespace: &str, partition: u32) -> Self {
        Keys {
            prefix: format!("{{{namespace}:{partition}}}:"),
        }
    }

    /// The prefix handed to scripts so they can name task and worker keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn task(&self, id: &str) -> String {
        format!("{}t:{id}", self.prefix)
    }
    /// Pattern matching every task hash, for SCAN.
    pub fn task_pattern(&self) -> String {
        format!("{}t:*", self.prefix)
    }
    /// The stream that was the backlog before the ready lists (builds
    /// before `docs/QUEUES.md`'s backlog): only emptied now.
    pub fn intake(&self) -> String {
        format!("{}intake", self.prefix)
    }
    /// One small entry per call that queued tasks: wakes the distributors.
    pub fn wake(&self) -> String {
        format!("{}wake", self.prefix)
    }
    /// The backlogs (`<queue> <class>`) that may hold ready tasks.
    pub fn active(&self) -> String {
        format!("{}active", self.prefix)
    }
    /// Every backlog ever used → `<handler> <tags JSON>`, its class.
    pub fn backlogs(&self) -> String {
        format!("{}backlogs", self.prefix)
    }
    /// The priority levels of one class in a queue that may have ready
    /// tasks.
    pub fn levels(&self, queue: &str, class: &str) -> String {
        format!("{}q:{queue}:levels:{class}", self.prefix)
    }
    /// The ready tasks of one queue, class and priority level, oldest first.
    pub fn ready(&self, queue: &str, class: &str, level: &str) -> String {
        format!("{}q:{queue}:ready:{class}:{level}", self.prefix)
    }
    /// A queue's settings and live counts (paused, draining, limits,
    /// queued, run, the token bucket).
    pub fn meta(&self, queue: &str) -> String {
        format!("{}q:{queue}:meta", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    /// Fencing token of an assign batch → its lease deadline.
    pub fn leases(&self) -> String {
        format!("{}leases", self.prefix)
    }
    /// Seconds (Redis time) at which finished tasks' results expire, each
    /// with a list `expiring:<second>` of those tasks' ids: written by
    /// builds before the queue indexes, still emptied by lua/expire.lua.
    pub fn expiring(&self) -> String {
        format!("{}expiring", self.prefix)
    }
    /// The counter whose INCR numbers assign batches.
    pub fn batches(&self) -> String {
        format!("{}batches", self.prefix)
    }
    /// The lease record of one assign batch, named by its fencing token.
    pub fn batch(&self, token: &str) -> String {
        format!("{}b:{token}", self.prefix)
    }
    /// Seconds (Redis time) at which succeeded tasks filed in lists expire,
    /// each with a list `done:<second>` of their ids (when
    /// `limits.index_succeeded` is off; lua/expire.lua).
    pub fn done(&self) -> String {
        format!("{}done", self.prefix)
    }
    /// The names of every queue that has had a task.
    pub fn queues(&self) -> String {
        format!("{}queues", self.prefix)
    }
    /// A queue's finished tasks in one terminal state, id → finish ms.
    pub fn index(&self, queue: &str, state: &str) -> String {
        format!("{}q:{queue}:idx:{state}", self.prefix)
    }
    pub fn scheduled(&self) -> String {
        format!("{}scheduled", self.prefix)
    }
    pub fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }
    pub fn handlers(&self) -> String {
        format!("{}handlers", self.prefix)
    }
    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }
    pub fn worker(&self, wid: &str) -> String {
        format!("{}w:{wid}", self.prefix)
    }
    pub fn worker_stream(&self, wid: &str) -> String {
        format!("{}w:{wid}:in", self.prefix)
    }
}

pub const WORKER_GROUP: &str = "worker";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_hash_tag() {
        let k = Keys::new("drover", 0);
        for key in [k.task("x"), k.intake(), k.worker_stream("w1"), k.epoch()] {
            assert!(key.starts_with("{drover:0}:"), "{key}");
        }
        assert_eq!(k.worker_stream("w1"), "{drover:0}:w:w1:in");
    }
}
