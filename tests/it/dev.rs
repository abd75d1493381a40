//! `drover dev` as a real process: the `redis-server` it starts for itself
//! lives no longer than it does, even when it is killed with SIGKILL and
//! cannot clean up (the kernel ends the child: `PR_SET_PDEATHSIG`).

use crate::support::*;
use drover::redis_server;
use std::time::Duration;

/// The processes whose parent is `pid`, as (pid, command name, state).
fn children(pid: i32) -> Vec<(i32, String, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((comm, state, ppid)) = stat(child) {
            if ppid == pid {
                found.push((child, comm, state));
            }
        }
    }
    found
}

/// Command name, state and parent of a process from `/proc/<pid>/stat`, or
/// None once it is gone. The name is in parentheses and may hold spaces.
fn stat(pid: i32) -> Option<(String, char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Kills a leaked redis-server when the test fails, so a failure leaves
/// nothing running.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        if stat(self.0).is_some_and(|(comm, state, _)| comm == "redis-server" && state != 'Z') {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test]
async fn a_drover_dev_killed_with_sigkill_takes_its_redis_server_along() {
    if !redis_server::available() {
        skip_or_fail("redis-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No DROVER_REDIS_URL (spawn clears the environment): dev starts its own.
    let env: Vec<(String, String)> = [("DROVER_ADMIN_ADDR", "127.0.0.1:0"), ("DROVER_API_TOKEN", ADMIN_TOKEN)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut dev = spawn("dev", &["dev", "--http", "127.0.0.1:0"], &env, dir.path());
    let port: u16 = eventually(Duration::from_secs(30), "drover dev to print its redis", || async {
        let log = dev.log_text();
        let rest = log.split_once(", redis redis://127.0.0.1:")?.1;
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    })
    .await;
    let redis: Vec<i32> = children(dev.pid())
        .into_iter()
        .filter(|(_, comm, _)| comm == "redis-server")
        .map(|(pid, _, _)| pid)
        .collect();
    assert_eq!(
        redis.len(),
        1,
        "one redis-server child of drover dev: {:?}",
        children(dev.pid())
    );
    let _reap = Reap(redis[0]);
    assert!(redis_server::answers_ping(port), "dev's redis answers on {port}");

    dev.signal(libc::SIGKILL);
    dev.wait_exit(Duration::from_secs(5));
    eventually(Duration::from_secs(10), "dev's redis-server to end", || async {
        // Gone, or a zombie nobody reaped yet: either way, not running.
        let ended = stat(redis[0]).is_none_or(|(comm, state, _)| comm != "redis-server" || state == 'Z');
        (ended && !redis_server::answers_ping(port)).then_some(())
    })
    .await;
}
