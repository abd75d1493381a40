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

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::units::parse_size;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::outcome::{lossy_excerpt, parse_output, supervise};
use super::spec::{check_env, spec_max_output};
use super::{Handler, HandlerError, HandlerFuture, Probe, SpecError, TaskContext};

/// How much of the end of stderr is kept for failure messages (as for `exec`).
pub const LOG_TAIL: usize = 4 * 1024;

/// The user containers run as unless the profile says otherwise: `nobody`, by
/// number, so it works in images that have no `/etc/passwd`.
pub const DEFAULT_USER: &str = "65534:65534";

/// The process limit unless the profile says otherwise: enough for a program and
/// its helpers, small enough that a fork bomb only hurts its own container.
pub const DEFAULT_PIDS: i64 = 128;

/// The engine used when neither the profile's `docker_host` nor `DOCKER_HOST` is set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Label keys every container of drover carries.
pub const LABEL_MANAGED: &str = "drover.managed";
pub const LABEL_WORKER: &str = "drover.worker";
pub const LABEL_TASK: &str = "drover.task";
pub const LABEL_FENCE: &str = "drover.fence";
pub const LABEL_HANDLER: &str = "drover.handler";

/// Docker refuses memory limits below 6 MiB; saying so at profile load beats
/// failing every task.
const MIN_MEMORY: u64 = 6 << 20;

/// `/tmp` is the one writable place in the container: a tmpfs, so it counts
/// against the memory limit and disappears with the container. `mode=1777` lets the
/// non-root user write there when the image has no `/tmp`; when it has one, Docker
/// copies it (contents and mode) onto the tmpfs, and images ship `/tmp` as 1777.
const TMP_MOUNT: (&str, &str) = ("/tmp", "rw,nosuid,nodev,noexec,size=16m,mode=1777");

/// How long the availability probe waits for Docker: the heartbeat must not stall
/// behind a hung daemon.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting (version negotiation included) may take before Docker is
/// reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on each Docker API call's wait for response headers (bollard's unit is
/// whole seconds). Streams (attach, wait) are not cut by it once they have started.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How long cleanup may take before it is left to the next orphan sweep; only a
/// daemon in trouble is this slow.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(15);

/// A `kind = "container"` profile entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub image: String,
    /// Replaces the image's `CMD`; `None` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// CPUs the container may use, e.g. `0.5` or `2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. `"512Mi"` or `"64MiB"`; swap is not allowed on top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Process limit; [`DEFAULT_PIDS`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Whether the container gets Docker's default network; otherwise it has none.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network: bool,
    /// `uid[:gid]` or a name; [`DEFAULT_USER`] when unset, the image's own when "".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether a missing image may be pulled from its registry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pull: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<String>,
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; defaults to
    /// `DOCKER_HOST`, then [`DEFAULT_DOCKER_HOST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why Docker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker at {host} is unreachable: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("Docker at {host}: {source}")]
    Api {
        host: String,
        #[source]
        source: BollardError,
    },
}

/// One Docker endpoint, shared by every container handler of a registry that uses
/// it.
///
/// Connecting is deferred to first use and retried on every use until it works:
/// bollard refuses to build a client for a socket that does not exist yet, and the
/// API version has to be negotiated with the daemon (Docker 20.10 speaks at most
/// 1.41 and rejects newer clients; Docker 29 rejects clients older than 1.44), so
/// neither can happen while Docker is down, and a worker must still start then.
#[derive(Debug)]
pub struct DockerEngine {
    host: String,
    client: tokio::sync::Mutex<Option<Docker>>,
    // Last probe outcome, so that logs report changes rather than every probe.
    health: AtomicU8,
}

const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_UP: u8 = 1;
const HEALTH_DOWN: u8 = 2;

impl DockerEngine {
    /// An engine at `host` (`unix:///path`, `tcp://host:port` or `http://host:port`,
    /// as [`docker_host`] validates). Nothing is contacted yet.
    pub fn new(host: impl Into<String>) -> DockerEngine {
        DockerEngine {
            host: host.into(),
            client: tokio::sync::Mutex::new(None),
            health: AtomicU8::new(HEALTH_UNKNOWN),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// A client speaking an API version the daemon accepts, connecting on first use.
    pub async fn client(&self) -> Result<Docker, DockerError> {
        let mut slot = self.client.lock().await;
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        let unreachable = |reason: String| DockerError::Unreachable {
            host: self.host.clone(),
            reason,
        };
        let docker = connect(&self.host).map_err(|e| unreachable(describe(&e)))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unreachable(describe(&e)))?;
        tracing::debug!(host = %self.host, version = ?docker.client_version(), "connected to Docker");
        Ok(slot.insert(docker).clone())
    }

    /// Whether Docker answers a ping now, within a short bound. Changes are logged:
    /// a warning when Docker becomes unreachable, a notice when it is back.
    pub async fn check(&self) -> Result<(), DockerError> {
        let result = tokio::time::timeout(PING_TIMEOUT, async {
            let docker = self.client().await?;
            docker.ping().await.map(drop).map_err(|e| DockerError::Unreachable {
                host: self.host.clone(),
                reason: describe(&e),
            })
        })
        .await
        .unwrap_or_else(|_| {
            Err(DockerError::Unreachable {
                host: self.host.clone(),
                reason: format!("no answer within {PING_TIMEOUT:?}"),
            })
        });
        let now = if result.is_ok() { HEALTH_UP } else { HEALTH_DOWN };
        let before = self.health.swap(now, Ordering::AcqRel);
        match (&result, before) {
            (Err(e), HEALTH_UNKNOWN | HEALTH_UP) => {
                tracing::warn!(host = %self.host, error = %e, "Docker is unreachable: container handlers are not offered");
            }
            (Ok(()), HEALTH_DOWN) => {
                tracing::info!(host = %self.host, "Docker is reachable again: container handlers are offered");
            }
            _ => {}
        }
        result
    }
}

/// Builds a bollard client for a validated host string. For `unix://` this fails
/// when the socket does not exist.
fn connect(host: &str) -> Result<Docker, BollardError> {
    let version = bollard::API_DEFAULT_VERSION;
    if host.starts_with("unix://") {
        Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, version)
    } else {
        Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, version)
    }
}

