//! A handler that panics ends its attempt as a failure, never as a lost task.
//!
//! The worker runs each attempt in a tokio task of its own and keeps the
//! attempt in its map of running tasks until the result is reported. A panic
//! that unwound through that tokio task would skip the report: the entry
//! would stay, its lease would be renewed for ever and the task would never
//! end. [`run_catching_panics`] catches a panic both where the handler builds
//! its future and where the future runs, and turns it into
//! [`HandlerError::Failed`] carrying the panic message, so the attempt is
//! charged and retried like any other failure.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::Value;

use super::{Handler, HandlerError, TaskContext};

/// Runs `handler` for one attempt; a panic becomes a failure (see the module
/// documentation).
pub async fn run_catching_panics(handler: &dyn Handler, ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    // Unwind safety: on a panic nothing of the handler's state is read again
    // by the worker; the handler itself must cope with its own state, as it
    // would after any failed attempt.
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.run(ctx, input))) {
        Ok(future) => future,
        Err(payload) => return Err(panicked(payload.as_ref())),
    };
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(panicked(payload.as_ref())),
    }
}

fn panicked(payload: &(dyn Any + Send)) -> HandlerError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a value that is not a message".to_string());
    tracing::error!(panic = %message, "handler panicked: the attempt fails");
    HandlerError::Failed(format!("handler panicked: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::HandlerFuture;
    use std::time::Duration;

    fn ctx() -> TaskContext {
        TaskContext::for_test(Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_panic_while_running_is_a_failure_with_its_message() {
        let handler = |_: TaskContext, n: Value| async move {
            if n == 1 {
                panic!("bad input {n}");
            }
            Ok::<_, HandlerError>(n)
        };
        let out = run_catching_panics(&handler, ctx(), Value::from(1)).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m == "handler panicked: bad input 1"),
            "{out:?}"
        );
        let out = run_catching_panics(&handler, ctx(), Value::from(2)).await;
        assert_eq!(out.unwrap(), Value::from(2));
    }

    #[tokio::test]
    async fn a_panic_while_building_the_future_is_a_failure_too() {
        let handler = |_: TaskContext, _: Value| -> HandlerFuture { panic!("no future") };
        let out = run_catching_panics(&handler, ctx(), Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m == "handler panicked: no future"),
            "{out:?}"
        );
    }
}
