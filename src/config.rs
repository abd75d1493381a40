//! Configuration: defaults < `--config` TOML file < `DROVER_*` env < flags,
//! validated once at start. Every setting has one row in [`KEYS`]; a bad value
//! fails with one line naming the key, where it came from and what is wrong.
//! Secrets (signing keys, API tokens, the Redis password) can come from
//! files, are wrapped so they never print, and need never sit in the TOML.

use crate::api::auth::ApiTokens;
use crate::envelope::Keyring;
use crate::handlers::HandlerSpec;
use crate::units::{parse_duration, parse_size};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A configuration error: which key, from where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}{origin}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, origin: &Origin, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            origin: origin.describe(),
            problem: problem.into(),
        }
    }
}

/// Where a value came from, for error messages and `config check`.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Default,
    File(String),
    Env(&'static str),
    Flag(&'static str),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Default => String::new(),
            Origin::File(p) => format!(" (in {p})"),
            Origin::Env(v) => format!(" (from {v})"),
            Origin::Flag(f) => format!(" (from {f})"),
        }
    }
}

/// One setting: its dotted TOML key, its env variable, its default, and
/// whether it is a secret (never printed).
pub struct KeyDef {
    pub key: &'static str,
    pub env: &'static str,
    pub default: &'static str,
    pub secret: bool,
    pub help: &'static str,
}

const fn k(key: &'static str, env: &'static str, default: &'static str, help: &'static str) -> KeyDef {
    KeyDef {
        key,
        env,
        default,
        secret: false,
        help,
    }
}

const fn secret(key: &'static str, env: &'static str, help: &'static str) -> KeyDef {
    KeyDef {
        key,
        env,
        default: "",
        secret: true,
        help,
    }
}

/// Every setting drover reads. `.env.example` lists the same variables.
#[rustfmt::skip]
pub const KEYS: &[KeyDef] = &[
    k("redis_url", "DROVER_REDIS_URL", "redis://127.0.0.1:6379", "Redis URL (redis:// or rediss://); may carry a password"),
    secret("redis_password", "DROVER_REDIS_PASSWORD", "Redis password, if not in the URL"),
    k("redis_password_file", "DROVER_REDIS_PASSWORD_FILE", "", "file holding the Redis password"),
    k("redis_ca_file", "DROVER_REDIS_CA_FILE", "", "PEM CA certificates to trust for rediss:// (default: the system's)"),
    k("redis_client_cert_file", "DROVER_REDIS_CLIENT_CERT_FILE", "", "PEM client certificate for Redis TLS client auth"),
    k("redis_client_key_file", "DROVER_REDIS_CLIENT_KEY_FILE", "", "PEM key of that client certificate"),
    k("namespace", "DROVER_NAMESPACE", "drover", "key namespace; clusters sharing a Redis use different ones"),
    k("admin_addr", "DROVER_ADMIN_ADDR", "127.0.0.1:9090", "address of /health, /ready and /metrics"),
    k("log_format", "DROVER_LOG_FORMAT", "text", "text or json"),
    secret("signing_keys", "DROVER_SIGNING_KEYS", "keyring, KID:HEXSECRET entries (>= 32 bytes each)"),
    k("signing_keys_file", "DROVER_SIGNING_KEYS_FILE", "", "file holding the keyring"),
    k("signing_key_id", "DROVER_SIGNING_KEY_ID", "", "key id that signs (default: the first)"),
    secret("api_tokens", "DROVER_API_TOKENS", "API tokens, TOKEN:SCOPE[,SCOPE] entries"),
    k("api_tokens_file", "DROVER_API_TOKENS_FILE", "", "file holding the API tokens"),
    k("timing.lease_ttl", "DROVER_LEASE_TTL", "30s", "a running task's lease; renewed every third of it"),
    k("timing.assign_ttl", "DROVER_ASSIGN_TTL", "15s", "not used any more: the lease is taken at assignment (still accepted so older configs load)"),
    k("timing.heartbeat", "DROVER_HEARTBEAT", "1s", "worker heartbeat period"),
    k("timing.worker_ttl", "DROVER_WORKER_TTL", "5s", "silence after which a worker gets no new tasks"),
    k("timing.forget_worker_after", "DROVER_FORGET_WORKER_AFTER", "10m", "silence after which a worker's stream is deleted"),
    k("timing.leader_ttl", "DROVER_LEADER_TTL", "5s", "leader lease of the coordinator running reaper and scheduler"),
    k("timing.tick", "DROVER_TICK", "100ms", "reaper and scheduler period"),
    k("timing.result_ttl", "DROVER_RESULT_TTL", "24h", "how long finished tasks keep their result"),
    k("timing.idempotency_ttl", "DROVER_IDEMPOTENCY_TTL", "24h", "how long an Idempotency-Key is remembered"),
    k("timing.message_ttl", "DROVER_MESSAGE_TTL", "1h", "expiry of stream messages"),
    k("timing.backoff_base", "DROVER_BACKOFF_BASE", "1s", "first retry delay; doubles per attempt, with jitter"),
    k("timing.backoff_max", "DROVER_BACKOFF_MAX", "5m", "longest retry delay"),
    k("limits.max_message", "DROVER_MAX_MESSAGE", "1MiB", "largest stream message accepted"),
    k("limits.events_maxlen", "DROVER_EVENTS_MAXLEN", "100000", "approximate length cap of the events stream"),
    k("limits.events_retention", "DROVER_EVENTS_RETENTION", "10m", "events older than this are trimmed by the leader"),
    k("coordinator.http_addr", "DROVER_HTTP_ADDR", "127.0.0.1:7070", "address of the HTTP API"),
    k("coordinator.max_body", "DROVER_MAX_BODY", "1MiB", "largest request body (413 beyond)"),
    k("coordinator.max_batch", "DROVER_MAX_BATCH", "1000", "most tasks in one batch submit"),
    k("coordinator.max_backlog", "DROVER_MAX_BACKLOG", "1000000", "queued + scheduled tasks past which submissions get 429"),
    k("coordinator.max_attempts", "DROVER_MAX_ATTEMPTS", "3", "default attempts per task"),
    k("coordinator.timeout", "DROVER_TASK_TIMEOUT", "5m", "default timeout per attempt"),
    k("coordinator.handlers", "DROVER_HANDLERS", "", "handler names accepted before any worker offers them"),
    k("coordinator.wait_max", "DROVER_WAIT_MAX", "60s", "longest long-poll of /wait"),
    k("distributor.batch", "DROVER_DISTRIBUTOR_BATCH", "256", "intake entries read at once"),
    k("worker.id", "DROVER_WORKER_ID", "", "worker id (default: hostname-pid)"),
    k("worker.capacity", "DROVER_WORKER_CAPACITY", "16", "tasks run at once"),
    k("worker.tags", "DROVER_WORKER_TAGS", "", "comma-separated tags this worker has"),
    k("worker.grace", "DROVER_WORKER_GRACE", "30s", "on SIGTERM, time to finish before handing tasks back"),
];