/// bollard's errors, worded for an operator reading a health report.
fn describe(e: &BollardError) -> String {
    match e {
        BollardError::SocketNotFoundError(path) => format!("no socket at {path}"),
        BollardError::RequestTimeoutError => "the request timed out".to_owned(),
        BollardError::DockerResponseServerError { status_code, message } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// The Docker endpoint a profile entry uses: its `docker_host`, else `DOCKER_HOST`,
/// else [`DEFAULT_DOCKER_HOST`]. A bare absolute path means a unix socket. TLS
/// endpoints (`https://`, `DOCKER_TLS_VERIFY`) are not supported.
pub fn docker_host(handler: &str, spec: &ContainerSpec) -> Result<String, SpecError> {
    let (raw, origin) = match &spec.docker_host {
        Some(host) => (host.trim().to_owned(), ""),
        None => match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.trim().is_empty() => (host.trim().to_owned(), " (from DOCKER_HOST)"),
            _ => (DEFAULT_DOCKER_HOST.to_owned(), ""),
        },
    };
    let invalid = |reason: &str| SpecError::Invalid {
        handler: handler.to_owned(),
        key: "docker_host",
        reason: format!("{raw:?}{origin}: {reason}"),
    };
    if raw.starts_with('/') {
        return Ok(format!("unix://{raw}"));
    }
    if let Some(path) = raw.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(invalid("the socket path must be absolute"));
        }
        return Ok(raw);
    }
    for scheme in ["tcp://", "http://"] {
        if let Some(addr) = raw.strip_prefix(scheme) {
            if addr.is_empty() || addr.contains(char::is_whitespace) {
                return Err(invalid("expected host:port after the scheme"));
            }
            return Ok(raw);
        }
    }
    Err(invalid(
        "expected unix:///path/to/docker.sock, tcp://host:port or http://host:port (TLS is not supported)",
    ))
}

/// Runs each task in a fresh container; see the module documentation.
#[derive(Debug, Clone)]
pub struct ContainerHandler {
    // Shared with every run's future, which must be 'static.
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    handler: String,
    image: String,
    command: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    nano_cpus: Option<i64>,
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
    /// Validates a profile entry named `handler`, to run on `engine` (see
    /// [`docker_host`]). The `timeout` key is not read here: the worker folds it
    /// into [`TaskContext::timeout`]. Containers are labelled with an empty worker
    /// id until [`ContainerHandler::for_worker`] names the worker.
    pub fn from_spec(
        handler: &str,
        spec: &ContainerSpec,
        engine: Arc<DockerEngine>,
    ) -> Result<ContainerHandler, SpecError> {
        let invalid = |key, reason: &str| SpecError::Invalid {
            handler: handler.to_owned(),
            key,
            reason: reason.to_owned(),
        };
        let bad_entry = |key, entry: &str, reason: &str| SpecError::BadEntry {
            handler: handler.to_owned(),
            key,
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };

        let image = spec.image.trim();
        if image.is_empty() {
            return Err(invalid("image", "must not be empty"));
        }
        if image.contains(|c: char| c.is_whitespace() || c == '\0') {
            return Err(invalid("image", "must not contain spaces or NUL bytes"));
        }

        if let Some(command) = &spec.command {
            if command.first().is_none_or(String::is_empty) {
                return Err(SpecError::EmptyCommand {
                    handler: handler.to_owned(),
                });
            }
            if let Some(i) = command.iter().position(|a| a.contains('\0')) {
                return Err(bad_entry("command", &i.to_string(), "must not contain NUL bytes"));
            }
        }

        check_env(handler, &spec.env)?;

        if let Some(dir) = &spec.workdir {
            // Docker rejects relative working directories at create time; say so now.
            if !dir.starts_with('/') || dir.contains('\0') {
                return Err(invalid("workdir", "must be an absolute path"));
            }
        }

        let nano_cpus = match spec.cpus {
            None => None,
            Some(cpus) if !cpus.is_finite() => return Err(invalid("cpus", "must be a number")),
            Some(cpus) if cpus < 0.01 => {
                return Err(invalid("cpus", "must be at least 0.01"));
            }
            // Far beyond any machine: stops a typo like 1e12 from overflowing.
            Some(cpus) if cpus > 1_000_000.0 => {
                return Err(invalid("cpus", "must be at most 1000000"));
            }
            // The guards above keep the product well inside i64.
            Some(cpus) => Some((cpus * 1e9).round() as i64),
        };

        let memory = match spec.memory.as_deref() {
            None => None,
            Some(text) => match parse_size(text) {
                Some(0) => {
                    return Err(SpecError::Zero {
                        handler: handler.to_owned(),
                        key: "memory",
                    })
                }
                Some(bytes) if bytes < MIN_MEMORY => {
                    return Err(invalid("memory", "must be at least 6MiB (Docker's minimum)"));
                }
                // Docker takes an i64; anything beyond is no size a machine has.
                Some(bytes) if i64::try_from(bytes).is_ok() => Some((bytes as i64, text.trim().to_owned())),
                _ => {
                    return Err(SpecError::BadSize {
                        handler: handler.to_owned(),
                        key: "memory",
                        value: text.to_owned(),
                    })
                }
            },
        };

        let pids = match spec.pids {
            None => DEFAULT_PIDS,
            Some(n) if n <= 0 => {
                return Err(SpecError::Zero {
                    handler: handler.to_owned(),
                    key: "pids",
                })
            }
            Some(n) => n,
        };

        let user = match spec.user.as_deref().map(str::trim) {
            None => Some(DEFAULT_USER.to_owned()),
            Some("") => None,
            Some(user) if user.contains(|c: char| c.is_whitespace() || c == '\0') => {
                return Err(invalid("user", "must not contain spaces or NUL bytes"));
            }
            Some(user) => Some(user.to_owned()),
        };

        Ok(ContainerHandler {
            inner: Arc::new(Inner {
                handler: handler.to_owned(),
                image: image.to_owned(),
                command: spec.command.clone(),
                env: spec.env.clone(),
                workdir: spec.workdir.clone(),
                nano_cpus,
                memory,
                pids,
                network: spec.network,
                user,
                pull: spec.pull,
                max_output: spec_max_output(handler, "max_output", spec.max_output.as_deref())?,
                worker_id: String::new(),
                engine,
            }),
        })
    }

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
        let engine = Arc::clone(&self.inner.engine);
        Arc::new(move || {
            let engine = Arc::clone(&engine);
            Box::pin(async move { engine.check().await.map_err(|e| e.to_string()) })
        })
    }
}

