//! Task handlers: the only things a drover worker can run.
//!
//! A worker's profile lists its handlers under `[handlers]`; [`Registry::from_specs`]
//! turns those entries into runnable [`Handler`]s and is the single gate between a
//! submitted task and anything executable. A task names a handler and supplies JSON
//! input, nothing more, so submitting a task can never choose a program, a URL or an
//! environment. The kinds are `builtin` (in-process helpers, see [`builtin`]), `exec`
//! (a fixed program spawned without a shell, see [`exec`]), `http` (a POST to a
//! fixed URL, see [`http`]) and `container` (a fixed image run in Docker with
//! resource limits, see [`container`]). A handler may depend on something outside
//! the worker (Docker, for containers): [`Registry::unavailable`] says which cannot
//! run right now and why, so the worker offers only the others. This module also
//! holds the duration and size parsers the profile loader shares.

pub mod builtin;
pub mod container;
pub mod exec;
pub mod http;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::units::{parse_duration, parse_size};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use builtin::{Builtin, BuiltinSpec, BUILTIN_NAMES};
pub use container::{ContainerHandler, ContainerSpec, DockerEngine, DockerError};
pub use exec::{ExecHandler, ExecSpec};
pub use http::{HttpHandler, HttpSpec};

/// The future a [`Handler`] returns: boxed so handlers of different types can sit in
/// one [`Registry`], and `Send` so the worker can run it on any runtime thread.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// What an availability [`Probe`] returns: `Err` carries the reason, for the
/// worker's health report and logs.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Checks whether a handler can run here now (e.g. whether Docker answers). It is
/// called before every heartbeat, so it must be quick and bound its own waiting.
pub type Probe = Arc<dyn Fn() -> ProbeFuture + Send + Sync>;

/// `max_output` when the profile does not set one.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

/// What a handler learns about the attempt it runs.
#[derive(Clone, Debug)]
pub struct TaskContext {
    pub task_id: String,
    pub handler: String,
    pub attempt: u32,
    pub epoch: u64,
    pub fence: u64,
    /// The task's effective timeout; the handler must stop by then.
    pub timeout: Duration,
    /// Cancelled when the task is cancelled, the lease is lost, or the worker gives
    /// the task back.
    pub cancel: CancellationToken,
}

impl TaskContext {
    /// The fencing token as handlers pass it downstream: `"epoch.fence"`. Both parts
    /// are needed because the fence counter restarts when the epoch changes.
    pub fn fence_token(&self) -> String {
        format!("{}.{}", self.epoch, self.fence)
    }
}

/// Why a handler run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The handler ran and reported failure (non-zero exit, HTTP non-2xx, builtin fail).
    #[error("{0}")]
    Failed(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cancelled")]
    Cancelled,
    #[error("output exceeds {limit} bytes")]
    OutputTooLarge { limit: usize },
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// The handler could not be started at all, e.g. its program was not found.
    #[error("could not start: {0}")]
    Start(String),
}

/// Something a worker can run for a task.
///
/// Any `Fn(TaskContext, Value) -> impl Future<Output = Result<Value, HandlerError>>`
/// that is `Send + Sync + 'static` (with a `Send + 'static` future) is a handler, so
/// library users can [`Registry::register`] a plain async closure.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        Box::pin(self(ctx, input))
    }
}

/// One `[handlers]` entry as written in the profile.
///
/// Each kind's fields live in its own struct next to its handler, so adding a kind
/// is a new variant plus an arm in [`Registry::from_specs`], and the compiler points
/// at every `match` that must learn about it. An unknown `kind` is rejected by
/// deserialization ("unknown variant `wasm`, expected one of `builtin`, `exec`,
/// `http`, `container`"), as is any key the kind does not define.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HandlerSpec {
    Builtin(BuiltinSpec),
    Exec(ExecSpec),
    Http(HttpSpec),
    Container(ContainerSpec),
}

