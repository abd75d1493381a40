//! `drover redis-acl`: one Redis ACL user per role, each allowed only the
//! commands that role sends and only on the keys it touches.
//!
//! Redis checks every command a Lua script runs against the ACL of the
//! client that called the script, keys included. So a role's user must allow
//! the commands of every script it runs, on the keys those scripts touch,
//! and `EVALSHA` itself needs read and write access to every key a script is
//! given in `KEYS`. The rules here come from `lua/README.md` (which script
//! touches which keys, and who calls it) and `src/store/mod.rs` (every
//! command each store method sends).
//!
//! Each user is built from Redis 7 selectors: the root rules allow only
//! commands without keys (connection commands, `TIME`, `SCRIPT LOAD`,
//! `EVALSHA`) plus, for `EVALSHA`, the keys the role's scripts declare; each
//! selector `(~keys +commands)` allows a few commands on a few keys. A
//! command passes if one selector allows both it and all of its keys, so a
//! command granted on one key is not granted on the others: the distributor
//! may `XACK` the intake stream but not a worker's stream, a worker may
//! `XTRIM` its own stream but not the intake stream, and no role may `DEL`
//! what it does not delete itself.
//!
//! Passwords are given as SHA-256 hashes (`#<hex>`), so neither the printed
//! commands nor an ACL file hold them in clear.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
                "reannounce.lua",
                "leader.lua",
                "forget_workers.lua",
                "restore.lua",
            ],
            Role::Distributor => &["assign.lua", "reannounce.lua", "trim.lua"],
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
const ROOT_COMMANDS: &[&str] = &[
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
enum Access {
    /// `%R~`: the selector's commands only read.
    Read,
    /// `~`: read and write.
    ReadWrite,
}

/// Some commands on some keys. Keys are written after the prefix
/// (`{namespace:0}:`); `{w}` stands for the worker id, or `*` for a user
/// that any worker (or every worker) uses.
struct Grant {
    access: Access,
    keys: &'static [&'static str],
    commands: &'static [&'static str],
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
struct Profile {
    /// Keyless commands beyond `ROOT_COMMANDS`.
    extra_root: &'static [&'static str],
    /// Every key the role's scripts take in `KEYS`: `EVALSHA` needs read and
    /// write access to each of them.
    script_keys: &'static [&'static str],
    grants: &'static [Grant],
}

