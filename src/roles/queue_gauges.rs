//! The per-queue gauges every coordinator publishes each second: tasks by
//! state, the oldest queued task's age, and whether the queue is paused.
//! Label values are bounded (telemetry/queue_labels.rs): the first
//! `limits.metric_queues` queues by name have series of their own, read in
//! full; the rest are summed into `queue="other"` from their counts alone
//! (two pipelined reads for all of them), with no oldest age.

use crate::context::Context;
use crate::names::QueueName;
use crate::store::StoreError;
use crate::telemetry::catalog;
use crate::telemetry::queue_labels::{QueueLabels, OTHER};

/// One label's numbers.
#[derive(Debug, Default)]
struct Sums {
    queued: u64,
    running: u64,
    dead: u64,
    cancelled: u64,
}

impl Sums {
    fn publish(&self, queue: &str) {
        for (state, n) in [
            ("queued", self.queued),
            ("running", self.running),
            ("dead", self.dead),
            ("cancelled", self.cancelled),
        ] {
            metrics::gauge!(catalog::QUEUE_TASKS.name, "queue" => queue.to_owned(), "state" => state).set(n as f64);
        }
    }
}

/// Reads every queue and sets its gauges.
pub(super) async fn publish(ctx: &Context) -> Result<(), StoreError> {
    let names = ctx.store.queue_names().await?;
    let labels = QueueLabels::new(names.iter().map(QueueName::as_str), ctx.settings.metric_queues);
    let mut others = Vec::new();
    for queue in names {
        let label = labels.of(queue.as_str());
        if label == OTHER {
            others.push(queue);
            continue;
        }
        let q = ctx.store.queue_state(&queue).await?;
        Sums {
            queued: q.queued,
            running: q.running,
            dead: q.finished[1],
            cancelled: q.finished[2],
        }
        .publish(&label);
        let age = q.oldest_queued.map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!(catalog::QUEUE_OLDEST_QUEUED.name, "queue" => label.clone()).set(age);
        metrics::gauge!(catalog::QUEUE_PAUSED.name, "queue" => label).set(if q.paused { 1.0 } else { 0.0 });
    }
    if !others.is_empty() {
        let counts = ctx.store.queue_counts(&others).await?;
        let mut sums = Sums::default();
        for c in counts {
            sums.queued += c.queued;
            sums.running += c.running;
            sums.dead += c.dead;
            sums.cancelled += c.cancelled;
        }
        sums.publish(OTHER);
    }
    Ok(())
}