/// A `[handlers]` entry that cannot be turned into a handler. Every message starts
/// with the profile key at fault (`handlers.NAME.KEY`) so operators can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("handlers: handler names must not be empty")]
    EmptyName,
    #[error("handlers.{handler}.command: must not be empty")]
    EmptyCommand { handler: String },
    #[error("handlers.{handler}.builtin: unknown builtin {name:?} (expected one of {})", BUILTIN_NAMES.join(", "))]
    UnknownBuiltin { handler: String, name: String },
    #[error("handlers.{handler}.{key}: {value:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)")]
    BadDuration {
        handler: String,
        key: &'static str,
        value: String,
    },
    #[error("handlers.{handler}.{key}: {value:?} is not a size (e.g. 512, 64KiB, 1MiB, 10kB)")]
    BadSize {
        handler: String,
        key: &'static str,
        value: String,
    },
    /// A zero timeout or output bound would make every run fail, which is never
    /// what the operator meant.
    #[error("handlers.{handler}.{key}: must be greater than zero")]
    Zero { handler: String, key: &'static str },
    #[error("handlers.{handler}.url: {reason}")]
    BadUrl { handler: String, reason: String },
    /// A bad entry inside a list or table key: `command`, `env` or `headers`.
    #[error("handlers.{handler}.{key}.{entry}: {reason}")]
    BadEntry {
        handler: String,
        key: &'static str,
        entry: String,
        reason: String,
    },
    /// The shared HTTP client could not be built (e.g. no TLS roots could be loaded).
    #[error("handlers.{handler}: cannot build the HTTP client: {reason}")]
    HttpClient { handler: String, reason: String },
    /// A value of the right type that is out of range or malformed, e.g. container
    /// `cpus = 0` or a `docker_host` with an unknown scheme.
    #[error("handlers.{handler}.{key}: {reason}")]
    Invalid {
        handler: String,
        key: &'static str,
        reason: String,
    },
}

/// A registered handler and the timeout its profile entry set, if any.
#[derive(Clone)]
struct Entry {
    handler: Arc<dyn Handler>,
    timeout: Option<Duration>,
    /// `None` for handlers that can always run (builtin, exec, http).
    probe: Option<Probe>,
    /// Kept typed so [`Registry::for_worker`] can relabel it and
    /// [`Registry::sweep_orphans`] can reach its Docker engine.
    container: Option<ContainerHandler>,
}

impl Entry {
    fn plain(handler: Arc<dyn Handler>, timeout: Option<Duration>) -> Entry {
        Entry {
            handler,
            timeout,
            probe: None,
            container: None,
        }
    }
}

/// The handlers one worker offers, by name.
#[derive(Clone, Default)]
pub struct Registry {
    // A BTreeMap keeps `names()` sorted without extra work.
    entries: BTreeMap<String, Entry>,
}

impl Registry {
    /// Builds every handler the profile lists, validating each entry completely up
    /// front so a bad profile fails at startup rather than on the first task.
    pub fn from_specs(specs: &BTreeMap<String, HandlerSpec>) -> Result<Registry, SpecError> {
        let mut registry = Registry::default();
        // Built on first use so profiles without http handlers never need one, and
        // shared so all http handlers of this registry share one connection pool.
        let mut client: Option<reqwest::Client> = None;
        // One engine per Docker endpoint, so its connection and health are shared
        // by all the container handlers that use it.
        let mut engines: BTreeMap<String, Arc<DockerEngine>> = BTreeMap::new();
        for (name, spec) in specs {
            if name.is_empty() {
                return Err(SpecError::EmptyName);
            }
            let entry = match spec {
                HandlerSpec::Builtin(spec) => Entry::plain(Arc::new(Builtin::from_spec(name, spec)?), None),
                HandlerSpec::Exec(spec) => Entry::plain(
                    Arc::new(ExecHandler::from_spec(name, spec)?),
                    spec_duration(name, "timeout", spec.timeout.as_deref())?,
                ),
                HandlerSpec::Http(spec) => Entry::plain(
                    Arc::new(HttpHandler::from_spec(name, spec, shared_client(&mut client, name)?)?),
                    spec_duration(name, "timeout", spec.timeout.as_deref())?,
                ),
                HandlerSpec::Container(spec) => {
                    let host = container::docker_host(name, spec)?;
                    let engine = engines
                        .entry(host.clone())
                        .or_insert_with(|| Arc::new(DockerEngine::new(host)));
                    let handler = ContainerHandler::from_spec(name, spec, Arc::clone(engine))?;
                    Entry {
                        handler: Arc::new(handler.clone()),
                        timeout: spec_duration(name, "timeout", spec.timeout.as_deref())?,
                        probe: Some(handler.probe()),
                        container: Some(handler),
                    }
                }
            };
            registry.entries.insert(name.clone(), entry);
        }
        Ok(registry)
    }

