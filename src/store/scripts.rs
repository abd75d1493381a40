//! The Lua scripts, embedded once. Each is `lua/prelude.lua` followed by the
//! script's own file, loaded by SHA and re-sent by redis-rs when Redis
//! answers NOSCRIPT (after a restart or SCRIPT FLUSH).

use redis::Script;

const PRELUDE: &str = include_str!("../../lua/prelude.lua");

fn load(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

pub struct Scripts {
    pub submit: Script,
    pub assign: Script,
    pub renew: Script,
    pub complete: Script,
    pub cancel: Script,
    pub reap: Script,
    pub expire: Script,
    pub promote: Script,
    pub requeue: Script,
    pub control: Script,
    pub restore: Script,
    pub heartbeat: Script,
    pub leader: Script,
    pub trim: Script,
    pub forget_workers: Script,
    pub page: Script,
    pub retry: Script,
    pub discard: Script,
    pub purge: Script,
}

impl Scripts {
    pub fn load() -> Self {
        Scripts {
            submit: load(include_str!("../../lua/submit.lua")),
            assign: load(include_str!("../../lua/assign.lua")),
            renew: load(include_str!("../../lua/renew.lua")),
            complete: load(include_str!("../../lua/complete.lua")),
            cancel: load(include_str!("../../lua/cancel.lua")),
            reap: load(include_str!("../../lua/reap.lua")),
            expire: load(include_str!("../../lua/expire.lua")),
            promote: load(include_str!("../../lua/promote.lua")),
            requeue: load(include_str!("../../lua/requeue.lua")),
            control: load(include_str!("../../lua/control.lua")),
            restore: load(include_str!("../../lua/restore.lua")),
            heartbeat: load(include_str!("../../lua/heartbeat.lua")),
            leader: load(include_str!("../../lua/leader.lua")),
            trim: load(include_str!("../../lua/trim.lua")),
            forget_workers: load(include_str!("../../lua/forget_workers.lua")),
            page: load(include_str!("../../lua/page.lua")),
            retry: load(include_str!("../../lua/retry.lua")),
            discard: load(include_str!("../../lua/discard.lua")),
            purge: load(include_str!("../../lua/purge.lua")),
        }
    }
}
