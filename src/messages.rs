//! Bodies of the signed stream messages (docs/ARCHITECTURE.md, "Batch
//! leases and fencing"). The envelope module
//! signs and verifies bytes; this module says what those bytes mean. Every
//! message is refused where it arrives if it is replayed or stale: by the
//! script it reaches, or, for an assignment, by the worker's claim (which
//! checks that the batch record's `ent` is the very entry it read).

use serde::{Deserialize, Serialize};

/// Message types; each is accepted only on the stream it belongs to.
pub const ASSIGN: &str = "assign";
pub const CANCEL: &str = "cancel";
pub const EVENT: &str = "event";

/// An assignment. It names no task: assign.lua chooses them from the
/// backlog after the distributor signed, and adds them to the entry as
/// the unsigned fields `b` (the batch's token) and `ids`, which the worker
/// trusts only through the batch record ([`crate::store::Store::claim`]).
/// The signature still says a distributor holding a key wrote the entry
/// for this worker's stream, and when (it expires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignBody {}

/// Tells a worker to stop the attempt holding this fence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelBody {
    pub id: String,
    pub epoch: u64,
    pub fence: u64,
}

/// Tasks whose state changed; readers re-read the records (the events
/// stream is informational, the task hash is the truth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    pub ids: Vec<String>,
}