    /// Adds (or replaces) a handler under `name`, with no profile timeout: the
    /// worker's default task timeout applies to it.
    pub fn register(&mut self, name: impl Into<String>, handler: Arc<dyn Handler>) {
        self.entries.insert(name.into(), Entry::plain(handler, None));
    }

    /// Like [`Registry::register`], for a handler that can only run while `probe`
    /// succeeds (e.g. one that needs a service or a device).
    pub fn register_with_probe(&mut self, name: impl Into<String>, handler: Arc<dyn Handler>, probe: Probe) {
        let mut entry = Entry::plain(handler, None);
        entry.probe = Some(probe);
        self.entries.insert(name.into(), entry);
    }

    /// This registry as worker `worker_id` runs it: container handlers label their
    /// containers with the id, which is what [`Registry::sweep_orphans`] looks for
    /// after a crash. Each worker calls it with its own id (in `drover dev` several
    /// workers share one profile).
    pub fn for_worker(&self, worker_id: &str) -> Registry {
        let mut registry = self.clone();
        for entry in registry.entries.values_mut() {
            if let Some(container) = &entry.container {
                let relabelled = container.for_worker(worker_id);
                entry.handler = Arc::new(relabelled.clone());
                entry.container = Some(relabelled);
            }
        }
        registry
    }

    /// Handlers that cannot run here now, with the reason (e.g. Docker unreachable),
    /// sorted by name. The worker leaves them out of its heartbeat and reports them
    /// in its health. Probes run concurrently and bound their own waiting (Docker's
    /// ping: 2 s), so this is quick even when something hangs.
    pub async fn unavailable(&self) -> Vec<(String, String)> {
        let probes = self
            .entries
            .iter()
            .filter_map(|(name, entry)| entry.probe.as_ref().map(|probe| (name, probe())));
        let (names, checks): (Vec<&String>, Vec<ProbeFuture>) = probes.unzip();
        let results = futures_util::future::join_all(checks).await;
        names
            .into_iter()
            .zip(results)
            .filter_map(|(name, result)| result.err().map(|reason| (name.clone(), reason)))
            .collect()
    }