/// The coordinator: the API (submit, cancel, reads), the events reader,
/// and as leader the reaper, the scheduler, the janitor and the reconciler.
/// Also enough for `drover snapshot export|import`.
const COORDINATOR: Profile = Profile {
    // INFO: `Store::memory` (INFO memory, the API's maxmemory check).
    // SCAN: task listing, the reconciler and snapshots (SCAN MATCH t:*).
    extra_root: &["+info", "+scan"],
    script_keys: &[
        "intake",
        "scheduled",
        "counts",
        "leases",
        "expiring",
        "events",
        "leader",
        "workers",
        "handlers",
    ],
    grants: &[
        // submit, cancel, reap, promote, reannounce, restore, and the reads
        // of the API, `cancel`, the reaper, the scheduler and the reconciler;
        // expire.lua deletes finished tasks (UNLINK).
        rw(&["t:*"], &["+hmget", "+hgetall", "+hset", "+exists", "+unlink"]),
        // Finished tasks filed to expire (cancel, reap, restore) and
        // deleted (expire.lua).
        rw(&["expiring"], &["+zadd", "+zrangebyscore", "+zrem"]),
        rw(&["expiring:*"], &["+rpush", "+lpop", "+exists"]),
        // Batch records: the reaper reads and ends them (HMGET, DEL), the API
        // and cancel read a running task's worker (HGET).
        rw(&["b:*"], &["+hmget", "+hget", "+del"]),
        rw(&["idem:*"], &["+get", "+set"]),
        // announce (submit, reap, promote, reannounce, restore); the
        // reconciler's XRANGE; the janitor's idle-consumer cleanup.
        rw(
            &["intake"],
            &["+xadd", "+xrange", "+xinfo|consumers", "+xgroup|delconsumer"],
        ),
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

/// The distributor: reads the intake stream as group `distributors` and
/// places tasks on workers.
const DISTRIBUTOR: Profile = Profile {
    // INFO: assign.lua takes the lease and reads the run_id (INFO server)
    // to know the epoch.
    extra_root: &["+info"],
    script_keys: &["w:{w}", "w:{w}:in", "leases", "counts", "epoch", "intake", "batches"],
    grants: &[
        // assign, reannounce (and announce's `ent`).
        rw(&["t:*"], &["+hmget", "+hset"]),
        // assign.lua numbers the batch and writes its lease record.
        rw(&["batches"], &["+incr"]),
        rw(&["b:*"], &["+hset"]),
        // The group, claims, acks (also in assign.lua), reannounce's XADD,
        // trim.lua.
        rw(
            &["intake"],
            &[
                "+xgroup|create",
                "+xreadgroup",
                "+xack",
                "+xclaim",
                "+xautoclaim",
                "+xadd",
                "+exists",
                "+xinfo|groups",
                "+xpending",
                "+xtrim",
            ],
        ),
        // assign.lua reads cap/used/draining and spends credit (`used`);
        // `Store::workers` reads the whole hash.
        rw(&["w:{w}"], &["+hmget", "+hgetall", "+hincrby"]),
        rw(&["w:{w}:in"], &["+xadd"]),
        rw(&["leases"], &["+zadd"]),
        rw(&["counts"], &["+hincrby"]),
        rw(&["epoch"], &["+hmget", "+hset"]),
        ro(&["workers"], &["+zrangebyscore"]),
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
        "intake",
    ],
    grants: &[
        // claim (HGETALL, no script), renew, complete (finish,
        // settle_failure, announce).
        rw(&["t:*"], &["+hmget", "+hgetall", "+hset"]),
        // complete files the tasks it finished to expire.
        rw(&["expiring"], &["+zadd"]),
        rw(&["expiring:*"], &["+rpush"]),
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
        // complete: the events envelope, and tasks handed back on intake.
        rw(&["events", "intake"], &["+xadd"]),
    ],
};

fn profile(role: Role) -> &'static Profile {
    match role {
        Role::Coordinator => &COORDINATOR,
        Role::Distributor => &DISTRIBUTOR,
        Role::Worker => &WORKER,
    }
}

/// Namespaces and worker ids are what the configuration accepts; neither
/// may hold a glob character, so they go into key patterns as they are.
fn check_name(what: &str, s: &str, max: usize) -> anyhow::Result<()> {
    if s.is_empty() || s.len() > max || !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        anyhow::bail!("{what}: {s:?} must be 1-{max} characters of A-Z a-z 0-9 - _ .");
    }
    Ok(())
}

/// The key prefix of a namespace, as `store::keys::Keys` builds it.
fn prefix(namespace: &str) -> String {
    crate::store::keys::Keys::new(namespace, 0).prefix().to_string()
}

/// The user name of a role: `<namespace>-<role>`, and
/// `<namespace>-worker-<id>` for a worker limited to one id.
pub fn user_name(namespace: &str, role: Role, worker_id: Option<&str>) -> String {
    match (role, worker_id) {
        (Role::Worker, Some(id)) => format!("{namespace}-worker-{id}"),
        _ => format!("{namespace}-{}", role.as_str()),
    }
}

