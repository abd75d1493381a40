//! Every metric drover exports, defined once: name, type, unit, help and
//! label set. Code records a metric by its constant here
//! (`metrics::counter!(catalog::RETRIES.name)`), never by a name typed
//! again; [`super::metrics_handle`] describes each one and registers every
//! counter and gauge at zero, with each value of its bounded labels, when
//! the process starts. A series that first appears at its first event has
//! no visible `rate()` and trips `absent()`, so alerts misread it.
//! docs/OPERATIONS.md lists them for operators.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One label of a metric and the values it can take.
#[derive(Debug)]
pub struct Label {
    pub name: &'static str,
    /// Every value the label takes, registered at zero at start. Empty for
    /// a label whose values are not known in advance (a route, a handler):
    /// its series appear with their first event.
    pub values: &'static [&'static str],
}

/// One exported metric.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    pub labels: &'static [Label],
}

const fn counter(name: &'static str, help: &'static str, labels: &'static [Label]) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        unit: None,
        help,
        labels,
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [Label]) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        unit: None,
        help,
        labels,
    }
}

const fn seconds(name: &'static str, help: &'static str, labels: &'static [Label]) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help,
        labels,
    }
}

/// The streams a message goes over, as the `stream` label names them.
const STREAMS: Label = Label {
    name: "stream",
    values: &["worker", "events"],
};

pub const TASKS_SUBMITTED: Metric = counter("drover_tasks_submitted_total", "Tasks accepted by the API.", &[]);
pub const TASKS_FINISHED: Metric = counter(
    "drover_tasks_finished_total",
    "Attempts that ended, by outcome (succeeded, failed, cancelled, released; stale: refused by the fence; lost: the lease was lost first).",
    &[Label {
        name: "outcome",
        values: &["succeeded", "failed", "cancelled", "released", "stale", "lost"],
    }],
);
pub const TASK_DURATION: Metric = seconds(
    "drover_task_duration_seconds",
    "Run time of one attempt, in the worker.",
    &[Label {
        name: "handler",
        values: &[],
    }],
);
pub const TASK_WAIT: Metric = seconds(
    "drover_task_wait_seconds",
    "Time from when a task could run (created, or due) until a worker started it.",
    &[],
);
pub const BACKLOG: Metric = gauge(
    "drover_backlog",
    "Tasks per live state (queued, scheduled, assigned, running).",
    &[Label {
        name: "state",
        values: &["queued", "scheduled", "assigned", "running"],
    }],
);
pub const WORKERS: Metric = gauge("drover_workers", "Live workers.", &[]);
pub const WORKER_CAPACITY: Metric = gauge("drover_worker_capacity", "Slots offered by live workers.", &[]);
pub const WORKER_IN_FLIGHT: Metric = gauge("drover_worker_in_flight", "Tasks this worker is running.", &[]);
pub const MESSAGES_SENT: Metric = counter(
    "drover_messages_sent_total",
    "Stream messages sent, by stream kind.",
    &[STREAMS],
);
pub const MESSAGES_RECEIVED: Metric = counter(
    "drover_messages_received_total",
    "Stream messages received, by stream kind.",
    &[STREAMS],
);
pub const MESSAGES_REJECTED: Metric = counter(
    "drover_messages_rejected_total",
    "Stream messages refused, by reason.",
    &[Label {
        name: "reason",
        values: &["signature", "expired", "malformed", "oversize", "stale"],
    }],
);
pub const STATE_CONFLICTS: Metric = counter(
    "drover_state_conflicts_total",
    "Transitions refused because the task moved on, by operation.",
    &[Label {
        name: "op",
        values: &["start", "cancel", "reap"],
    }],
);
pub const LEASE_EXPIRED: Metric = counter(
    "drover_lease_expired_total",
    "Running attempts whose lease expired.",
    &[],
);
pub const ASSIGNMENTS_EXPIRED: Metric = counter(
    "drover_assignments_expired_total",
    "Assignments the worker never acknowledged before the lease ran out (and tasks an older distributor left assigned), queued again without using an attempt.",
    &[],
);
pub const OPERATOR_ACTIONS: Metric = counter(
    "drover_operator_actions_total",
    "What an operator changed through the API, by action: finished tasks queued again (retry, retry_dead) or deleted (discard, purge), and queue changes (pause, resume, drain, limits: one each).",
    &[Label {
        name: "action",
        values: &["retry", "retry_dead", "discard", "purge", "pause", "resume", "drain", "limits"],
    }],
);
/// The label of the per-queue metrics: a queue name, or `other` past
/// `limits.metric_queues` (telemetry/queue_labels.rs).
const QUEUE: Label = Label {
    name: "queue",
    values: &[],
};
pub const QUEUE_TASKS: Metric = gauge(
    "drover_queue_tasks",
    "Tasks of a queue by state: queued, running, and the dead and cancelled whose results are kept.",
    &[
        QUEUE,
        Label {
            name: "state",
            values: &[],
        },
    ],
);
pub const QUEUE_OLDEST_QUEUED: Metric = Metric {
    name: "drover_queue_oldest_queued_seconds",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "How long a queue's oldest queued task has waited (0 when none is queued).",
    labels: &[QUEUE],
};
pub const QUEUE_PAUSED: Metric = gauge(
    "drover_queue_paused",
    "1 while a queue is paused (its tasks do not start), else 0.",
    &[QUEUE],
);
pub const QUEUE_LIMIT_WAITS: Metric = counter(
    "drover_queue_limit_waits_total",
    "Scheduling rounds of a distributor in which a queue's tasks waited on a pause or a limit (limit: paused, concurrency, rate).",
    &[
        QUEUE,
        Label {
            name: "limit",
            values: &[],
        },
    ],
);
pub const RETRIES: Metric = counter("drover_retries_total", "Attempts scheduled for a retry.", &[]);
pub const REAPER_RUNS: Metric = counter(
    "drover_reaper_runs_total",
    "Reaper and scheduler passes of the leader.",
    &[],
);
pub const LEADER: Metric = gauge("drover_leader", "1 while this coordinator holds the leader lease.", &[]);
pub const REDIS_UP: Metric = gauge("drover_redis_up", "1 while Redis answers.", &[]);
pub const REDIS_COMMAND: Metric = seconds(
    "drover_redis_command_seconds",
    "Latency of drover's Redis scripts, by operation.",
    &[Label {
        name: "op",
        values: &[],
    }],
);
pub const UNPLACEABLE_TASKS: Metric = gauge(
    "drover_unplaceable_tasks",
    "Queued tasks no live worker could take (handler or tags missing), as one distributor counts them: every distributor reports the same total, so take max(), not sum().",
    &[],
);
pub const API_WAITS: Metric = gauge(
    "drover_api_waits",
    "Long-polls of /v1/tasks/{id}/wait open on this coordinator.",
    &[],
);
pub const API_TLS_CERT_EXPIRY: Metric = gauge(
    "drover_api_tls_cert_expiry_timestamp_seconds",
    "When the certificate the API serves expires (its notAfter), in Unix seconds; 0 without TLS.",
    &[],
);
pub const API_TLS_RELOADS: Metric = counter(
    "drover_api_tls_reloads_total",
    "Changes of the API's certificate files, by outcome: reloaded (served from then on) or refused (the current certificate kept).",
    &[Label {
        name: "outcome",
        values: &["reloaded", "refused"],
    }],
);
pub const API_TLS_HANDSHAKE_FAILURES: Metric = counter(
    "drover_api_tls_handshake_failures_total",
    "TLS handshakes on the API port that failed or timed out (plain HTTP, an untrusted or missing client certificate, a client that said nothing).",
    &[],
);
pub const HTTP_REQUESTS: Metric = counter(
    "drover_http_requests_total",
    "API requests, by route and status.",
    &[
        Label {
            name: "route",
            values: &[],
        },
        Label {
            name: "status",
            values: &[],
        },
    ],
);