impl Handler for ContainerHandler {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.execute(ctx, input).await })
    }
}

/// What one finished container left behind.
struct Finished {
    exit_code: i64,
    oom_killed: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Inner {
    async fn execute(&self, ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
        // A task given back before it started must not start a container at all.
        if ctx.cancel.is_cancelled() {
            return Err(HandlerError::Cancelled);
        }
        let docker = supervise(&ctx, async {
            self.engine
                .client()
                .await
                .map_err(|e| HandlerError::Start(e.to_string()))
        })
        .await?;
        let labels = self.labels(&ctx);
        let mut container = Cleanup::new(docker.clone(), &labels);
        let outcome = supervise(&ctx, self.run_container(&docker, &ctx, input, &mut container)).await;
        // Always, whatever the outcome: a finished container is only a record, but
        // a timed-out or cancelled one is still running and must be killed now.
        container.remove().await;
        let finished = outcome?;
        self.interpret(finished)
    }

    fn labels(&self, ctx: &TaskContext) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKER.to_owned(), self.worker_id.clone()),
            (LABEL_TASK.to_owned(), ctx.task_id.clone()),
            (LABEL_FENCE.to_owned(), ctx.fence_token()),
            (LABEL_HANDLER.to_owned(), self.handler.clone()),
        ])
    }

    fn container_config(&self, ctx: &TaskContext, labels: HashMap<String, String>) -> ContainerCreateBody {
        let mut env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(ctx.env().map(|(k, v)| format!("{k}={v}")));
        let memory = self.memory.as_ref().map(|(bytes, _)| *bytes);
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: self.command.clone(),
            env: Some(env),
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            labels: Some(labels),
            // Stdin stays open until the one attached client (us) closes its side;
            // no TTY, so stdout and stderr arrive as separate streams.
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(HostConfig {
                nano_cpus: self.nano_cpus,
                memory,
                // Equal to the memory limit: no swap on top, so the limit is real
                // and a runaway program is killed instead of thrashing.
                memory_swap: memory,
                pids_limit: Some(self.pids),
                network_mode: (!self.network).then(|| "none".to_owned()),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(TMP_MOUNT.0.to_owned(), TMP_MOUNT.1.to_owned())])),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                // The output is read over the attach stream; Docker's log files
                // would only be a second, unbounded copy of it on disk.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".to_owned()),
                    config: None,
                }),
                // Removed by us after reading its exit state, never by Docker first.
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates, attaches, starts and waits for the container, recording it in
    /// `cleanup` as soon as it may exist.
    async fn run_container(
        &self,
        docker: &Docker,
        ctx: &TaskContext,
        input: Value,
        cleanup: &mut Cleanup,
    ) -> Result<Finished, HandlerError> {
        let id = self.create(docker, ctx, cleanup).await?;
        let start_error = |e: BollardError| {
            HandlerError::Start(format!(
                "starting a container from image {:?}: {}",
                self.image,
                describe(&e)
            ))
        };
        // Attached before it starts, so not a byte of output is missed.
        let attached = docker
            .attach_container(
                &id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(start_error)?;
        docker.start_container(&id, None).await.map_err(start_error)?;

        let payload = format!("{input}\n").into_bytes();
        let mut feeding = pin!(feed_stdin(attached.input, payload));
        let mut reading = pin!(read_output(attached.output, self.max_output));
        let mut fed = false;
        // The output ends when the container exits, whether or not it read its
        // input, so only the output decides when this is over: a program that
        // ignores a large input must not leave us blocked writing it.
        let (stdout, stderr) = loop {
            tokio::select! {
                out = &mut reading => break out?,
                () = &mut feeding, if !fed => fed = true,
            }
        };

        // The streams can close a moment before Docker records the exit.
        let mut waiting = docker.wait_container(
            &id,
            Some(WaitContainerOptions {
                condition: "not-running".to_owned(),
            }),
        );
        match waiting.next().await {
            // bollard reports a non-zero exit as an error; the code is read below.
            Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) | None => {}
            Some(Err(e)) => {
                return Err(HandlerError::Failed(format!(
                    "waiting for the container: {}",
                    describe(&e)
                )))
            }
        }
        let state = docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| HandlerError::Failed(format!("inspecting the container: {}", describe(&e))))?
            .state
            .unwrap_or_default();
        Ok(Finished {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
            stdout,
            stderr,
        })
    }

    /// Creates the container, pulling its image first if it is missing and the
    /// profile allows pulling.
    async fn create(&self, docker: &Docker, ctx: &TaskContext, cleanup: &mut Cleanup) -> Result<String, HandlerError> {
        let config = self.container_config(ctx, cleanup.labels.clone());
        let mut pulled = false;
        loop {
            // From here until Docker answers, a container may exist whose id we do
            // not know yet; cleanup then finds it by its labels.
            cleanup.state = CleanupState::Creating;
            match docker.create_container(None, config.clone()).await {
                Ok(created) => {
                    cleanup.state = CleanupState::Created(created.id.clone());
                    return Ok(created.id);
                }
                // 404 from create means the image is not there (409 would be a
                // name clash, which unnamed containers cannot have).
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) if !pulled => {
                    cleanup.state = CleanupState::Idle;
                    if !self.pull {
                        return Err(HandlerError::Start(format!(
                            "image {:?} is not present and pulling is not allowed by the profile",
                            self.image
                        )));
                    }
                    self.pull_image(docker).await?;
                    pulled = true;
                }
                Err(e) => {
                    cleanup.state = CleanupState::Idle;
                    return Err(HandlerError::Start(format!(
                        "creating a container from image {:?}: {}",
                        self.image,
                        describe(&e)
                    )));
                }
            }
        }
    }

    async fn pull_image(&self, docker: &Docker) -> Result<(), HandlerError> {
        tracing::info!(image = %self.image, handler = %self.handler, "pulling image");
        let mut progress = docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(pull_reference(&self.image)),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(step) = progress.next().await {
            step.map_err(|e| HandlerError::Start(format!("pulling image {:?}: {}", self.image, describe(&e))))?;
        }
        Ok(())
    }

    fn interpret(&self, finished: Finished) -> Result<Value, HandlerError> {
        let Finished {
            exit_code,
            oom_killed,
            stdout,
            stderr,
        } = finished;
        // A program that survived the loss of a child to the OOM killer and still
        // exited 0 has succeeded.
        if exit_code == 0 {
            return parse_output(&stdout);
        }
        let how = match (&self.memory, oom_killed, exit_code) {
            (Some((_, limit)), true, _) => {
                format!("out of memory: killed at the memory limit of {limit} (exit status {exit_code})")
            }
            (None, true, _) => format!("out of memory (exit status {exit_code})"),
            // SIGKILL, the OOM killer's signal, without Docker's word for it. Docker
            // learns of OOM kills from containerd, which only starts watching a
            // container's memory cgroup once it runs: a program that hits the limit
            // within moments of starting is killed unreported (one in ten such
            // kills here, on Docker 20.10 with cgroup v1). Nothing else in a
            // locked-down container is likely to SIGKILL its main process.
            (Some((_, limit)), false, 137) => format!(
                "exit status 137 (killed by SIGKILL): probably out of memory at the memory \
                 limit of {limit}, though Docker reported no OOM kill"
            ),
            (_, false, _) => format!("exit status {exit_code}"),
        };
        let tail = lossy_excerpt(&stderr, LOG_TAIL);
        Err(HandlerError::Failed(if tail.is_empty() {
            how
        } else {
            format!("{how}: {tail}")
        }))
    }
}

