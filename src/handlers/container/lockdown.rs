//! What a task's container is created with: the profile's image, command,
//! environment and working directory, drover's variables and labels, the resource
//! limits, and the lockdown every container gets (no network unless allowed, a
//! read-only root with a small tmpfs at `/tmp`, no capabilities, no new
//! privileges, no log files). One place to read to know what a task may do.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};

use super::Inner;
use crate::handlers::TaskContext;

/// `/tmp` is the one writable place in the container: a tmpfs, so it counts
/// against the memory limit and disappears with the container. `mode=1777` lets the
/// non-root user write there when the image has no `/tmp`; when it has one, Docker
/// copies it (contents and mode) onto the tmpfs, and images ship `/tmp` as 1777.
const TMP_MOUNT: (&str, &str) = ("/tmp", "rw,nosuid,nodev,noexec,size=16m,mode=1777");

impl Inner {
    /// The create request for this run's container, carrying `labels`.
    pub(super) fn container_config(&self, ctx: &TaskContext, labels: HashMap<String, String>) -> ContainerCreateBody {
        let mut env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(ctx.env().map(|(k, v)| format!("{k}={v}")));
        let memory = self.memory.as_ref().map(|(bytes, _)| *bytes);
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: self.command.clone(),
            env: Some(env),
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            labels: Some(labels),
            // Stdin stays open until the one attached client (us) closes its side;
            // no TTY, so stdout and stderr arrive as separate streams.
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(HostConfig {
                nano_cpus: self.nano_cpus,
                memory,
                // Equal to the memory limit: no swap on top, so the limit is real
                // and a runaway program is killed instead of thrashing.
                memory_swap: memory,
                pids_limit: Some(self.pids),
                network_mode: (!self.network).then(|| "none".to_owned()),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(TMP_MOUNT.0.to_owned(), TMP_MOUNT.1.to_owned())])),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                // The output is read over the attach stream; Docker's log files
                // would only be a second, unbounded copy of it on disk.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".to_owned()),
                    config: None,
                }),
                // Removed by us after reading its exit state, never by Docker first.
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use serde_json::{json, Value};

    #[tokio::test]
    async fn environment_identity_and_lockdown() {
        let Some(engine) = docker_or_skip("lockdown").await else {
            return;
        };
        let mut spec = sh(
            r#"printf '{"task":"%s","handler":"%s","attempt":"%s","fence":"%s","epoch":"%s","counter":"%s","mode":"%s","uid":"%s","gid":"%s","pwd":"%s","nnp":"%s","cap":"%s","nets":"%s","root_ro":%s,"tmp_rw":%s}' \
            "$DROVER_TASK_ID" "$DROVER_HANDLER" "$DROVER_ATTEMPT" "$DROVER_FENCE" "$DROVER_EPOCH" \
            "$DROVER_FENCE_COUNTER" "$MODE" "$(id -u)" "$(id -g)" "$(pwd)" \
            "$(grep NoNewPrivs /proc/self/status | tr -dc 0-9)" \
            "$(grep CapEff /proc/self/status | cut -f2)" \
            "$(ls /sys/class/net | tr '\n' ' ')" \
            "$(touch /x 2>/dev/null && echo false || echo true)" \
            "$(touch /tmp/x && echo true || echo false)""#,
        );
        spec.env.insert("MODE".into(), "x".into());
        spec.workdir = Some("/bin".into());
        let task = task_id("lockdown");
        let out = run(&engine, &spec, &task, Value::Null).await.unwrap();
        assert_eq!(
            out,
            json!({"task": task, "handler": "box", "attempt": "3", "fence": "5.17",
                   "epoch": "5", "counter": "17", "mode": "x", "uid": "65534", "gid": "65534",
                   "pwd": "/bin", "nnp": "1", "cap": "0000000000000000", "nets": "lo ",
                   "root_ro": true, "tmp_rw": true})
        );

        // With the network allowed, the container has more than loopback.
        spec.command = Some(vec!["/bin/sh".into(), "-c".into(), "ls /sys/class/net | wc -l".into()]);
        spec.network = true;
        let out = run(&engine, &spec, &task, Value::Null).await.unwrap();
        assert!(out.as_i64().unwrap_or(0) >= 2, "{out}");
    }
}
