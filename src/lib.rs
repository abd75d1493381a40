//! drover — a distributed task system. One binary runs as coordinator,
//! distributor or worker; the roles talk only through Redis, with signed
//! messages on streams and task state changed only by Lua scripts.
//!
//! Module map (docs/ARCHITECTURE.md draws how the parts fit):
//!
//! The roles and how they start
//! - [`cli`]: the command line — `args` (clap types), `role` (the one way
//!   a role starts), `client` and `tools` (one function per subcommand).
//! - [`roles`]: `coordinator`, `distributor`, `worker`, `dev`, each
//!   `run(ctx, …, shutdown)`, and the Redis watchdog and retry delays.
//! - [`context`]: the `Context` every role is handed (settings, store,
//!   health) and its `Health`.
//! - [`config`]: layered settings (defaults < file < env < flags) —
//!   `keys`, `layers`, `values`, `resolve`, `settings` — validated once.
//!
//! Redis and what travels through it
//! - [`store`]: the one door to Redis — one file per concern (`intake`,
//!   `leases`, `cancel`, `reap`, `leader`, `reads`, `workers`, `streams`,
//!   `redis_info`), key names (`keys`), embedded scripts (`scripts`),
//!   replies as types (`outcomes`, `decode`).
//! - [`envelope`]: HMAC-signed stream messages — `wire`, `sign`,
//!   `keyring`, `rejection`, `verified`.
//! - [`messages`]: what the signed bodies say.
//! - [`clock`]: Redis time as seen from this process.
//!
//! The shared vocabulary (leaves: they import little or nothing of drover)
//! - [`task`]: task ids, states, fencing tokens, submissions and views.
//! - [`names`]: namespaces, worker ids, handler names, tags and key ids,
//!   each with its one rule.
//! - [`units`]: durations and sizes as written in profiles, flags and the
//!   environment.
//!
//! What a worker runs, and the edges
//! - [`handlers`]: the handler trait, profile specs and registry; builtin,
//!   exec, http, container (a folder: spec, engine, run, lockdown,
//!   stdio, cleanup) and mcp (a folder: spec, process, session, http, result).
//! - [`api`]: the coordinator's HTTP API — router, state, requests,
//!   validation, responses (its own types), task and worker routes, auth,
//!   errors, waiters, the OpenAPI document.
//! - [`tls`]: HTTPS for the API — rustls config, a certificate re-read
//!   when its files change, and the listener doing the handshakes.
//! - [`admin`]: `/health`, `/ready`, `/metrics` on every role.
//! - [`telemetry`]: logs, the Prometheus recorder, and `catalog`: every
//!   metric defined once.
//! - [`client`]: the CLI's HTTP client.
//! - [`mcp`]: the Model Context Protocol — `protocol` (JSON-RPC over
//!   stdio), `server` and `tools` (`drover mcp`); the `mcp` handler kind
//!   is in `handlers::mcp`.
//! - [`acl`]: `drover redis-acl`, one least-privilege Redis user per role.
//! - [`snapshot`]: export and import of task state.
//! - [`bench`]: `drover bench`, workloads on a cluster of its own.
//! - [`redis_server`]: a `redis-server` child, for `drover dev` and tests.
//! - `child_process`: children (redis-server, exec programs) that die with drover.

pub mod acl;
pub mod admin;
pub mod api;
pub mod bench;
mod child_process;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod envelope;
pub mod handlers;
pub mod mcp;
pub mod messages;
pub mod names;
pub mod redis_server;
pub mod roles;
pub mod snapshot;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod tls;
pub mod units;
