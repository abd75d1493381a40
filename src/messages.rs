//! Bodies of the signed stream messages (docs/ARCHITECTURE.md, "Batch
//! leases and fencing"). The envelope module
//! signs and verifies bytes; this module says what those bytes mean. Every
//! message names the task version it was issued for, so a replayed or
//! stale message is refused where it arrives: by the script it reaches, or,
//! for an assignment, by the worker's claim (which also checks that the
//! batch record's `ent` is the very entry it read).

use serde::{Deserialize, Serialize};

/// Message types; each is accepted only on the stream it belongs to.
pub const SUBMIT: &str = "submit";
pub const ASSIGN: &str = "assign";
pub const CANCEL: &str = "cancel";
pub const EVENT: &str = "event";

/// One task announced on the intake stream: what the distributor needs to
/// place it without reading the task record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakeTask {
    pub id: String,
    /// The version the task has while queued. Read as 1 when missing; the
    /// per-task form still writes it always, for distributors older than
    /// that rule (the grouped form of [`IntakeBody`] leaves out 1).
    #[serde(default = "first_version")]
    pub v: u64,
    pub h: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prio: i32,
}

fn is_zero(p: &i32) -> bool {
    *p == 0
}

fn first_version() -> u64 {
    1
}

/// The tasks of one intake entry, in order. On the wire, runs of
/// consecutive tasks that share version, handler, tags and priority are
/// written as one group naming only their ids: `{"groups":[{"h":"noop",
/// "ids":[...]}]}`, so a queued task costs the stream its id and little
/// else (memory per queued task, BENCHMARKS.md). Both that form and the
/// per-task form (`{"tasks":[...]}`) are read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IntakeBody {
    pub tasks: Vec<IntakeTask>,
}

/// The per-task form of an intake body, for writers that may run beside
/// distributors older than the grouped form: workers, which a rolling
/// upgrade updates first (DEPLOYMENT.md). Coordinators, updated last,
/// write the grouped form.
#[derive(Debug, Serialize)]
pub struct PerTaskIntakeBody<'a> {
    pub tasks: &'a [IntakeTask],
}

/// A run of tasks as written: everything they share, then their ids.
#[derive(Serialize)]
struct IntakeGroupOut<'a> {
    #[serde(skip_serializing_if = "is_first_version")]
    v: u64,
    h: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    prio: i32,
    ids: Vec<&'a str>,
}

#[derive(Deserialize)]
struct IntakeGroupIn {
    #[serde(default = "first_version")]
    v: u64,
    h: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    prio: i32,
    ids: Vec<String>,
}

fn is_first_version(v: &u64) -> bool {
    *v == 1
}

impl Serialize for IntakeBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            groups: Vec<IntakeGroupOut<'a>>,
        }
        let mut groups: Vec<IntakeGroupOut> = Vec::new();
        for t in &self.tasks {
            match groups.last_mut() {
                Some(g) if g.v == t.v && g.h == t.h && g.tags == t.tags.as_slice() && g.prio == t.prio => {
                    g.ids.push(&t.id)
                }
                _ => groups.push(IntakeGroupOut {
                    v: t.v,
                    h: &t.h,
                    tags: &t.tags,
                    prio: t.prio,
                    ids: vec![&t.id],
                }),
            }
        }
        Wire { groups }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IntakeBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            tasks: Vec<IntakeTask>,
            #[serde(default)]
            groups: Vec<IntakeGroupIn>,
        }
        let Wire { mut tasks, groups } = Wire::deserialize(deserializer)?;
        for g in groups {
            tasks.extend(g.ids.into_iter().map(|id| IntakeTask {
                id,
                v: g.v,
                h: g.h.clone(),
                tags: g.tags.clone(),
                prio: g.prio,
            }));
        }
        Ok(IntakeBody { tasks })
    }
}

/// A task placed on a worker, with the version it has once assigned
/// (`running`, leased to that worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub id: String,
    pub v: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignBody {
    pub tasks: Vec<Assignment>,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_tasks_leave_out_default_tags_and_priority_and_read_them_back() {
        let fresh = IntakeTask {
            id: "a".into(),
            v: 1,
            h: "noop".into(),
            tags: vec![],
            prio: 0,
        };
        let json = serde_json::to_string(&fresh).unwrap();
        assert_eq!(json, r#"{"id":"a","v":1,"h":"noop"}"#);
        assert_eq!(serde_json::from_str::<IntakeTask>(&json).unwrap(), fresh);
        let without_version = r#"{"id":"a","h":"noop"}"#;
        assert_eq!(serde_json::from_str::<IntakeTask>(without_version).unwrap(), fresh);
        let moved = IntakeTask {
            v: 3,
            tags: vec!["gpu".into()],
            prio: -2,
            ..fresh
        };
        let json = serde_json::to_string(&moved).unwrap();
        assert_eq!(json, r#"{"id":"a","v":3,"h":"noop","tags":["gpu"],"prio":-2}"#);
        assert_eq!(serde_json::from_str::<IntakeTask>(&json).unwrap(), moved);
    }

    #[test]
    fn intake_bodies_group_runs_of_alike_tasks_and_read_both_forms() {
        let task = |id: &str, v: u64, h: &str, prio: i32| IntakeTask {
            id: id.into(),
            v,
            h: h.into(),
            tags: vec![],
            prio,
        };
        let body = IntakeBody {
            tasks: vec![
                task("a", 1, "noop", 0),
                task("b", 1, "noop", 0),
                task("c", 1, "echo", 0),
                task("d", 4, "noop", 2),
                task("e", 1, "noop", 0),
            ],
        };
        let json = serde_json::to_string(&body).unwrap();
        // Order is kept: a run ends where a task differs, even if a later
        // task matches an earlier run.
        assert_eq!(
            json,
            r#"{"groups":[{"h":"noop","ids":["a","b"]},{"h":"echo","ids":["c"]},{"v":4,"h":"noop","prio":2,"ids":["d"]},{"h":"noop","ids":["e"]}]}"#
        );
        assert_eq!(serde_json::from_str::<IntakeBody>(&json).unwrap(), body);
        // The per-task form, as workers write it and older releases did.
        let per_task = serde_json::to_string(&PerTaskIntakeBody { tasks: &body.tasks }).unwrap();
        assert!(
            per_task.starts_with(r#"{"tasks":[{"id":"a","v":1,"h":"noop"}"#),
            "{per_task}"
        );
        assert_eq!(serde_json::from_str::<IntakeBody>(&per_task).unwrap(), body);
        assert_eq!(serde_json::from_str::<IntakeBody>("{}").unwrap(), IntakeBody::default());
        assert!(serde_json::from_str::<IntakeBody>(r#"{"groups":[{"ids":["a"]}]}"#).is_err());
    }
}
