//! The alert rules, checked two ways: `promtool test rules` runs the unit
//! tests in `deploy/prometheus/alerts_test.yml`, and a real Prometheus
//! server scrapes a running drover cluster (real processes) with a variant
//! of `alerts.yml` whose `for:` and rate windows are shortened, while the
//! test makes the backlog and failure-rate alerts fire and then resolve.

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::redis_server::Persistence;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    if !have("promtool") {
        skip_or_fail("promtool is not installed (Debian package prometheus)");
        return;
    }
    let dir = repo().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&test.stdout).to_string() + &String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success() && out.contains("SUCCESS"), "{out}");
}

/// alerts.yml with short `for:` durations and rate windows, so alerts fire
/// within seconds. Derived from the real file so the two cannot drift.
fn fast_rules(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let line = if line.trim_start().starts_with("for:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            format!("{indent}for: 2s")
        } else {
            line.replace("[5m]", "[15s]")
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join("alerts-fast.yml");
    std::fs::write(&path, out).unwrap();
    path
}

/// Names of the alerts Prometheus reports as firing.
async fn firing(http: &reqwest::Client, prom: &str) -> Vec<String> {
    let Ok(resp) = http.get(format!("{prom}/api/v1/alerts")).send().await else {
        return Vec::new();
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    v["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["state"] == "firing")
                .filter_map(|x| x["labels"]["alertname"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_real_prometheus_sees_backlog_and_failure_alerts_fire_and_resolve() {
    if !have("prometheus") {
        skip_or_fail("prometheus is not installed (Debian package prometheus)");
        return;
    }
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let (api_port, coord_admin, dist_admin, worker_admin, prom_port) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    let coord_env = proc_env(
        &url,
        &[
            ("DROVER_HTTP_ADDR", &format!("127.0.0.1:{api_port}")),
            ("DROVER_ADMIN_ADDR", &format!("127.0.0.1:{coord_admin}")),
            // Accept these before any worker has offered them.
            ("DROVER_HANDLERS", "noop,fail"),
            ("RUST_LOG", "info"),
        ],
    );
    let _coord = spawn("coordinator", &["coordinator", "--id", "c1"], &coord_env, dir.path());
    let dist_env = proc_env(
        &url,
        &[
            ("DROVER_ADMIN_ADDR", &format!("127.0.0.1:{dist_admin}")),
            ("RUST_LOG", "info"),
        ],
    );
    let _dist = spawn("distributor", &["distributor", "--id", "d1"], &dist_env, dir.path());

    let prom_yml = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: drover\n    static_configs:\n      - targets: ['127.0.0.1:{coord_admin}', '127.0.0.1:{dist_admin}', '127.0.0.1:{worker_admin}']\n",
        rules = fast_rules(dir.path()).display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), prom_yml).unwrap();
    let prom_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(prom_log.try_clone().unwrap())
        .stderr(prom_log)
        .spawn()
        .unwrap();
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let http = reqwest::Client::new();
    let client = Client::new(&format!("http://127.0.0.1:{api_port}"), Some(ADMIN_TOKEN.into())).unwrap();

    // No worker: a backlog builds up and the backlog alert fires.
    eventually(Duration::from_secs(60), "the API", || async {
        client.workers().await.ok().map(|_| ())
    })
    .await;
    for _ in 0..3 {
        client
            .submit_batch(vec![task("noop", serde_json::Value::Null); 500])
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(60),
        "DroverBacklogHigh and DroverNoWorkerForHandler firing",
        || async {
            let f = firing(&http, &prom_url).await;
            (f.contains(&"DroverBacklogHigh".to_string()) && f.contains(&"DroverNoWorkerForHandler".to_string()))
                .then_some(())
        },
    )
    .await;

    // A worker drains the backlog; its `fail` tasks raise the failure rate.
    let prof = profile(
        dir.path(),
        "worker",
        "[handlers]\nnoop = { kind = \"builtin\" }\nfail = { kind = \"builtin\" }\n",
    );
    let worker_env = proc_env(
        &url,
        &[
            ("DROVER_ADMIN_ADDR", &format!("127.0.0.1:{worker_admin}")),
            ("RUST_LOG", "info"),
        ],
    );
    let _worker = spawn(
        "worker",
        &["worker", "--config", &prof, "--id", "w1", "--capacity", "64"],
        &worker_env,
        dir.path(),
    );
    let mut failing = task("fail", serde_json::Value::Null);
    failing.max_attempts = Some(1);
    // Keep failures coming until Prometheus has seen the rate: on a loaded
    // machine the backlog may take a while to drain, and a single burst of
    // failures can leave the 15 s window before then.
    let (mut failure_fired, mut backlog_cleared, mut seen) = (false, false, Vec::new());
    for _ in 0..120 {
        client.submit_batch(vec![failing.clone(); 30]).await.unwrap();
        seen = firing(&http, &prom_url).await;
        let has = |a: &str| seen.iter().any(|x| x == a);
        failure_fired |= has("DroverFailureRateHigh");
        backlog_cleared = !has("DroverBacklogHigh") && !has("DroverNoWorkerForHandler");
        if failure_fired && backlog_cleared {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        failure_fired,
        "the failure-rate alert fired; last seen firing: {seen:?}"
    );
    assert!(
        backlog_cleared,
        "with a worker the backlog alerts resolved; last seen firing: {seen:?}"
    );

    // Only successes from now on: the failure-rate alert resolves.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        client
            .submit_batch(vec![task("noop", serde_json::Value::Null); 100])
            .await
            .unwrap();
        let f = firing(&http, &prom_url).await;
        if !f.contains(&"DroverFailureRateHigh".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "DroverFailureRateHigh never resolved; firing: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let f = firing(&http, &prom_url).await;
    assert!(!f.contains(&"DroverBacklogHigh".to_string()), "{f:?}");
    assert!(!f.contains(&"DroverRedisDown".to_string()), "{f:?}");
    let _ = prom.kill();
    let _ = prom.wait();
}
