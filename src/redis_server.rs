//! A `redis-server` child process on a free loopback port in its own temp
//! directory: what `drover dev` runs when no Redis URL is given, and what
//! every integration test starts for itself (so tests run in parallel and
//! can kill or restart "their" Redis).
//!
//! The child never outlives the process that started it, even one killed
//! with SIGKILL that runs no destructor: the kernel sends it SIGKILL when
//! its parent dies (`crate::child_process`), as for exec handlers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The one-line answer when redis-server is missing.
pub const INSTALL_HINT: &str =
    "redis-server is not installed; install it with: sudo apt-get install -y redis-server (or pass --redis-url)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restart comes back empty.
    None,
    /// AOF with `appendfsync always`.
    AofAlways,
    /// AOF with `appendfsync everysec`.
    AofEverySec,
}

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
    /// Extra `redis-server` arguments (e.g. a TLS port and certificates).
    extra: Vec<String>,
}

/// True when a `redis-server` binary is on PATH.
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when a Redis on this loopback port answers PING (without a password).
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Spawns `cmd` so that it dies with this process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
/// not the process. Callers run on tokio workers, blocking-pool threads
/// (which exit when idle) and test threads, so every spawn goes through one
/// thread that is never asked to stop: it lives as long as the process.
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    // SAFETY: the hook only makes async-signal-safe calls (child_process).
    unsafe {
        cmd.pre_exec(crate::child_process::die_with_parent());
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop never ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("the redis-server spawner thread starts");
        tx
    });
    let (reply, spawned) = mpsc::channel();
    let gone = || std::io::Error::other("the redis-server spawner thread is gone");
    spawner.send((cmd, reply)).map_err(|_| gone())?;
    spawned.recv().map_err(|_| gone())?
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start(persistence: Persistence) -> anyhow::Result<RedisServer> {
        Self::start_with(persistence, &[])
    }

    /// Starts a server with extra `redis-server` arguments, given after
    /// drover's own (so they override them), and waits until it answers.
    pub fn start_with(persistence: Persistence, extra: &[String]) -> anyhow::Result<RedisServer> {
        if !available() {
            anyhow::bail!(INSTALL_HINT);
        }
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir: tempfile::Builder::new().prefix("drover-redis-").tempdir()?,
            persistence,
            extra: extra.to_vec(),
        };
        // A port is free when chosen but may be taken before redis binds
        // it; try a few.
        let mut last_err = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt was made"))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--maxmemory-policy")
            .arg("noeviction")
            // As deploy/redis/redis.conf: tasks with inputs and results up
            // to 2 KB stay compact listpacks (about 400 bytes less each).
            .arg("--hash-max-listpack-value")
            .arg(crate::store::TASK_HASH_LISTPACK_VALUE.to_string())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra);
        match self.persistence {
            Persistence::None => {
                cmd.arg("--appendonly").arg("no");
            }
            Persistence::AofAlways => {
                cmd.arg("--appendonly").arg("yes").arg("--appendfsync").arg("always");
            }
            Persistence::AofEverySec => {
                cmd.arg("--appendonly").arg("yes").arg("--appendfsync").arg("everysec");
            }
        }
        // Redis reports a bad argument on stderr, before it opens its log.
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log"))?;
        cmd.stdout(Stdio::null()).stderr(stderr);
        let child = spawn_tied_to_process(cmd)?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                // The logs are in the temp directory, gone once this fails:
                // their last lines say why (a bad argument, a taken port).
                let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let log = read("stderr.log") + &read("redis.log");
                let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = &lines[lines.len().saturating_sub(5)..];
                anyhow::bail!("redis-server exited at start ({status}): {}", tail.join(" | "));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        anyhow::bail!("redis-server did not answer on port {} within 10s", self.port)
    }

    /// Starts a server that also listens with TLS on its own port, using
    /// the given PEM files; returns the server and the TLS port.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<(RedisServer, u16)> {
        let mut server = RedisServer::start(Persistence::None)?;
        let tls_port = free_port()?;
        server.extra = [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
        .to_vec();
        server.restart()?;
        Ok((server, tls_port))
    }

    /// True when the server answers PING.
    pub fn ping(&self) -> bool {
        answers_ping(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9: no chance to write anything more to disk.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory (so AOF data,
    /// if any, is loaded back).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old socket can linger for a moment after a kill.
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "redis restart retry");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
