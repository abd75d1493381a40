//! Redis time as seen from this process. Leases and deadlines are judged
//! inside scripts with Redis `TIME`; envelope expiry is judged here, so
//! every role keeps the offset between its own clock and Redis' and uses
//! Redis time for signing and verifying. A role whose clock is off by
//! minutes still agrees with the others.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Clock {
    /// Redis time now, in unix ms.
    pub fn now_ms(&self) -> u64 {
        (local_ms() + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Reads Redis `TIME`, assuming the reply was taken half-way through
    /// the round trip.
    pub async fn sync<C: redis::aio::ConnectionLike>(&self, con: &mut C) -> redis::RedisResult<()> {
        let before = Instant::now();
        let local_before = local_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(con).await?;
        let rtt = before.elapsed().as_millis() as i64;
        let redis_ms = secs * 1000 + micros / 1000;
        self.offset_ms
            .store(redis_ms - (local_before + rtt / 2), Ordering::Relaxed);
        Ok(())
    }
}
