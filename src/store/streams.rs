//! Streams: consumer groups, reads, claims of idle entries, acks and trims.
//! The bytes read are envelopes still to be verified ([`Store::open`]).

use super::{Entry, Result, Store};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use std::time::Duration;

/// Stream entries as XRANGE returns them: id, then field/value pairs.
type RawEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// A stream read's `BLOCK` argument in ms. `BLOCK 0` waits forever, so a
/// wait shorter than 1 ms is rounded up to 1, not down to 0.
pub(super) fn block_ms(wait: Duration) -> usize {
    (wait.as_millis() as usize).max(1)
}

/// Most events entries one read returns.
pub const EVENTS_READ_COUNT: usize = 1000;

impl Store {
    /// Creates a consumer group (and its stream) if missing.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<()> {
        let mut con = self.con().await?;
        let r: redis::RedisResult<()> = con.xgroup_create_mkstream(stream, group, "0").await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads entries for `consumer`: its own pending ones first when
    /// `pending` is set (after a restart), else new ones, blocking up to
    /// `block`. A missing group (Redis lost its data) is recreated.
    pub async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
        pending: bool,
    ) -> Result<Vec<Entry>> {
        let mut opts = StreamReadOptions::default().group(group, consumer).count(count);
        if let (Some(b), false) = (block, pending) {
            opts = opts.block(block_ms(b));
        }
        let id = if pending { "0" } else { ">" };
        let mut con = self.con().await?;
        let reply: redis::RedisResult<Option<StreamReadReply>> = con.xread_options(&[stream], &[id], &opts).await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                drop(con);
                self.ensure_group(stream, group).await?;
                return Ok(Vec::new());
            }
            r => r?,
        };
        Ok(Self::entries(reply))
    }

    /// Reads `consumer`'s own pending entries with ids after `after`
    /// (`"0"` for all), oldest first, without blocking. Walking them with
    /// the last id read reaches the end even when some stay pending (a
    /// worker leaves what it cannot verify unacknowledged for a while).
    pub async fn read_pending_after(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        after: &str,
    ) -> Result<Vec<Entry>> {
        let opts = StreamReadOptions::default().group(group, consumer).count(count);
        let mut con = self.con().await?;
        let reply: redis::RedisResult<Option<StreamReadReply>> = con.xread_options(&[stream], &[after], &opts).await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                drop(con);
                self.ensure_group(stream, group).await?;
                return Ok(Vec::new());
            }
            r => r?,
        };
        Ok(Self::entries(reply))
    }

    fn entries(reply: Option<StreamReadReply>) -> Vec<Entry> {
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for e in key.ids {
                let raw = match e.map.get("m") {
                    Some(Value::BulkString(b)) => b.clone(),
                    _ => Vec::new(), // verify() refuses it as malformed
                };
                let text = |field: &str| match e.map.get(field) {
                    Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                };
                let (batch, ids) = (text("b"), text("ids"));
                out.push(Entry {
                    id: e.id,
                    raw,
                    batch,
                    ids,
                });
            }
        }
        out
    }

    /// Takes over entries another consumer has left pending for `min_idle`
    /// (it died); returns them for processing.
    pub async fn claim_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let mut con = self.con().await?;
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut con)
            .await?;
        // Reply: [next-cursor, [[id, [field, value, ...]], ...], deleted-ids]
        let mut out = Vec::new();
        if let Value::Array(parts) = v {
            if let Some(Value::Array(items)) = parts.get(1) {
                for item in items {
                    if let Value::Array(pair) = item {
                        let id = match pair.first() {
                            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                            _ => continue,
                        };
                        let mut raw = Vec::new();
                        if let Some(Value::Array(fields)) = pair.get(1) {
                            for kv in fields.chunks(2) {
                                if let [Value::BulkString(k), Value::BulkString(val)] = kv {
                                    if k == b"m" {
                                        raw = val.clone();
                                    }
                                }
                            }
                        }
                        // Only intake entries are claimed here; they carry
                        // no batch token.
                        out.push(Entry {
                            id,
                            raw,
                            batch: None,
                            ids: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Resets the idle time of entries this consumer still holds, so others
    /// do not claim them while it waits for a worker.
    pub async fn touch(&self, stream: &str, group: &str, consumer: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut con = self.con().await?;
        let _: Value = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async(&mut con)
            .await?;
        Ok(())
    }

    pub async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut con = self.con().await?;
        let _: i64 = con.xack(stream, group, ids).await?;
        Ok(())
    }

    /// Drops acknowledged entries (see `lua/trim.lua`).
    pub async fn trim(&self, stream: &str, group: &str) -> Result<u64> {
        let mut inv = self.scripts.trim.prepare_invoke();
        inv.key(stream).arg(group);
        Ok(Self::int("trim", self.call_raw("trim", &inv).await?)?.max(0) as u64)
    }

    /// Drops events older than `retention` (by their stream ids, which are
    /// Redis times). `~` lets Redis drop whole nodes only: cheap, and never
    /// more than asked. Returns how many entries went.
    pub async fn trim_events(&self, retention: Duration) -> Result<u64> {
        let min_id = self.clock.now_ms().saturating_sub(retention.as_millis() as u64);
        let mut con = self.con().await?;
        let n: u64 = redis::cmd("XTRIM")
            .arg(self.keys.events())
            .arg("MINID")
            .arg("~")
            .arg(min_id)
            .query_async(&mut con)
            .await?;
        Ok(n)
    }

    /// Reads the events stream after `last_id` (no group: every coordinator
    /// reads everything), blocking up to `block`.
    pub async fn read_events(&self, last_id: &str, block: Duration) -> Result<Vec<Entry>> {
        let mut con = self.con().await?;
        let opts = StreamReadOptions::default()
            .count(EVENTS_READ_COUNT)
            .block(block_ms(block));
        let reply: Option<StreamReadReply> = con.xread_options(&[self.keys.events()], &[last_id], &opts).await?;
        Ok(Self::entries(reply))
    }

    /// Whether the events entry `id` is still in the stream. A reader that
    /// got a full read ([`EVENTS_READ_COUNT`]) after `id` may have been
    /// overtaken by trimming; only if `id` itself was trimmed can entries
    /// after it have been (the oldest go first).
    pub async fn event_still_there(&self, id: &str) -> Result<bool> {
        let mut con = self.con().await?;
        let v: RawEntries = redis::cmd("XREVRANGE")
            .arg(self.keys.events())
            .arg(id)
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut con)
            .await?;
        Ok(v.first().is_some_and(|e| e.0 == id))
    }

    /// The id of the newest events entry, to start reading after it.
    pub async fn last_event_id(&self) -> Result<String> {
        let mut con = self.con().await?;
        let v: RawEntries = redis::cmd("XREVRANGE")
            .arg(self.keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut con)
            .await?;
        Ok(v.into_iter().next().map(|e| e.0).unwrap_or_else(|| "0-0".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_under_a_millisecond_never_blocks_forever() {
        assert_eq!(block_ms(Duration::from_micros(250)), 1);
        assert_eq!(block_ms(Duration::ZERO), 1);
        assert_eq!(block_ms(Duration::from_millis(5)), 5);
    }
}