/// The ACL rules of one role, one argument each (a selector is one
/// argument with spaces inside its parentheses), without the user name and
/// password. `worker_id` limits a worker to its own hash and stream; it is
/// ignored for the other roles.
pub fn rules(namespace: &str, role: Role, worker_id: Option<&str>) -> anyhow::Result<Vec<String>> {
    check_name("namespace", namespace, 64)?;
    if let Some(id) = worker_id {
        check_name("worker id", id, 128)?;
    }
    let p = prefix(namespace);
    let w = match (role, worker_id) {
        (Role::Worker, Some(id)) => id,
        _ => "*",
    };
    let key = |k: &str| format!("{p}{}", k.replace("{w}", w));
    let prof = profile(role);
    let mut out: Vec<String> = ROOT_COMMANDS
        .iter()
        .chain(prof.extra_root)
        .map(|c| c.to_string())
        .collect();
    let mut root_keys: Vec<String> = Vec::new();
    for k in prof.script_keys {
        let pat = format!("~{}", key(k));
        if !root_keys.contains(&pat) {
            root_keys.push(pat);
        }
    }
    out.extend(root_keys);
    for g in prof.grants {
        let mark = match g.access {
            Access::Read => "%R~",
            Access::ReadWrite => "~",
        };
        let mut parts: Vec<String> = g.keys.iter().map(|k| format!("{mark}{}", key(k))).collect();
        parts.extend(g.commands.iter().map(|c| c.to_string()));
        out.push(format!("({})", parts.join(" ")));
    }
    Ok(out)
}

/// The password as Redis stores it: `#` and its SHA-256 in hex.
pub fn password_hash(password: &str) -> String {
    format!("#{}", hex::encode(Sha256::digest(password.as_bytes())))
}

/// The arguments after `ACL SETUSER` (or after `user` in an ACL file) for
/// one user. `reset` first, so loading them again replaces the user whole
/// (rules, selectors and passwords).
pub fn setuser_args(
    namespace: &str,
    role: Role,
    worker_id: Option<&str>,
    user: &str,
    password: &str,
) -> anyhow::Result<Vec<String>> {
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("user name {user:?}: must be non-empty, without spaces");
    }
    if password.is_empty() {
        anyhow::bail!("the password of {user} is empty");
    }
    let mut args = vec![
        user.to_string(),
        "reset".to_string(),
        "on".to_string(),
        password_hash(password),
        "resetchannels".to_string(),
    ];
    args.extend(rules(namespace, role, worker_id)?);
    Ok(args)
}

/// `ACL SETUSER` lines, one per (role, user, password), for the users any
/// worker id can use. Each line can be pasted into `redis-cli` as it is.
pub fn setuser_lines(namespace: &str, users: &[(Role, &str, &str)]) -> anyhow::Result<Vec<String>> {
    users
        .iter()
        .map(|(role, user, password)| {
            Ok(format!(
                "ACL SETUSER {}",
                setuser_args(namespace, *role, None, user, password)?.join(" ")
            ))
        })
        .collect()
}

/// How to print the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `ACL SETUSER …` lines, for `redis-cli`.
    #[default]
    Commands,
    /// `user …` lines, for a Redis `aclfile`.
    AclFile,
}

/// What `drover redis-acl` generates.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    /// Also one user per id here, limited to that worker's own hash and
    /// stream (`<namespace>-worker-<id>`).
    pub worker_ids: Vec<String>,
    /// The worker user any worker id can use (`<namespace>-worker`).
    pub shared_worker: bool,
    /// Keep each user's password in `DIR/<user>`: read when the file
    /// exists, else a new random one is written there (mode 0600). Without
    /// it, new random passwords are printed in the notes.
    pub password_dir: Option<PathBuf>,
    pub format: Format,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: "drover".into(),
            worker_ids: Vec::new(),
            shared_worker: true,
            password_dir: None,
            format: Format::Commands,
        }
    }
}

/// One generated user.
#[derive(Debug, Clone)]
pub struct GeneratedUser {
    pub role: Role,
    pub worker_id: Option<String>,
    pub name: String,
    pub password: String,
    /// Where the password is kept, with `password_dir`.
    pub password_file: Option<PathBuf>,
}

/// The output of `drover redis-acl`: `rules` for Redis (stdout, so it can
/// be piped to `redis-cli` or saved as an ACL file) and `notes` for the
/// operator (stderr: how each role connects).
#[derive(Debug, Clone)]
pub struct Generated {
    pub users: Vec<GeneratedUser>,
    pub rules: String,
    pub notes: String,
}

