//! The rights each role gets: which scripts it runs, the keyless commands
//! it may send, and which commands it may send on which keys. The values
//! here are data; `rules.rs` renders them as ACL rules. The unit tests read
//! every script in `lua/` (and the prelude helpers it calls) and check that
//! the role running it is granted each command it calls, so a script that
//! gains a command cannot ship without its grant.

/// The roles that talk to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Coordinator,
    Distributor,
    Worker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Coordinator, Role::Distributor, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Distributor => "distributor",
            Role::Worker => "worker",
        }
    }

    /// The scripts (files in `lua/`) this role runs. `restore.lua` is run by
    /// `drover snapshot import`, which uses the coordinator's user.
    pub fn scripts(self) -> &'static [&'static str] {
        match self {
            Role::Coordinator => &[
                "submit.lua",
                "cancel.lua",
                "reap.lua",
                "expire.lua",
                "promote.lua",
                "requeue.lua",
                "control.lua",
                "leader.lua",
                "forget_workers.lua",
                "restore.lua",
                "page.lua",
                "retry.lua",
                "discard.lua",
                "purge.lua",
            ],
            Role::Distributor => &["assign.lua"],
            Role::Worker => &["heartbeat.lua", "renew.lua", "complete.lua", "trim.lua"],
        }
    }
}

/// Commands without keys every role sends, after `-@all`.
///
/// `+@connection -@admin -@dangerous` keeps PING, AUTH, HELLO, ECHO and the
/// harmless CLIENT subcommands, among them `CLIENT SETINFO`, which redis-rs
/// sends on each new connection (Redis 7.2 and later; Redis 7.0 has no such
/// subcommand, and naming it would make `ACL SETUSER` fail there). `PING` is
/// the health check. `TIME` is the clock sync and `now_ms` in every script. redis-rs runs a script with
/// `EVALSHA` and, when Redis answers NOSCRIPT, `SCRIPT LOAD` and again
/// `EVALSHA`; it never sends `EVAL`.
pub(super) const ROOT_COMMANDS: &[&str] = &[
    "-@all",
    "+@connection",
    "-@admin",
    "-@dangerous",
    "-select",
    "+time",
    "+script|load",
    "+evalsha",
];

/// How a selector may touch its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `%R~`: the selector's commands only read.
    Read,
    /// `~`: read and write.
    ReadWrite,
}

/// Some commands on some keys. Keys are written after the prefix
/// (`{namespace:0}:`); `{w}` stands for the worker id, or `*` for a user
/// that any worker (or every worker) uses.
pub(super) struct Grant {
    pub(super) access: Access,
    pub(super) keys: &'static [&'static str],
    pub(super) commands: &'static [&'static str],
}

const fn rw(keys: &'static [&'static str], commands: &'static [&'static str]) -> Grant {
    Grant {
        access: Access::ReadWrite,
        keys,
        commands,
    }
}

const fn ro(keys: &'static [&'static str], commands: &'static [&'static str]) -> Grant {
    Grant {
        access: Access::Read,
        keys,
        commands,
    }
}

/// What one role may do.
pub(super) struct Profile {
    /// Keyless commands beyond `ROOT_COMMANDS`.
    pub(super) extra_root: &'static [&'static str],
    /// Every key the role's scripts take in `KEYS`: `EVALSHA` needs read and
    /// write access to each of them.
    pub(super) script_keys: &'static [&'static str],
    pub(super) grants: &'static [Grant],
}

