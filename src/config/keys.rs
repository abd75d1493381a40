//! The table of settings: every key drover reads, with its `DROVER_*`
//! variable, its default and whether it is a secret. Layering and
//! `drover config check` work from this one list, so a setting is added by
//! adding its row (and its line in `.env.example`).

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
    k("limits.metric_queues", "DROVER_METRIC_QUEUES", "20", "queues (first by name) with metric series of their own; the rest are folded into queue=\"other\""),
    k("limits.index_succeeded", "DROVER_INDEX_SUCCEEDED", "false", "index succeeded tasks per queue (exact lists, counts and purge of them; about 126 bytes and 1-2 µs of Redis more per task)"),
    k("coordinator.http_addr", "DROVER_HTTP_ADDR", "127.0.0.1:7070", "address of the HTTP API"),
    k("coordinator.tls_cert_file", "DROVER_HTTP_TLS_CERT_FILE", "", "PEM certificate chain: the API serves HTTPS (with tls_key_file); re-read when the file changes"),
    k("coordinator.tls_key_file", "DROVER_HTTP_TLS_KEY_FILE", "", "PEM private key of that certificate; re-read when the file changes"),
    k("coordinator.tls_client_ca_file", "DROVER_HTTP_TLS_CLIENT_CA_FILE", "", "PEM CA certificates: API clients must present a certificate signed by one"),
    k("coordinator.max_body", "DROVER_MAX_BODY", "1MiB", "largest request body (413 beyond)"),
    k("coordinator.max_batch", "DROVER_MAX_BATCH", "1000", "most tasks in one batch submit"),
    k("coordinator.max_backlog", "DROVER_MAX_BACKLOG", "1000000", "queued + scheduled tasks past which submissions get 429"),
    k("coordinator.max_attempts", "DROVER_MAX_ATTEMPTS", "3", "default attempts per task"),
    k("coordinator.timeout", "DROVER_TASK_TIMEOUT", "5m", "default timeout per attempt"),
    k("coordinator.handlers", "DROVER_HANDLERS", "", "handler names accepted before any worker offers them"),
    k("coordinator.wait_max", "DROVER_WAIT_MAX", "60s", "longest long-poll of /wait"),
    k("coordinator.max_waits", "DROVER_MAX_WAITS", "10000", "long-polls of /wait open at once past which the next gets 429"),
    k("distributor.batch", "DROVER_DISTRIBUTOR_BATCH", "256", "intake entries read at once"),
    k("worker.id", "DROVER_WORKER_ID", "", "worker id (default: hostname-pid)"),
    k("worker.capacity", "DROVER_WORKER_CAPACITY", "16", "tasks run at once"),
    k("worker.tags", "DROVER_WORKER_TAGS", "", "comma-separated tags this worker has"),
    k("worker.queues", "DROVER_WORKER_QUEUES", "", "comma-separated queues this worker takes tasks from, each optionally weighted (media:3,default); empty: every queue"),
    k("worker.grace", "DROVER_WORKER_GRACE", "30s", "on SIGTERM, time to finish before handing tasks back"),
];
