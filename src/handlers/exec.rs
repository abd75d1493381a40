//! `exec` handlers: run a program fixed by the profile, once per task.
//!
//! The program is spawned directly (never through a shell) as `command[0]` with
//! arguments `command[1..]`, in a process group of its own so that everything it
//! starts can be killed together. The task's input is written to its stdin as one
//! line of JSON, then stdin is closed. Its stdout is the result: parsed as JSON,
//! `null` when empty, and the trimmed text as a JSON string when it is not JSON
//! (so `echo done` yields `"done"`). Stdout beyond `max_output` kills the run. Only
//! the last 4 KiB of stderr is kept, for the failure message on a non-zero exit.
//!
//! The environment starts empty, not from the worker's: the worker holds the
//! signing keyring and the Redis password in its own, and a program fed crafted
//! input must not be able to read them. It gets `PATH` (the worker's, or
//! [`DEFAULT_PATH`] when the worker has none), then the profile's `env` (which may
//! set `PATH` itself), then `DROVER_TASK_ID`, `DROVER_HANDLER`, `DROVER_ATTEMPT`,
//! `DROVER_FENCE` (the `epoch.fence` token), `DROVER_EPOCH` and
//! `DROVER_FENCE_COUNTER` (the bare fence). Nothing else: a program that needs
//! `HOME` or `LANG` gets them from its profile entry.
//!
//! When the program exits, on timeout, on cancellation and when the run is dropped,
//! the whole process group is killed with SIGKILL, so background processes a
//! program leaves behind never outlive its task; the program itself is always
//! reaped.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use super::outcome::{lossy_excerpt, parse_output, supervise};
use super::spec::{check_command, check_env, spec_max_output};
use super::{Handler, HandlerError, HandlerFuture, SpecError, TaskContext};

/// How much of the end of stderr is kept for failure messages.
pub const STDERR_TAIL: usize = 4 * 1024;

/// `PATH` for programs when the worker itself runs without one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long to wait for a SIGKILLed program to be reaped before leaving that to
/// tokio's background reaper; only a process stuck in the kernel takes this long.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// A `kind = "exec"` profile entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<String>,
}

/// Runs one fixed program per task; see the module documentation.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    // Shared with every run's future, which must be 'static.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    max_output: usize,
}

impl ExecHandler {
    /// Validates a profile entry named `handler`. The `timeout` key is not read
    /// here: the worker folds it into [`TaskContext::timeout`].
    pub fn from_spec(handler: &str, spec: &ExecSpec) -> Result<ExecHandler, SpecError> {
        check_command(handler, &spec.command)?;
        check_env(handler, &spec.env)?;
        Ok(ExecHandler {
            inner: Arc::new(Inner {
                command: spec.command.clone(),
                env: spec.env.clone(),
                max_output: spec_max_output(handler, "max_output", spec.max_output.as_deref())?,
            }),
        })
    }
}

impl Handler for ExecHandler {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.execute(ctx, input).await })
    }
}

impl Inner {
    async fn execute(&self, ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
        // A task given back before it started must not start a program at all.
        if ctx.cancel.is_cancelled() {
            return Err(HandlerError::Cancelled);
        }
        let program = &self.command[0];
        let mut child = self
            .build_command(&ctx)
            .spawn()
            .map_err(|e| HandlerError::Start(format!("{program}: {e}")))?;
        let group = match child.id() {
            Some(pid) => ProcessGroup::new(pid),
            // Only possible once the child has been reaped, which nothing has done.
            None => return Err(HandlerError::Start(format!("{program}: no pid"))),
        };
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            group.kill();
            return Err(HandlerError::Start(format!("{program}: pipes missing")));
        };

        let payload = format!("{input}\n").into_bytes();
        let max_output = self.max_output;
        let outcome = supervise(&ctx, async {
            // All four run concurrently: a child blocked writing a full stderr pipe
            // while we wait on stdout (or vice versa) would otherwise deadlock. The
            // first error (stdout too large) stops the rest at once.
            let ((), out, err, status) = tokio::try_join!(
                feed_stdin(stdin, payload),
                read_bounded(stdout, max_output),
                read_tail(stderr, STDERR_TAIL),
                wait_then_kill_group(&mut child, &group),
            )?;
            Ok((out, err, status))
        })
        .await;