/// The coordinator: the API (submit, cancel, reads), the events reader,
/// and as leader the reaper, the scheduler, the janitor and the reconciler.
/// Also enough for `drover snapshot export|import`.
const COORDINATOR: Profile = Profile {
    // INFO: `Store::memory` (INFO memory, the API's maxmemory check).
    // SCAN: task listing, the reconciler and snapshots (SCAN MATCH t:*).
    extra_root: &["+info", "+scan"],
    script_keys: &[
        "scheduled",
        "counts",
        "wake",
        "leases",
        "expiring",
        "events",
        "leader",
        "workers",
        "handlers",
        "queues",
        "q:*",
        "done",
    ],
    grants: &[
        // submit, cancel, reap, promote, requeue, restore, retry, and
        // the reads of the API, `cancel`, the reaper, the scheduler and the
        // reconciler; expire.lua, discard.lua and purge.lua delete finished
        // tasks (UNLINK), expire.lua checks a legacy entry's state (HGET).
        rw(
            &["t:*"],
            &["+hmget", "+hget", "+hgetall", "+hset", "+hdel", "+exists", "+unlink"],
        ),
        // The lists of finished tasks that builds before the queue indexes
        // filed to expire, emptied by expire.lua.
        rw(&["expiring"], &["+zrangebyscore", "+zrem"]),
        rw(&["expiring:*"], &["+lpop", "+exists"]),
        // Succeeded tasks filed to expire when they are not indexed: by
        // restore, and emptied by expire.lua.
        rw(&["done"], &["+zadd", "+zrangebyscore", "+zrem"]),
        rw(&["done:*"], &["+rpush", "+lpop", "+exists"]),
        // The queue names (submit adds, the API and expire.lua read).
        rw(&["queues"], &["+sadd", "+smembers", "+sismember"]),
        // The queues' indexes of finished tasks: filed by cancel, reap and
        // restore, paged by page.lua, counted by the API, left by retry
        // and discard, cut from the low end by expire and purge. Their
        // backlogs: the ready lists and levels that submit, reap, promote,
        // requeue, retry and restore queue tasks into (RPUSH, ZADD), and
        // the meta hash of counts, flags and limits (HINCRBY; HGET by
        // submit for `draining`; HMGET, HSET, HDEL by control.lua and the
        // API), and the heads of the lists (LINDEX: the oldest queued age).
        rw(
            &["q:*"],
            &[
                "+rpush",
                "+llen",
                "+lindex",
                "+hincrby",
                "+hget",
                "+hmget",
                "+hgetall",
                "+hset",
                "+hdel",
                "+zadd",
                "+zrem",
                "+zrange",
                "+zrangebyscore",
                "+zremrangebyrank",
                "+zrank",
                "+zcount",
                "+zcard",
            ],
        ),
        // Batch records: the reaper reads and ends them (HMGET, DEL), the API
        // and cancel read a running task's worker (HGET).
        rw(&["b:*"], &["+hmget", "+hget", "+del"]),
        rw(&["idem:*"], &["+get", "+set"]),
        // Unique keys: submit takes them, restore takes them back, and a
        // finish (cancel, reap) lets them go.
        rw(&["uniq:*"], &["+get", "+set", "+del", "+pexpireat"]),
        // The backlogs that may hold ready tasks, and what each one is:
        // added to when a script queues into an empty list.
        rw(&["active"], &["+sadd", "+smembers"]),
        rw(&["backlogs"], &["+hsetnx", "+hmget", "+hgetall"]),
        // Woken distributors: one entry per call that queued tasks, and per
        // control.lua change.
        rw(&["wake"], &["+xadd"]),
        // The intake stream of a build before the ready lists, deleted once
        // the reconciler moved its tasks (`Store::retire_intake`).
        rw(&["intake"], &["+unlink"]),
        // The janitor trims events older than limits.events_retention.
        rw(&["events"], &["+xadd", "+xread", "+xrevrange", "+xtrim"]),
        rw(&["leases"], &["+zrem", "+zscore", "+zrangebyscore"]),
        rw(&["scheduled"], &["+zadd", "+zrem", "+zscore", "+zrangebyscore"]),
        rw(&["counts"], &["+hincrby", "+hgetall"]),
        rw(&["workers"], &["+zrangebyscore", "+zrem"]),
        rw(&["handlers"], &["+hgetall", "+hdel"]),
        rw(&["leader"], &["+get", "+set", "+del", "+pexpire"]),
        // Worker hashes and streams: `Store::workers` (HGETALL), cancel
        // (EXISTS, XADD to the worker's stream), release_slots in reap
        // (EXISTS, HINCRBY, HSET), forget_workers (DEL); reap asks a
        // worker's stream whether an assignment was ever acknowledged
        // (XINFO GROUPS, XPENDING).
        rw(
            &["w:*"],
            &[
                "+exists",
                "+hincrby",
                "+hset",
                "+hgetall",
                "+xadd",
                "+del",
                "+xinfo|groups",
                "+xpending",
            ],
        ),
    ],
};

