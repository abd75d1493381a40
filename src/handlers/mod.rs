//! Task handlers: the only things a drover worker can run.
//!
//! A worker's profile lists its handlers under `[handlers]`; [`Registry::from_specs`]
//! turns those entries into runnable [`Handler`]s and is the single gate between a
//! submitted task and anything executable. A task names a handler and supplies JSON
//! input, nothing more, so submitting a task can never choose a program, a URL or an
//! environment. The kinds are `builtin` (in-process helpers, see [`builtin`]), `exec`
//! (a fixed program spawned without a shell, see [`exec`]), `http` (a POST to a
//! fixed URL, see [`http`]), `container` (a fixed image run in Docker with
//! resource limits, see [`container`]) and `mcp` (one tool of an MCP server the
//! worker starts and keeps, see [`mcp`]). A handler may depend on something outside
//! the worker (Docker, for containers): [`Registry::unavailable`] says which cannot
//! run right now and why, so the worker offers only the others.
//!
//! Layout: [`Handler`], [`TaskContext`] and [`HandlerError`] in `handler`; the
//! profile's entries ([`HandlerSpec`], [`SpecError`]) and the checks all kinds
//! share in `spec`; [`Registry`] in `registry`; how a run ends (timeout,
//! cancellation, output) in `outcome`; a panicking handler turned into a failed
//! attempt in `unwind`; one module per kind.

pub mod builtin;
pub mod container;
pub mod exec;
mod handler;
pub mod http;
pub mod mcp;
mod outcome;
mod registry;
mod spec;
mod unwind;

pub use builtin::{Builtin, BuiltinSpec, BUILTIN_NAMES};
pub use container::{ContainerHandler, ContainerSpec, DockerEngine, DockerError};
pub use exec::{ExecHandler, ExecSpec};
pub use handler::{Handler, HandlerError, HandlerFuture, Probe, ProbeFuture, TaskContext};
pub use http::{HttpHandler, HttpSpec};
pub use mcp::{McpHandler, McpSpec};
pub use registry::Registry;
pub use spec::{HandlerSpec, SpecError, DEFAULT_MAX_OUTPUT};
pub use unwind::run_catching_panics;