/// Values layered from all sources, before typing.
#[derive(Default)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Origin)>,
    handlers: BTreeMap<String, HandlerSpec>,
    file: Option<String>,
}

impl Layers {
    /// Defaults, then the file (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Layers, ConfigError> {
        let mut layers = Layers::default();
        for def in KEYS {
            layers
                .values
                .insert(def.key, (def.default.to_string(), Origin::Default));
        }
        if let Some(path) = file {
            layers.apply_file(path)?;
        }
        for def in KEYS {
            if let Ok(v) = std::env::var(def.env) {
                layers.values.insert(def.key, (v, Origin::Env(def.env)));
            }
        }
        Ok(layers)
    }

    /// A flag given on the command line wins over everything.
    pub fn set_flag(&mut self, key: &'static str, flag: &'static str, value: Option<String>) {
        if let Some(v) = value {
            self.values.insert(key, (v, Origin::Flag(flag)));
        }
    }

    /// True when no file, env variable or flag set `key`.
    pub fn is_default(&self, key: &str) -> bool {
        matches!(self.values.get(key), Some((_, Origin::Default)))
    }

    /// A value set by the program itself (e.g. `drover dev`), as a default.
    pub fn set_default(&mut self, key: &'static str, value: impl Into<String>) {
        if let Some((_, Origin::Default)) = self.values.get(key) {
            self.values.insert(key, (value.into(), Origin::Default));
        }
    }

    /// Handlers written in the profile; empty when the file has none.
    pub fn set_handlers_if_empty(&mut self, handlers: BTreeMap<String, HandlerSpec>) {
        if self.handlers.is_empty() {
            self.handlers = handlers;
        }
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        let origin = Origin::File(shown.clone());
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", &Origin::Default, format!("cannot read {shown}: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("--config", &origin, e.message().to_string()))?;
        for (name, value) in table {
            match value {
                toml::Value::Table(section) if name == "handlers" => {
                    for (h, spec) in section {
                        let parsed = HandlerSpec::deserialize(spec)
                            .map_err(|e| ConfigError::new(format!("handlers.{h}"), &origin, e.message().to_string()))?;
                        self.handlers.insert(h, parsed);
                    }
                }
                toml::Value::Table(section) => {
                    for (leaf, v) in section {
                        self.set_file_value(&format!("{name}.{leaf}"), v, &origin)?;
                    }
                }
                v => self.set_file_value(&name, v, &origin)?,
            }
        }
        self.file = Some(shown);
        Ok(())
    }

    fn set_file_value(&mut self, key: &str, value: toml::Value, origin: &Origin) -> Result<(), ConfigError> {
        let def = KEYS
            .iter()
            .find(|d| d.key == key)
            .ok_or_else(|| ConfigError::new(key, origin, "unknown setting"))?;
        if def.secret {
            return Err(ConfigError::new(
                key,
                origin,
                format!(
                    "secrets do not belong in the config file: use {} or {}_FILE",
                    def.env, def.env
                ),
            ));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => out.push(s),
                        other => {
                            return Err(ConfigError::new(
                                key,
                                origin,
                                format!("expected strings in the list, found {other}"),
                            ))
                        }
                    }
                }
                out.join(",")
            }
            other => return Err(ConfigError::new(key, origin, format!("unexpected value {other}"))),
        };
        self.values.insert(def.key, (text, origin.clone()));
        Ok(())
    }

    fn raw(&self, key: &str) -> (&str, &Origin) {
        let (v, o) = self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("setting {key} is missing from KEYS"));
        (v.as_str(), o)
    }

    fn string(&self, key: &str) -> String {
        self.raw(key).0.trim().to_string()
    }

    fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        let (v, o) = self.raw(key);
        let d = parse_duration(v.trim())
            .ok_or_else(|| ConfigError::new(key, o, format!("{v:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)")))?;
        if d.is_zero() {
            return Err(ConfigError::new(key, o, "must be greater than zero"));
        }
        Ok(d)
    }

    fn size(&self, key: &str) -> Result<u64, ConfigError> {
        let (v, o) = self.raw(key);
        parse_size(v.trim())
            .filter(|s| *s > 0)
            .ok_or_else(|| ConfigError::new(key, o, format!("{v:?} is not a positive size (e.g. 512KiB, 1MiB)")))
    }

    fn number(&self, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let (v, o) = self.raw(key);
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                key,
                o,
                format!("{v:?} is not a whole number from {min} to {max}"),
            )),
        }
    }

    fn addr(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        let (v, o) = self.raw(key);
        v.trim()
            .parse()
            .map_err(|_| ConfigError::new(key, o, format!("{v:?} is not an address like 127.0.0.1:7070")))
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.raw(key)
            .0
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// A secret given inline (`key`) or through a file (`key_file`); not both.
    fn secret(&self, key: &'static str, file_key: &'static str) -> Result<Option<String>, ConfigError> {
        let (inline, inline_origin) = self.raw(key);
        let (path, path_origin) = self.raw(file_key);
        match (inline.trim().is_empty(), path.trim().is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Err(ConfigError::new(
                key,
                inline_origin,
                format!("set either {key} or {file_key}, not both"),
            )),
            (false, true) => Ok(Some(inline.trim().to_string())),
            (true, false) => std::fs::read_to_string(path.trim())
                .map(|s| Some(s.trim().to_string()))
                .map_err(|e| ConfigError::new(file_key, path_origin, format!("cannot read {}: {e}", path.trim()))),
        }
    }

    /// Reads the PEM files for Redis TLS, checking each looks like PEM.
    fn redis_tls(&self) -> Result<RedisTls, ConfigError> {
        let read = |key: &str, what: &str| -> Result<Option<Vec<u8>>, ConfigError> {
            let (path, o) = self.raw(key);
            let path = path.trim();
            if path.is_empty() {
                return Ok(None);
            }
            let bytes =
                std::fs::read(path).map_err(|e| ConfigError::new(key, o, format!("cannot read {path}: {e}")))?;
            if !String::from_utf8_lossy(&bytes).contains(&format!("-----BEGIN {what}")) {
                return Err(ConfigError::new(key, o, format!("{path} holds no PEM {what}")));
            }
            Ok(Some(bytes))
        };
        let tls = RedisTls {
            ca: read("redis_ca_file", "CERTIFICATE")?,
            client_cert: read("redis_client_cert_file", "CERTIFICATE")?,
            client_key: read("redis_client_key_file", "")?,
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            let (_, o) = self.raw("redis_client_cert_file");
            return Err(ConfigError::new(
                "redis_client_cert_file",
                o,
                "set both redis_client_cert_file and redis_client_key_file, or neither",
            ));
        }
        Ok(tls)
    }

    /// Types and checks every value.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let redis_url = self.string("redis_url");
        let (_, o) = self.raw("redis_url");
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("unix://"))
        {
            return Err(ConfigError::new(
                "redis_url",
                o,
                "must start with redis://, rediss:// or unix://",
            ));
        }
        let namespace = self.string("namespace");
        let (_, o) = self.raw("namespace");
        if namespace.is_empty()
            || namespace.len() > 64
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(
                "namespace",
                o,
                "must be 1-64 characters of A-Z a-z 0-9 - _ .",
            ));
        }
        let log_format = self.string("log_format");
        if log_format != "text" && log_format != "json" {
            let (_, o) = self.raw("log_format");
            return Err(ConfigError::new(
                "log_format",
                o,
                format!("{log_format:?} is not text or json"),
            ));
        }
        let keyring = match self.secret("signing_keys", "signing_keys_file")? {
            None => None,
            Some(spec) => {
                let active = self.string("signing_key_id");
                let active = (!active.is_empty()).then_some(active);
                let (_, o) = self.raw("signing_keys");
                Some(
                    Keyring::parse(&spec, active.as_deref())
                        .map_err(|e| ConfigError::new("signing_keys", o, e.to_string()))?,
                )
            }
        };
        let api_tokens = match self.secret("api_tokens", "api_tokens_file")? {
            None => None,
            Some(spec) => {
                let (_, o) = self.raw("api_tokens");
                Some(ApiTokens::parse(&spec).map_err(|e| ConfigError::new("api_tokens", o, e))?)
            }
        };
        let redis_password = self.secret("redis_password", "redis_password_file")?.map(Secret);
        let redis_tls = self.redis_tls()?;

        let timing = Timing {
            lease_ttl: self.duration("timing.lease_ttl")?,
            heartbeat: self.duration("timing.heartbeat")?,
            worker_ttl: self.duration("timing.worker_ttl")?,
            forget_worker_after: self.duration("timing.forget_worker_after")?,
            leader_ttl: self.duration("timing.leader_ttl")?,
            tick: self.duration("timing.tick")?,
            result_ttl: self.duration("timing.result_ttl")?,
            idempotency_ttl: self.duration("timing.idempotency_ttl")?,
            message_ttl: self.duration("timing.message_ttl")?,
            backoff_base: self.duration("timing.backoff_base")?,
            backoff_max: self.duration("timing.backoff_max")?,
        };
        if timing.worker_ttl <= timing.heartbeat {
            let (_, o) = self.raw("timing.worker_ttl");
            return Err(ConfigError::new(
                "timing.worker_ttl",
                o,
                "must be longer than timing.heartbeat",
            ));
        }
        let worker_id = match self.string("worker.id") {
            id if id.is_empty() => default_worker_id(),
            id => id,
        };
        if worker_id.len() > 128
            || !worker_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            let (_, o) = self.raw("worker.id");
            return Err(ConfigError::new(
                "worker.id",
                o,
                "must be 1-128 characters of A-Z a-z 0-9 - _ .",
            ));
        }
        if let Some(bad) = self.handlers.keys().find(|h| !is_valid_name(h)) {
            let origin = Origin::File(self.file.clone().unwrap_or_default());
            return Err(ConfigError::new(
                format!("handlers.{bad}"),
                &origin,
                "handler names are 1-64 characters of A-Z a-z 0-9 - _ . (what the API accepts)",
            ));
        }
        let tags = self.list("worker.tags");
        if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
            let (_, o) = self.raw("worker.tags");
            return Err(ConfigError::new(
                "worker.tags",
                o,
                format!("{bad:?}: tags are 1-64 characters of A-Z a-z 0-9 - _ . : /"),
            ));
        }
        Ok(Settings {
            redis_url: Secret(redis_url),
            redis_password,
            redis_tls,
            namespace,
            admin_addr: self.addr("admin_addr")?,
            log_format,
            keyring,
            api_tokens,
            timing,
            max_message: self.size("limits.max_message")? as usize,
            events_maxlen: self.number("limits.events_maxlen", 100, 100_000_000)?,
            events_retention: self.duration("limits.events_retention")?,
            coordinator: CoordinatorSettings {
                http_addr: self.addr("coordinator.http_addr")?,
                max_body: self.size("coordinator.max_body")? as usize,
                max_batch: self.number("coordinator.max_batch", 1, 100_000)? as usize,
                max_backlog: self.number("coordinator.max_backlog", 1, u64::MAX / 2)?,
                max_attempts: self.number("coordinator.max_attempts", 1, 1000)? as u32,
                timeout: self.duration("coordinator.timeout")?,
                handlers: self.list("coordinator.handlers"),
                wait_max: self.duration("coordinator.wait_max")?,
            },
            distributor: DistributorSettings {
                batch: self.number("distributor.batch", 1, 10_000)? as usize,
            },
            worker: WorkerSettings {
                id: worker_id,
                capacity: self.number("worker.capacity", 1, 100_000)? as u32,
                tags,
                grace: self.duration("worker.grace")?,
                handlers: self.handlers.clone(),
            },
        })
    }

    /// The effective values with their origins, secrets redacted, for
    /// `drover config check`.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = KEYS
            .iter()
            .map(|def| {
                let (v, o) = self.raw(def.key);
                let shown = if def.secret && !v.is_empty() {
                    "<redacted>".to_string()
                } else if def.key == "redis_url" {
                    redact_url(v)
                } else {
                    v.to_string()
                };
                let origin = match o {
                    Origin::Default => "default".to_string(),
                    Origin::File(p) => p.clone(),
                    Origin::Env(e) => (*e).to_string(),
                    Origin::Flag(f) => (*f).to_string(),
                };
                (def.key.to_string(), shown, origin)
            })
            .collect();
        for (name, spec) in &self.handlers {
            let shown = serde_json::to_string(spec).unwrap_or_default();
            rows.push((format!("handlers.{name}"), shown, self.file.clone().unwrap_or_default()));
        }
        rows
    }
}

