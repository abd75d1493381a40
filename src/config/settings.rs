//! The typed settings every role reads, as [`Layers::resolve`](super::Layers::resolve)
//! builds them, and the wrappers that keep secrets out of logs: [`Secret`]
//! prints as `<redacted>`, [`RedisTls`] shows only which files are set, and
//! [`redact_url`] hides a password written into a Redis URL.

use super::ConfigError;
use crate::api::auth::ApiTokens;
use crate::envelope::Keyring;
use crate::handlers::HandlerSpec;
use crate::names::QueueWeight;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Hides the password part of a Redis URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<redacted>@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// PEM material for TLS connections to Redis; the key never prints.
#[derive(Clone, Default)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    pub client_cert: Option<Vec<u8>>,
    pub client_key: Option<Vec<u8>>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// A value that must never reach a log line.
#[derive(Clone)]
pub struct Secret<T>(pub T);

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Typed, validated settings shared by every role.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis_url: Secret<String>,
    pub redis_password: Option<Secret<String>>,
    /// Certificates for `rediss://`, read at start.
    pub redis_tls: RedisTls,
    pub namespace: String,
    pub admin_addr: SocketAddr,
    pub log_format: String,
    /// `None` until a role that needs it insists (`require_keyring`).
    pub keyring: Option<Keyring>,
    pub api_tokens: Option<ApiTokens>,
    pub timing: Timing,
    pub max_message: usize,
    pub events_maxlen: u64,
    /// Events older than this are trimmed by the leader's janitor, so the
    /// stream empties once the cluster is idle (the length cap alone keeps
    /// up to `events_maxlen` entries forever).
    pub events_retention: Duration,
    /// Whether succeeded tasks are filed in their queue's index like dead
    /// and cancelled ones (exact lists, counts, purge), or only in the
    /// cheaper expiry lists (docs/QUEUES.md).
    pub index_succeeded: bool,
    /// How many queues (first by name) get metric series of their own;
    /// the rest are folded into `queue="other"` (telemetry/queue_labels.rs).
    pub metric_queues: usize,
    pub coordinator: CoordinatorSettings,
    pub distributor: DistributorSettings,
    pub worker: WorkerSettings,
}

impl Settings {
    /// Every role signs or verifies messages: running without keys is refused.
    pub fn require_keyring(&self) -> Result<Keyring, ConfigError> {
        self.keyring.clone().ok_or_else(|| ConfigError {
            key: "signing_keys".into(),
            origin: String::new(),
            problem: "no signing keys: set DROVER_SIGNING_KEYS or DROVER_SIGNING_KEYS_FILE (generate one with `drover keygen`)".into(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub heartbeat: Duration,
    pub worker_ttl: Duration,
    pub forget_worker_after: Duration,
    pub leader_ttl: Duration,
    pub tick: Duration,
    pub result_ttl: Duration,
    pub idempotency_ttl: Duration,
    pub message_ttl: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub http_addr: SocketAddr,
    pub max_body: usize,
    pub max_batch: usize,
    pub max_backlog: u64,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub handlers: Vec<String>,
    pub wait_max: Duration,
    pub max_waits: usize,
    /// HTTPS for the API, when a certificate and key are configured.
    pub tls: Option<HttpTls>,
}

/// The files the API serves TLS from. Paths, not contents: the certificate
/// and key are re-read when they change (`crate::tls`), so a rotation needs
/// no restart; the client CA is read once at start.
#[derive(Debug, Clone)]
pub struct HttpTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these.
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DistributorSettings {
    pub batch: usize,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub id: String,
    pub capacity: u32,
    pub tags: Vec<String>,
    /// The queues it takes tasks from, weighted; empty: every queue.
    pub queues: Vec<QueueWeight>,
    pub grace: Duration,
    pub handlers: BTreeMap<String, HandlerSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(redact_url("redis://u:p@h:6379/0"), "redis://<redacted>@h:6379/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
