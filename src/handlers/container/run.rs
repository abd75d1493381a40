//! One task in one container: [`Inner::execute`] creates it (pulling the image
//! only if the profile allows), attaches to its streams before starting it, waits
//! for it to exit, reads its exit state and turns that into the task's result or a
//! failure message, and removes the container whatever happened.

use std::pin::pin;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerState;
use bollard::query_parameters::{AttachContainerOptions, CreateImageOptions, WaitContainerOptions};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::Value;

use super::cleanup::{Cleanup, CleanupState};
use super::engine::describe;
use super::stdio::{feed_stdin, read_output, LOG_TAIL};
use super::Inner;
use crate::handlers::outcome::{lossy_excerpt, parse_output, supervise};
use crate::handlers::{HandlerError, TaskContext};

/// What one finished container left behind.
struct Finished {
    exit_code: i64,
    oom_killed: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Inner {
    pub(super) async fn execute(&self, ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
        // A task given back before it started must not start a container at all.
        if ctx.cancel.is_cancelled() {
            return Err(HandlerError::Cancelled);
        }
        let docker = supervise(&ctx, async {
            self.engine
                .client()
                .await
                .map_err(|e| HandlerError::Start(e.to_string()))
        })
        .await?;
        let labels = self.labels(&ctx);
        let mut container = Cleanup::new(docker.clone(), &labels);
        let outcome = supervise(&ctx, self.run_container(&docker, &ctx, input, &mut container)).await;
        // Always, whatever the outcome: a finished container is only a record, but
        // a timed-out or cancelled one is still running and must be killed now.
        container.remove().await;
        let finished = outcome?;
        self.interpret(finished)
    }

    /// Creates, attaches, starts and waits for the container, recording it in
    /// `cleanup` as soon as it may exist.
    async fn run_container(
        &self,
        docker: &Docker,
        ctx: &TaskContext,
        input: Value,
        cleanup: &mut Cleanup,
    ) -> Result<Finished, HandlerError> {
        let id = self.create(docker, ctx, cleanup).await?;
        let start_error = |e: BollardError| {
            HandlerError::Start(format!(
                "starting a container from image {:?}: {}",
                self.image,
                describe(&e)
            ))
        };
        // Attached before it starts, so not a byte of output is missed.
        let attached = docker
            .attach_container(
                &id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(start_error)?;
        docker.start_container(&id, None).await.map_err(start_error)?;

        let payload = format!("{input}\n").into_bytes();
        let mut feeding = pin!(feed_stdin(attached.input, payload));
        let mut reading = pin!(read_output(attached.output, self.max_output));
        let mut fed = false;
        // The output ends when the container exits, whether or not it read its
        // input, so only the output decides when this is over: a program that
        // ignores a large input must not leave us blocked writing it.
        let (stdout, stderr) = loop {
            tokio::select! {
                out = &mut reading => break out?,
                () = &mut feeding, if !fed => fed = true,
            }
        };

        let state = wait_for_exit(docker, &id).await?;
        Ok(Finished {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
            stdout,
            stderr,
        })
    }

    /// Creates the container, pulling its image first if it is missing and the
    /// profile allows pulling.
    async fn create(&self, docker: &Docker, ctx: &TaskContext, cleanup: &mut Cleanup) -> Result<String, HandlerError> {
        let config = self.container_config(ctx, cleanup.labels.clone());
        let mut pulled = false;
        loop {
            // From here until Docker answers, a container may exist whose id we do
            // not know yet; cleanup then finds it by its labels.
            cleanup.state = CleanupState::Creating;
            match docker.create_container(None, config.clone()).await {
                Ok(created) => {
                    cleanup.state = CleanupState::Created(created.id.clone());
                    return Ok(created.id);
                }
                // 404 from create means the image is not there (409 would be a
                // name clash, which unnamed containers cannot have).
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) if !pulled => {
                    cleanup.state = CleanupState::Idle;
                    if !self.pull {
                        return Err(HandlerError::Start(format!(
                            "image {:?} is not present and pulling is not allowed by the profile",
                            self.image
                        )));
                    }
                    self.pull_image(docker).await?;
                    pulled = true;
                }
                Err(e) => {
                    cleanup.state = CleanupState::Idle;
                    return Err(HandlerError::Start(format!(
                        "creating a container from image {:?}: {}",
                        self.image,
                        describe(&e)
                    )));
                }
            }
        }
    }

    async fn pull_image(&self, docker: &Docker) -> Result<(), HandlerError> {
        tracing::info!(image = %self.image, handler = %self.handler, "pulling image");
        let mut progress = docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(pull_reference(&self.image)),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(step) = progress.next().await {
            step.map_err(|e| HandlerError::Start(format!("pulling image {:?}: {}", self.image, describe(&e))))?;
        }
        Ok(())
    }

    fn interpret(&self, finished: Finished) -> Result<Value, HandlerError> {
        let Finished {
            exit_code,
            oom_killed,
            stdout,
            stderr,
        } = finished;
        // A program that survived the loss of a child to the OOM killer and still
        // exited 0 has succeeded.
        if exit_code == 0 {
            return parse_output(&stdout);
        }
        let how = match (&self.memory, oom_killed, exit_code) {
            (Some((_, limit)), true, _) => {
                format!("out of memory: killed at the memory limit of {limit} (exit status {exit_code})")
            }
            (None, true, _) => format!("out of memory (exit status {exit_code})"),
            // SIGKILL, the OOM killer's signal, without Docker's word for it. Docker
            // learns of OOM kills from containerd, which only starts watching a
            // container's memory cgroup once it runs: a program that hits the limit
            // within moments of starting is killed unreported (one in ten such
            // kills here, on Docker 20.10 with cgroup v1). Nothing else in a
            // locked-down container is likely to SIGKILL its main process.
            (Some((_, limit)), false, 137) => format!(
                "exit status 137 (killed by SIGKILL): probably out of memory at the memory \
                 limit of {limit}, though Docker reported no OOM kill"
            ),
            (_, false, _) => format!("exit status {exit_code}"),
        };
        let tail = lossy_excerpt(&stderr, LOG_TAIL);
        Err(HandlerError::Failed(if tail.is_empty() {
            how
        } else {
            format!("{how}: {tail}")
        }))
    }
}

/// Waits for the container to stop and reads the state it stopped in.
async fn wait_for_exit(docker: &Docker, id: &str) -> Result<ContainerState, HandlerError> {
    // The streams can close a moment before Docker records the exit.
    let mut waiting = docker.wait_container(
        id,
        Some(WaitContainerOptions {
            condition: "not-running".to_owned(),
        }),
    );
    match waiting.next().await {
        // bollard reports a non-zero exit as an error; the code is read below.
        Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) | None => {}
        Some(Err(e)) => {
            return Err(HandlerError::Failed(format!(
                "waiting for the container: {}",
                describe(&e)
            )))
        }
    }
    Ok(docker
        .inspect_container(id, None)
        .await
        .map_err(|e| HandlerError::Failed(format!("inspecting the container: {}", describe(&e))))?
        .state
        .unwrap_or_default())
}