fn new_password() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Reads the password kept in `dir/user`, or writes a new one there.
fn kept_password(dir: &Path, user: &str) -> anyhow::Result<(String, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let path = dir.join(user);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let pw = s.trim().to_string();
            if pw.is_empty() {
                anyhow::bail!("{} is empty: remove it to get a new password", path.display());
            }
            Ok((pw, path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = new_password();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
            writeln!(f, "{pw}")?;
            Ok((pw, path))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Generates the users of `drover redis-acl`.
pub fn run(opts: &Options) -> anyhow::Result<Generated> {
    let ns = opts.namespace.as_str();
    check_name("--namespace", ns, 64)?;
    let mut wanted: Vec<(Role, Option<String>)> = vec![(Role::Coordinator, None), (Role::Distributor, None)];
    if opts.shared_worker {
        wanted.push((Role::Worker, None));
    }
    for id in &opts.worker_ids {
        check_name("--worker-id", id, 128)?;
        if !wanted.iter().any(|(_, w)| w.as_deref() == Some(id.as_str())) {
            wanted.push((Role::Worker, Some(id.clone())));
        }
    }
    if !wanted.iter().any(|(r, _)| *r == Role::Worker) {
        anyhow::bail!("no worker user: give --worker-id or keep the shared worker user");
    }

    let mut users = Vec::new();
    let mut lines = Vec::new();
    for (role, wid) in wanted {
        let name = user_name(ns, role, wid.as_deref());
        let (password, password_file) = match &opts.password_dir {
            Some(dir) => {
                let (pw, path) = kept_password(dir, &name)?;
                (pw, Some(path))
            }
            None => (new_password(), None),
        };
        let args = setuser_args(ns, role, wid.as_deref(), &name, &password)?;
        lines.push(match opts.format {
            Format::Commands => format!("ACL SETUSER {}", args.join(" ")),
            Format::AclFile => format!("user {}", args.join(" ")),
        });
        users.push(GeneratedUser {
            role,
            worker_id: wid,
            name,
            password,
            password_file,
        });
    }

    let mut notes = vec![
        format!("# drover Redis ACL users for namespace {ns:?} (Redis 7.0 or later: the rules use selectors)."),
        match opts.format {
            Format::Commands => {
                "# Load them as an admin user, e.g. drover redis-acl ... | REDISCLI_AUTH=ADMIN_PASSWORD redis-cli --user ADMIN; then ACL SAVE (with an aclfile) or CONFIG REWRITE to keep them.".to_string()
            }
            Format::AclFile => {
                "# Save the lines in the file named by `aclfile` in redis.conf (keep the admin and default user lines there too), then ACL LOAD or restart Redis.".to_string()
            }
        },
        "# Each role connects as its own user (the password may also go in the URL: redis://USER:PASSWORD@HOST:6379):"
            .to_string(),
    ];
    for u in &users {
        let who = match (&u.role, &u.worker_id) {
            (Role::Worker, Some(id)) => format!("worker {id} only (--id {id})"),
            (Role::Worker, None) => "worker (any --id)".to_string(),
            (r, _) => r.as_str().to_string(),
        };
        let secret = match &u.password_file {
            Some(p) => format!("DROVER_REDIS_PASSWORD_FILE={}", p.display()),
            None => format!("DROVER_REDIS_PASSWORD={}", u.password),
        };
        notes.push(format!(
            "#   {who}: DROVER_REDIS_URL=redis://{}@HOST:6379 {secret}",
            u.name
        ));
    }
    notes.push(format!(
        "# `drover snapshot export|import` work with the {} user. Redis' default user keeps its own rules: turn it off, or give it a password, once an admin user exists.",
        user_name(ns, Role::Coordinator, None)
    ));

    let mut rules = lines.join("\n");
    rules.push('\n');
    let mut notes = notes.join("\n");
    notes.push('\n');
    Ok(Generated { users, rules, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

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
                    "{} runs {script}, which calls {missing:?}: grant them in src/acl.rs",
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
                "lua/{name} is run by no role in src/acl.rs: add it to Role::scripts and grant its commands"
            );
        }
    }

    #[test]
    fn the_parser_sees_helpers_and_subcommands() {
        let assign = script_commands("assign.lua");
        for c in ["time", "info", "hset", "zadd", "xack", "incr"] {
            assert!(assign.contains(c), "{c} in {assign:?}");
        }
        let trim = script_commands("trim.lua");
        assert!(trim.contains("xinfo|groups"), "{trim:?}");
        // complete → file_expiring → RPUSH, ZADD
        let complete = script_commands("complete.lua");
        assert!(complete.contains("rpush") && complete.contains("zadd"), "{complete:?}");
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

    #[test]
    fn keys_stay_in_the_namespace_and_out_of_other_roles_keys() {
        let worker = rules("drover", Role::Worker, None).unwrap().join(" ");
        for k in ["leader", "idem:", "epoch", "batches", "+info"] {
            assert!(!worker.contains(k), "{k} in {worker}");
        }
        let distributor = rules("drover", Role::Distributor, None).unwrap().join(" ");
        for k in ["leader", "events", "scheduled", "idem:", "handlers"] {
            assert!(!distributor.contains(k), "{k} in {distributor}");
        }
        // assign.lua takes the lease, so it may begin a new epoch.
        assert!(
            distributor.contains("(~{drover:0}:epoch +hmget +hset)"),
            "{distributor}"
        );
        assert!(distributor.contains("%R~{drover:0}:workers"), "{distributor}");
        let coordinator = rules("drover", Role::Coordinator, None).unwrap().join(" ");
        assert!(!coordinator.contains("epoch"), "{coordinator}");
        for role in Role::ALL {
            for rule in rules("ns-1", role, None).unwrap() {
                for word in rule.trim_matches(|c| c == '(' || c == ')').split(' ') {
                    if let Some(i) = word.find('~') {
                        assert!(word[i + 1..].starts_with("{ns-1:0}:"), "{word}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_worker_id_limits_the_worker_to_its_own_keys() {
        let r = rules("drover", Role::Worker, Some("w-1")).unwrap().join(" ");
        assert!(
            r.contains("~{drover:0}:w:w-1 ") && r.contains("~{drover:0}:w:w-1:in"),
            "{r}"
        );
        assert!(!r.contains("w:*"), "{r}");
        assert!(rules("drover", Role::Worker, Some("w*")).is_err());
        assert!(rules("dro ver", Role::Worker, None).is_err());
        assert_eq!(user_name("drover", Role::Worker, Some("w-1")), "drover-worker-w-1");
        assert_eq!(user_name("x", Role::Distributor, Some("w-1")), "x-distributor");
    }

    #[test]
    fn lines_hold_the_hash_not_the_password() {
        let lines = setuser_lines("drover", &[(Role::Worker, "drover-worker", "s3cret")]).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("ACL SETUSER drover-worker reset on #"),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains("s3cret"));
        assert!(lines[0].contains(&password_hash("s3cret")));
        assert_eq!(password_hash("pw").len(), 65);
    }

    #[test]
    fn password_dir_keeps_passwords_between_runs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            password_dir: Some(dir.path().join("pw")),
            worker_ids: vec!["w1".into()],
            ..Options::default()
        };
        let first = run(&opts).unwrap();
        assert_eq!(first.users.len(), 4);
        let second = run(&opts).unwrap();
        assert_eq!(first.rules, second.rules, "same passwords, same lines");
        for u in &first.users {
            let f = u.password_file.as_ref().unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
            assert!(first.notes.contains(&f.display().to_string()));
            assert!(
                !first.notes.contains(&u.password),
                "the notes name the file, not the password"
            );
        }
        let fresh = run(&Options::default()).unwrap();
        assert_eq!(fresh.users.len(), 3);
        assert!(fresh.notes.contains(&fresh.users[0].password));
        assert!(!fresh.rules.contains(&fresh.users[0].password));
        let aclfile = run(&Options {
            format: Format::AclFile,
            ..opts
        })
        .unwrap();
        assert!(aclfile.rules.lines().all(|l| l.starts_with("user ")));
    }
}
