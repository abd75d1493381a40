//! The Model Context Protocol (MCP), both ways.
//!
//! - `drover mcp` is an MCP server on stdio whose tools submit, wait for,
//!   read and cancel tasks and list tasks, queues and workers, through the
//!   API with the caller's own token ([`server`] runs the session,
//!   [`tools`] declares and calls the tools).
//! - The handler kind `mcp` (in `handlers::mcp`) is an MCP client: a worker
//!   runs a task as one call of one tool of an MCP server.
//!
//! Both speak [`protocol`]: JSON-RPC 2.0, one message per line (the handler
//! also over streamable HTTP), written here rather than taken from the
//! `rmcp` crate (its current release needs Rust 1.88, above this crate's
//! `rust-version`, and brings a macro crate and `schemars` for the four
//! methods drover uses).

pub mod protocol;

pub mod server;
pub mod tools;
