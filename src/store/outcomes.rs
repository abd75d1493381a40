//! What a script said about each task, as types. Every script reply word is
//! parsed here, once, into an enum; roles and tests match variants, never
//! strings. Each enum has `label()`, the stable lowercase name used as a
//! metric label and a log field (as `envelope::Rejection::reason()` is for
//! refused messages). The words are those of the scripts' headers in `lua/`.

use super::{Result, StoreError};
use crate::task::TaskState;

/// Parses one reply word of `script` into `T`, or says which word it was.
fn word<T>(script: &'static str, word: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T> {
    parse(word).ok_or_else(|| StoreError::Reply {
        script,
        detail: format!("unknown status {word:?}"),
    })
}

/// A `state:<s>` word: the task is in state `s`, which the script did not expect.
fn wrong_state(word: &str) -> Option<TaskState> {
    TaskState::parse(word.strip_prefix("state:")?)
}

/// How `submit` took one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitStatus {
    /// Written and announced on the intake stream.
    Queued,
    /// Written to run later (`run_at` in the future).
    Scheduled,
    /// An earlier task had the same idempotency key: nothing was written.
    Duplicate,
}

impl SubmitStatus {
    pub fn label(self) -> &'static str {
        match self {
            SubmitStatus::Queued => "queued",
            SubmitStatus::Scheduled => "scheduled",
            SubmitStatus::Duplicate => "duplicate",
        }
    }
}

/// One task of a `submit` call: its id (for a duplicate, the earlier
/// task's) and how it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitReply {
    pub id: String,
    pub status: SubmitStatus,
}

/// What one `assign` call took from the backlog for a worker
/// (lua/assign.lua).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Tasks taken and leased to the worker.
    pub taken: usize,
    /// Whether the worker has room for more after the call.
    pub worker: WorkerRoom,
    /// The ids of the tasks taken, in the order of the worker's entry.
    pub ids: Vec<String>,
    /// The backlogs of the call (by position among those given) that could
    /// give no more, and why.
    pub stopped: Vec<(usize, BacklogStop)>,
}

/// A worker's room after an assign call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRoom {
    /// Free slots remain.
    Room,
    /// Every slot is taken.
    Full,
    /// The worker is unknown or draining.
    Gone,
}

/// Why a backlog gave no more tasks in an assign call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogStop {
    /// No ready task is left in it.
    Empty,
    /// Its queue is paused.
    Paused,
    /// Its queue is at its concurrency limit.
    Busy,
    /// Its queue's token bucket is empty; the next token comes in this long.
    Rate(std::time::Duration),
}

impl BacklogStop {
    fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "empty" => Some(BacklogStop::Empty),
            "paused" => Some(BacklogStop::Paused),
            "busy" => Some(BacklogStop::Busy),
            _ => w
                .strip_prefix("rate:")?
                .parse()
                .ok()
                .map(|ms| BacklogStop::Rate(std::time::Duration::from_millis(ms))),
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            BacklogStop::Empty => "empty",
            BacklogStop::Paused => "paused",
            BacklogStop::Busy => "busy",
            BacklogStop::Rate(_) => "rate",
        }
    }
}

impl Assigned {
    /// Parses assign.lua's reply: the count taken, the worker's room, the
    /// ids taken (comma-joined), then 2 per backlog that stopped: its
    /// position (1-based) and why.
    pub(crate) fn parse(script: &'static str, reply: &[String], backlogs: usize) -> Result<Self> {
        let bad = |detail: String| StoreError::Reply { script, detail };
        let (taken, worker, ids, rest) = match reply {
            [taken, worker, ids, rest @ ..] if rest.len() % 2 == 0 => (taken, worker, ids, rest),
            _ => return Err(bad(format!("{} words", reply.len()))),
        };
        let taken: usize = taken.parse().map_err(|_| bad(format!("taken {taken:?}")))?;
        let ids: Vec<String> = ids.split(',').filter(|i| !i.is_empty()).map(str::to_owned).collect();
        if ids.len() != taken {
            return Err(bad(format!("{taken} taken, {} ids", ids.len())));
        }
        let worker = word(script, worker, |w| match w {
            "room" => Some(WorkerRoom::Room),
            "full" => Some(WorkerRoom::Full),
            "gone" => Some(WorkerRoom::Gone),
            _ => None,
        })?;
        let mut stopped = Vec::with_capacity(rest.len() / 2);
        for pair in rest.chunks(2) {
            let position: usize = pair[0].parse().map_err(|_| bad(format!("position {:?}", pair[0])))?;
            if position == 0 || position > backlogs {
                return Err(bad(format!("position {position} of {backlogs} backlogs")));
            }
            stopped.push((position - 1, BacklogStop::parse(script, &pair[1])?));
        }
        Ok(Assigned {
            taken,
            worker,
            ids,
            stopped,
        })
    }
}

