//! The roles as separate processes for `drover bench --processes`: this
//! same binary started as a coordinator, distributors and workers against
//! the bench's Redis, the way they run in production, so that each role's
//! CPU time can be read from `/proc` and reported per task next to Redis'
//! own (where the time goes: Redis vs each role).

use crate::config::Settings;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPU seconds (user + system) used so far, summed per role.
pub type CpuByRole = BTreeMap<&'static str, f64>;

pub struct RoleProcesses {
    children: Vec<(&'static str, Child)>,
    /// Logs and the worker profile; kept until the processes are gone.
    dir: tempfile::TempDir,
}

impl RoleProcesses {
    pub fn spawn(
        settings: &Settings,
        result_ttl: &str,
        distributors: usize,
        workers: usize,
        capacity: u32,
    ) -> anyhow::Result<RoleProcesses> {
        let exe = std::env::current_exe()?;
        let dir = tempfile::tempdir()?;
        let profile = dir.path().join("worker.toml");
        std::fs::write(&profile, "[handlers]\nnoop = { kind = \"builtin\" }\n")?;
        let token = crate::api::auth::generate_token();
        let env: Vec<(&str, String)> = vec![
            ("DROVER_REDIS_URL", settings.redis_url.0.clone()),
            ("DROVER_SIGNING_KEYS", settings.require_keyring()?.to_spec()),
            ("DROVER_API_TOKENS", format!("{token}:admin")),
            ("DROVER_HTTP_ADDR", "127.0.0.1:0".into()),
            ("DROVER_ADMIN_ADDR", "127.0.0.1:0".into()),
            ("DROVER_RESULT_TTL", result_ttl.into()),
            ("DROVER_EVENTS_RETENTION", result_ttl.into()),
            ("DROVER_DISTRIBUTOR_BATCH", settings.distributor.batch.to_string()),
            ("DROVER_WORKER_GRACE", "1s".into()),
            ("RUST_LOG", "warn".into()),
        ];
        let mut roles = RoleProcesses {
            children: Vec::new(),
            dir,
        };
        roles.start(&exe, &env, "coordinator", "coordinator", &["--id", "bench-c"])?;
        for d in 0..distributors.max(1) {
            let id = format!("bench-d{d}");
            roles.start(&exe, &env, "distributor", &id, &["--id", &id])?;
        }
        let profile = profile.display().to_string();
        let capacity = capacity.to_string();
        for w in 0..workers.max(1) {
            let id = format!("bench-w{w}");
            let args = ["--config", &profile, "--id", &id, "--capacity", &capacity];
            roles.start(&exe, &env, "worker", &id, &args)?;
        }
        Ok(roles)
    }

    fn start(
        &mut self,
        exe: &std::path::Path,
        env: &[(&str, String)],
        role: &'static str,
        name: &str,
        args: &[&str],
    ) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = Command::new(exe)
            .arg(role)
            .args(args)
            // Only the bench's settings: DROVER_* of the caller's shell must
            // not change the cluster being measured.
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start `{} {role}`: {e}", exe.display()))?;
        self.children.push((role, child));
        Ok(())
    }

    /// Fails naming the role and its log if a process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for (role, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_dir(self.dir.path())?
                    .filter_map(|e| e.ok())
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n");
                anyhow::bail!("bench {role} process exited ({status}); logs:\n{log}");
            }
        }
        Ok(())
    }

    /// User + system CPU seconds of each role's processes so far.
    pub fn cpu(&self) -> CpuByRole {
        let mut by_role = CpuByRole::new();
        for (role, child) in &self.children {
            *by_role.entry(*role).or_default() += cpu_seconds(child.id()).unwrap_or(0.0);
        }
        by_role
    }

    /// SIGTERM to every role (they drain), then SIGKILL to what is left
    /// after 15 s.
    pub fn stop(mut self) {
        for (_, child) in &self.children {
            // SAFETY: kill(2) with a pid this process started and has not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// User + system CPU seconds of process `pid`, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields from 3 on follow the last ')'. utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (per_second > 0.0).then(|| ticks / per_second)
}
