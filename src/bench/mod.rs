//! `drover bench`: starts a cluster of its own (a `redis-server` child and
//! the roles in-process, with signing, leases, fencing and acknowledgements
//! all on), runs workloads and prints one JSON line with what it measured.
//!
//! Scenarios: `throughput` (N noop tasks end to end, as fast as they go),
//! `latency` (an open-loop rate: 1k/s and half of the measured throughput),
//! `memory` (M tasks queued with no workers, then drained), `scripts`
//! (Redis' cost of each step of a task's life, one step at a time; see
//! `scripts`), and, only when asked for by name, `turnover` (how soon a
//! slot runs its next task, with tasks that work 1, 5 or 50 ms; see
//! `turnover`). Latencies are
//! taken in this process: submit → the handler starting, and submit → the
//! events stream reporting the task finished, into HDR histograms in µs.
//! Redis cost comes from `INFO commandstats`, `INFO cpu` and `INFO memory`
//! deltas. Numbers are for reading and comparing, never asserted.
//!
//! With `--processes` the roles run as separate processes of this binary
//! (see `processes`) and the throughput scenario also reports each role's
//! CPU per task; submit → start is then not measured (the handler runs in
//! another process).
//!
//! Files: `cluster` (the cluster a run starts and how tasks are fed to it
//! and timed), `scenarios` (throughput, the open loop of `latency`,
//! `memory`), `report` (what is measured and how it is reported), and
//! `processes` and `scripts` as above; this file holds the options and
//! picks the scenarios.

mod cluster;
mod processes;
mod report;
mod scenarios;
mod scripts;
mod turnover;

use cluster::Bench;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scenarios: Vec<String>,
    pub quick: bool,
    pub aof: bool,
    pub workers: usize,
    pub capacity: u32,
    pub distributors: usize,
    pub tasks: Option<usize>,
    /// Roles as separate processes instead of in-process.
    pub processes: bool,
    /// Each task's input: a JSON string this many bytes long, quotes
    /// included; `None` is `null` (4 bytes).
    pub input_bytes: Option<usize>,
    /// Extra `redis-server` arguments, after drover's own.
    pub redis_args: Vec<String>,
}

impl BenchOptions {
    /// The input every task of the run carries.
    fn input(&self) -> String {
        match self.input_bytes {
            None => "null".to_string(),
            Some(n) => format!("\"{}\"", "x".repeat(n.saturating_sub(2))),
        }
    }
}

/// Runs the chosen scenarios and returns the one JSON object to print.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Value> {
    let mut out = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "quick": opts.quick,
        "aof": if opts.aof { "everysec" } else { "off" },
        "workers": opts.workers,
        "capacity": opts.capacity,
        "distributors": opts.distributors,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "input_bytes": opts.input().len(),
        "redis_args": opts.redis_args,
    });
    let all = opts.scenarios.is_empty() || opts.scenarios.iter().any(|s| s == "all");
    let want = |s: &str| all || opts.scenarios.iter().any(|x| x == s);
    let mut measured_rate = None;
    if want("throughput") {
        let t = scenarios::throughput(&opts).await?;
        measured_rate = t["end_to_end_per_s"].as_f64();
        out["throughput"] = t;
    }
    if want("latency") {
        let secs = if opts.quick { 2.0 } else { 10.0 };
        let idle = scenarios::open_loop(&opts, if opts.quick { 200.0 } else { 1000.0 }, secs).await?;
        let half = match measured_rate {
            Some(r) => r / 2.0,
            None => {
                if opts.quick {
                    1000.0
                } else {
                    5000.0
                }
            }
        };
        let loaded = scenarios::open_loop(&opts, half, secs).await?;
        out["latency"] = json!({ "idle": idle, "half_load": loaded });
    }
    if want("memory") {
        out["memory"] = scenarios::memory(&opts).await?;
    }
    // Not part of `all`: nine clusters, one per case.
    if opts.scenarios.iter().any(|x| x == "turnover") {
        out["turnover"] = turnover::run(&opts).await?;
    }
    if want("scripts") {
        let b = Bench::start(&opts, "10m").await?;
        let rounds = if opts.quick { 20 } else { 500 };
        out["scripts"] = scripts::run(&b.ctx, rounds, crate::roles::distributor::PLACEMENT_CHUNK, &b.input).await?;
        b.stop().await;
    }
    Ok(out)
}
