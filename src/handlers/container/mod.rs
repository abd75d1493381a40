//! `container` handlers: run each task in a fresh Docker container, through the
//! Docker Engine API (bollard).
//!
//! The profile fixes everything about the container: the image, the command (like
//! `docker run IMAGE COMMAND...` or compose's `command`, it replaces the image's
//! `CMD`, and the image's `ENTRYPOINT`, if any, still runs first), the environment
//! and the working directory. Every container is locked down: CPU, memory (without
//! swap) and process-count limits, no network unless the profile sets
//! `network = true`, a read-only root filesystem with a small tmpfs at `/tmp`, all
//! capabilities dropped, `no-new-privileges`, and the user `65534:65534` (nobody)
//! unless the profile names another (`user = ""` keeps the image's own `USER`).
//! Images are only pulled when the profile says `pull = true`; otherwise a missing
//! image fails the task at once with a message saying so.
//!
//! Input and output follow the `exec` rules: the task's input is written to the
//! container's stdin as one line of JSON and stdin is then closed; stdout is the
//! result (JSON, `null` when empty, the trimmed text otherwise) and is bounded by
//! `max_output`; the last 4 KiB of stderr go into the failure message. A container
//! killed at its memory limit fails with "out of memory" (or "probably out of
//! memory" for a SIGKILL that Docker did not report as one). The environment carries
//! the profile's `env` plus `DROVER_TASK_ID`, `DROVER_HANDLER`, `DROVER_ATTEMPT`,
//! `DROVER_FENCE`, `DROVER_EPOCH` and `DROVER_FENCE_COUNTER`.
//!
//! A container never outlives its task: it is force-removed when the program exits,
//! on timeout, on cancellation, when output runs over its bound, and (in the
//! background) when the run is dropped. Every container carries the labels
//! `drover.managed=true`, `drover.worker`, `drover.task`, `drover.fence` and
//! `drover.handler`, so that a worker restarting after a crash removes what its
//! previous life left behind with [`sweep_orphans`].
//!
//! Docker is reached lazily (see [`DockerEngine`]): a profile with container
//! handlers loads even while Docker is down, and the worker leaves those handlers
//! out of its heartbeat until Docker answers again.
//!
//! Layout: `spec` validates the profile entry ([`ContainerSpec`], [`docker_host`]);
//! `engine` reaches Docker and reports whether it answers ([`DockerEngine`]); `run`
//! takes one task through create, attach, start, wait and the verdict, with
//! `lockdown` saying what the container is created with and `stdio` carrying its
//! input and output; `cleanup` removes containers, by id or by their labels, and
//! sweeps what a crashed worker left ([`sweep_orphans`]).

mod cleanup;
mod engine;
mod lockdown;
mod run;
mod spec;
mod stdio;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Handler, HandlerFuture, Probe, TaskContext};

pub use cleanup::{sweep_orphans, LABEL_FENCE, LABEL_HANDLER, LABEL_MANAGED, LABEL_TASK, LABEL_WORKER};
pub use engine::{DockerEngine, DockerError};
pub use spec::{docker_host, ContainerSpec, DEFAULT_DOCKER_HOST, DEFAULT_PIDS, DEFAULT_USER};
pub use stdio::LOG_TAIL;

/// Runs each task in a fresh container; see the module documentation. Built by
/// [`ContainerHandler::from_spec`] (in `spec`), which validates the profile entry.
#[derive(Debug, Clone)]
pub struct ContainerHandler {
    // Shared with every run's future, which must be 'static.
    inner: Arc<Inner>,
}

/// A validated profile entry in the types Docker takes, plus the worker whose
/// label its containers carry and the engine they run on.
#[derive(Debug, Clone)]
struct Inner {
    handler: String,
    image: String,
    command: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    nano_cpus: Option<i64>,
    /// Bytes, and the limit as the profile wrote it, for failure messages.
    memory: Option<(i64, String)>,
    pids: i64,
    network: bool,
    user: Option<String>,
    pull: bool,
    max_output: usize,
    worker_id: String,
    engine: Arc<DockerEngine>,
}

impl ContainerHandler {
    /// The same handler, labelling its containers as worker `worker_id`'s, which is
    /// what [`sweep_orphans`] looks for.
    pub fn for_worker(&self, worker_id: &str) -> ContainerHandler {
        let mut inner = (*self.inner).clone();
        inner.worker_id = worker_id.to_owned();
        ContainerHandler { inner: Arc::new(inner) }
    }

    pub fn engine(&self) -> &Arc<DockerEngine> {
        &self.inner.engine
    }

    /// The availability probe for the registry: Docker must answer a ping.
    pub fn probe(&self) -> Probe {
        self.inner.engine.probe()
    }
}

impl Handler for ContainerHandler {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.execute(ctx, input).await })
    }
}