    /// Force-removes the containers a previous run of worker `worker_id` left behind
    /// (it crashed or was killed mid-task), on every Docker engine this registry's
    /// container handlers use; returns how many were removed. Call it once at worker
    /// start, before taking tasks. Without container handlers it does nothing. Every
    /// engine is tried; the first failure (e.g. Docker unreachable) is returned.
    pub async fn sweep_orphans(&self, worker_id: &str) -> Result<usize, DockerError> {
        let mut engines: Vec<&Arc<DockerEngine>> = Vec::new();
        for container in self.entries.values().filter_map(|e| e.container.as_ref()) {
            if !engines.iter().any(|e| Arc::ptr_eq(e, container.engine())) {
                engines.push(container.engine());
            }
        }
        let mut removed = 0;
        let mut first_error = None;
        for engine in engines {
            let swept = match engine.client().await {
                Ok(docker) => container::sweep_orphans(&docker, worker_id)
                    .await
                    .map_err(|source| DockerError::Api {
                        host: engine.host().to_owned(),
                        source,
                    }),
                Err(e) => Err(e),
            };
            match swept {
                Ok(n) => removed += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.entries.get(name).map(|e| Arc::clone(&e.handler))
    }

    /// The timeout written in the profile for `name`, if any; the worker combines it
    /// with the task's own timeout to compute [`TaskContext::timeout`].
    pub fn spec_timeout(&self, name: &str) -> Option<Duration> {
        self.entries.get(name).and_then(|e| e.timeout)
    }

    /// Registered handler names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Every builtin under its own name: what `drover dev` offers by default.
    pub fn builtins() -> Registry {
        let mut registry = Registry::default();
        for builtin in Builtin::ALL {
            registry.register(builtin.name(), Arc::new(builtin));
        }
        registry
    }
}

/// The registry's one HTTP client, built the first time an http handler needs it.
fn shared_client(client: &mut Option<reqwest::Client>, handler: &str) -> Result<reqwest::Client, SpecError> {
    if let Some(client) = client {
        return Ok(client.clone());
    }
    let built = http::build_client().map_err(|e| SpecError::HttpClient {
        handler: handler.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(client.insert(built).clone())
}

impl fmt::Debug for Registry {
    // Handlers are opaque trait objects; the names are what is useful in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("handlers", &self.names()).finish()
    }
}

/// Variables drover sets for every run of an exec or container handler; a
/// profile may not override them, since downstream systems trust
/// `DROVER_FENCE` to be the real fencing token.
pub(crate) const RESERVED_ENV: [&str; 6] = [
    "DROVER_TASK_ID",
    "DROVER_HANDLER",
    "DROVER_ATTEMPT",
    "DROVER_FENCE",
    "DROVER_EPOCH",
    "DROVER_FENCE_COUNTER",
];

/// Checks a profile's `env` table: names non-empty without `=` or NUL, no
/// reserved name, values without NUL (every spawn would fail on one).
pub(crate) fn check_env(handler: &str, env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    let bad = |entry: &str, reason: &str| SpecError::BadEntry {
        handler: handler.to_owned(),
        key: "env",
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(bad(name, "names must be non-empty and contain neither '=' nor NUL"));
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            return Err(bad(name, "is set by drover"));
        }
        if value.contains('\0') {
            return Err(bad(name, "must not contain NUL bytes"));
        }
    }
    Ok(())
}

/// Parses an optional duration key of a profile entry; zero is rejected.
pub(crate) fn spec_duration(
    handler: &str,
    key: &'static str,
    value: Option<&str>,
) -> Result<Option<Duration>, SpecError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match parse_duration(value) {
        None => Err(SpecError::BadDuration {
            handler: handler.to_owned(),
            key,
            value: value.to_owned(),
        }),
        Some(d) if d.is_zero() => Err(SpecError::Zero {
            handler: handler.to_owned(),
            key,
        }),
        Some(d) => Ok(Some(d)),
    }
}

/// Parses an optional output bound of a profile entry, defaulting to
/// [`DEFAULT_MAX_OUTPUT`]; zero and sizes beyond the address space are rejected.
pub(crate) fn spec_max_output(handler: &str, key: &'static str, value: Option<&str>) -> Result<usize, SpecError> {
    let Some(value) = value else {
        return Ok(DEFAULT_MAX_OUTPUT);
    };
    match parse_size(value).map(usize::try_from) {
        Some(Ok(0)) => Err(SpecError::Zero {
            handler: handler.to_owned(),
            key,
        }),
        Some(Ok(n)) => Ok(n),
        _ => Err(SpecError::BadSize {
            handler: handler.to_owned(),
            key,
            value: value.to_owned(),
        }),
    }
}

/// Runs `work` until it finishes, the task's timeout passes or the task is
/// cancelled, whichever comes first. Dropping `work` is how it is stopped, so it must
/// not own anything that outlives it unless its drop cleans that up.
pub(crate) async fn supervise<T>(
    ctx: &TaskContext,
    work: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    tokio::select! {
        // Cancellation first: once the lease is lost no result can be reported, so
        // the worker must learn that promptly even if work happened to finish too.
        biased;
        () = ctx.cancel.cancelled() => Err(HandlerError::Cancelled),
        () = tokio::time::sleep(ctx.timeout) => Err(HandlerError::Timeout(ctx.timeout)),
        result = work => result,
    }
}

/// Turns the bytes a handler produced (exec stdout, HTTP body) into its result.
///
/// Empty or all-whitespace output is `null`; valid JSON is taken as is; anything
/// else that is UTF-8 becomes a JSON string of the trimmed text, so simple programs
/// that print a word need not speak JSON. Output that is not even UTF-8 is invalid.
pub(crate) fn parse_output(bytes: &[u8]) -> Result<Value, HandlerError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Value::String(text.trim().to_owned())),
        Err(e) => Err(HandlerError::InvalidOutput(format!(
            "output is neither JSON nor UTF-8 text ({e})"
        ))),
    }
}