/// Why a worker did not start one task of an assign entry
/// ([`super::Store::claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The entry carries no batch token, a bad one, or one whose record
    /// names another entry: not an entry assign.lua wrote.
    Replayed,
    /// The batch record is gone: the lease already ended (or never was).
    LeaseEnded,
    /// The batch record names another worker.
    OtherWorker,
    /// The task runs under another batch's token.
    OtherBatch,
    /// The task moved on (another version), or the entry names it twice.
    Conflict,
    /// No such task.
    Missing,
    /// The task is not running.
    WrongState(TaskState),
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Replayed => "replayed",
            Refusal::LeaseEnded => "lease-ended",
            Refusal::OtherWorker => "other-worker",
            Refusal::OtherBatch => "other-batch",
            Refusal::Conflict => "conflict",
            Refusal::Missing => "missing",
            Refusal::WrongState(_) => "wrong-state",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::WrongState(s) => write!(f, "state:{s}"),
            other => f.write_str(other.label()),
        }
    }
}

/// What `renew` said of one running task (lua/renew.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewStatus {
    /// The lease runs on.
    Ok,
    /// Renewed, but a cancel was requested: stop the handler.
    CancelRequested,
    /// The lease is no longer this worker's: stop, and report nothing.
    Lost,
}

impl RenewStatus {
    pub(crate) fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "ok" => Some(RenewStatus::Ok),
            "cancel" => Some(RenewStatus::CancelRequested),
            "lost" => Some(RenewStatus::Lost),
            _ => None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            RenewStatus::Ok => "ok",
            RenewStatus::CancelRequested => "cancel",
            RenewStatus::Lost => "lost",
        }
    }
}

/// The state a task was left in by `complete` (lua/complete.lua), or
/// `Stale` when the worker no longer held its lease and nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishedState {
    Succeeded,
    /// Failed; a retry is scheduled.
    Scheduled,
    /// Failed with no attempt left.
    Dead,
    Cancelled,
    /// Handed back: queued again without charging an attempt.
    Queued,
    /// Refused by the fence: a zombie's late completion changes nothing.
    Stale,
}

impl FinishedState {
    pub(crate) fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "succeeded" => Some(FinishedState::Succeeded),
            "scheduled" => Some(FinishedState::Scheduled),
            "dead" => Some(FinishedState::Dead),
            "cancelled" => Some(FinishedState::Cancelled),
            "queued" => Some(FinishedState::Queued),
            "stale" => Some(FinishedState::Stale),
            _ => None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            FinishedState::Succeeded => "succeeded",
            FinishedState::Scheduled => "scheduled",
            FinishedState::Dead => "dead",
            FinishedState::Cancelled => "cancelled",
            FinishedState::Queued => "queued",
            FinishedState::Stale => "stale",
        }
    }
}

/// What `reap` did with one task of an expired lease (lua/reap.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapOutcome {
    /// Never ran (the worker never accepted the assignment): queued again
    /// without using an attempt.
    Queued,
    /// The lease ran out; a retry is scheduled.
    Scheduled,
    /// The lease ran out with no attempt left.
    Dead,
    /// The lease ran out while a cancel was requested.
    Cancelled,
    /// The batch's deadline moved since it was read: left running.
    Renewed,
    /// No longer running under the token at the version read: left alone.
    Conflict,
}

impl ReapOutcome {
    pub(crate) fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "queued" => Some(ReapOutcome::Queued),
            "scheduled" => Some(ReapOutcome::Scheduled),
            "dead" => Some(ReapOutcome::Dead),
            "cancelled" => Some(ReapOutcome::Cancelled),
            "renewed" => Some(ReapOutcome::Renewed),
            "conflict" => Some(ReapOutcome::Conflict),
            _ => None,
        })
    }

    /// The attempt ended because its lease ran out.
    pub fn lease_expired(self) -> bool {
        matches!(
            self,
            ReapOutcome::Scheduled | ReapOutcome::Dead | ReapOutcome::Cancelled
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            ReapOutcome::Queued => "queued",
            ReapOutcome::Scheduled => "scheduled",
            ReapOutcome::Dead => "dead",
            ReapOutcome::Cancelled => "cancelled",
            ReapOutcome::Renewed => "renewed",
            ReapOutcome::Conflict => "conflict",
        }
    }
}