        match outcome {
            Ok((out, err, status)) => interpret(status, &out, &err),
            Err(e) => {
                group.kill();
                // Reap the leader so no zombie is left. If it is stuck in the kernel
                // even SIGKILL waits; dropping `child` then hands it to tokio's
                // background reaper (kill_on_drop) instead of blocking the worker.
                if tokio::time::timeout(REAP_GRACE, child.wait()).await.is_err() {
                    tracing::warn!(program, "killed exec handler not reaped in time");
                }
                // Every member got SIGKILL above; nothing is left to signal.
                group.disarm();
                Err(e)
            }
        }
    }

    /// The program's command line and environment, set up to run in a process
    /// group of its own that dies with the worker.
    fn build_command(&self, ctx: &TaskContext) -> Command {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let mut command = Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            // Never the worker's environment: it holds the keyring and the
            // Redis password (see the module documentation).
            .env_clear()
            .env("PATH", path)
            .envs(&self.env)
            .envs(ctx.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Group id = the child's pid, so killpg reaches everything it starts
            // (unless something deliberately leaves the group with setsid).
            .process_group(0)
            // If this future is dropped mid-run, tokio kills and reaps the child;
            // ProcessGroup's Drop takes care of the rest of the group.
            .kill_on_drop(true);
        // A worker killed with -9 cannot kill its handlers: ask the kernel to
        // (PR_SET_PDEATHSIG), so a task whose lease will be retried elsewhere
        // is not also still running here, writing with an old fence.
        // SAFETY: the hook only makes async-signal-safe calls (child_process).
        unsafe {
            command.pre_exec(crate::child_process::die_with_parent());
        }
        command
    }
}

/// Writes the input and closes stdin so the program sees EOF. A program that exits
/// without reading its input is fine, so write errors (EPIPE) are not failures.
async fn feed_stdin(mut stdin: ChildStdin, payload: Vec<u8>) -> Result<(), HandlerError> {
    if let Err(e) = stdin.write_all(&payload).await {
        tracing::debug!(error = %e, "exec handler did not read its whole input");
    }
    drop(stdin);
    Ok(())
}

/// Reads all of `reader`, failing as soon as it yields more than `limit` bytes so a
/// runaway program is stopped without buffering its output.
async fn read_bounded(reader: impl AsyncRead + Unpin, limit: usize) -> Result<Vec<u8>, HandlerError> {
    let mut out = Vec::new();
    let probe = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(probe)
        .read_to_end(&mut out)
        .await
        .map_err(|e| HandlerError::Failed(format!("reading stdout: {e}")))?;
    if out.len() > limit {
        return Err(HandlerError::OutputTooLarge { limit });
    }
    Ok(out)
}

/// Reads all of `reader`, keeping only its last `keep` bytes: stderr must be
/// drained (or the program blocks once the pipe fills) but only its end matters.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Result<Vec<u8>, HandlerError> {
    let mut tail = Vec::with_capacity(keep * 2);
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        let n = reader
            .read(&mut chunk)
            .await
            .map_err(|e| HandlerError::Failed(format!("reading stderr: {e}")))?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        // Trim only once the buffer is double the tail, so trimming is amortized.
        if tail.len() > keep * 2 {
            tail.drain(..tail.len() - keep);
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    Ok(tail)
}

/// Waits for the program to exit, then kills what is left of its group: background
/// processes must not outlive the task, and they may hold stdout open, which would
/// otherwise keep the result from ever completing.
async fn wait_then_kill_group(child: &mut Child, group: &ProcessGroup) -> Result<ExitStatus, HandlerError> {
    let status = child
        .wait()
        .await
        .map_err(|e| HandlerError::Failed(format!("waiting for the program: {e}")))?;
    group.leader_reaped();
    Ok(status)
}

