//! Removing containers: a run's own [`Cleanup`] force-removes its container when
//! the run ends and, if the run is dropped first, in the background, finding a
//! container whose create was never answered by its labels; at worker start,
//! [`sweep_orphans`] removes whatever a crashed predecessor left. The labels every
//! container carries are defined here, since they are what both look for.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

use super::engine::describe;
use super::Inner;
use crate::handlers::TaskContext;

/// Label keys every container of drover carries.
pub const LABEL_MANAGED: &str = "drover.managed";
pub const LABEL_WORKER: &str = "drover.worker";
pub const LABEL_TASK: &str = "drover.task";
pub const LABEL_FENCE: &str = "drover.fence";
pub const LABEL_HANDLER: &str = "drover.handler";

/// How long cleanup may take before it is left to the next orphan sweep; only a
/// daemon in trouble is this slow.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(15);

impl Inner {
    /// The labels of this run's container: drover's, this worker's, and the task,
    /// fence and handler it runs.
    pub(super) fn labels(&self, ctx: &TaskContext) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKER.to_owned(), self.worker_id.clone()),
            (LABEL_TASK.to_owned(), ctx.task_id.clone()),
            (LABEL_FENCE.to_owned(), ctx.fence_token()),
            (LABEL_HANDLER.to_owned(), self.handler.clone()),
        ])
    }
}

/// What there is to clean up for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CleanupState {
    /// No container exists (yet, or any more).
    Idle,
    /// A create request was sent and not answered: a container may exist, known
    /// only by its labels.
    Creating,
    Created(String),
}

/// Removes the run's container when asked, and in the background if dropped before
/// that, so that a run stopped at any point leaves no container behind.
pub(super) struct Cleanup {
    docker: Docker,
    // The labels the container is created with; `label_filters` finds it by the
    // ones unique to this run.
    pub(super) labels: HashMap<String, String>,
    pub(super) state: CleanupState,
}

impl Cleanup {
    pub(super) fn new(docker: Docker, labels: &HashMap<String, String>) -> Cleanup {
        Cleanup {
            docker,
            labels: labels.clone(),
            state: CleanupState::Idle,
        }
    }

    /// Labels that pick out exactly this run's container: the same task and fence
    /// on the same worker.
    fn label_filters(&self) -> Vec<String> {
        [LABEL_MANAGED, LABEL_WORKER, LABEL_TASK, LABEL_FENCE]
            .iter()
            .map(|key| format!("{key}={}", self.labels.get(*key).map(String::as_str).unwrap_or("")))
            .collect()
    }

    pub(super) async fn remove(&mut self) {
        match std::mem::replace(&mut self.state, CleanupState::Idle) {
            CleanupState::Idle => {}
            CleanupState::Created(id) => {
                let removal = tokio::time::timeout(REMOVE_TIMEOUT, force_remove(&self.docker, &id));
                match removal.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(container = %id, error = %describe(&e), "could not remove a task's container; the next orphan sweep will")
                    }
                    Err(_) => {
                        tracing::warn!(container = %id, "removing a task's container timed out; the next orphan sweep will")
                    }
                }
            }
            // The daemon may still be creating it after we stopped listening, so
            // this runs in the background, a few times over.
            CleanupState::Creating => {
                spawn_label_cleanup(self.docker.clone(), self.label_filters());
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filters = self.label_filters();
        let state = std::mem::replace(&mut self.state, CleanupState::Idle);
        if state == CleanupState::Idle {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("run dropped outside a runtime; its container is left to the next orphan sweep");
            return;
        };
        let docker = self.docker.clone();
        match state {
            CleanupState::Created(id) => {
                runtime.spawn(async move {
                    if let Err(e) = force_remove(&docker, &id).await {
                        tracing::warn!(container = %id, error = %describe(&e), "could not remove a dropped run's container");
                    }
                });
            }
            CleanupState::Creating => spawn_label_cleanup(docker, filters),
            CleanupState::Idle => {}
        }
    }
}

/// Removes containers matching `filters` now and twice more a second apart,
/// covering a create that the daemon completes after its caller gave up.
fn spawn_label_cleanup(docker: Docker, filters: Vec<String>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        for pass in 0..3 {
            if pass > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if let Err(e) = remove_labelled(&docker, filters.clone()).await {
                tracing::warn!(error = %describe(&e), "could not remove a stopped run's container");
            }
        }
    });
}

