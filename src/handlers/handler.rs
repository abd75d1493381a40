//! What a handler is: the [`Handler`] trait a worker runs tasks through, the
//! [`TaskContext`] it hands each run, and the [`HandlerError`]s a run can end in.
//! Also the [`Probe`] type a handler that depends on something outside the worker
//! (Docker, say) uses to say whether it can run now.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The future a [`Handler`] returns: boxed so handlers of different types can sit in
/// one [`Registry`](super::Registry), and `Send` so the worker can run it on any runtime thread.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// What an availability [`Probe`] returns: `Err` carries the reason, for the
/// worker's health report and logs.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Checks whether a handler can run here now (e.g. whether Docker answers). It is
/// called before every heartbeat, so it must be quick and bound its own waiting.
pub type Probe = Arc<dyn Fn() -> ProbeFuture + Send + Sync>;

/// What a handler learns about the attempt it runs.
#[derive(Clone, Debug)]
pub struct TaskContext {
    pub task_id: String,
    pub handler: String,
    pub attempt: u32,
    pub epoch: u64,
    pub fence: u64,
    /// The task's effective timeout; the handler must stop by then.
    pub timeout: Duration,
    /// Cancelled when the task is cancelled, the lease is lost, or the worker gives
    /// the task back.
    pub cancel: CancellationToken,
}

impl TaskContext {
    /// The fencing token as handlers pass it downstream: `"epoch.fence"`. Both parts
    /// are needed because the fence counter restarts when the epoch changes.
    pub fn fence_token(&self) -> String {
        format!("{}.{}", self.epoch, self.fence)
    }

    /// The [`RESERVED_ENV`] variables with this attempt's values, for the program an
    /// exec or container handler runs.
    pub(crate) fn env(&self) -> [(&'static str, String); 6] {
        let [task_id, handler, attempt, fence, epoch, counter] = RESERVED_ENV;
        [
            (task_id, self.task_id.clone()),
            (handler, self.handler.clone()),
            (attempt, self.attempt.to_string()),
            (fence, self.fence_token()),
            (epoch, self.epoch.to_string()),
            (counter, self.fence.to_string()),
        ]
    }
}

/// Variables drover sets for every run of an exec or container handler; a
/// profile may not override them, since downstream systems trust
/// `DROVER_FENCE` to be the real fencing token.
pub(crate) const RESERVED_ENV: [&str; 6] = [
    "DROVER_TASK_ID",
    "DROVER_HANDLER",
    "DROVER_ATTEMPT",
    "DROVER_FENCE",
    "DROVER_EPOCH",
    "DROVER_FENCE_COUNTER",
];

/// Why a handler run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The handler ran and reported failure (non-zero exit, HTTP non-2xx, builtin fail).
    #[error("{0}")]
    Failed(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cancelled")]
    Cancelled,
    #[error("output exceeds {limit} bytes")]
    OutputTooLarge { limit: usize },
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// The handler could not be started at all, e.g. its program was not found.
    #[error("could not start: {0}")]
    Start(String),
}

/// Something a worker can run for a task.
///
/// Any `Fn(TaskContext, Value) -> impl Future<Output = Result<Value, HandlerError>>`
/// that is `Send + Sync + 'static` (with a `Send + 'static` future) is a handler, so
/// library users can [`Registry::register`](super::Registry::register) a plain async closure.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        Box::pin(self(ctx, input))
    }
}

#[cfg(test)]
impl TaskContext {
    /// A context for unit tests: task `t-1` of handler `h`, attempt 2, token `7.42`.
    pub(crate) fn for_test(timeout: Duration) -> TaskContext {
        TaskContext {
            task_id: "t-1".into(),
            handler: "h".into(),
            attempt: 2,
            epoch: 7,
            fence: 42,
            timeout,
            cancel: CancellationToken::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_token_joins_epoch_and_fence() {
        assert_eq!(TaskContext::for_test(Duration::from_secs(1)).fence_token(), "7.42");
    }

    #[test]
    fn env_names_each_reserved_variable_with_its_value() {
        let env = TaskContext::for_test(Duration::from_secs(1)).env();
        assert_eq!(
            env.map(|(name, value)| format!("{name}={value}")),
            [
                "DROVER_TASK_ID=t-1",
                "DROVER_HANDLER=h",
                "DROVER_ATTEMPT=2",
                "DROVER_FENCE=7.42",
                "DROVER_EPOCH=7",
                "DROVER_FENCE_COUNTER=42",
            ]
        );
    }
}
