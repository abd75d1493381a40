//! Logs and metrics. Logs go through `tracing` (text or JSON, level from
//! `RUST_LOG`); metrics through the `metrics` facade into one Prometheus
//! recorder per process, rendered by the admin server's `/metrics`. Every
//! metric is defined once in [`catalog`], and described and registered at
//! zero here, so HELP and TYPE lines and every bounded series appear from
//! the start.

pub mod catalog;
pub mod queue_labels;

use catalog::Kind;
use metrics::{describe_counter, describe_gauge, describe_histogram};
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
                    metrics_exporter_prometheus::Matcher::Full(catalog::REDIS_COMMAND.name.into()),
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

/// Describes every metric of the catalog (HELP, TYPE and unit lines).
fn describe_all() {
    for m in catalog::ALL {
        match (m.kind, m.unit) {
            (Kind::Counter, _) => describe_counter!(m.name, m.help),
            (Kind::Gauge, _) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

/// Registers every counter and gauge at zero, with each value of its
/// bounded labels, so the first event after start shows up as an increase
/// (a series that appears already at 300 has no visible rate) and
/// `absent()` does not fire on a healthy process. Histograms have no zero
/// to show; they appear with their first sample.
fn zero_series() {
    for m in catalog::ALL {
        for set in m.zero_label_sets() {
            let labels: Vec<metrics::Label> = set.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, labels).set(0.0),
                Kind::Histogram => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_and_gauge_is_in_metrics_from_the_start() {
        let page = metrics_handle().render();
        // Metrics whose labels are not known in advance (routes, handlers)
        // have no series, nor HELP line, before their first event.
        let registered = catalog::ALL
            .iter()
            .filter(|m| m.kind != Kind::Histogram && !m.zero_label_sets().is_empty());
        for m in registered {
            for set in m.zero_label_sets() {
                let labels: Vec<String> = set.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                let series = if labels.is_empty() {
                    m.name.to_string()
                } else {
                    format!("{}{{{}}}", m.name, labels.join(","))
                };
                assert!(
                    page.lines().any(|l| l.starts_with(&format!("{series} "))),
                    "{series} is not in /metrics at start"
                );
            }
            assert!(
                page.contains(&format!("# HELP {} ", m.name)),
                "{} has no HELP line",
                m.name
            );
        }
    }
}