/// What `restore` did with one task of a snapshot (lua/restore.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RestoreOutcome {
    /// A live task, queued and announced.
    Queued,
    /// A scheduled task, keeping its run_at.
    Scheduled,
    /// A finished task, kept for the result TTL.
    Terminal,
    /// A live task whose cancel was requested before the export: ended
    /// cancelled, not run again.
    Cancelled,
    /// A task with this id is already here: left alone.
    Exists,
}

impl RestoreOutcome {
    pub(crate) fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "queued" => Some(RestoreOutcome::Queued),
            "scheduled" => Some(RestoreOutcome::Scheduled),
            "terminal" => Some(RestoreOutcome::Terminal),
            "cancelled" => Some(RestoreOutcome::Cancelled),
            "exists" => Some(RestoreOutcome::Exists),
            _ => None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            RestoreOutcome::Queued => "queued",
            RestoreOutcome::Scheduled => "scheduled",
            RestoreOutcome::Terminal => "terminal",
            RestoreOutcome::Cancelled => "cancelled",
            RestoreOutcome::Exists => "exists",
        }
    }
}

/// What `retry` did with one task (lua/retry.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Queued again, attempts reset, the run that ended kept in its history.
    Queued,
    Missing,
    /// The task changed between the read and the script: read it again.
    Conflict,
    /// Not dead or cancelled: only those are retried.
    WrongState(TaskState),
}

impl RetryOutcome {
    pub(crate) fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "queued" => Some(RetryOutcome::Queued),
            "missing" => Some(RetryOutcome::Missing),
            "conflict" => Some(RetryOutcome::Conflict),
            _ => wrong_state(w).map(RetryOutcome::WrongState),
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            RetryOutcome::Queued => "queued",
            RetryOutcome::Missing => "missing",
            RetryOutcome::Conflict => "conflict",
            RetryOutcome::WrongState(_) => "wrong-state",
        }
    }
}

/// What `discard` did with one task (lua/discard.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardOutcome {
    Discarded,
    Missing,
    /// Still live: only finished tasks are discarded.
    WrongState(TaskState),
}

impl DiscardOutcome {
    pub(crate) fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "discarded" => Some(DiscardOutcome::Discarded),
            "missing" => Some(DiscardOutcome::Missing),
            _ => wrong_state(w).map(DiscardOutcome::WrongState),
        })
    }
}

/// What `promote` or `reannounce` did with one task: announced on the
/// intake stream, or left as it was (the scripts name why: 'early',
/// 'conflict', 'gone', 'missing', 'state:<s>'; the leader only counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announced {
    Queued,
    LeftAlone,
}

impl Announced {
    pub(crate) fn parse(script: &'static str, w: &str) -> Result<Self> {
        word(script, w, |w| match w {
            "queued" => Some(Announced::Queued),
            "early" | "conflict" | "gone" | "missing" => Some(Announced::LeftAlone),
            _ => wrong_state(w).map(|_| Announced::LeftAlone),
        })
    }
}