/// A reference Docker pulls exactly one image for: with no tag or digest, the
/// pull API would fetch every tag of the repository, so `:latest` is made explicit
/// as `docker pull` does.
fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    #[test]
    fn pull_reference_names_one_tag() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            pull_reference("registry:5000/team/app"),
            "registry:5000/team/app:latest"
        );
        assert_eq!(pull_reference("registry:5000/team/app:2"), "registry:5000/team/app:2");
        assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
    }

    #[tokio::test]
    async fn cat_returns_the_input_and_the_container_is_removed() {
        let Some(engine) = docker_or_skip("cat").await else {
            return;
        };
        let task = task_id("cat");
        let input = json!({"image": "a.png", "sizes": [64, 128], "note": "ünï"});
        let spec = ContainerSpec {
            command: Some(vec!["cat".into()]),
            ..base_spec()
        };
        assert_eq!(run(&engine, &spec, &task, input.clone()).await.unwrap(), input);
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn missing_program_is_a_start_error() {
        let Some(engine) = docker_or_skip("no-program").await else {
            return;
        };
        let task = task_id("no-program");
        let spec = ContainerSpec {
            command: Some(vec!["/nonexistent/thumb".into()]),
            ..base_spec()
        };
        let out = run(&engine, &spec, &task, Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Start(m)) if m.contains("/nonexistent/thumb")),
            "{out:?}"
        );
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn missing_image_is_not_pulled_unless_allowed() {
        let Some(engine) = docker_or_skip("no-image").await else {
            return;
        };
        let spec = ContainerSpec {
            image: "drover-test-missing:nope".into(),
            ..base_spec()
        };
        let out = run(&engine, &spec, &task_id("no-image"), Value::Null).await;
        match out {
            Err(HandlerError::Start(msg)) => assert_eq!(
                msg,
                r#"image "drover-test-missing:nope" is not present and pulling is not allowed by the profile"#
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn timeout_kills_and_removes_the_container() {
        let Some(engine) = docker_or_skip("timeout").await else {
            return;
        };
        let docker = engine.client().await.unwrap();
        let task = task_id("timeout");
        let start = Instant::now();
        let out = handler(&engine, &sh("sleep 30"), &worker_id("timeout"))
            .run(ctx(&task, Duration::from_millis(1500)), Value::Null)
            .await;
        assert!(
            matches!(out, Err(HandlerError::Timeout(d)) if d == Duration::from_millis(1500)),
            "{out:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        // Removed before the run returned, not eventually.
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn cancel_kills_and_removes_the_container_which_had_its_limits() {
        let Some(engine) = docker_or_skip("cancel").await else {
            return;
        };
        let docker = engine.client().await.unwrap();
        let task = task_id("cancel");
        let worker = worker_id("cancel");
        let spec = ContainerSpec {
            cpus: Some(0.5),
            memory: Some("64MiB".into()),
            pids: Some(32),
            ..sh("sleep 30")
        };
        let ctx = ctx(&task, Duration::from_secs(60));
        let cancel = ctx.cancel.clone();
        let run = tokio::spawn(handler(&engine, &spec, &worker).run(ctx, Value::Null));

        let id = running_container(&docker, &task).await;
        let seen = docker.inspect_container(&id, None).await.expect("inspect");
        let config = seen.config.expect("config");
        let labels = config.labels.expect("labels");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_WORKER], worker);
        assert_eq!(labels[LABEL_TASK], task);
        assert_eq!(labels[LABEL_FENCE], "5.17");
        assert_eq!(labels[LABEL_HANDLER], "box");
        assert_eq!(config.user.as_deref(), Some(DEFAULT_USER));
        let host = seen.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.pids_limit, Some(32));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]));

        let start = Instant::now();
        cancel.cancel();
        let out = run.await.expect("join");
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn already_cancelled_task_creates_nothing() {
        let Some(engine) = docker_or_skip("pre-cancel").await else {
            return;
        };
        let task = task_id("pre-cancel");
        let ctx = ctx(&task, Duration::from_secs(10));
        ctx.cancel.cancel();
        let out = handler(&engine, &sh("echo 1"), &worker_id("pre-cancel"))
            .run(ctx, Value::Null)
            .await;
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn memory_limit_is_reported_as_out_of_memory() {
        let Some(engine) = docker_or_skip("oom").await else {
            return;
        };
        let task = task_id("oom");
        // dd fills its 64 MiB buffer inside one read(2) from /dev/zero, so the limit
        // is hit in the kernel and the OOM killer acts at once. (A program that
        // grows its heap in user space, like `head -c 64m /dev/zero | tail`, can
        // thrash for half a minute first: reclaim keeps evicting and re-reading
        // busybox's own code pages before it gives up.) The pause first lets
        // containerd start watching the container's memory cgroup; an OOM kill
        // before that goes unreported (see `sigkill_without_docker_oom_report`).
        let spec = ContainerSpec {
            memory: Some("8Mi".into()),
            ..sh("sleep 0.5; exec dd if=/dev/zero of=/dev/null bs=64M count=1")
        };
        let out = run(&engine, &spec, &task, Value::Null).await;
        match out {
            // Under load Docker may miss reporting an OOM kill; the handler then
            // says "probably out of memory" for the same exit 137 at the limit.
            Err(HandlerError::Failed(msg)) => assert!(
                msg.starts_with("out of memory: killed at the memory limit of 8Mi (exit status 137)")
                    || (msg.contains("probably out of memory") && msg.contains("8Mi") && msg.contains("137")),
                "{msg}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        let docker = engine.client().await.unwrap();
        assert_eq!(task_containers(&docker, &task).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn sigkill_without_docker_oom_report() {
        let Some(engine) = docker_or_skip("sigkill").await else {
            return;
        };
        let task = task_id("sigkill");
        // PID 1 ignores signals it has no handler for, even SIGKILL, so a child
        // shell is killed and the container exits with its status.
        let kill_self = sh("sh -c 'kill -9 $$'; exit $?");
        let out = run(&engine, &kill_self, &task, Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m == "exit status 137: Killed"),
            "{out:?}"
        );

        // With a memory limit, an unreported SIGKILL is most likely the OOM killer
        // acting before Docker watched the container, and the message says so.
        let limited = ContainerSpec {
            memory: Some("64Mi".into()),
            ..kill_self
        };
        let out = run(&engine, &limited, &task, Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m
                == "exit status 137 (killed by SIGKILL): probably out of memory at the \
                    memory limit of 64Mi, though Docker reported no OOM kill: Killed"),
            "{out:?}"
        );
    }
}
