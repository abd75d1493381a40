//! Builtin handlers: small in-process helpers for development, smoke tests and
//! examples (`drover dev` offers all of them by default).
//!
//! `noop` returns `null`; `echo` returns its input; `sleep` waits for the number of
//! milliseconds it is given (a bare number or `{"ms": N}`) and returns
//! `{"slept_ms": N}`; `fail` always fails, with `{"message": "..."}` as the error
//! text if given. They run no external code, so offering them is always safe.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Handler, HandlerError, HandlerFuture, SpecError, TaskContext};

/// The builtins' names, in the order error messages list them.
pub const BUILTIN_NAMES: [&str; 4] = ["noop", "echo", "sleep", "fail"];

/// A `kind = "builtin"` profile entry. Without `builtin`, the handler's own name
/// picks the builtin (`noop = { kind = "builtin" }`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuiltinSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
}

/// One of the builtin handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Noop,
    Echo,
    Sleep,
    Fail,
}

impl Builtin {
    /// Every builtin, in [`BUILTIN_NAMES`] order.
    pub const ALL: [Builtin; 4] = [Builtin::Noop, Builtin::Echo, Builtin::Sleep, Builtin::Fail];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Noop => "noop",
            Builtin::Echo => "echo",
            Builtin::Sleep => "sleep",
            Builtin::Fail => "fail",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Resolves a profile entry named `handler`.
    pub fn from_spec(handler: &str, spec: &BuiltinSpec) -> Result<Builtin, SpecError> {
        let name = spec.builtin.as_deref().unwrap_or(handler);
        Builtin::from_name(name).ok_or_else(|| SpecError::UnknownBuiltin {
            handler: handler.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl Handler for Builtin {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        let builtin = *self;
        Box::pin(async move {
            match builtin {
                Builtin::Noop => Ok(Value::Null),
                Builtin::Echo => Ok(input),
                Builtin::Sleep => sleep(&ctx, &input).await,
                Builtin::Fail => Err(HandlerError::Failed(fail_message(&input))),
            }
        })
    }
}

async fn sleep(ctx: &TaskContext, input: &Value) -> Result<Value, HandlerError> {
    let ms = input
        .as_u64()
        .or_else(|| input.get("ms").and_then(Value::as_u64))
        .ok_or_else(|| {
            HandlerError::Failed(
                "sleep: input must be a non-negative whole number of milliseconds or {\"ms\": N}".into(),
            )
        })?;
    let wanted = Duration::from_millis(ms);
    // Sleep only as long as the task may run: a sleep past the deadline would hold
    // the worker's slot for nothing, since the result would be discarded anyway.
    let (nap, outcome) = if wanted > ctx.timeout {
        (ctx.timeout, Err(HandlerError::Timeout(ctx.timeout)))
    } else {
        (wanted, Ok(json!({ "slept_ms": ms })))
    };
    tokio::select! {
        () = ctx.cancel.cancelled() => Err(HandlerError::Cancelled),
        () = tokio::time::sleep(nap) => outcome,
    }
}

fn fail_message(input: &Value) -> String {
    input
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("requested failure")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::Registry;
    use std::time::Instant;

    fn ctx(timeout: Duration) -> TaskContext {
        TaskContext {
            task_id: "t-1".into(),
            handler: "b".into(),
            attempt: 1,
            epoch: 1,
            fence: 1,
            timeout,
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }

    async fn run(name: &str, ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
        let handler = Registry::builtins().get(name).expect("builtin registered");
        handler.run(ctx, input).await
    }

    #[tokio::test]
    async fn noop_returns_null() {
        let out = run("noop", ctx(Duration::from_secs(1)), json!({"x": 1})).await;
        assert_eq!(out.unwrap(), Value::Null);
    }

    #[tokio::test]
    async fn echo_returns_input() {
        let input = json!({"a": [1, 2, {"b": null}], "s": "é"});
        let out = run("echo", ctx(Duration::from_secs(1)), input.clone()).await;
        assert_eq!(out.unwrap(), input);
    }

    #[tokio::test]
    async fn fail_uses_message_or_default() {
        let out = run("fail", ctx(Duration::from_secs(1)), json!({"message": "boom"})).await;
        assert!(matches!(out, Err(HandlerError::Failed(m)) if m == "boom"));
        let out = run("fail", ctx(Duration::from_secs(1)), Value::Null).await;
        assert!(matches!(out, Err(HandlerError::Failed(m)) if m == "requested failure"));
    }

    #[tokio::test]
    async fn sleep_accepts_number_and_object() {
        let start = Instant::now();
        let out = run("sleep", ctx(Duration::from_secs(5)), json!(30)).await;
        assert_eq!(out.unwrap(), json!({"slept_ms": 30}));
        assert!(start.elapsed() >= Duration::from_millis(30));

        let out = run("sleep", ctx(Duration::from_secs(5)), json!({"ms": 5})).await;
        assert_eq!(out.unwrap(), json!({"slept_ms": 5}));
    }

    #[tokio::test]
    async fn sleep_rejects_bad_input() {
        for input in [json!("10"), json!(-5), json!(1.5), json!({"ms": "x"}), Value::Null] {
            let out = run("sleep", ctx(Duration::from_secs(1)), input.clone()).await;
            assert!(
                matches!(&out, Err(HandlerError::Failed(m)) if m.starts_with("sleep: input must be")),
                "{input}: {out:?}"
            );
        }
    }

    #[tokio::test]
    async fn sleep_is_cancelled_promptly() {
        let ctx = ctx(Duration::from_secs(60));
        let cancel = ctx.cancel.clone();
        let start = Instant::now();
        let task = tokio::spawn(run("sleep", ctx, json!(30_000)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let out = task.await.expect("join");
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn sleep_stops_at_the_timeout() {
        let start = Instant::now();
        let out = run("sleep", ctx(Duration::from_millis(100)), json!(30_000)).await;
        let elapsed = start.elapsed();
        assert!(
            matches!(out, Err(HandlerError::Timeout(d)) if d == Duration::from_millis(100)),
            "{out:?}"
        );
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn from_spec_defaults_to_the_handler_name() {
        assert_eq!(Builtin::from_spec("noop", &BuiltinSpec::default()), Ok(Builtin::Noop));
        let spec = BuiltinSpec {
            builtin: Some("sleep".into()),
        };
        assert_eq!(Builtin::from_spec("slow", &spec), Ok(Builtin::Sleep));
    }
}
