//! The backlog as a distributor sees it (docs/QUEUES.md, "The backlog as
//! built"): which backlogs have ready tasks (`P active`), what each one is
//! (`P backlogs`: its queue, handler and required tags), and the streams
//! whose entries say it is worth looking again (`P wake`: tasks were
//! queued; `P events`: attempts ended, so slots and limits freed up).
//! Taking tasks from a backlog is `Store::assign` (leases.rs).

use super::decode::string_list;
use super::{Result, Store, WorkerView};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use std::time::Duration;

/// One backlog: the ready tasks of one queue and class (a handler and the
/// tags a worker must have), at every priority level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// `<queue> <class>`, as `P active` and assign.lua name it.
    pub name: String,
    pub queue: String,
    pub handler: String,
    pub tags: Vec<String>,
}

impl Backlog {
    /// Whether a worker offering `handlers` and `tags` can run its tasks.
    pub fn runs_on(&self, handlers: &[String], tags: &[String]) -> bool {
        handlers.contains(&self.handler) && self.tags.iter().all(|t| tags.contains(t))
    }

    /// Whether `w` takes its tasks: it runs them, and takes tasks from its
    /// queue (a worker that names no queue takes from every queue).
    pub fn taken_by(&self, w: &WorkerView) -> bool {
        self.runs_on(&w.handlers, &w.tags)
            && (w.queues.is_empty() || w.queues.iter().any(|q| q.queue.as_str() == self.queue))
    }

    /// A backlog from its name and its `P backlogs` value,
    /// `<handler> <tags JSON>`.
    fn parse(name: &str, class: &str) -> Option<Backlog> {
        let (queue, _) = name.split_once(' ')?;
        let (handler, tags) = class.split_once(' ')?;
        Some(Backlog {
            name: name.to_string(),
            queue: queue.to_string(),
            handler: handler.to_string(),
            tags: string_list(Some(&tags.to_string())),
        })
    }
}

/// A stream entry as XREVRANGE gives it: its id, then fields and values.
type RawEntry = (String, Vec<String>);

/// Where a reader of the wake-up streams is: the last entry seen of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeCursor {
    wake: String,
    events: String,
}

impl Store {
    /// The names of the backlogs that may hold ready tasks. A name stays
    /// until an assign call finds its backlog empty, so one may be empty.
    pub async fn active_backlogs(&self) -> Result<Vec<String>> {
        let mut con = self.con().await?;
        Ok(con.smembers(self.keys.active()).await?)
    }

    /// What each named backlog is; None for a name with no description (a
    /// forged or damaged entry: nothing is taken from it).
    pub async fn describe_backlogs(&self, names: &[String]) -> Result<Vec<Option<Backlog>>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con().await?;
        let classes: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.backlogs())
            .arg(names)
            .query_async(&mut con)
            .await?;
        Ok(names
            .iter()
            .zip(classes)
            .map(|(name, class)| Backlog::parse(name, class.as_deref()?))
            .collect())
    }

    /// How many ids a backlog's ready lists hold (over every level; a
    /// cancelled task's id counts until assign.lua drops it).
    pub async fn ready_count(&self, backlog: &Backlog) -> Result<u64> {
        let Some((_, class)) = backlog.name.split_once(' ') else {
            return Ok(0);
        };
        let mut con = self.con().await?;
        let levels: Vec<String> = con.zrange(self.keys.levels(&backlog.queue, class), 0, -1).await?;
        let mut pipe = redis::pipe();
        for level in &levels {
            pipe.cmd("LLEN").arg(self.keys.ready(&backlog.queue, class, level));
        }
        let lengths: Vec<u64> = pipe.query_async(&mut con).await?;
        Ok(lengths.iter().sum())
    }

    /// The newest entries of the wake-up streams: a reader starts after them.
    pub async fn wake_cursor(&self) -> Result<WakeCursor> {
        let mut con = self.con().await?;
        let newest = |stream: String| {
            redis::cmd("XREVRANGE")
                .arg(stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .clone()
        };
        let (wake, events): (Vec<RawEntry>, Vec<RawEntry>) = redis::pipe()
            .add_command(newest(self.keys.wake()))
            .add_command(newest(self.keys.events()))
            .query_async(&mut con)
            .await?;
        let id = |v: Vec<RawEntry>| v.into_iter().next().map_or_else(|| "0-0".to_string(), |e| e.0);
        Ok(WakeCursor {
            wake: id(wake),
            events: id(events),
        })
    }

    /// Blocks up to `block` for an entry after `cursor` on either wake-up
    /// stream; moves the cursor past what arrived and says whether anything
    /// did. Entries are hints only: nothing in them is read or trusted.
    pub async fn wait_for_wake(&self, cursor: &mut WakeCursor, block: Duration) -> Result<bool> {
        let mut con = self.con().await?;
        let opts = StreamReadOptions::default()
            .count(1000)
            .block(super::streams::block_ms(block));
        let reply: Option<StreamReadReply> = con
            .xread_options(
                &[self.keys.wake(), self.keys.events()],
                &[cursor.wake.as_str(), cursor.events.as_str()],
                &opts,
            )
            .await?;
        let mut woken = false;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(last) = key.ids.last() else { continue };
            woken = true;
            if key.key == self.keys.wake() {
                cursor.wake = last.id.clone();
            } else {
                cursor.events = last.id.clone();
            }
        }
        Ok(woken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_read_from_its_name_and_class() {
        let b = Backlog::parse("media 0a1b2c3d4e5f", r#"transcode ["gpu","eu"]"#).unwrap();
        assert_eq!(b.queue, "media");
        assert_eq!(b.handler, "transcode");
        assert_eq!(b.tags, ["gpu", "eu"]);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(b.runs_on(&s(&["transcode"]), &s(&["eu", "gpu", "x"])));
        assert!(!b.runs_on(&s(&["transcode"]), &s(&["gpu"])), "a tag missing");
        assert!(!b.runs_on(&s(&["noop"]), &s(&["eu", "gpu"])), "another handler");
        assert_eq!(Backlog::parse("no-space", "noop []"), None);
        assert_eq!(Backlog::parse("q c", "no-space"), None);
    }
}
