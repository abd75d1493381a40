//! Helpers the container tests share: the locally built test image, specs and
//! contexts, and Docker itself (or a loud skip when it cannot be reached), plus
//! queries for the containers a test's task left.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{docker_host, ContainerHandler, ContainerSpec, DockerEngine, LABEL_TASK};
use crate::handlers::{Handler, HandlerError, TaskContext};

/// Built by tests/container/build-test-image.sh: a static busybox FROM scratch,
/// since no registry is reachable where the tests run.
pub(super) const IMAGE: &str = "drover-test-busybox:latest";

/// A valid spec for the test image, with every optional key unset.
pub(super) fn base_spec() -> ContainerSpec {
    ContainerSpec {
        image: IMAGE.into(),
        command: None,
        env: BTreeMap::new(),
        workdir: None,
        cpus: None,
        memory: None,
        pids: None,
        network: false,
        user: None,
        pull: false,
        timeout: None,
        max_output: None,
        docker_host: None,
    }
}

/// A spec running `script` with busybox's shell.
pub(super) fn sh(script: &str) -> ContainerSpec {
    ContainerSpec {
        command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        ..base_spec()
    }
}

/// A task id no other test (or test process) uses, so label queries see only
/// this test's containers.
pub(super) fn task_id(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

pub(super) fn ctx(task_id: &str, timeout: Duration) -> TaskContext {
    TaskContext {
        task_id: task_id.into(),
        handler: "box".into(),
        attempt: 3,
        epoch: 5,
        fence: 17,
        timeout,
        cancel: CancellationToken::new(),
    }
}

pub(super) fn handler(engine: &Arc<DockerEngine>, spec: &ContainerSpec, worker: &str) -> ContainerHandler {
    ContainerHandler::from_spec("box", spec, Arc::clone(engine))
        .expect("valid spec")
        .for_worker(worker)
}

pub(super) fn worker_id(test: &str) -> String {
    format!("test-worker-{test}-{}", std::process::id())
}

/// Docker with the test image present, or `None` after a loud skip notice when
/// Docker cannot be reached; with `DROVER_TEST_REQUIRE=all` that is a failure.
pub(super) async fn docker_or_skip(test: &str) -> Option<Arc<DockerEngine>> {
    let host = docker_host("box", &base_spec()).expect("DOCKER_HOST is usable");
    let engine = Arc::new(DockerEngine::new(host));
    if let Err(e) = engine.check().await {
        if std::env::var("DROVER_TEST_REQUIRE").as_deref() == Ok("all") {
            panic!("{test}: needs Docker (DROVER_TEST_REQUIRE=all), but {e}");
        }
        // Straight to the stderr handle rather than eprintln!, which the test
        // harness captures and hides for tests that pass.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED container test {test}: {e}. \
             Set DROVER_TEST_REQUIRE=all to make this a failure. ***\n"
        );
        return None;
    }
    let docker = engine.client().await.expect("connected");
    ensure_image(&docker).await;
    Some(engine)
}

/// Builds the test image once per test process, unless it already exists.
pub(super) async fn ensure_image(docker: &Docker) {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            if docker.inspect_image(IMAGE).await.is_ok() {
                return;
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/container/build-test-image.sh");
            let out = tokio::process::Command::new("bash")
                .arg(script)
                .arg(IMAGE)
                .output()
                .await
                .expect("run build-test-image.sh");
            assert!(
                out.status.success(),
                "{script} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await;
}

/// Every container (running or not) carrying `label` (`key=value`).
pub(super) async fn containers_with(docker: &Docker, label: String) -> Vec<String> {
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![label])])),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

pub(super) async fn task_containers(docker: &Docker, task_id: &str) -> Vec<String> {
    containers_with(docker, format!("{LABEL_TASK}={task_id}")).await
}

/// Waits (bounded) until the task's container is running, and returns its id.
pub(super) async fn running_container(docker: &Docker, task_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for id in task_containers(docker, task_id).await {
            let state = docker.inspect_container(&id, None).await.ok().and_then(|c| c.state);
            if state.and_then(|s| s.running) == Some(true) {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "{task_id}: no running container");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) for the task's containers to be gone: removal after a
/// dropped run happens in the background.
pub(super) async fn assert_no_containers_eventually(docker: &Docker, task_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = task_containers(docker, task_id).await;
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{task_id}: containers left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn run(
    engine: &Arc<DockerEngine>,
    spec: &ContainerSpec,
    task: &str,
    input: Value,
) -> Result<Value, HandlerError> {
    handler(engine, spec, &worker_id(task))
        .run(ctx(task, Duration::from_secs(30)), input)
        .await
}
