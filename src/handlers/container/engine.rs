//! The Docker engine a container handler runs on, and whether it answers: a
//! [`DockerEngine`] connects on first use (so a worker starts while Docker is down),
//! and its [`check`](DockerEngine::check) is the availability probe the worker runs
//! before every heartbeat, logging when Docker goes away and when it is back.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::Docker;

use crate::handlers::Probe;

/// How long the availability probe waits for Docker: the heartbeat must not stall
/// behind a hung daemon.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting (version negotiation included) may take before Docker is
/// reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on each Docker API call's wait for response headers (bollard's unit is
/// whole seconds). Streams (attach, wait) are not cut by it once they have started.
const REQUEST_TIMEOUT_SECS: u64 = 120;

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
    /// as [`docker_host`](super::docker_host) validates). Nothing is contacted yet.
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

    /// [`DockerEngine::check`] as a registry [`Probe`]: `Err` carries the reason.
    pub fn probe(self: &Arc<Self>) -> Probe {
        let engine = Arc::clone(self);
        Arc::new(move || {
            let engine = Arc::clone(&engine);
            Box::pin(async move { engine.check().await.map_err(|e| e.to_string()) })
        })
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
pub(super) fn describe(e: &BollardError) -> String {
    match e {
        BollardError::SocketNotFoundError(path) => format!("no socket at {path}"),
        BollardError::RequestTimeoutError => "the request timed out".to_owned(),
        BollardError::DockerResponseServerError { status_code, message } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::handlers::{HandlerError, HandlerSpec, Registry};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::Instant;

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
}