/// The distributor: takes tasks from the backlogs (assign.lua) and places
/// them on workers, woken by the wake and events streams.
const DISTRIBUTOR: Profile = Profile {
    // INFO: assign.lua takes the lease and reads the run_id (INFO server)
    // to know the epoch.
    extra_root: &["+info"],
    script_keys: &["w:{w}", "w:{w}:in", "leases", "counts", "epoch", "batches"],
    grants: &[
        // assign.lua reads each task it pops and marks it running.
        rw(&["t:*"], &["+hmget", "+hset"]),
        // assign.lua numbers the batch and writes its lease record.
        rw(&["batches"], &["+incr"]),
        rw(&["b:*"], &["+hset"]),
        // assign.lua: a queue's flags, limits and token bucket, and its
        // queued and running counts (meta); the top level of a backlog
        // (levels), its ids (ready). The distributor counts a backlog's
        // ready tasks for the unplaceable gauge (LLEN).
        rw(
            &["q:*"],
            &[
                "+hmget",
                "+hset",
                "+hincrby",
                "+zrevrange",
                "+zrange",
                "+zrem",
                "+lpop",
                "+llen",
            ],
        ),
        // Which backlogs may hold tasks (assign.lua drops an empty one),
        // and what each one is.
        rw(&["active"], &["+smembers", "+srem"]),
        ro(&["backlogs"], &["+hmget", "+hgetall"]),
        // The queue names, for the bounded queue label of its metrics.
        ro(&["queues"], &["+smembers"]),
        // assign.lua reads cap/used/draining and spends credit (`used`);
        // `Store::workers` reads the whole hash.
        rw(&["w:{w}"], &["+hmget", "+hgetall", "+hincrby"]),
        rw(&["w:{w}:in"], &["+xadd"]),
        rw(&["leases"], &["+zadd"]),
        rw(&["counts"], &["+hincrby"]),
        rw(&["epoch"], &["+hmget", "+hset"]),
        ro(&["workers"], &["+zrangebyscore"]),
        // Woken by queued tasks and by the events of ended attempts
        // (roles/wakes.rs).
        ro(&["wake", "events"], &["+xread", "+xrevrange"]),
    ],
};

/// The worker: heartbeats, reads its own stream as group `worker`, accepts,
/// renews and completes tasks.
const WORKER: Profile = Profile {
    extra_root: &[],
    script_keys: &[
        "w:{w}",
        "w:{w}:in",
        "workers",
        "handlers",
        "leases",
        "counts",
        "scheduled",
        "events",
    ],
    grants: &[
        // claim (HGETALL, no script), renew, complete (finish,
        // settle_failure, announce).
        rw(&["t:*"], &["+hmget", "+hgetall", "+hset"]),
        // complete files the tasks it finished in their queue's index and
        // lets their unique keys go; a task handed back or retried at once
        // goes into its ready list (RPUSH, and ZADD of its level), and the
        // queue's counts move (HINCRBY).
        rw(&["q:*"], &["+zadd", "+rpush", "+hincrby"]),
        rw(&["active"], &["+sadd"]),
        rw(&["backlogs"], &["+hsetnx"]),
        rw(&["uniq:*"], &["+get", "+del", "+pexpireat"]),
        // ... or, for succeeded tasks not indexed, in the expiry lists.
        rw(&["done"], &["+zadd"]),
        rw(&["done:*"], &["+rpush"]),
        // Batch records: claim reads its batch's (HMGET), renew and
        // complete check theirs (HGET), and complete retires it (HINCRBY,
        // DEL). Tokens are not per worker, so neither is this pattern.
        rw(&["b:*"], &["+hmget", "+hget", "+hincrby", "+del"]),
        // heartbeat writes its hash; complete gives slots back.
        rw(&["w:{w}"], &["+hset", "+hsetnx", "+hincrby", "+exists"]),
        // Its group, reads and acks, trim.lua.
        rw(
            &["w:{w}:in"],
            &[
                "+xgroup|create",
                "+xreadgroup",
                "+xack",
                "+exists",
                "+xinfo|groups",
                "+xpending",
                "+xtrim",
            ],
        ),
        rw(&["workers"], &["+zadd"]),
        rw(&["handlers"], &["+hset"]),
        // renew moves its batches' deadlines; complete retires them.
        rw(&["leases"], &["+zadd", "+zrem"]),
        rw(&["scheduled"], &["+zadd"]),
        rw(&["counts"], &["+hincrby"]),
        // complete: the events envelope, and a wake for tasks queued again.
        rw(&["events", "wake"], &["+xadd"]),
    ],
};

