//! Logs and metrics. Logs go through `tracing` (text or JSON, level from
//! `RUST_LOG`); metrics through the `metrics` facade into one Prometheus
//! recorder per process, rendered by the admin server's `/metrics`. Every
//! metric is described here so HELP and TYPE lines appear from the start.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Starts logging; `json` selects JSON lines. Safe to call more than once
/// (tests do): later calls keep the first subscriber.
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process' Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0])
                .expect("static buckets are valid")
                // Redis calls take well under a millisecond: finer buckets.
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("drover_redis_command_seconds".into()),
                    crate::store::REDIS_LATENCY_BUCKETS,
                )
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe_all();
            zero_series();
            handle
        })
        .clone()
}

/// Creates the labelled counters alerts compute rates over, at zero, so the
/// first event after start shows up as an increase (a series that appears
/// already at 300 has no visible rate).
fn zero_series() {
    for outcome in ["succeeded", "failed", "cancelled", "released", "stale", "lost"] {
        metrics::counter!("drover_tasks_finished_total", "outcome" => outcome).increment(0);
    }
    for reason in ["signature", "expired", "malformed", "oversize", "stale"] {
        metrics::counter!("drover_messages_rejected_total", "reason" => reason).increment(0);
    }
    metrics::counter!("drover_lease_expired_total").increment(0);
    metrics::counter!("drover_assignments_expired_total").increment(0);
    metrics::counter!("drover_retries_total").increment(0);
    metrics::counter!("drover_tasks_submitted_total").increment(0);
}

fn describe_all() {
    describe_counter!("drover_tasks_submitted_total", "Tasks accepted by the API.");
    describe_counter!(
        "drover_tasks_finished_total",
        "Attempts that ended, by outcome (succeeded, failed, cancelled, released; stale: refused by the fence; lost: the lease was lost first)."
    );
    describe_histogram!(
        "drover_task_duration_seconds",
        Unit::Seconds,
        "Run time of one attempt, in the worker."
    );
    describe_gauge!(
        "drover_backlog",
        "Tasks per live state (queued, scheduled, assigned, running)."
    );
    describe_gauge!("drover_workers", "Live workers.");
    describe_gauge!("drover_worker_capacity", "Slots offered by live workers.");
    describe_gauge!("drover_worker_in_flight", "Tasks this worker is running.");
    describe_counter!("drover_messages_sent_total", "Stream messages sent, by stream kind.");
    describe_counter!(
        "drover_messages_received_total",
        "Stream messages received, by stream kind."
    );
    describe_counter!("drover_messages_rejected_total", "Stream messages refused, by reason.");
    describe_counter!(
        "drover_state_conflicts_total",
        "Transitions refused because the task moved on, by operation."
    );
    describe_counter!("drover_lease_expired_total", "Running attempts whose lease expired.");
    describe_counter!(
        "drover_assignments_expired_total",
        "Assignments the worker never acknowledged before the lease ran out (and tasks an older distributor left assigned), queued again without using an attempt."
    );
    describe_counter!("drover_retries_total", "Attempts scheduled for a retry.");
    describe_counter!("drover_reaper_runs_total", "Reaper and scheduler passes of the leader.");
    describe_gauge!("drover_leader", "1 while this coordinator holds the leader lease.");
    describe_gauge!("drover_redis_up", "1 while Redis answers.");
    describe_histogram!(
        "drover_redis_command_seconds",
        Unit::Seconds,
        "Latency of drover's Redis scripts, by operation."
    );
    describe_histogram!(
        "drover_task_wait_seconds",
        Unit::Seconds,
        "Time from when a task could run (created, or due) until a worker started it."
    );
    describe_gauge!(
        "drover_unplaceable_tasks",
        "Tasks a distributor holds that no live worker could take (handler or tags missing)."
    );
    describe_counter!("drover_http_requests_total", "API requests, by route and status.");
}
