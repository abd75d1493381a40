//! One integration test binary: real redis-server processes, roles
//! in-process or as real `drover` processes. See `support` for the harness.

mod acl;
mod api;
mod api_tls;
mod chaos;
mod clock;
mod containers;
mod dev;
mod lifecycle;
mod mcp;
mod network;
mod poison;
mod processes;
mod prometheus;
mod queue_controls;
mod queues;
mod readme;
mod redis_faults;
mod rotation;
mod scripts;
mod shutdown;
mod snapshot;
mod support;
mod support_certs;
mod taking;
mod tls;
mod waits;
mod worker;