pub(super) fn profile(role: Role) -> &'static Profile {
    match role {
        Role::Coordinator => &COORDINATOR,
        Role::Distributor => &DISTRIBUTOR,
        Role::Worker => &WORKER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};
    use std::path::Path;

    fn lua(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `redis.call('CMD', 'SUB'…)` in Lua source, lowercased, as ACL names
    /// them (`xinfo|groups` for container commands).
    fn calls(src: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for part in src.split("redis.call(").skip(1) {
            let mut quoted = part.split('\'').skip(1).step_by(2);
            let Some(cmd) = quoted.next() else { continue };
            let cmd = cmd.to_ascii_lowercase();
            if ["xinfo", "xgroup", "script", "client", "config", "object"].contains(&cmd.as_str()) {
                let sub = quoted.next().unwrap_or_default().to_ascii_lowercase();
                out.insert(format!("{cmd}|{sub}"));
            } else {
                out.insert(cmd);
            }
        }
        out
    }

    /// The prelude's helpers: name → (commands, helpers it calls).
    fn helpers() -> HashMap<String, (BTreeSet<String>, Vec<String>)> {
        let prelude = lua("prelude.lua");
        let mut bodies: Vec<(String, String)> = Vec::new();
        for line in prelude.lines() {
            if let Some(rest) = line.strip_prefix("local function ") {
                let name = rest.split('(').next().unwrap().trim().to_string();
                bodies.push((name, String::new()));
            } else if let Some((_, body)) = bodies.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        let names: Vec<String> = bodies.iter().map(|(n, _)| n.clone()).collect();
        bodies
            .into_iter()
            .map(|(name, body)| {
                let uses = names
                    .iter()
                    .filter(|n| **n != name && body.contains(&format!("{n}(")))
                    .cloned()
                    .collect();
                (name, (calls(&body), uses))
            })
            .collect()
    }

    /// Every command a script runs, its prelude helpers included.
    fn script_commands(name: &str) -> BTreeSet<String> {
        let src = lua(name);
        let helpers = helpers();
        let mut out = calls(&src);
        let mut todo: Vec<String> = helpers
            .keys()
            .filter(|h| src.contains(&format!("{h}(")))
            .cloned()
            .collect();
        let mut seen = BTreeSet::new();
        while let Some(h) = todo.pop() {
            if !seen.insert(h.clone()) {
                continue;
            }
            let (cmds, uses) = &helpers[&h];
            out.extend(cmds.iter().cloned());
            todo.extend(uses.iter().cloned());
        }
        out
    }

    fn granted(role: Role) -> BTreeSet<String> {
        let p = profile(role);
        ROOT_COMMANDS
            .iter()
            .chain(p.extra_root)
            .chain(p.grants.iter().flat_map(|g| g.commands))
            .filter_map(|c| c.strip_prefix('+'))
            .map(String::from)
            .collect()
    }

    #[test]
    fn every_command_of_every_script_a_role_runs_is_granted_to_it() {
        for role in Role::ALL {
            let have = granted(role);
            for script in role.scripts() {
                let missing: Vec<String> = script_commands(script)
                    .into_iter()
                    .filter(|c| !have.contains(c))
                    .collect();
                assert!(
                    missing.is_empty(),
                    "{} runs {script}, which calls {missing:?}: grant them in src/acl/rights.rs",
                    role.as_str()
                );
            }
        }
    }

    #[test]
    fn every_script_has_a_role() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.ends_with(".lua") || name == "prelude.lua" {
                continue;
            }
            assert!(
                Role::ALL.iter().any(|r| r.scripts().contains(&name.as_str())),
                "lua/{name} is run by no role in src/acl/rights.rs: add it to Role::scripts and grant its commands"
            );
        }
    }

    #[test]
    fn the_parser_sees_helpers_and_subcommands() {
        let assign = script_commands("assign.lua");
        for c in ["time", "info", "hset", "zadd", "lpop", "incr"] {
            assert!(assign.contains(c), "{c} in {assign:?}");
        }
        let trim = script_commands("trim.lua");
        assert!(trim.contains("xinfo|groups"), "{trim:?}");
        // complete → file_finished → ZADD; announce → XADD
        let complete = script_commands("complete.lua");
        assert!(complete.contains("xadd") && complete.contains("zadd"), "{complete:?}");
    }

    #[test]
    fn no_role_gets_admin_or_keyspace_wide_commands() {
        for role in Role::ALL {
            let have = granted(role);
            for bad in [
                "flushall",
                "flushdb",
                "config",
                "keys",
                "debug",
                "shutdown",
                "acl",
                "module",
                "eval",
                "@all",
                "@dangerous",
                "@admin",
                "script|flush",
                "select",
                "monitor",
            ] {
                assert!(!have.contains(bad), "{} has +{bad}", role.as_str());
            }
        }
    }
}
