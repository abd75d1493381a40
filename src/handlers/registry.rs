//! The handlers one worker offers: [`Registry::from_specs`] builds them from the
//! profile's `[handlers]` section (the single gate between a submitted task and
//! anything executable), library users [`Registry::register`] their own, and the
//! worker asks it which handlers can run now and to sweep what a crashed
//! predecessor left behind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::builtin::Builtin;
use super::container::{self, ContainerHandler, DockerEngine, DockerError};
use super::exec::ExecHandler;
use super::handler::{Handler, Probe, ProbeFuture};
use super::http::{self, HttpHandler};
use super::mcp::McpHandler;
use super::spec::{spec_duration, HandlerSpec, SpecError};

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
                HandlerSpec::Mcp(spec) => Entry::plain(
                    Arc::new(McpHandler::from_spec(name, spec)?),
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
    /// with the task's own timeout to compute [`TaskContext::timeout`](super::TaskContext::timeout).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::{BuiltinSpec, ExecSpec, HandlerError, TaskContext};
    use serde_json::{json, Value};

    fn specs(value: Value) -> BTreeMap<String, HandlerSpec> {
        serde_json::from_value(value).expect("specs deserialize")
    }

    fn spec_error(value: Value) -> String {
        Registry::from_specs(&specs(value))
            .expect_err("spec should be rejected")
            .to_string()
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
        let out = double
            .run(TaskContext::for_test(Duration::from_secs(1)), json!(21))
            .await
            .expect("ok");
        assert_eq!(out, json!(42));

        // Re-registering a name replaces the handler, including a builtin.
        registry.register(
            "echo",
            Arc::new(|_ctx: TaskContext, _input: Value| async { Ok(json!("mine")) }),
        );
        let echo = registry.get("echo").expect("echo");
        let out = echo
            .run(TaskContext::for_test(Duration::from_secs(1)), json!(1))
            .await
            .expect("ok");
        assert_eq!(out, json!("mine"));
    }
}