/// Kills (SIGKILL) and removes a container; one that is already gone is fine.
async fn force_remove(docker: &Docker, id: &str) -> Result<(), BollardError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        // 404: already gone; 409: a removal is already in progress.
        Err(BollardError::DockerResponseServerError {
            status_code: 404 | 409, ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Force-removes every container (running or not) carrying all of `label_filters`
/// (`key=value` each); returns how many were removed.
async fn remove_labelled(docker: &Docker, label_filters: Vec<String>) -> Result<usize, BollardError> {
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), label_filters)])),
            ..Default::default()
        }))
        .await?;
    let mut removed = 0;
    for id in containers.into_iter().filter_map(|c| c.id) {
        force_remove(docker, &id).await?;
        removed += 1;
    }
    Ok(removed)
}

/// Force-removes every container drover started for worker `worker_id`: what a
/// worker that crashed (or was killed) left running. The worker calls this when it
/// starts, before it takes any task, since any such container belongs to an
/// attempt whose lease is lost by now. Returns how many containers were removed.
pub async fn sweep_orphans(docker: &Docker, worker_id: &str) -> Result<usize, BollardError> {
    let removed = remove_labelled(
        docker,
        vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_WORKER}={worker_id}")],
    )
    .await?;
    if removed > 0 {
        tracing::info!(
            worker = worker_id,
            removed,
            "removed containers a previous run of this worker left behind"
        );
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use super::*;
    use crate::handlers::{HandlerSpec, Registry};
    use bollard::models::{ContainerCreateBody, HostConfig};
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn dropping_the_run_removes_the_container() {
        let Some(engine) = docker_or_skip("drop").await else {
            return;
        };
        let docker = engine.client().await.unwrap();
        let task = task_id("drop");
        let run = tokio::spawn(
            handler(&engine, &sh("sleep 30"), &worker_id("drop")).run(ctx(&task, Duration::from_secs(60)), Value::Null),
        );
        running_container(&docker, &task).await;
        run.abort();
        let _ = run.await;
        assert_no_containers_eventually(&docker, &task).await;
    }

    /// Creates and starts a long-sleeping container labelled as drover's for
    /// `worker`, as a crashed worker would have left it.
    async fn leftover(docker: &Docker, worker: &str, task: &str) -> String {
        let created = docker
            .create_container(
                None,
                ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    cmd: Some(vec!["sleep".into(), "300".into()]),
                    labels: Some(HashMap::from([
                        (LABEL_MANAGED.to_owned(), "true".to_owned()),
                        (LABEL_WORKER.to_owned(), worker.to_owned()),
                        (LABEL_TASK.to_owned(), task.to_owned()),
                        (LABEL_FENCE.to_owned(), "1.1".to_owned()),
                    ])),
                    host_config: Some(HostConfig {
                        network_mode: Some("none".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("create leftover");
        docker.start_container(&created.id, None).await.expect("start leftover");
        created.id
    }

    #[tokio::test]
    async fn orphan_sweep_removes_this_workers_containers_only() {
        let Some(engine) = docker_or_skip("sweep").await else {
            return;
        };
        let docker = engine.client().await.unwrap();
        let crashed = worker_id("sweep-crashed");
        let other = worker_id("sweep-other");
        let task = task_id("sweep");
        let mine = leftover(&docker, &crashed, &task).await;
        let mine_too = leftover(&docker, &crashed, &task).await;
        let theirs = leftover(&docker, &other, &task).await;

        assert_eq!(sweep_orphans(&docker, &crashed).await.expect("sweep"), 2);
        let left = task_containers(&docker, &task).await;
        assert_eq!(left, vec![theirs.clone()]);
        assert!(!left.contains(&mine) && !left.contains(&mine_too));
        assert_eq!(sweep_orphans(&docker, &crashed).await.expect("sweep"), 0);

        // The registry's sweep reaches the same engine through its handlers.
        let specs: BTreeMap<String, HandlerSpec> = serde_json::from_value(json!({
            "a": {"kind": "container", "image": IMAGE},
            "b": {"kind": "container", "image": IMAGE},
        }))
        .expect("specs");
        let registry = Registry::from_specs(&specs).expect("valid");
        assert_eq!(registry.sweep_orphans(&other).await.expect("sweep"), 1);
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
        assert_eq!(Registry::builtins().sweep_orphans(&other).await.expect("no engines"), 0);
    }
}