fn interpret(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Result<Value, HandlerError> {
    use std::os::unix::process::ExitStatusExt;

    if status.success() {
        return parse_output(stdout);
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    let tail = lossy_excerpt(stderr, STDERR_TAIL);
    Err(HandlerError::Failed(if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    }))
}

/// The child's process group, killed with SIGKILL on request and on drop.
///
/// Killing is only attempted until the group leader has been reaped, plus once right
/// after reaping (see [`ProcessGroup::leader_reaped`]). While any member of the group
/// is alive the kernel keeps its id reserved, so that last kill can only reach the
/// leftovers; if none are left it finds no group, and the id could only name someone
/// else's group after the pid space wrapped around in between.
struct ProcessGroup {
    pgid: libc::pid_t,
    // Atomic rather than Cell: the run's future holds `&ProcessGroup` across awaits
    // and must stay Send.
    live: AtomicBool,
}

impl ProcessGroup {
    fn new(pid: u32) -> ProcessGroup {
        ProcessGroup {
            // Pids fit in pid_t; a failed conversion would mean a bogus pid, which
            // must never be passed to killpg (negative ids have special meanings).
            pgid: libc::pid_t::try_from(pid).unwrap_or(0),
            live: AtomicBool::new(true),
        }
    }

    fn kill(&self) {
        if self.pgid <= 1 || !self.live.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: killpg has no memory-safety preconditions; pgid is a positive
        // process group id that we created.
        let rc = unsafe { libc::killpg(self.pgid, libc::SIGKILL) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // ESRCH just means every member is already gone.
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pgid = self.pgid, error = %err, "killpg failed");
            }
        }
    }

    /// Called once the leader has been reaped: kills any leftovers one last time and
    /// then stops, so a later drop cannot signal a group that has since been reused.
    fn leader_reaped(&self) {
        self.kill();
        self.disarm();
    }

    /// Stops all further kills, once the group is known to be gone.
    fn disarm(&self) {
        self.live.store(false, Ordering::Release);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};
    use std::time::Instant;
    use tokio_util::sync::CancellationToken;

    fn ctx(timeout: Duration) -> TaskContext {
        TaskContext {
            task_id: "task-9".into(),
            handler: "thumb".into(),
            attempt: 3,
            epoch: 5,
            fence: 17,
            timeout,
            cancel: CancellationToken::new(),
        }
    }

    fn spec(script: &str) -> ExecSpec {
        ExecSpec {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: None,
            env: BTreeMap::new(),
            max_output: None,
        }
    }

    fn handler(spec: &ExecSpec) -> ExecHandler {
        ExecHandler::from_spec("thumb", spec).expect("valid spec")
    }

    async fn run_script(script: &str, input: Value) -> Result<Value, HandlerError> {
        handler(&spec(script)).run(ctx(Duration::from_secs(10)), input).await
    }

    /// A scratch directory unique to one test, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("drover-exec-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Whether `pid` names a running process. A zombie counts as dead: a killed
    /// grandchild is reparented to init and may linger as a zombie until init
    /// gets round to reaping it.
    fn alive(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesized command name.
            Ok(stat) => !matches!(
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next()),
                Some('Z' | 'X')
            ),
            Err(_) => false,
        }
    }

    async fn wait_for_pid(path: &Path) -> libc::pid_t {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            assert!(Instant::now() < deadline, "script never wrote {path:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn assert_dies(pid: libc::pid_t, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive(pid) {
            if Instant::now() > deadline {
                // Do not leave it behind even though the test fails.
                // SAFETY: plain kill of a pid this test's script started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("{what} (pid {pid}) survived");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs `script` with `dir` as `$1`, so paths need no quoting inside it.
    fn script_in(script: &str, dir: &Path) -> ExecSpec {
        let mut spec = spec(script);
        spec.command.push("sh".into());
        spec.command.push(dir.display().to_string());
        spec
    }

    /// Starts a background grandchild, records both pids (each file written whole
    /// via rename, so a reader never sees half a pid), then sleeps in the foreground.
    const GRANDCHILD_SCRIPT: &str = r#"sleep 30 & echo $! > "$1/g.tmp" && mv "$1/g.tmp" "$1/grandchild"
echo $$ > "$1/l.tmp" && mv "$1/l.tmp" "$1/leader"
sleep 30"#;

    #[tokio::test]
    async fn cat_echoes_the_input_as_json() {
        let input = json!({"image": "a.png", "sizes": [64, 128], "note": "ünï"});
        assert_eq!(run_script("cat", input.clone()).await.unwrap(), input);
    }

    #[tokio::test]
    async fn stdin_is_one_line_and_closed() {
        // `wc -l` only finishes once stdin is closed, and counts the newline.
        let out = run_script("wc -l | tr -d ' '", json!([1, 2])).await.unwrap();
        assert_eq!(out, json!(1));
    }

    #[tokio::test]
    async fn empty_and_plain_text_stdout() {
        assert_eq!(run_script("true", json!(1)).await.unwrap(), Value::Null);
        assert_eq!(
            run_script("echo '  thumbnail ready  '", json!(1)).await.unwrap(),
            json!("thumbnail ready")
        );
        assert!(matches!(
            run_script("printf '\\377\\376'", json!(1)).await,
            Err(HandlerError::InvalidOutput(_))
        ));
    }

    #[tokio::test]
    async fn environment_carries_task_identity_and_profile_env() {
        let mut spec = spec(
            r#"printf '{"task":"%s","handler":"%s","attempt":"%s","fence":"%s","epoch":"%s","counter":"%s","mode":"%s","path_set":%s}' \
               "$DROVER_TASK_ID" "$DROVER_HANDLER" "$DROVER_ATTEMPT" "$DROVER_FENCE" \
               "$DROVER_EPOCH" "$DROVER_FENCE_COUNTER" "$MODE" "$([ -n "$PATH" ] && echo true || echo false)""#,
        );
        spec.env.insert("MODE".into(), "x".into());
        let out = handler(&spec)
            .run(ctx(Duration::from_secs(10)), Value::Null)
            .await
            .unwrap();
        assert_eq!(
            out,
            json!({"task": "task-9", "handler": "thumb", "attempt": "3", "fence": "5.17",
                   "epoch": "5", "counter": "17", "mode": "x", "path_set": true})
        );
    }

    #[tokio::test]
    async fn environment_is_only_path_profile_env_and_task_variables() {
        // `env` prints exactly the environment it was given, one NAME=value a line.
        // The test process has plenty of its own (HOME, CARGO_*, ...): none of it
        // may reach the program, as none of the worker's (its keyring) may.
        let mut spec = ExecSpec {
            command: vec!["/usr/bin/env".into()],
            ..spec("")
        };
        spec.env.insert("MODE".into(), "x".into());
        let out = handler(&spec)
            .run(ctx(Duration::from_secs(10)), Value::Null)
            .await
            .unwrap();
        let text = out.as_str().expect("env prints text");
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "DROVER_ATTEMPT",
                "DROVER_EPOCH",
                "DROVER_FENCE",
                "DROVER_FENCE_COUNTER",
                "DROVER_HANDLER",
                "DROVER_TASK_ID",
                "MODE",
                "PATH"
            ],
            "{text}"
        );
    }

    #[tokio::test]
    async fn arguments_are_not_shell_interpreted() {
        // With no shell in between, `;` and `$HOME` reach the program verbatim.
        let spec = ExecSpec {
            command: vec!["/bin/echo".into(), "a;b".into(), "$HOME".into()],
            ..spec("")
        };
        let out = handler(&spec).run(ctx(Duration::from_secs(10)), Value::Null).await;
        assert_eq!(out.unwrap(), json!("a;b $HOME"));
    }

    #[tokio::test]
    async fn non_zero_exit_reports_status_and_stderr_tail() {
        let out = run_script("echo starting >&2; echo 'bad input' >&2; exit 3", Value::Null).await;
        match out {
            Err(HandlerError::Failed(msg)) => assert_eq!(msg, "exit status 3: starting\nbad input"),
            other => panic!("unexpected {other:?}"),
        }

        let out = run_script("exit 4", Value::Null).await;
        assert!(matches!(out, Err(HandlerError::Failed(m)) if m == "exit status 4"));

        let out = run_script("kill -TERM $$", Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m == "killed by signal 15"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn stderr_keeps_only_the_tail_and_never_blocks() {
        // 200 KB of stderr is far beyond a pipe's buffer: without concurrent
        // draining the program would block until the timeout.
        let out = run_script(
            "head -c 200000 /dev/zero | tr '\\0' a >&2; echo THE-END >&2; exit 1",
            Value::Null,
        )
        .await;
        let Err(HandlerError::Failed(msg)) = out else {
            panic!("unexpected {out:?}");
        };
        assert!(msg.starts_with("exit status 1: aaaa"), "{}", &msg[..40]);
        assert!(msg.ends_with("aaaaTHE-END"), "{}", &msg[msg.len() - 40..]);
        assert!(msg.len() <= "exit status 1: ".len() + STDERR_TAIL, "{}", msg.len());

        let out = run_script("head -c 200000 /dev/zero >&2; echo '{\"ok\":true}'", Value::Null).await;
        assert_eq!(out.unwrap(), json!({"ok": true}));
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group_including_grandchildren() {
        let dir = TempDir::new("timeout");
        let exec = handler(&script_in(GRANDCHILD_SCRIPT, &dir.0));
        let start = Instant::now();
        let run = tokio::spawn(exec.run(ctx(Duration::from_millis(1500)), Value::Null));

        let grandchild = wait_for_pid(&dir.0.join("grandchild")).await;
        let leader = wait_for_pid(&dir.0.join("leader")).await;
        assert!(alive(grandchild), "grandchild should run before the timeout");
        assert!(alive(leader), "leader should run before the timeout");

        let out = run.await.expect("join");
        let elapsed = start.elapsed();
        assert!(
            matches!(out, Err(HandlerError::Timeout(d)) if d == Duration::from_millis(1500)),
            "{out:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_dies(grandchild, "grandchild").await;
        // The leader is our own child: kill(pid, 0) succeeding would mean an
        // unreaped zombie.
        // SAFETY: signal 0 only checks for existence.
        assert_ne!(unsafe { libc::kill(leader, 0) }, 0, "leader left as a zombie");
    }

    #[tokio::test]
    async fn cancel_kills_the_process_group() {
        let dir = TempDir::new("cancel");
        let exec = handler(&script_in(GRANDCHILD_SCRIPT, &dir.0));
        let ctx = ctx(Duration::from_secs(60));
        let cancel = ctx.cancel.clone();
        let run = tokio::spawn(exec.run(ctx, Value::Null));

        let grandchild = wait_for_pid(&dir.0.join("grandchild")).await;
        let leader = wait_for_pid(&dir.0.join("leader")).await;
        assert!(alive(grandchild));
        let start = Instant::now();
        cancel.cancel();
        let out = run.await.expect("join");
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        assert_dies(grandchild, "grandchild").await;
        // SAFETY: signal 0 only checks for existence.
        assert_ne!(unsafe { libc::kill(leader, 0) }, 0, "leader left as a zombie");
    }

    #[tokio::test]
    async fn already_cancelled_task_starts_nothing() {
        // A missing program makes any spawn attempt visible as a Start error.
        let exec = handler(&ExecSpec {
            command: vec!["/nonexistent/drover-thumb".into()],
            ..spec("")
        });
        let ctx = ctx(Duration::from_secs(10));
        ctx.cancel.cancel();
        let out = exec.run(ctx, Value::Null).await;
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_process_group() {
        let dir = TempDir::new("drop");
        let exec = handler(&script_in(GRANDCHILD_SCRIPT, &dir.0));
        let run = tokio::spawn(exec.run(ctx(Duration::from_secs(60)), Value::Null));
        let grandchild = wait_for_pid(&dir.0.join("grandchild")).await;
        let leader = wait_for_pid(&dir.0.join("leader")).await;
        assert!(alive(grandchild));
        run.abort();
        let _ = run.await;
        assert_dies(grandchild, "grandchild").await;
        assert_dies(leader, "leader").await;
    }

    #[tokio::test]
    async fn background_leftovers_are_killed_when_the_program_exits() {
        // The background sleep inherits stdout; the result must not wait for it.
        let dir = TempDir::new("leftover");
        let spec = script_in(
            r#"sleep 30 & echo $! > "$1/g.tmp" && mv "$1/g.tmp" "$1/grandchild"; echo '{"done":true}'"#,
            &dir.0,
        );
        let start = Instant::now();
        let out = handler(&spec).run(ctx(Duration::from_secs(10)), Value::Null).await;
        assert_eq!(out.unwrap(), json!({"done": true}));
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        let grandchild = wait_for_pid(&dir.0.join("grandchild")).await;
        assert_dies(grandchild, "background sleep").await;
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let mut bounded = spec("printf '\"abc\"'");
        bounded.max_output = Some("5".into());
        let out = handler(&bounded).run(ctx(Duration::from_secs(10)), Value::Null).await;
        assert_eq!(out.unwrap(), json!("abc"), "exactly the limit is fine");

        bounded.command[2] = "printf '\"abcd\"'".into();
        let out = handler(&bounded).run(ctx(Duration::from_secs(10)), Value::Null).await;
        assert!(matches!(out, Err(HandlerError::OutputTooLarge { limit: 5 })), "{out:?}");

        // A program that never stops writing is killed as soon as it passes the
        // bound, long before the timeout.
        let mut endless = spec("yes");
        endless.max_output = Some("1KiB".into());
        let start = Instant::now();
        let out = handler(&endless).run(ctx(Duration::from_secs(30)), Value::Null).await;
        assert!(
            matches!(out, Err(HandlerError::OutputTooLarge { limit: 1024 })),
            "{out:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn default_output_bound_is_one_mebibyte() {
        let out = run_script("head -c 1048577 /dev/zero", Value::Null).await;
        assert!(
            matches!(out, Err(HandlerError::OutputTooLarge { limit: 1_048_576 })),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn missing_program_is_a_start_error() {
        let spec = ExecSpec {
            command: vec!["/nonexistent/drover-thumb".into()],
            ..spec("")
        };
        let out = handler(&spec).run(ctx(Duration::from_secs(10)), Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Start(m)) if m.starts_with("/nonexistent/drover-thumb: ")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn program_ignoring_large_input_still_succeeds() {
        // 1 MB of input against a program that never reads stdin: the write fails
        // with EPIPE once it exits, which must not turn into a failure.
        let input = json!("x".repeat(1_000_000));
        assert_eq!(run_script("echo 7", input).await.unwrap(), json!(7));
    }
}
