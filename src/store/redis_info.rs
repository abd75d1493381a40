//! What Redis says of itself: its memory, and settings that lose tasks or
//! cost memory.

use super::{Result, Store};

/// What drover sets Redis' `hash-max-listpack-value` to (deploy/redis/
/// redis.conf, and the Redis it starts itself): a task whose input and
/// result are at most this many bytes stays a compact listpack, about 400
/// bytes smaller than the hash table Redis makes past the limit (64 bytes
/// by default; BENCHMARKS.md, "Task hashes").
pub const TASK_HASH_LISTPACK_VALUE: u64 = 2048;

impl Store {
    /// Warnings about Redis settings that lose tasks or cost memory, one
    /// line each, for the leader to log:
    /// - a `maxmemory-policy` other than `noeviction`: a full Redis then
    ///   deletes keys, and an evicted task is a lost task. Read from `INFO
    ///   memory`, which every coordinator may run.
    /// - a `hash-max-listpack-value` below [`TASK_HASH_LISTPACK_VALUE`]:
    ///   tasks with larger inputs or results take about 400 bytes more.
    ///   Read with `CONFIG GET`, and only as Redis' default user: drover's
    ///   ACL users get no `CONFIG`, and a refused command would show as a
    ///   denial in `ACL LOG`, which operators watch.
    pub async fn redis_advice(&self) -> Vec<String> {
        let mut advice = Vec::new();
        let Ok(mut con) = self.con().await else {
            return advice;
        };
        let memory: Option<String> = redis::cmd("INFO").arg("memory").query_async(&mut con).await.ok();
        let policy = memory.as_deref().and_then(|info| info_field(info, "maxmemory_policy"));
        if let Some(policy) = policy.filter(|p| *p != "noeviction") {
            advice.push(format!(
                "Redis has maxmemory-policy {policy}: when full it deletes keys, and an evicted task is a lost task; \
                 set noeviction (docs/DEPLOYMENT.md, Production Redis)"
            ));
        }
        let info = redis::IntoConnectionInfo::into_connection_info(self.opts.redis_url.as_str());
        let default_user = info.is_ok_and(|i| i.redis_settings().username().is_none_or(|u| u == "default"));
        if !default_user {
            return advice;
        }
        let reply: Option<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("hash-max-listpack-value")
            .query_async(&mut con)
            .await
            .ok();
        let limit = reply.and_then(|kv| kv.get(1).and_then(|v| v.parse::<u64>().ok()));
        if let Some(limit) = limit.filter(|l| *l < TASK_HASH_LISTPACK_VALUE) {
            advice.push(format!(
                "Redis has hash-max-listpack-value {limit}: each task with an input or result over {limit} bytes \
                 takes about 400 bytes more memory; set it to {TASK_HASH_LISTPACK_VALUE} (docs/DEPLOYMENT.md, Production Redis)"
            ));
        }
        advice
    }

    /// Redis `used_memory` and `maxmemory` (0 when unlimited), in bytes.
    pub async fn memory(&self) -> Result<(u64, u64)> {
        let mut con = self.con().await?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await?;
        let field = |name| info_field(&info, name).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((field("used_memory"), field("maxmemory")))
    }
}

/// The value of `name` in an `INFO` reply (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_their_whole_name() {
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "maxmemory_policy"), Some("noeviction"));
        assert_eq!(info_field(info, "maxmemory"), None);
    }
}
