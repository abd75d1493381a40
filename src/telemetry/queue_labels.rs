//! Queue names as metric label values, bounded: the first
//! `limits.metric_queues` queue names in name order get series of their
//! own, and every other queue is folded into `other`. Queues are created
//! by submitters, so without a bound a caller could grow the metrics
//! without end. Every process that labels by queue uses the same rule on
//! the same set (`P queues`), so a queue has the same label everywhere.

use std::collections::BTreeSet;

/// The label value of every queue past the bound.
pub const OTHER: &str = "other";

/// Which queues get a label value of their own.
#[derive(Debug, Clone, Default)]
pub struct QueueLabels {
    named: BTreeSet<String>,
}

impl QueueLabels {
    /// The first `bound` of `names` (in name order) get their own label.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, bound: usize) -> Self {
        let sorted: BTreeSet<&str> = names.into_iter().collect();
        QueueLabels {
            named: sorted.into_iter().take(bound).map(str::to_owned).collect(),
        }
    }

    /// The label value for `queue`: its name, or `other`.
    pub fn of(&self, queue: &str) -> String {
        if self.named.contains(queue) {
            queue.to_owned()
        } else {
            OTHER.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_names_in_order_are_kept_and_the_rest_are_other() {
        let labels = QueueLabels::new(["media", "default", "zeta", "batch"], 2);
        assert_eq!(labels.of("batch"), "batch");
        assert_eq!(labels.of("default"), "default");
        assert_eq!(labels.of("media"), OTHER);
        assert_eq!(labels.of("never-seen"), OTHER);
        assert_eq!(QueueLabels::new(["a"], 0).of("a"), OTHER);
    }
}
