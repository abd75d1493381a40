//! The server process of a stdio `mcp` handler: started with a clean
//! environment (`PATH`, or a default one if the worker has none, and the
//! profile's `env`, never the worker's own
//! variables, which hold drover's secrets), in a process group of its own
//! that is killed whole when the session ends, dying with the worker even
//! under SIGKILL (`child_process`), and with the end of its stderr kept
//! for the message when it dies.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

/// `PATH` for the server when the worker has none (the same as exec
/// handlers use on main; one constant once both are merged).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of the end of the server's stderr is kept.
pub(super) const STDERR_TAIL: usize = 4 * 1024;

/// Spawns `command` with only `PATH` and `env` in its environment, stdin,
/// stdout and stderr piped.
pub(super) fn spawn(command: &[String], env: &BTreeMap<String, String>) -> std::io::Result<Child> {
    let mut cmd = Command::new(&command[0]);
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    cmd.args(&command[1..]).env_clear().env("PATH", path);
    cmd.envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the hook only makes async-signal-safe calls (child_process).
    unsafe {
        cmd.pre_exec(crate::child_process::die_with_parent());
    }
    cmd.spawn()
}

/// The server's process group, killed with SIGKILL on request until its
/// leader has been reaped (after that its id could name someone else's).
pub(super) struct Group {
    pgid: libc::pid_t,
    live: AtomicBool,
}

impl Group {
    pub(super) fn new(pid: u32) -> Group {
        Group {
            // A failed conversion would be a bogus pid, never passed to killpg.
            pgid: libc::pid_t::try_from(pid).unwrap_or(0),
            live: AtomicBool::new(true),
        }
    }

    pub(super) fn kill(&self) {
        if self.pgid <= 1 || !self.live.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: killpg has no memory-safety preconditions; pgid is a
        // positive group id this handler created.
        unsafe {
            libc::killpg(self.pgid, libc::SIGKILL);
        }
    }

    /// The leader is reaped: kill leftovers once more, then never again.
    pub(super) fn leader_reaped(&self) {
        self.kill();
        self.live.store(false, Ordering::Release);
    }
}

/// Drains `stderr`, logging each chunk at debug and keeping its last
/// [`STDERR_TAIL`] bytes in `tail` (a server blocked on a full stderr pipe
/// would hang every call).
pub(super) async fn drain_stderr(handler: String, mut stderr: impl AsyncRead + Unpin, tail: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = vec![0u8; 8 * 1024];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tracing::debug!(handler, stderr = %String::from_utf8_lossy(&chunk[..n]).trim_end(), "mcp server");
        let mut tail = tail.lock().expect("stderr tail");
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > STDERR_TAIL {
            let cut = tail.len() - STDERR_TAIL;
            tail.drain(..cut);
        }
    }
}