/// Renders at most `limit` bytes of `bytes` for an error message, trimmed, with
/// invalid UTF-8 (including a character cut at the limit) replaced rather than
/// failing.
pub(crate) fn lossy_excerpt(bytes: &[u8], limit: usize) -> String {
    let cut = &bytes[..bytes.len().min(limit)];
    String::from_utf8_lossy(cut).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(timeout: Duration) -> TaskContext {
        TaskContext {
            task_id: "t-1".into(),
            handler: "h".into(),
            attempt: 2,
            epoch: 7,
            fence: 42,
            timeout,
            cancel: CancellationToken::new(),
        }
    }

    fn specs(value: Value) -> BTreeMap<String, HandlerSpec> {
        serde_json::from_value(value).expect("specs deserialize")
    }

    fn spec_error(value: Value) -> String {
        Registry::from_specs(&specs(value))
            .expect_err("spec should be rejected")
            .to_string()
    }

    #[test]
    fn fence_token_joins_epoch_and_fence() {
        assert_eq!(ctx(Duration::from_secs(1)).fence_token(), "7.42");
    }

    #[test]
    fn profile_entries_deserialize() {
        let parsed = specs(json!({
            "noop": {"kind": "builtin"},
            "slow": {"kind": "builtin", "builtin": "sleep"},
            "thumb": {"kind": "exec", "command": ["/usr/local/bin/thumb", "--fast"],
                      "timeout": "30s", "max_output": "1MiB", "env": {"MODE": "x"}},
            "notify": {"kind": "http", "url": "http://hooks:8080/notify", "timeout": "10s",
                       "headers": {"X-Team": "a"}, "max_output": "1MiB"},
        }));
        assert_eq!(
            parsed["slow"],
            HandlerSpec::Builtin(BuiltinSpec {
                builtin: Some("sleep".into())
            })
        );
        assert_eq!(
            parsed["thumb"],
            HandlerSpec::Exec(ExecSpec {
                command: vec!["/usr/local/bin/thumb".into(), "--fast".into()],
                timeout: Some("30s".into()),
                env: BTreeMap::from([("MODE".into(), "x".into())]),
                max_output: Some("1MiB".into()),
            })
        );
        let registry = Registry::from_specs(&parsed).expect("valid profile");
        assert_eq!(registry.names(), ["noop", "notify", "slow", "thumb"]);
        assert_eq!(registry.spec_timeout("thumb"), Some(Duration::from_secs(30)));
        assert_eq!(registry.spec_timeout("notify"), Some(Duration::from_secs(10)));
        assert_eq!(registry.spec_timeout("noop"), None);
        assert_eq!(registry.spec_timeout("missing"), None);
        assert!(registry.get("thumb").is_some());
        assert!(registry.get("missing").is_none());
        assert_eq!(
            format!("{registry:?}"),
            r#"Registry { handlers: ["noop", "notify", "slow", "thumb"] }"#
        );
    }

    #[test]
    fn specs_round_trip_through_serialize() {
        let spec = HandlerSpec::Http(HttpSpec {
            url: "https://example.test/hook".into(),
            timeout: None,
            headers: BTreeMap::new(),
            max_output: Some("64KiB".into()),
        });
        let value = serde_json::to_value(&spec).expect("serialize");
        assert_eq!(value["kind"], "http");
        let back: HandlerSpec = serde_json::from_value(value).expect("deserialize");
        assert_eq!(back, spec);
    }

    #[test]
    fn unknown_kinds_and_keys_are_rejected() {
        let err = serde_json::from_value::<HandlerSpec>(json!({"kind": "wasm"}))
            .expect_err("unknown kind")
            .to_string();
        assert!(err.contains("unknown variant `wasm`"), "{err}");
        assert!(err.contains("`builtin`, `exec`, `http`, `container`"), "{err}");

        let err = serde_json::from_value::<HandlerSpec>(json!({"kind": "container"}))
            .expect_err("container without an image")
            .to_string();
        assert!(err.contains("missing field `image`"), "{err}");

        let err = serde_json::from_value::<HandlerSpec>(json!({"command": ["x"]}))
            .expect_err("missing kind")
            .to_string();
        assert!(err.contains("missing field `kind`"), "{err}");

        for entry in [
            json!({"kind": "exec", "command": ["x"], "shell": true}),
            json!({"kind": "builtin", "command": ["x"]}),
            json!({"kind": "http", "url": "http://h/", "method": "GET"}),
            json!({"kind": "container", "image": "x", "privileged": true}),
        ] {
            let err = serde_json::from_value::<HandlerSpec>(entry.clone())
                .expect_err("unknown key")
                .to_string();
            assert!(err.contains("unknown field"), "{entry}: {err}");
        }
    }

    #[test]
    fn from_specs_error_messages() {
        let cases = [
            (
                json!({"thumb": {"kind": "exec", "command": []}}),
                "handlers.thumb.command: must not be empty",
            ),
            (
                json!({"thumb": {"kind": "exec", "command": [""]}}),
                "handlers.thumb.command: must not be empty",
            ),
            (
                json!({"t": {"kind": "exec", "command": ["a\u{0}b"]}}),
                "handlers.t.command.0: must not contain NUL bytes",
            ),
            (
                json!({"x": {"kind": "builtin", "builtin": "foo"}}),
                r#"handlers.x.builtin: unknown builtin "foo" (expected one of noop, echo, sleep, fail)"#,
            ),
            (
                json!({"resize": {"kind": "builtin"}}),
                r#"handlers.resize.builtin: unknown builtin "resize" (expected one of noop, echo, sleep, fail)"#,
            ),
            (
                json!({"n": {"kind": "http", "url": "http://h/", "timeout": "3 parsecs"}}),
                r#"handlers.n.timeout: "3 parsecs" is not a duration (e.g. 500ms, 30s, 5m, 1h)"#,
            ),
            (
                json!({"n": {"kind": "exec", "command": ["x"], "timeout": "0s"}}),
                "handlers.n.timeout: must be greater than zero",
            ),
            (
                json!({"n": {"kind": "exec", "command": ["x"], "max_output": "lots"}}),
                r#"handlers.n.max_output: "lots" is not a size (e.g. 512, 64KiB, 1MiB, 10kB)"#,
            ),
            (
                json!({"n": {"kind": "http", "url": "http://h/", "max_output": "0"}}),
                "handlers.n.max_output: must be greater than zero",
            ),
            (
                json!({"n": {"kind": "http", "url": "ftp://h/x"}}),
                "handlers.n.url: must be http:// or https://",
            ),
            (
                json!({"n": {"kind": "http", "url": "not a url"}}),
                r#"handlers.n.url: "not a url" is not a URL (relative URL without a base)"#,
            ),
            (
                json!({"n": {"kind": "http", "url": "http://h/", "headers": {"Bad Name": "v"}}}),
                "handlers.n.headers.Bad Name: not a valid header name",
            ),
            (
                json!({"n": {"kind": "http", "url": "http://h/", "headers": {"X-A": "a\nb"}}}),
                "handlers.n.headers.X-A: not a valid header value",
            ),
            (
                json!({"n": {"kind": "http", "url": "http://h/", "headers": {"X-Drover-Fence": "1.1"}}}),
                "handlers.n.headers.X-Drover-Fence: is set by drover",
            ),
            (
                json!({"n": {"kind": "http", "url": "http://h/", "headers": {"content-type": "text/plain"}}}),
                "handlers.n.headers.content-type: is set by drover",
            ),
            (
                json!({"e": {"kind": "exec", "command": ["x"], "env": {"DROVER_FENCE": "1.1"}}}),
                "handlers.e.env.DROVER_FENCE: is set by drover",
            ),
            (
                json!({"e": {"kind": "exec", "command": ["x"], "env": {"A=B": "1"}}}),
                "handlers.e.env.A=B: names must be non-empty and contain neither '=' nor NUL",
            ),
            (
                json!({"": {"kind": "builtin", "builtin": "noop"}}),
                "handlers: handler names must not be empty",
            ),
            (
                json!({"r": {"kind": "container", "image": ""}}),
                "handlers.r.image: must not be empty",
            ),
            (
                json!({"r": {"kind": "container", "image": "x", "memory": "1Mi"}}),
                "handlers.r.memory: must be at least 6MiB (Docker's minimum)",
            ),
            (
                json!({"r": {"kind": "container", "image": "x", "timeout": "soon"}}),
                r#"handlers.r.timeout: "soon" is not a duration (e.g. 500ms, 30s, 5m, 1h)"#,
            ),
            (
                json!({"r": {"kind": "container", "image": "x", "docker_host": "ssh://h"}}),
                r#"handlers.r.docker_host: "ssh://h": expected unix:///path/to/docker.sock, tcp://host:port or http://host:port (TLS is not supported)"#,
            ),
        ];
        for (entry, expected) in cases {
            assert_eq!(spec_error(entry.clone()), expected, "{entry}");
        }
    }

    #[test]
    fn builtins_registry_offers_the_four_builtins() {
        let registry = Registry::builtins();
        assert_eq!(registry.names(), ["echo", "fail", "noop", "sleep"]);
        assert!(registry.names().iter().all(|n| registry.spec_timeout(n).is_none()));
    }

    #[tokio::test]
    async fn unavailable_lists_failing_probes_with_their_reasons() {
        let mut registry = Registry::builtins();
        // Builtin, exec and http handlers have no probe: always available.
        assert_eq!(registry.unavailable().await, vec![]);

        let up: Probe = Arc::new(|| Box::pin(async { Ok(()) }));
        let down: Probe = Arc::new(|| Box::pin(async { Err("GPU missing".to_owned()) }));
        let handler = || -> Arc<dyn Handler> { Arc::new(|_ctx: TaskContext, _input: Value| async { Ok(Value::Null) }) };
        registry.register_with_probe("render", handler(), down.clone());
        registry.register_with_probe("encode", handler(), down);
        registry.register_with_probe("resize", handler(), up);
        assert_eq!(
            registry.unavailable().await,
            [
                ("encode".to_owned(), "GPU missing".to_owned()),
                ("render".to_owned(), "GPU missing".to_owned()),
            ]
        );
        // Unavailable handlers stay registered: the worker only leaves them out of
        // its heartbeat, and offers them again once their probe passes.
        assert!(registry.get("render").is_some());

        // Re-registering without a probe drops the old probe with the old handler.
        registry.register("render", handler());
        assert_eq!(
            registry.unavailable().await,
            [("encode".to_owned(), "GPU missing".to_owned())]
        );
    }

    #[tokio::test]
    async fn for_worker_keeps_names_timeouts_and_probes() {
        let registry = Registry::from_specs(&specs(json!({
            "echo": {"kind": "builtin"},
            "render": {"kind": "container", "image": "renderer:1", "timeout": "45s",
                       "docker_host": "unix:///nonexistent/drover-for-worker.sock"},
        })))
        .expect("valid profile");
        let mine = registry.for_worker("w-1");
        assert_eq!(mine.names(), registry.names());
        assert_eq!(mine.spec_timeout("render"), Some(Duration::from_secs(45)));
        let unavailable = mine.unavailable().await;
        assert_eq!(unavailable.len(), 1, "{unavailable:?}");
        assert_eq!(unavailable[0].0, "render");
        // Builtins-only registries have nothing to sweep.
        assert_eq!(Registry::builtins().sweep_orphans("w-1").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn register_accepts_async_closures_and_replaces() {
        let mut registry = Registry::builtins();
        registry.register(
            "double",
            Arc::new(|_ctx: TaskContext, input: Value| async move {
                let n = input.as_i64().ok_or_else(|| HandlerError::Failed("nan".into()))?;
                Ok(json!(n * 2))
            }),
        );
        let double = registry.get("double").expect("registered");
        let out = double.run(ctx(Duration::from_secs(1)), json!(21)).await.expect("ok");
        assert_eq!(out, json!(42));

        // Re-registering a name replaces the handler, including a builtin.
        registry.register(
            "echo",
            Arc::new(|_ctx: TaskContext, _input: Value| async { Ok(json!("mine")) }),
        );
        let echo = registry.get("echo").expect("echo");
        let out = echo.run(ctx(Duration::from_secs(1)), json!(1)).await.expect("ok");
        assert_eq!(out, json!("mine"));
    }

    #[test]
    fn parse_output_rules() {
        assert_eq!(parse_output(b"").unwrap(), Value::Null);
        assert_eq!(parse_output(b" \n").unwrap(), Value::Null);
        assert_eq!(parse_output(b"{\"a\":1}\n").unwrap(), json!({"a": 1}));
        assert_eq!(parse_output(b"  done \n").unwrap(), json!("done"));
        assert!(matches!(
            parse_output(&[0xff, 0xfe]),
            Err(HandlerError::InvalidOutput(_))
        ));
    }
}
