//! drover — a distributed task system. One binary runs as coordinator,
//! distributor or worker; the roles talk only through Redis, with signed
//! messages on streams and task state changed only by Lua scripts.
//!
//! Module map:
//! - [`cli`]: the command line; turns a subcommand into a role or a client call.
//! - [`config`]: layered settings (defaults < file < env < flags), validated once.
//! - [`context`]: the `Context` every role is handed (settings, store, health) and its `Health`.
//! - [`roles`]: `coordinator`, `distributor`, `worker`, `dev`, each `run(ctx, …, shutdown)`.
//! - [`store`]: the one door to Redis — key names, embedded scripts, typed replies.
//! - [`envelope`]: HMAC-signed stream messages and the keyring.
//! - [`messages`]: what the signed bodies say.
//! - [`task`]: task ids, states, submissions and views.
//! - [`handlers`]: what a worker runs — builtin, exec, http.
//! - [`api`]: the coordinator's HTTP API, auth and OpenAPI document.
//! - [`admin`]: `/health`, `/ready`, `/metrics` on every role.
//! - [`client`]: the CLI's HTTP client.
//! - [`telemetry`]: logs and metrics setup.
//! - [`clock`]: Redis time as seen from this process.
//! - [`redis_server`]: a `redis-server` child, for `drover dev` and tests.
//! - [`bench`]: `drover bench`, workloads on a cluster of its own.
//! - [`snapshot`]: export and import of task state.
//! - [`acl`]: `drover redis-acl`, one least-privilege Redis user per role.
//! - [`units`]: durations and sizes as written in profiles, flags and the environment.
//! - [`names`]: namespaces, worker ids, handler names and tags, each with its one rule.

pub mod acl;
pub mod admin;
pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod envelope;
pub mod handlers;
pub mod messages;
pub mod names;
pub mod redis_server;
pub mod roles;
pub mod snapshot;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod units;
