//! Validation: [`Layers::resolve`] types every layered value into
//! [`Settings`] and checks what a single parser cannot see — the URL scheme,
//! names against their rules in `crate::names`, secrets given inline or by
//! file, TLS files that hold PEM, a worker TTL longer than the heartbeat.
//! Keys are checked in a fixed order, so a profile with several mistakes
//! always reports the same one first.

use super::settings::{
    CoordinatorSettings, DistributorSettings, HttpTls, RedisTls, Secret, Settings, Timing, WorkerSettings,
};
use super::{ConfigError, Layers, Origin};
use crate::api::auth::ApiTokens;
use crate::envelope::Keyring;
use crate::names::{HandlerName, Namespace, QueueWeight, Tag, WorkerId};

impl Layers {
    /// Types and checks every value.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let redis_url = self.redis_url()?;
        let namespace = self.namespace()?;
        let log_format = self.log_format()?;
        let keyring = self.keyring()?;
        let api_tokens = self.api_tokens()?;
        let redis_password = self.secret("redis_password", "redis_password_file")?.map(Secret);
        let redis_tls = self.redis_tls()?;
        let timing = self.timing()?;
        let worker_id = self.worker_id()?;
        self.check_handler_names()?;
        let tags = self.worker_tags()?;
        Ok(Settings {
            redis_url: Secret(redis_url),
            redis_password,
            redis_tls,
            namespace: namespace.into_string(),
            admin_addr: self.addr("admin_addr")?,
            log_format,
            keyring,
            api_tokens,
            timing,
            max_message: self.size("limits.max_message")? as usize,
            events_maxlen: self.number("limits.events_maxlen", 100, 100_000_000)?,
            events_retention: self.duration("limits.events_retention")?,
            index_succeeded: self.boolean("limits.index_succeeded")?,
            metric_queues: self.number("limits.metric_queues", 0, 1000)? as usize,
            coordinator: self.coordinator()?,
            distributor: DistributorSettings {
                batch: self.number("distributor.batch", 1, 10_000)? as usize,
            },
            worker: WorkerSettings {
                id: worker_id.into_string(),
                capacity: self.number("worker.capacity", 1, 100_000)? as u32,
                tags: tags.into_iter().map(Tag::into_string).collect(),
                queues: self.worker_queues()?,
                grace: self.duration("worker.grace")?,
                handlers: self.handlers.clone(),
            },
        })
    }

    fn redis_url(&self) -> Result<String, ConfigError> {
        let redis_url = self.string("redis_url");
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("unix://"))
        {
            let (_, o) = self.raw("redis_url");
            return Err(ConfigError::new(
                "redis_url",
                o,
                "must start with redis://, rediss:// or unix://",
            ));
        }
        Ok(redis_url)
    }

    fn namespace(&self) -> Result<Namespace, ConfigError> {
        Namespace::parse(&self.string("namespace")).map_err(|_| {
            let (_, o) = self.raw("namespace");
            ConfigError::new("namespace", o, format!("must be {}", Namespace::KIND.rule()))
        })
    }

    fn log_format(&self) -> Result<String, ConfigError> {
        let log_format = self.string("log_format");
        if log_format != "text" && log_format != "json" {
            let (_, o) = self.raw("log_format");
            return Err(ConfigError::new(
                "log_format",
                o,
                format!("{log_format:?} is not text or json"),
            ));
        }
        Ok(log_format)
    }

    fn keyring(&self) -> Result<Option<Keyring>, ConfigError> {
        let Some(spec) = self.secret("signing_keys", "signing_keys_file")? else {
            return Ok(None);
        };
        let active = self.string("signing_key_id");
        let active = (!active.is_empty()).then_some(active);
        let (_, o) = self.raw("signing_keys");
        Keyring::parse(&spec, active.as_deref())
            .map(Some)
            .map_err(|e| ConfigError::new("signing_keys", o, e.to_string()))
    }

    fn api_tokens(&self) -> Result<Option<ApiTokens>, ConfigError> {
        let Some(spec) = self.secret("api_tokens", "api_tokens_file")? else {
            return Ok(None);
        };
        let (_, o) = self.raw("api_tokens");
        ApiTokens::parse(&spec)
            .map(Some)
            .map_err(|e| ConfigError::new("api_tokens", o, e))
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
        let tls = RedisTls {
            ca: self.pem_file("redis_ca_file", "CERTIFICATE")?,
            client_cert: self.pem_file("redis_client_cert_file", "CERTIFICATE")?,
            client_key: self.pem_file("redis_client_key_file", "")?,
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

    /// The bytes of the PEM file named by `key`, if one is set; `what` is the
    /// label after `-----BEGIN ` it must hold (empty: any).
    fn pem_file(&self, key: &str, what: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let (path, o) = self.raw(key);
        let path = path.trim();
        if path.is_empty() {
            return Ok(None);
        }
        let bytes = std::fs::read(path).map_err(|e| ConfigError::new(key, o, format!("cannot read {path}: {e}")))?;
        if !String::from_utf8_lossy(&bytes).contains(&format!("-----BEGIN {what}")) {
            return Err(ConfigError::new(key, o, format!("{path} holds no PEM {what}")));
        }
        Ok(Some(bytes))
    }

    fn timing(&self) -> Result<Timing, ConfigError> {
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
        Ok(timing)
    }

    /// The worker id set, or else one made from the hostname and pid.
    fn worker_id(&self) -> Result<WorkerId, ConfigError> {
        let id = match self.string("worker.id") {
            id if id.is_empty() => default_worker_id(),
            id => id,
        };
        WorkerId::parse(&id).map_err(|_| {
            let (_, o) = self.raw("worker.id");
            ConfigError::new("worker.id", o, format!("must be {}", WorkerId::KIND.rule()))
        })
    }

    /// Handler names in the profile must be what the API accepts, or no task
    /// could ever ask for them.
    fn check_handler_names(&self) -> Result<(), ConfigError> {
        match self.handlers.keys().find(|h| HandlerName::parse(h).is_err()) {
            None => Ok(()),
            Some(bad) => Err(ConfigError::new(
                format!("handlers.{bad}"),
                &Origin::File(self.file.clone().unwrap_or_default()),
                format!("handler names are {} (what the API accepts)", HandlerName::KIND.rule()),
            )),
        }
    }

    fn worker_tags(&self) -> Result<Vec<Tag>, ConfigError> {
        self.list("worker.tags")
            .iter()
            .map(|t| {
                Tag::parse(t).map_err(|_| {
                    let (_, o) = self.raw("worker.tags");
                    ConfigError::new("worker.tags", o, format!("{t:?}: tags are {}", Tag::KIND.rule()))
                })
            })
            .collect()
    }

    fn worker_queues(&self) -> Result<Vec<QueueWeight>, ConfigError> {
        let mut out: Vec<QueueWeight> = Vec::new();
        for q in self.list("worker.queues") {
            let w = QueueWeight::parse(&q).map_err(|why| {
                let (_, o) = self.raw("worker.queues");
                ConfigError::new("worker.queues", o, why)
            })?;
            if out.iter().any(|o| o.queue == w.queue) {
                let (_, o) = self.raw("worker.queues");
                return Err(ConfigError::new(
                    "worker.queues",
                    o,
                    format!("{:?} is named twice", w.queue.as_str()),
                ));
            }
            out.push(w);
        }
        Ok(out)
    }

    fn coordinator(&self) -> Result<CoordinatorSettings, ConfigError> {
        Ok(CoordinatorSettings {
            http_addr: self.addr("coordinator.http_addr")?,
            max_body: self.size("coordinator.max_body")? as usize,
            max_batch: self.number("coordinator.max_batch", 1, 100_000)? as usize,
            max_backlog: self.number("coordinator.max_backlog", 1, u64::MAX / 2)?,
            max_attempts: self.number("coordinator.max_attempts", 1, 1000)? as u32,
            timeout: self.duration("coordinator.timeout")?,
            handlers: self.list("coordinator.handlers"),
            wait_max: self.duration("coordinator.wait_max")?,
            max_waits: self.number("coordinator.max_waits", 1, 10_000_000)? as usize,
            tls: self.http_tls()?,
        })
    }

    /// The API's TLS files: a certificate and its key, both or neither, and
    /// a client CA only beside them. Each is checked to hold PEM now, so a
    /// wrong path fails at start rather than at the first handshake.
    fn http_tls(&self) -> Result<Option<HttpTls>, ConfigError> {
        let cert = self.pem_file("coordinator.tls_cert_file", "CERTIFICATE")?;
        let key = self.pem_file("coordinator.tls_key_file", "")?;
        let client_ca = self.pem_file("coordinator.tls_client_ca_file", "CERTIFICATE")?;
        let path = |key: &str| std::path::PathBuf::from(self.raw(key).0.trim());
        match (cert, key) {
            (Some(_), Some(_)) => Ok(Some(HttpTls {
                cert_file: path("coordinator.tls_cert_file"),
                key_file: path("coordinator.tls_key_file"),
                client_ca_file: client_ca.map(|_| path("coordinator.tls_client_ca_file")),
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => {
                let (_, o) = self.raw("coordinator.tls_client_ca_file");
                Err(ConfigError::new(
                    "coordinator.tls_client_ca_file",
                    o,
                    "client certificates need TLS: set coordinator.tls_cert_file and coordinator.tls_key_file too",
                ))
            }
            (cert, _) => {
                // Named after the one that is set, with where it came from.
                let set = match cert {
                    Some(_) => "coordinator.tls_cert_file",
                    None => "coordinator.tls_key_file",
                };
                let (_, o) = self.raw(set);
                Err(ConfigError::new(
                    set,
                    o,
                    "set both coordinator.tls_cert_file and coordinator.tls_key_file, or neither",
                ))
            }
        }
    }
}

/// `<hostname>-<pid>`, with any character a worker id may not hold in the
/// hostname replaced by `-`.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".to_string());
    let host: String = host
        .chars()
        .map(|c| if WorkerId::KIND.allows(c) { c } else { '-' })
        .collect();
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::super::layers::tests::with_file;
    use super::*;

    fn resolve_with(key: &'static str, value: &str) -> Result<Settings, String> {
        let mut layers = Layers::load(None).unwrap();
        layers.set_flag(key, "--flag", Some(value.into()));
        layers.resolve().map_err(|e| e.to_string())
    }

    #[test]
    fn bad_values_name_the_key_and_the_source() {
        let (_f, layers) = with_file("[timing]\nlease_ttl = \"soon\"\n");
        let err = layers.resolve().unwrap_err().to_string();
        assert!(err.starts_with("config: timing.lease_ttl (in "), "{err}");
        assert!(err.contains("is not a duration"), "{err}");
    }

    #[test]
    fn names_follow_their_rules_and_errors_keep_their_words() {
        let err = resolve_with("namespace", "a b").unwrap_err();
        assert_eq!(
            err,
            "config: namespace (from --flag): must be 1-64 characters of A-Z a-z 0-9 - _ ."
        );
        assert!(resolve_with("namespace", "").is_err());
        assert!(resolve_with("namespace", &"n".repeat(64)).is_ok());

        let err = resolve_with("worker.id", "a/b").unwrap_err();
        assert_eq!(
            err,
            "config: worker.id (from --flag): must be 1-128 characters of A-Z a-z 0-9 - _ ."
        );
        assert_eq!(resolve_with("worker.id", " w-1 ").unwrap().worker.id, "w-1");

        let err = resolve_with("worker.tags", "gpu,a b").unwrap_err();
        assert_eq!(
            err,
            "config: worker.tags (from --flag): \"a b\": tags are 1-64 characters of A-Z a-z 0-9 - _ . : /"
        );
        let s = resolve_with("worker.tags", "zone:eu, team/ml").unwrap();
        assert_eq!(s.worker.tags, ["zone:eu", "team/ml"]);
    }

    #[test]
    fn handler_names_in_the_profile_are_what_the_api_accepts() {
        let (f, layers) = with_file("[handlers]\n\"a b\" = { kind = \"builtin\" }\n");
        let err = layers.resolve().unwrap_err().to_string();
        let want = format!(
            "config: handlers.a b (in {}): handler names are 1-64 characters of A-Z a-z 0-9 - _ . (what the API accepts)",
            f.path().display()
        );
        assert_eq!(err, want);
    }

    #[test]
    fn api_tls_needs_a_certificate_and_its_key_and_a_client_ca_needs_both() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\n").unwrap();
        let pem = pem.display().to_string();
        let resolve = |set: &[(&'static str, &str)]| {
            let mut layers = Layers::load(None).unwrap();
            for (k, v) in set {
                layers.set_flag(k, "--flag", Some(v.to_string()));
            }
            layers.resolve().map_err(|e| e.to_string())
        };
        assert!(resolve(&[]).unwrap().coordinator.tls.is_none());
        let err = resolve(&[("coordinator.tls_cert_file", &pem)]).unwrap_err();
        assert_eq!(
            err,
            "config: coordinator.tls_cert_file (from --flag): set both coordinator.tls_cert_file and coordinator.tls_key_file, or neither"
        );
        let err = resolve(&[("coordinator.tls_key_file", &pem)]).unwrap_err();
        assert!(
            err.starts_with("config: coordinator.tls_key_file (from --flag): set both"),
            "{err}"
        );
        let err = resolve(&[("coordinator.tls_client_ca_file", &pem)]).unwrap_err();
        assert!(err.contains("client certificates need TLS"), "{err}");
        let err = resolve(&[
            ("coordinator.tls_cert_file", "/nonexistent.pem"),
            ("coordinator.tls_key_file", &pem),
        ])
        .unwrap_err();
        assert!(
            err.starts_with("config: coordinator.tls_cert_file (from --flag): cannot read /nonexistent.pem"),
            "{err}"
        );
        let all = [
            ("coordinator.tls_cert_file", pem.as_str()),
            ("coordinator.tls_key_file", pem.as_str()),
            ("coordinator.tls_client_ca_file", pem.as_str()),
        ];
        let tls = resolve(&all).unwrap().coordinator.tls.unwrap();
        assert_eq!(tls.cert_file.display().to_string(), pem);
        assert_eq!(tls.client_ca_file.unwrap().display().to_string(), pem);
    }

    #[test]
    fn an_unset_worker_id_comes_from_the_hostname_and_pid() {
        let s = Layers::load(None).unwrap().resolve().unwrap();
        assert!(WorkerId::parse(&s.worker.id).is_ok(), "{}", s.worker.id);
        assert!(
            s.worker.id.ends_with(&format!("-{}", std::process::id())),
            "{}",
            s.worker.id
        );
    }
}
