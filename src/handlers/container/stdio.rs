//! A container's standard streams over Docker's attach connection: the task's
//! input goes in as one line of JSON followed by EOF, and the output comes back
//! demultiplexed, stdout bounded by `max_output` and stderr cut to its tail for
//! the failure message.

use std::pin::pin;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::engine::describe;
use crate::handlers::HandlerError;

/// How much of the end of stderr is kept for failure messages (as for `exec`).
pub const LOG_TAIL: usize = 4 * 1024;

/// Writes the input and closes our side of stdin, so the program sees EOF. A
/// program that exits without reading its input is fine, so write errors (the
/// connection closing under us) are not failures.
pub(super) async fn feed_stdin(mut stdin: std::pin::Pin<Box<dyn AsyncWrite + Send>>, payload: Vec<u8>) {
    if let Err(e) = stdin.write_all(&payload).await {
        tracing::debug!(error = %e, "container did not read its whole input");
        return;
    }
    // A half-close: Docker sees EOF and, with StdinOnce, closes the container's
    // stdin, while its output keeps flowing to us.
    if let Err(e) = stdin.shutdown().await {
        tracing::debug!(error = %e, "closing the container's stdin");
    }
}

/// Demultiplexes the attach stream until it ends: stdout in full up to `limit`
/// (one byte more is [`HandlerError::OutputTooLarge`]), stderr only its last
/// [`LOG_TAIL`] bytes.
pub(super) async fn read_output(
    output: impl Stream<Item = Result<LogOutput, BollardError>>,
    limit: usize,
) -> Result<(Vec<u8>, Vec<u8>), HandlerError> {
    let mut output = pin!(output);
    let mut stdout = Vec::new();
    let mut stderr = Vec::with_capacity(LOG_TAIL * 2);
    while let Some(frame) = output.next().await {
        let frame =
            frame.map_err(|e| HandlerError::Failed(format!("reading the container's output: {}", describe(&e))))?;
        match frame {
            // Console only appears for TTYs (which we do not ask for) and for
            // trailing bytes without a frame header; either way it is stdout.
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                if stdout.len() + message.len() > limit {
                    return Err(HandlerError::OutputTooLarge { limit });
                }
                stdout.extend_from_slice(&message);
            }
            LogOutput::StdErr { message } => {
                stderr.extend_from_slice(&message);
                // Trim only once the buffer is double the tail, so trimming is
                // amortized.
                if stderr.len() > LOG_TAIL * 2 {
                    stderr.drain(..stderr.len() - LOG_TAIL);
                }
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    if stderr.len() > LOG_TAIL {
        stderr.drain(..stderr.len() - LOG_TAIL);
    }
    Ok((stdout, stderr))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn stdin_is_one_line_and_closed() {
        let Some(engine) = docker_or_skip("stdin").await else {
            return;
        };
        // `wc -l` only finishes once stdin is closed, and counts the newline.
        let out = run(&engine, &sh("wc -l"), &task_id("stdin"), json!([1, 2])).await;
        assert_eq!(out.unwrap(), json!(1));
    }

    #[tokio::test]
    async fn empty_and_plain_text_stdout() {
        let Some(engine) = docker_or_skip("plain").await else {
            return;
        };
        let task = task_id("plain");
        assert_eq!(run(&engine, &sh("true"), &task, json!(1)).await.unwrap(), Value::Null);
        let out = run(&engine, &sh("echo '  thumbnail ready  '"), &task, json!(1)).await;
        assert_eq!(out.unwrap(), json!("thumbnail ready"));
        let out = run(&engine, &sh("printf '\\377\\376'"), &task, json!(1)).await;
        assert!(matches!(out, Err(HandlerError::InvalidOutput(_))), "{out:?}");
    }

    #[tokio::test]
    async fn non_zero_exit_reports_status_and_stderr_tail() {
        let Some(engine) = docker_or_skip("exit").await else {
            return;
        };
        let task = task_id("exit");
        let out = run(
            &engine,
            &sh("echo starting >&2; echo 'bad input' >&2; exit 3"),
            &task,
            Value::Null,
        )
        .await;
        match out {
            Err(HandlerError::Failed(msg)) => assert_eq!(msg, "exit status 3: starting\nbad input"),
            other => panic!("unexpected {other:?}"),
        }

        // Only the tail of a long stderr is kept, and stderr never blocks stdout.
        let out = run(
            &engine,
            &sh("head -c 200000 /dev/zero | tr '\\0' a >&2; echo THE-END >&2; exit 1"),
            &task,
            Value::Null,
        )
        .await;
        let Err(HandlerError::Failed(msg)) = out else {
            panic!("unexpected {out:?}");
        };
        assert!(msg.starts_with("exit status 1: aaaa"), "{}", &msg[..40]);
        assert!(msg.ends_with("aaaaTHE-END"), "{}", &msg[msg.len() - 40..]);
        assert!(msg.len() <= "exit status 1: ".len() + LOG_TAIL, "{}", msg.len());
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn program_ignoring_large_input_still_succeeds() {
        let Some(engine) = docker_or_skip("ignore-input").await else {
            return;
        };
        let input = json!("x".repeat(1_000_000));
        let out = run(&engine, &sh("echo 7"), &task_id("ignore-input"), input).await;
        assert_eq!(out.unwrap(), json!(7));
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let Some(engine) = docker_or_skip("output").await else {
            return;
        };
        let task = task_id("output");
        let mut bounded = sh("printf '\"abc\"'");
        bounded.max_output = Some("5".into());
        let out = run(&engine, &bounded, &task, Value::Null).await;
        assert_eq!(out.unwrap(), json!("abc"), "exactly the limit is fine");

        bounded.command = Some(vec!["/bin/sh".into(), "-c".into(), "printf '\"abcd\"'".into()]);
        let out = run(&engine, &bounded, &task, Value::Null).await;
        assert!(matches!(out, Err(HandlerError::OutputTooLarge { limit: 5 })), "{out:?}");

        // A program that never stops writing is killed as soon as it passes the
        // bound, long before the timeout.
        let mut endless = sh("yes");
        endless.max_output = Some("1KiB".into());
        let start = Instant::now();
        let out = run(&engine, &endless, &task, Value::Null).await;
        assert!(
            matches!(out, Err(HandlerError::OutputTooLarge { limit: 1024 })),
            "{out:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }
}