use serde::Deserialize as _;

fn valid_tag(t: &str) -> bool {
    !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

/// Handler names as the API accepts them, shared with request validation.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Tags as the API accepts them, shared with request validation.
pub fn is_valid_tag(t: &str) -> bool {
    valid_tag(t)
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".to_string());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

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
    pub grace: Duration,
    pub handlers: BTreeMap<String, HandlerSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn with_file(text: &str) -> (tempfile::NamedTempFile, Layers) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let layers = Layers::load(Some(f.path())).unwrap();
        (f, layers)
    }

    #[test]
    fn file_values_override_defaults_and_flags_override_files() {
        let (_f, mut layers) = with_file(
            "namespace = \"ns1\"\n[worker]\ncapacity = 7\ntags = [\"gpu\", \"eu\"]\n[handlers]\nnoop = { kind = \"builtin\" }\n",
        );
        let s = layers.resolve().unwrap();
        assert_eq!(s.namespace, "ns1");
        assert_eq!(s.worker.capacity, 7);
        assert_eq!(s.worker.tags, vec!["gpu", "eu"]);
        assert!(s.worker.handlers.contains_key("noop"));
        layers.set_flag("worker.capacity", "--capacity", Some("9".into()));
        assert_eq!(layers.resolve().unwrap().worker.capacity, 9);
    }

    #[test]
    fn bad_values_name_the_key_and_the_source() {
        let (_f, layers) = with_file("[timing]\nlease_ttl = \"soon\"\n");
        let err = layers.resolve().unwrap_err().to_string();
        assert!(err.starts_with("config: timing.lease_ttl (in "), "{err}");
        assert!(err.contains("is not a duration"), "{err}");

        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"[worker]\ncapacty = 3\n").unwrap();
        let err = Layers::load(Some(f.path())).err().unwrap().to_string();
        assert!(
            err.contains("worker.capacty") && err.contains("unknown setting"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_refused_in_files_and_redacted_in_descriptions() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"api_tokens = \"abc:read\"\n").unwrap();
        let err = Layers::load(Some(f.path())).err().unwrap().to_string();
        assert!(err.contains("DROVER_API_TOKENS"), "{err}");

        let mut layers = Layers::load(None).unwrap();
        layers.set_flag("redis_url", "--redis-url", Some("redis://:hunter2@h:1".into()));
        let rows = layers.describe();
        let url = rows.iter().find(|r| r.0 == "redis_url").unwrap();
        assert!(!url.1.contains("hunter2"), "{url:?}");
    }

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(redact_url("redis://u:p@h:6379/0"), "redis://<redacted>@h:6379/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