/// A reference Docker pulls exactly one image for: with no tag or digest, the
/// pull API would fetch every tag of the repository, so `:latest` is made explicit
/// as `docker pull` does.
fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// Writes the input and closes our side of stdin, so the program sees EOF. A
/// program that exits without reading its input is fine, so write errors (the
/// connection closing under us) are not failures.
async fn feed_stdin(mut stdin: std::pin::Pin<Box<dyn AsyncWrite + Send>>, payload: Vec<u8>) {
    if let Err(e) = stdin.write_all(&payload).await {
        tracing::debug!(error = %e, "container did not read its whole input");
        return;
    }
    // A half-close: Docker sees EOF and, with StdinOnce, closes the container's
    // stdin, while its output keeps flowing to us.
    if let Err(e) = stdin.shutdown().await {
        tracing::debug!(error = %e, "closing the container's stdin");
    }
}

/// Demultiplexes the attach stream until it ends: stdout in full up to `limit`
/// (one byte more is [`HandlerError::OutputTooLarge`]), stderr only its last
/// [`LOG_TAIL`] bytes.
async fn read_output(
    output: impl Stream<Item = Result<LogOutput, BollardError>>,
    limit: usize,
) -> Result<(Vec<u8>, Vec<u8>), HandlerError> {
    let mut output = pin!(output);
    let mut stdout = Vec::new();
    let mut stderr = Vec::with_capacity(LOG_TAIL * 2);
    while let Some(frame) = output.next().await {
        let frame =
            frame.map_err(|e| HandlerError::Failed(format!("reading the container's output: {}", describe(&e))))?;
        match frame {
            // Console only appears for TTYs (which we do not ask for) and for
            // trailing bytes without a frame header; either way it is stdout.
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                if stdout.len() + message.len() > limit {
                    return Err(HandlerError::OutputTooLarge { limit });
                }
                stdout.extend_from_slice(&message);
            }
            LogOutput::StdErr { message } => {
                stderr.extend_from_slice(&message);
                // Trim only once the buffer is double the tail, so trimming is
                // amortized.
                if stderr.len() > LOG_TAIL * 2 {
                    stderr.drain(..stderr.len() - LOG_TAIL);
                }
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    if stderr.len() > LOG_TAIL {
        stderr.drain(..stderr.len() - LOG_TAIL);
    }
    Ok((stdout, stderr))
}

/// What there is to clean up for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CleanupState {
    /// No container exists (yet, or any more).
    Idle,
    /// A create request was sent and not answered: a container may exist, known
    /// only by its labels.
    Creating,
    Created(String),
}

/// Removes the run's container when asked, and in the background if dropped before
/// that, so that a run stopped at any point leaves no container behind.
struct Cleanup {
    docker: Docker,
    // The labels the container is created with; `label_filters` finds it by the
    // ones unique to this run.
    labels: HashMap<String, String>,
    state: CleanupState,
}

impl Cleanup {
    fn new(docker: Docker, labels: &HashMap<String, String>) -> Cleanup {
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

    async fn remove(&mut self) {
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
    use super::*;
    use crate::handlers::{HandlerSpec, Registry};
    use serde_json::json;
    use std::io::Write as _;
    use std::time::Instant;
    use tokio_util::sync::CancellationToken;

    /// Built by tests/container/build-test-image.sh: a static busybox FROM scratch,
    /// since no registry is reachable where the tests run.
    const IMAGE: &str = "drover-test-busybox:latest";

    fn base_spec() -> ContainerSpec {
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
    fn sh(script: &str) -> ContainerSpec {
        ContainerSpec {
            command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
            ..base_spec()
        }
    }

    /// A task id no other test (or test process) uses, so label queries see only
    /// this test's containers.
    fn task_id(test: &str) -> String {
        format!("{test}-{}", std::process::id())
    }

    fn ctx(task_id: &str, timeout: Duration) -> TaskContext {
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

    fn handler(engine: &Arc<DockerEngine>, spec: &ContainerSpec, worker: &str) -> ContainerHandler {
        ContainerHandler::from_spec("box", spec, Arc::clone(engine))
            .expect("valid spec")
            .for_worker(worker)
    }

    fn worker_id(test: &str) -> String {
        format!("test-worker-{test}-{}", std::process::id())
    }

    /// Docker with the test image present, or `None` after a loud skip notice when
    /// Docker cannot be reached; with `DROVER_TEST_REQUIRE=all` that is a failure.
    async fn docker_or_skip(test: &str) -> Option<Arc<DockerEngine>> {
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
    async fn ensure_image(docker: &Docker) {
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
    async fn containers_with(docker: &Docker, label: String) -> Vec<String> {
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

    async fn task_containers(docker: &Docker, task_id: &str) -> Vec<String> {
        containers_with(docker, format!("{LABEL_TASK}={task_id}")).await
    }

    /// Waits (bounded) until the task's container is running, and returns its id.
    async fn running_container(docker: &Docker, task_id: &str) -> String {
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
    async fn assert_no_containers_eventually(docker: &Docker, task_id: &str) {
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

    async fn run(
        engine: &Arc<DockerEngine>,
        spec: &ContainerSpec,
        task: &str,
        input: Value,
    ) -> Result<Value, HandlerError> {
        handler(engine, spec, &worker_id(task))
            .run(ctx(task, Duration::from_secs(30)), input)
            .await
    }

    fn spec_error(spec: ContainerSpec) -> String {
        let engine = Arc::new(DockerEngine::new(DEFAULT_DOCKER_HOST));
        ContainerHandler::from_spec("box", &spec, engine)
            .expect_err("spec should be rejected")
            .to_string()
    }

    #[test]
    fn spec_validation_messages() {
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (
                ContainerSpec {
                    image: " ".into(),
                    ..base_spec()
                },
                "handlers.box.image: must not be empty",
            ),
            (
                ContainerSpec {
                    image: "a b".into(),
                    ..base_spec()
                },
                "handlers.box.image: must not contain spaces or NUL bytes",
            ),
            (
                ContainerSpec {
                    command: Some(vec![]),
                    ..base_spec()
                },
                "handlers.box.command: must not be empty",
            ),
            (
                ContainerSpec {
                    command: Some(vec!["sh".into(), "a\0".into()]),
                    ..base_spec()
                },
                "handlers.box.command.1: must not contain NUL bytes",
            ),
            (
                ContainerSpec {
                    env: BTreeMap::from([("DROVER_FENCE".into(), "1.1".into())]),
                    ..base_spec()
                },
                "handlers.box.env.DROVER_FENCE: is set by drover",
            ),
            (
                ContainerSpec {
                    env: BTreeMap::from([("A=B".into(), "1".into())]),
                    ..base_spec()
                },
                "handlers.box.env.A=B: names must be non-empty and contain neither '=' nor NUL",
            ),
            (
                ContainerSpec {
                    workdir: Some("work".into()),
                    ..base_spec()
                },
                "handlers.box.workdir: must be an absolute path",
            ),
            (
                ContainerSpec {
                    cpus: Some(0.0),
                    ..base_spec()
                },
                "handlers.box.cpus: must be at least 0.01",
            ),
            (
                ContainerSpec {
                    cpus: Some(f64::NAN),
                    ..base_spec()
                },
                "handlers.box.cpus: must be a number",
            ),
            (
                ContainerSpec {
                    cpus: Some(1e12),
                    ..base_spec()
                },
                "handlers.box.cpus: must be at most 1000000",
            ),
            (
                ContainerSpec {
                    memory: Some("lots".into()),
                    ..base_spec()
                },
                r#"handlers.box.memory: "lots" is not a size (e.g. 512, 64KiB, 1MiB, 10kB)"#,
            ),
            (
                ContainerSpec {
                    memory: Some("0".into()),
                    ..base_spec()
                },
                "handlers.box.memory: must be greater than zero",
            ),
            (
                ContainerSpec {
                    memory: Some("4Mi".into()),
                    ..base_spec()
                },
                "handlers.box.memory: must be at least 6MiB (Docker's minimum)",
            ),
            (
                ContainerSpec {
                    memory: Some("10000000TiB".into()),
                    ..base_spec()
                },
                r#"handlers.box.memory: "10000000TiB" is not a size (e.g. 512, 64KiB, 1MiB, 10kB)"#,
            ),
            (
                ContainerSpec {
                    pids: Some(0),
                    ..base_spec()
                },
                "handlers.box.pids: must be greater than zero",
            ),
            (
                ContainerSpec {
                    user: Some("no body".into()),
                    ..base_spec()
                },
                "handlers.box.user: must not contain spaces or NUL bytes",
            ),
            (
                ContainerSpec {
                    max_output: Some("0".into()),
                    ..base_spec()
                },
                "handlers.box.max_output: must be greater than zero",
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(spec_error(spec.clone()), expected, "{spec:?}");
        }
    }

    #[test]
    fn docker_host_forms() {
        let host = |h: &str| {
            docker_host(
                "box",
                &ContainerSpec {
                    docker_host: Some(h.into()),
                    ..base_spec()
                },
            )
        };
        assert_eq!(host("unix:///run/d.sock").unwrap(), "unix:///run/d.sock");
        assert_eq!(host("/run/d.sock").unwrap(), "unix:///run/d.sock");
        assert_eq!(host("tcp://10.0.0.1:2375").unwrap(), "tcp://10.0.0.1:2375");
        assert_eq!(host("http://docker:2375").unwrap(), "http://docker:2375");
        assert_eq!(
            host("https://docker:2376").unwrap_err().to_string(),
            "handlers.box.docker_host: \"https://docker:2376\": expected \
             unix:///path/to/docker.sock, tcp://host:port or http://host:port (TLS is not supported)"
        );
        assert_eq!(
            host("unix://run/d.sock").unwrap_err().to_string(),
            "handlers.box.docker_host: \"unix://run/d.sock\": the socket path must be absolute"
        );
        assert_eq!(
            host("tcp://").unwrap_err().to_string(),
            "handlers.box.docker_host: \"tcp://\": expected host:port after the scheme"
        );
    }

    #[test]
    fn profile_entry_deserializes_with_defaults() {
        let spec: HandlerSpec = serde_json::from_value(json!({
            "kind": "container", "image": "renderer:1", "cpus": 1.0, "memory": "512Mi",
        }))
        .expect("deserialize");
        let HandlerSpec::Container(spec) = spec else {
            panic!("not a container spec: {spec:?}");
        };
        assert_eq!(spec.image, "renderer:1");
        assert_eq!(spec.cpus, Some(1.0));
        assert!(!spec.network && !spec.pull);
        let handler = ContainerHandler::from_spec("render", &spec, Arc::new(DockerEngine::new(DEFAULT_DOCKER_HOST)))
            .expect("valid");
        let inner = &handler.inner;
        assert_eq!(inner.nano_cpus, Some(1_000_000_000));
        assert_eq!(inner.memory, Some((512 << 20, "512Mi".to_owned())));
        assert_eq!(inner.pids, DEFAULT_PIDS);
        assert_eq!(inner.user.as_deref(), Some(DEFAULT_USER));
        assert_eq!(inner.max_output, crate::handlers::DEFAULT_MAX_OUTPUT);

        // Round trip, and the defaults stay out of the serialized form.
        let value = serde_json::to_value(HandlerSpec::Container(spec.clone())).expect("serialize");
        assert_eq!(
            value,
            json!({"kind": "container", "image": "renderer:1", "cpus": 1.0, "memory": "512Mi"})
        );

        // `user = ""` keeps the image's own user.
        let own_user = ContainerSpec {
            user: Some(String::new()),
            ..spec
        };
        let handler =
            ContainerHandler::from_spec("render", &own_user, Arc::new(DockerEngine::new(DEFAULT_DOCKER_HOST)))
                .expect("valid");
        assert_eq!(handler.inner.user, None);
    }

    #[test]
    fn pull_reference_names_one_tag() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            pull_reference("registry:5000/team/app"),
            "registry:5000/team/app:latest"
        );
        assert_eq!(pull_reference("registry:5000/team/app:2"), "registry:5000/team/app:2");
        assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
    }

    #[tokio::test]
    async fn unreachable_docker_makes_the_handler_unavailable() {
        // No Docker needed: the point is its absence.
        let specs: BTreeMap<String, HandlerSpec> = serde_json::from_value(json!({
            "echo": {"kind": "builtin"},
            "render": {"kind": "container", "image": IMAGE,
                       "docker_host": "unix:///nonexistent/drover/docker.sock"},
        }))
        .expect("specs");
        let registry = Registry::from_specs(&specs)
            .expect("a profile loads while Docker is down")
            .for_worker("w-unreachable");
        assert_eq!(registry.names(), ["echo", "render"]);

        let start = Instant::now();
        let unavailable = registry.unavailable().await;
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert_eq!(unavailable.len(), 1, "{unavailable:?}");
        let (name, reason) = &unavailable[0];
        assert_eq!(name, "render");
        assert_eq!(
            reason,
            "Docker at unix:///nonexistent/drover/docker.sock is unreachable: \
             no socket at /nonexistent/drover/docker.sock"
        );

        // A task routed here anyway fails to start, saying why.
        let out = registry
            .get("render")
            .expect("registered")
            .run(ctx("t-unreachable", Duration::from_secs(10)), json!(1))
            .await;
        assert!(
            matches!(&out, Err(HandlerError::Start(m)) if m.contains("is unreachable")),
            "{out:?}"
        );

        let swept = registry.sweep_orphans("w-unreachable").await;
        assert!(matches!(&swept, Err(DockerError::Unreachable { .. })), "{swept:?}");
    }

    #[tokio::test]
    async fn unresponsive_docker_is_reported_within_the_ping_bound() {
        // A socket that accepts connections but never answers: a hung daemon.
        let dir = std::env::temp_dir().join(format!("drover-hung-docker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let engine = DockerEngine::new(format!("unix://{}", path.display()));
        let start = Instant::now();
        let err = engine.check().await.expect_err("a hung daemon is unavailable");
        let elapsed = start.elapsed();
        assert!(elapsed < PING_TIMEOUT + Duration::from_secs(1), "{elapsed:?}");
        assert!(err.to_string().contains("no answer within 2s"), "{err}");
        accepting.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn registry_offers_container_handlers_while_docker_answers() {
        let Some(_engine) = docker_or_skip("registry_offers").await else {
            return;
        };
        let specs: BTreeMap<String, HandlerSpec> = serde_json::from_value(json!({
            "echo": {"kind": "builtin"},
            "render": {"kind": "container", "image": IMAGE},
        }))
        .expect("specs");
        let registry = Registry::from_specs(&specs).expect("valid");
        assert_eq!(registry.unavailable().await, Vec::<(String, String)>::new());
        assert_eq!(Registry::builtins().unavailable().await, vec![]);
    }

    #[tokio::test]
    async fn cat_returns_the_input_and_the_container_is_removed() {
        let Some(engine) = docker_or_skip("cat").await else {
            return;
        };
        let task = task_id("cat");
        let input = json!({"image": "a.png", "sizes": [64, 128], "note": "ünï"});
        let spec = ContainerSpec {
            command: Some(vec!["cat".into()]),
            ..base_spec()
        };
        assert_eq!(run(&engine, &spec, &task, input.clone()).await.unwrap(), input);
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn stdin_is_one_line_and_closed() {
        let Some(engine) = docker_or_skip("stdin").await else {
            return;
        };
        // `wc -l` only finishes once stdin is closed, and counts the newline.
        let out = run(&engine, &sh("wc -l"), &task_id("stdin"), json!([1, 2])).await;
        assert_eq!(out.unwrap(), json!(1));
    }

    #[tokio::test]
    async fn empty_and_plain_text_stdout() {
        let Some(engine) = docker_or_skip("plain").await else {
            return;
        };
        let task = task_id("plain");
        assert_eq!(run(&engine, &sh("true"), &task, json!(1)).await.unwrap(), Value::Null);
        let out = run(&engine, &sh("echo '  thumbnail ready  '"), &task, json!(1)).await;
        assert_eq!(out.unwrap(), json!("thumbnail ready"));
        let out = run(&engine, &sh("printf '\\377\\376'"), &task, json!(1)).await;
        assert!(matches!(out, Err(HandlerError::InvalidOutput(_))), "{out:?}");
    }

    #[tokio::test]
    async fn environment_identity_and_lockdown() {
        let Some(engine) = docker_or_skip("lockdown").await else {
            return;
        };
        let mut spec = sh(
            r#"printf '{"task":"%s","handler":"%s","attempt":"%s","fence":"%s","epoch":"%s","counter":"%s","mode":"%s","uid":"%s","gid":"%s","pwd":"%s","nnp":"%s","cap":"%s","nets":"%s","root_ro":%s,"tmp_rw":%s}' \
            "$DROVER_TASK_ID" "$DROVER_HANDLER" "$DROVER_ATTEMPT" "$DROVER_FENCE" "$DROVER_EPOCH" \
            "$DROVER_FENCE_COUNTER" "$MODE" "$(id -u)" "$(id -g)" "$(pwd)" \
            "$(grep NoNewPrivs /proc/self/status | tr -dc 0-9)" \
            "$(grep CapEff /proc/self/status | cut -f2)" \
            "$(ls /sys/class/net | tr '\n' ' ')" \
            "$(touch /x 2>/dev/null && echo false || echo true)" \
            "$(touch /tmp/x && echo true || echo false)""#,
        );
        spec.env.insert("MODE".into(), "x".into());
        spec.workdir = Some("/bin".into());
        let task = task_id("lockdown");
        let out = run(&engine, &spec, &task, Value::Null).await.unwrap();
        assert_eq!(
            out,
            json!({"task": task, "handler": "box", "attempt": "3", "fence": "5.17",
                   "epoch": "5", "counter": "17", "mode": "x", "uid": "65534", "gid": "65534",
                   "pwd": "/bin", "nnp": "1", "cap": "0000000000000000", "nets": "lo ",
                   "root_ro": true, "tmp_rw": true})
        );

        // With the network allowed, the container has more than loopback.
        spec.command = Some(vec!["/bin/sh".into(), "-c".into(), "ls /sys/class/net | wc -l".into()]);
        spec.network = true;
        let out = run(&engine, &spec, &task, Value::Null).await.unwrap();
        assert!(out.as_i64().unwrap_or(0) >= 2, "{out}");
    }

    #[tokio::test]
    async fn non_zero_exit_reports_status_and_stderr_tail() {
        let Some(engine) = docker_or_skip("exit").await else {
            return;
        };
        let task = task_id("exit");
        let out = run(
            &engine,
            &sh("echo starting >&2; echo 'bad input' >&2; exit 3"),
            &task,
            Value::Null,
        )
        .await;
        match out {
            Err(HandlerError::Failed(msg)) => assert_eq!(msg, "exit status 3: starting\nbad input"),
            other => panic!("unexpected {other:?}"),
        }

        // Only the tail of a long stderr is kept, and stderr never blocks stdout.
        let out = run(
            &engine,
            &sh("head -c 200000 /dev/zero | tr '\\0' a >&2; echo THE-END >&2; exit 1"),
            &task,
            Value::Null,
        )
        .await;
        let Err(HandlerError::Failed(msg)) = out else {
            panic!("unexpected {out:?}");
        };
        assert!(msg.starts_with("exit status 1: aaaa"), "{}", &msg[..40]);
        assert!(msg.ends_with("aaaaTHE-END"), "{}", &msg[msg.len() - 40..]);
        assert!(msg.len() <= "exit status 1: ".len() + LOG_TAIL, "{}", msg.len());
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn program_ignoring_large_input_still_succeeds() {
        let Some(engine) = docker_or_skip("ignore-input").await else {
            return;
        };
        let input = json!("x".repeat(1_000_000));
        let out = run(&engine, &sh("echo 7"), &task_id("ignore-input"), input).await;
        assert_eq!(out.unwrap(), json!(7));
    }

    #[tokio::test]
    async fn missing_program_is_a_start_error() {
        let Some(engine) = docker_or_skip("no-program").await else {
            return;
        };
        let task = task_id("no-program");
        let spec = ContainerSpec {
            command: Some(vec!["/nonexistent/thumb".into()]),
            ..base_spec()
        };
        let out = run(&engine, &spec, &task, Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Start(m)) if m.contains("/nonexistent/thumb")),
            "{out:?}"
        );
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn missing_image_is_not_pulled_unless_allowed() {
        let Some(engine) = docker_or_skip("no-image").await else {
            return;
        };
        let spec = ContainerSpec {
            image: "drover-test-missing:nope".into(),
            ..base_spec()
        };
        let out = run(&engine, &spec, &task_id("no-image"), Value::Null).await;
        match out {
            Err(HandlerError::Start(msg)) => assert_eq!(
                msg,
                r#"image "drover-test-missing:nope" is not present and pulling is not allowed by the profile"#
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn timeout_kills_and_removes_the_container() {
        let Some(engine) = docker_or_skip("timeout").await else {
            return;
        };
        let docker = engine.client().await.unwrap();
        let task = task_id("timeout");
        let start = Instant::now();
        let out = handler(&engine, &sh("sleep 30"), &worker_id("timeout"))
            .run(ctx(&task, Duration::from_millis(1500)), Value::Null)
            .await;
        assert!(
            matches!(out, Err(HandlerError::Timeout(d)) if d == Duration::from_millis(1500)),
            "{out:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        // Removed before the run returned, not eventually.
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn cancel_kills_and_removes_the_container_which_had_its_limits() {
        let Some(engine) = docker_or_skip("cancel").await else {
            return;
        };
        let docker = engine.client().await.unwrap();
        let task = task_id("cancel");
        let worker = worker_id("cancel");
        let spec = ContainerSpec {
            cpus: Some(0.5),
            memory: Some("64MiB".into()),
            pids: Some(32),
            ..sh("sleep 30")
        };
        let ctx = ctx(&task, Duration::from_secs(60));
        let cancel = ctx.cancel.clone();
        let run = tokio::spawn(handler(&engine, &spec, &worker).run(ctx, Value::Null));

        let id = running_container(&docker, &task).await;
        let seen = docker.inspect_container(&id, None).await.expect("inspect");
        let config = seen.config.expect("config");
        let labels = config.labels.expect("labels");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_WORKER], worker);
        assert_eq!(labels[LABEL_TASK], task);
        assert_eq!(labels[LABEL_FENCE], "5.17");
        assert_eq!(labels[LABEL_HANDLER], "box");
        assert_eq!(config.user.as_deref(), Some(DEFAULT_USER));
        let host = seen.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.pids_limit, Some(32));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]));

        let start = Instant::now();
        cancel.cancel();
        let out = run.await.expect("join");
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn already_cancelled_task_creates_nothing() {
        let Some(engine) = docker_or_skip("pre-cancel").await else {
            return;
        };
        let task = task_id("pre-cancel");
        let ctx = ctx(&task, Duration::from_secs(10));
        ctx.cancel.cancel();
        let out = handler(&engine, &sh("echo 1"), &worker_id("pre-cancel"))
            .run(ctx, Value::Null)
            .await;
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

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

    #[tokio::test]
    async fn memory_limit_is_reported_as_out_of_memory() {
        let Some(engine) = docker_or_skip("oom").await else {
            return;
        };
        let task = task_id("oom");
        // dd fills its 64 MiB buffer inside one read(2) from /dev/zero, so the limit
        // is hit in the kernel and the OOM killer acts at once. (A program that
        // grows its heap in user space, like `head -c 64m /dev/zero | tail`, can
        // thrash for half a minute first: reclaim keeps evicting and re-reading
        // busybox's own code pages before it gives up.) The pause first lets
        // containerd start watching the container's memory cgroup; an OOM kill
        // before that goes unreported (see `sigkill_without_docker_oom_report`).
        let spec = ContainerSpec {
            memory: Some("8Mi".into()),
            ..sh("sleep 0.5; exec dd if=/dev/zero of=/dev/null bs=64M count=1")
        };
        let out = run(&engine, &spec, &task, Value::Null).await;
        match out {
            // Under load Docker may miss reporting an OOM kill; the handler then
            // says "probably out of memory" for the same exit 137 at the limit.
            Err(HandlerError::Failed(msg)) => assert!(
                msg.starts_with("out of memory: killed at the memory limit of 8Mi (exit status 137)")
                    || (msg.contains("probably out of memory") && msg.contains("8Mi") && msg.contains("137")),
                "{msg}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn sigkill_without_docker_oom_report() {
        let Some(engine) = docker_or_skip("sigkill").await else {
            return;
        };
        let task = task_id("sigkill");
        // PID 1 ignores signals it has no handler for, even SIGKILL, so a child
        // shell is killed and the container exits with its status.
        let kill_self = sh("sh -c 'kill -9 $$'; exit $?");
        let out = run(&engine, &kill_self, &task, Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m == "exit status 137: Killed"),
            "{out:?}"
        );

        // With a memory limit, an unreported SIGKILL is most likely the OOM killer
        // acting before Docker watched the container, and the message says so.
        let limited = ContainerSpec {
            memory: Some("64Mi".into()),
            ..kill_self
        };
        let out = run(&engine, &limited, &task, Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m
                == "exit status 137 (killed by SIGKILL): probably out of memory at the \
                    memory limit of 64Mi, though Docker reported no OOM kill: Killed"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let Some(engine) = docker_or_skip("output").await else {
            return;
        };
        let task = task_id("output");
        let mut bounded = sh("printf '\"abc\"'");
        bounded.max_output = Some("5".into());
        let out = run(&engine, &bounded, &task, Value::Null).await;
        assert_eq!(out.unwrap(), json!("abc"), "exactly the limit is fine");

        bounded.command = Some(vec!["/bin/sh".into(), "-c".into(), "printf '\"abcd\"'".into()]);
        let out = run(&engine, &bounded, &task, Value::Null).await;
        assert!(matches!(out, Err(HandlerError::OutputTooLarge { limit: 5 })), "{out:?}");

        // A program that never stops writing is killed as soon as it passes the
        // bound, long before the timeout.
        let mut endless = sh("yes");
        endless.max_output = Some("1KiB".into());
        let start = Instant::now();
        let out = run(&engine, &endless, &task, Value::Null).await;
        assert!(
            matches!(out, Err(HandlerError::OutputTooLarge { limit: 1024 })),
            "{out:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
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
