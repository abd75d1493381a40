//! How a handler run ends, shared by the kinds that run something outside the
//! worker (exec, http, container): [`supervise`] stops a run at its timeout or on
//! cancellation, [`parse_output`] turns the bytes it produced into its result, and
//! [`lossy_excerpt`] quotes them in an error message.

use serde_json::Value;
use std::future::Future;

use super::handler::{HandlerError, TaskContext};

/// Runs `work` until it finishes, the task's timeout passes or the task is
/// cancelled, whichever comes first. Dropping `work` is how it is stopped, so it must
/// not own anything that outlives it unless its drop cleans that up.
pub(crate) async fn supervise<T>(
    ctx: &TaskContext,
    work: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    tokio::select! {
        // Cancellation first: once the lease is lost no result can be reported, so
        // the worker must learn that promptly even if work happened to finish too.
        biased;
        () = ctx.cancel.cancelled() => Err(HandlerError::Cancelled),
        () = tokio::time::sleep(ctx.timeout) => Err(HandlerError::Timeout(ctx.timeout)),
        result = work => result,
    }
}

/// Turns the bytes a handler produced (exec stdout, HTTP body) into its result.
///
/// Empty or all-whitespace output is `null`; valid JSON is taken as is; anything
/// else that is UTF-8 becomes a JSON string of the trimmed text, so simple programs
/// that print a word need not speak JSON. Output that is not even UTF-8 is invalid.
pub(crate) fn parse_output(bytes: &[u8]) -> Result<Value, HandlerError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Value::String(text.trim().to_owned())),
        Err(e) => Err(HandlerError::InvalidOutput(format!(
            "output is neither JSON nor UTF-8 text ({e})"
        ))),
    }
}

/// Renders at most `limit` bytes of `bytes` for an error message, trimmed, with
/// invalid UTF-8 (including a character cut at the limit) replaced rather than
/// failing.
pub(crate) fn lossy_excerpt(bytes: &[u8], limit: usize) -> String {
    let cut = &bytes[..bytes.len().min(limit)];
    String::from_utf8_lossy(cut).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_output_rules() {
        assert_eq!(parse_output(b"").unwrap(), Value::Null);
        assert_eq!(parse_output(b" \n").unwrap(), Value::Null);
        assert_eq!(parse_output(b"{\"a\":1}\n").unwrap(), json!({"a": 1}));
        assert_eq!(parse_output(b"  done \n").unwrap(), json!("done"));
        assert!(matches!(
            parse_output(&[0xff, 0xfe]),
            Err(HandlerError::InvalidOutput(_))
        ));
    }
}