/// A script's per-task statuses from a reply that lists only the tasks
/// whose status is not `usual`, as (1-based position, status word) pairs.
pub(crate) fn expand_positions<T: Clone>(
    script: &'static str,
    tasks: usize,
    usual: T,
    reply: &[String],
    parse: impl Fn(&'static str, &str) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statuses = vec![usual; tasks];
    for pair in reply.chunks(2) {
        let slot = match pair {
            [position, _] => position
                .parse::<usize>()
                .ok()
                .and_then(|p| p.checked_sub(1))
                .and_then(|p| statuses.get_mut(p)),
            _ => None,
        };
        let slot = slot.ok_or_else(|| StoreError::Reply {
            script,
            detail: format!("a status at an unknown position: {pair:?}"),
        })?;
        *slot = parse(script, &pair[1])?;
    }
    Ok(statuses)
}

/// A script's reply of (id, status word) pairs, one per task, parsed.
pub(crate) fn id_pairs<T>(
    script: &'static str,
    reply: &[String],
    parse: impl Fn(&'static str, &str) -> Result<T>,
) -> Result<Vec<(String, T)>> {
    reply
        .chunks(2)
        .map(|pair| match pair {
            [id, w] => Ok((id.clone(), parse(script, w)?)),
            _ => Err(StoreError::Reply {
                script,
                detail: format!("an id without a status: {pair:?}"),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listed_statuses_land_in_their_places() {
        let got = expand_positions(
            "complete",
            4,
            FinishedState::Succeeded,
            &strings(&["2", "dead", "4", "stale"]),
            FinishedState::parse,
        )
        .unwrap();
        use FinishedState::*;
        assert_eq!(got, vec![Succeeded, Dead, Succeeded, Stale]);
        let none = expand_positions("complete", 2, Succeeded, &[], FinishedState::parse).unwrap();
        assert_eq!(none, vec![Succeeded, Succeeded]);
    }

    #[test]
    fn a_reply_naming_no_task_of_the_call_is_an_error() {
        for bad in [&["0", "dead"][..], &["3", "dead"], &["x", "dead"], &["1"]] {
            let err = expand_positions(
                "complete",
                2,
                FinishedState::Succeeded,
                &strings(bad),
                FinishedState::parse,
            )
            .unwrap_err();
            assert!(err.to_string().contains("unknown position"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn an_assign_reply_names_what_was_taken_and_why_backlogs_stopped() {
        let got = Assigned::parse(
            "assign",
            &strings(&["3", "room", "a,b,c", "2", "rate:250", "1", "paused"]),
            2,
        )
        .unwrap();
        assert_eq!((got.taken, got.ids.join(" ")), (3, "a b c".to_string()));
        assert_eq!(got.worker, WorkerRoom::Room);
        assert_eq!(
            got.stopped,
            vec![
                (1, BacklogStop::Rate(std::time::Duration::from_millis(250))),
                (0, BacklogStop::Paused)
            ]
        );
        for bad in [
            &["1"][..],
            &["x", "room"],
            &["1", "roomy"],
            &["0", "full", "3", "empty"],
            &["0", "full", "1", "odd"],
        ] {
            assert!(Assigned::parse("assign", &strings(bad), 2).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_unknown_word_is_an_error_naming_it() {
        let err = expand_positions(
            "complete",
            1,
            FinishedState::Succeeded,
            &strings(&["1", "exploded"]),
            FinishedState::parse,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"exploded\""), "{err}");
        assert!(BacklogStop::parse("assign", "rate:soon").is_err());
        assert!(ReapOutcome::parse("reap", "").is_err());
    }

    #[test]
    fn words_parse_to_their_variants_and_labels_are_stable() {
        assert_eq!(Refusal::WrongState(TaskState::Succeeded).to_string(), "state:succeeded");
        assert_eq!(Refusal::LeaseEnded.to_string(), "lease-ended");
        for w in ["succeeded", "scheduled", "dead", "cancelled", "queued", "stale"] {
            assert_eq!(FinishedState::parse("complete", w).unwrap().label(), w);
        }
        assert_eq!(
            RetryOutcome::parse("retry", "state:running").unwrap(),
            RetryOutcome::WrongState(TaskState::Running)
        );
        for w in ["queued", "missing", "conflict"] {
            assert_eq!(RetryOutcome::parse("retry", w).unwrap().label(), w);
        }
        assert_eq!(
            DiscardOutcome::parse("discard", "state:queued").unwrap(),
            DiscardOutcome::WrongState(TaskState::Queued)
        );
        assert!(DiscardOutcome::parse("discard", "gone").is_err());
        for w in ["queued", "scheduled", "dead", "cancelled", "renewed", "conflict"] {
            assert_eq!(ReapOutcome::parse("reap", w).unwrap().label(), w);
        }
        for w in ["ok", "cancel", "lost"] {
            assert_eq!(RenewStatus::parse("renew", w).unwrap().label(), w);
        }
        for w in ["queued", "scheduled", "terminal", "cancelled", "exists"] {
            assert_eq!(RestoreOutcome::parse("restore", w).unwrap().label(), w);
        }
        assert_eq!(
            Announced::parse("requeue", "state:running").unwrap(),
            Announced::LeftAlone
        );
    }
}
