//! Container handlers through a whole cluster: a task runs in a fresh
//! container on a real Docker engine, and a worker whose Docker cannot be
//! reached does not offer its container handlers and says why in /health.

use crate::lifecycle::task;
use crate::support::*;
use drover::handlers::{HandlerSpec, Registry};
use drover::task::TaskState;
use std::collections::BTreeMap;
use std::time::Duration;

const IMAGE: &str = "drover-test-busybox:latest";

fn docker_ready() -> bool {
    let ok = std::process::Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_or_fail("the Docker engine is not reachable");
        return false;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/container/build-test-image.sh");
    let built = std::process::Command::new("bash")
        .arg(script)
        .arg(IMAGE)
        .status()
        .unwrap();
    assert!(built.success(), "building the test image failed");
    true
}

fn registry(toml_text: &str) -> Registry {
    let mut specs = BTreeMap::new();
    specs.insert("boxed".to_string(), toml::from_str::<HandlerSpec>(toml_text).unwrap());
    Registry::from_specs(&specs).unwrap()
}

#[tokio::test]
async fn a_task_runs_in_a_container_and_returns_its_output() {
    if !docker_ready() {
        return;
    }
    let Some(mut c) = Cluster::start(&[]).await else { return };
    c.add_distributor("dist-1");
    let spec = format!(
        "kind = \"container\"\nimage = \"{IMAGE}\"\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", \"read x; echo \\\"{{\\\\\\\"in\\\\\\\":$x,\\\\\\\"fence\\\\\\\":\\\\\\\"$DROVER_FENCE\\\\\\\"}}\\\"\"]\nmemory = \"64Mi\"\ntimeout = \"20s\""
    );
    c.add_worker("cw1", 2, &[], registry(&spec)).await;
    let client = c.client();
    let s = client
        .submit_one(&task("boxed", serde_json::json!({"n": 3})))
        .await
        .unwrap();
    let t = client.wait(&s.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let r = t.result.unwrap();
    assert_eq!(r["in"], serde_json::json!({"n": 3}));
    assert_eq!(r["fence"].as_str(), t.fence.as_deref());
    // The container was removed with the task.
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=drover.task={}", s.id)])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "container left behind");
    c.stop().await;
}

#[tokio::test]
async fn a_worker_without_docker_does_not_offer_container_handlers() {
    let Some(mut c) = Cluster::start(&[]).await else { return };
    c.add_distributor("dist-1");
    let mut specs = BTreeMap::new();
    specs.insert(
        "boxed".to_string(),
        toml::from_str::<HandlerSpec>(&format!(
            "kind = \"container\"\nimage = \"{IMAGE}\"\ndocker_host = \"unix:///nonexistent/drover/docker.sock\""
        ))
        .unwrap(),
    );
    specs.insert(
        "noop".to_string(),
        toml::from_str::<HandlerSpec>("kind = \"builtin\"").unwrap(),
    );
    c.add_worker("nodocker", 2, &[], Registry::from_specs(&specs).unwrap())
        .await;
    let client = c.client();
    let workers = client.workers().await.unwrap().workers;
    let w = workers.iter().find(|w| w.id == "nodocker").unwrap();
    assert_eq!(w.handlers, vec!["noop".to_string()], "only what can run is offered");
    let err = client
        .submit_one(&task("boxed", serde_json::Value::Null))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("422") && err.contains("unknown_handler"), "{err}");
    c.stop().await;
}