/// Every metric, in the order `/metrics` describes them.
pub const ALL: &[&Metric] = &[
    &TASKS_SUBMITTED,
    &TASKS_FINISHED,
    &OPERATOR_ACTIONS,
    &TASK_DURATION,
    &BACKLOG,
    &WORKERS,
    &WORKER_CAPACITY,
    &WORKER_IN_FLIGHT,
    &MESSAGES_SENT,
    &MESSAGES_RECEIVED,
    &MESSAGES_REJECTED,
    &STATE_CONFLICTS,
    &LEASE_EXPIRED,
    &ASSIGNMENTS_EXPIRED,
    &RETRIES,
    &REAPER_RUNS,
    &LEADER,
    &REDIS_UP,
    &REDIS_COMMAND,
    &TASK_WAIT,
    &UNPLACEABLE_TASKS,
    &QUEUE_TASKS,
    &QUEUE_OLDEST_QUEUED,
    &QUEUE_PAUSED,
    &QUEUE_LIMIT_WAITS,
    &API_WAITS,
    &HTTP_REQUESTS,
    &API_TLS_CERT_EXPIRY,
    &API_TLS_RELOADS,
    &API_TLS_HANDSHAKE_FAILURES,
];

impl Metric {
    /// Every label set this metric is registered with at start: one per
    /// combination of its labels' values; none when a label's values are
    /// not known in advance; one empty set for a metric without labels.
    pub fn zero_label_sets(&self) -> Vec<Vec<(&'static str, &'static str)>> {
        let mut sets = vec![Vec::new()];
        for label in self.labels {
            sets = sets
                .into_iter()
                .flat_map(|set| {
                    label.values.iter().map(move |v| {
                        let mut next = set.clone();
                        next.push((label.name, *v));
                        next
                    })
                })
                .collect();
        }
        sets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("drover_"), "{}", m.name);
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            assert!(!m.help.is_empty(), "{} has no help", m.name);
        }
    }

    #[test]
    fn bounded_labels_register_every_combination_and_unbounded_ones_none() {
        assert_eq!(RETRIES.zero_label_sets(), vec![Vec::<(&str, &str)>::new()]);
        assert_eq!(TASKS_FINISHED.zero_label_sets().len(), 6);
        assert!(STATE_CONFLICTS.zero_label_sets().contains(&vec![("op", "cancel")]));
        assert!(HTTP_REQUESTS.zero_label_sets().is_empty());
    }
}
