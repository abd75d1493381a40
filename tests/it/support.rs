//! The shared harness: every test gets its own `redis-server` on a free
//! port, settings with short timings, a test keyring and tokens, and roles
//! started in-process (for logic) or as real `drover` processes (for
//! crashes). Waits poll real state with a bound; nothing sleeps blindly.

#![allow(dead_code)]

use drover::api::auth::ApiTokens;
use drover::api::TaskBody;
use drover::client::Client;
use drover::config::{Layers, Settings};
use drover::context::Context;
use drover::envelope::Keyring;
use drover::handlers::Registry;
use drover::redis_server::{self, Persistence, RedisServer};
use drover::roles::worker::WorkerSpec;
use drover::roles::{coordinator, distributor, worker};
use drover::task::TaskState;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const READ_TOKEN: &str = "test-read-token-0123456789";
pub const SUBMIT_TOKEN: &str = "test-submit-token-0123456789";
pub const SIGNING_KEYS: &str = "t1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Starts a Redis for one test, or says loudly why the test is skipped
/// (a failure when DROVER_TEST_REQUIRE=all).
pub fn redis(persistence: Persistence) -> Option<RedisServer> {
    if !redis_server::available() {
        skip_or_fail("redis-server is not installed");
        return None;
    }
    Some(RedisServer::start(persistence).expect("redis-server starts"))
}

pub fn skip_or_fail(why: &str) {
    if std::env::var("DROVER_TEST_REQUIRE").is_ok_and(|v| v == "all") {
        panic!("required tool missing: {why} (DROVER_TEST_REQUIRE=all)");
    }
    eprintln!("SKIPPED: {why}");
}

/// Settings for a test cluster: short leases and ticks, overridable.
pub fn settings(redis_url: &str, overrides: &[(&'static str, &str)]) -> Settings {
    let mut layers = Layers::load(None).expect("defaults load");
    let base: &[(&'static str, &str)] = &[
        ("redis_url", redis_url),
        ("admin_addr", "127.0.0.1:0"),
        ("coordinator.http_addr", "127.0.0.1:0"),
        ("timing.lease_ttl", "2s"),
        ("timing.assign_ttl", "2s"),
        ("timing.heartbeat", "200ms"),
        ("timing.worker_ttl", "1s"),
        ("timing.leader_ttl", "1s"),
        ("timing.tick", "50ms"),
        ("timing.backoff_base", "100ms"),
        ("timing.backoff_max", "500ms"),
        ("worker.grace", "2s"),
    ];
    for (k, v) in base.iter().chain(overrides) {
        layers.set_flag(k, "test", Some(v.to_string()));
    }
    let mut s = layers.resolve().expect("test settings are valid");
    s.keyring = Some(Keyring::parse(SIGNING_KEYS, None).unwrap());
    s.api_tokens =
        Some(ApiTokens::parse(&format!("{ADMIN_TOKEN}:admin;{READ_TOKEN}:read;{SUBMIT_TOKEN}:submit")).unwrap());
    s
}

/// A cluster of in-process roles sharing one Redis.
pub struct Cluster {
    pub redis: RedisServer,
    pub settings: Settings,
    pub api: String,
    pub shutdown: CancellationToken,
    roles: Vec<(String, CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Cluster {
    /// Redis plus one coordinator; add distributors and workers as needed.
    pub async fn start(overrides: &[(&'static str, &str)]) -> Option<Cluster> {
        Self::start_with(redis(Persistence::None)?, overrides).await
    }

    pub async fn start_with(redis: RedisServer, overrides: &[(&'static str, &str)]) -> Option<Cluster> {
        drover::telemetry::metrics_handle();
        let settings = settings(&redis.url(), overrides);
        let mut c = Cluster {
            redis,
            settings,
            api: String::new(),
            shutdown: CancellationToken::new(),
            roles: Vec::new(),
        };
        c.api = c.add_coordinator("coord-1").await;
        Some(c)
    }

    pub fn ctx(&self, role: &str) -> Context {
        Context::new(self.settings.clone(), role, role).expect("context")
    }

    /// Starts a coordinator; returns its API base URL.
    pub async fn add_coordinator(&mut self, id: &str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let ctx = self.ctx("coordinator");
        let stop = self.shutdown.child_token();
        let h = tokio::spawn(coordinator::run(ctx, listener, id.to_string(), stop.clone()));
        self.roles.push((id.to_string(), stop, h));
        api
    }

    pub fn add_distributor(&mut self, id: &str) {
        let ctx = self.ctx("distributor");
        let stop = self.shutdown.child_token();
        let h = tokio::spawn(distributor::run(ctx, id.to_string(), stop.clone()));
        self.roles.push((id.to_string(), stop, h));
    }

    /// Starts a worker and waits until its first heartbeat is in Redis, so
    /// its handlers are accepted and it can be placed on.
    pub async fn add_worker(&mut self, id: &str, capacity: u32, tags: &[&str], registry: Registry) {
        self.add_worker_of_queues(id, capacity, tags, &[], registry).await
    }

    /// [`Cluster::add_worker`] for a worker that takes tasks only from
    /// `queues` (`<queue>` or `<queue>:<weight>`).
    pub async fn add_worker_of_queues(
        &mut self,
        id: &str,
        capacity: u32,
        tags: &[&str],
        queues: &[&str],
        registry: Registry,
    ) {
        let spec = WorkerSpec {
            id: id.to_string(),
            capacity,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            queues: queues
                .iter()
                .map(|q| drover::names::QueueWeight::parse(q).unwrap())
                .collect(),
            grace: self.settings.worker.grace,
            registry,
        };
        let ctx = self.ctx("worker");
        let stop = self.shutdown.child_token();
        let store = ctx.store.clone();
        let h = tokio::spawn(worker::run(ctx, spec, stop.clone()));
        self.roles.push((id.to_string(), stop, h));
        let ttl = self.settings.timing.worker_ttl;
        eventually(Duration::from_secs(10), "the worker's first heartbeat", || async {
            let live = store.workers(ttl).await.ok()?;
            live.iter().any(|w| w.id == id).then_some(())
        })
        .await;
    }

    /// Stops one role gracefully and waits for it.
    pub async fn stop_role(&mut self, id: &str) {
        let i = self.roles.iter().position(|r| r.0 == id).expect("role exists");
        let (_, stop, h) = self.roles.remove(i);
        stop.cancel();
        h.await.unwrap().unwrap();
    }

    /// Ends a role abruptly (its task is aborted, nothing drains).
    pub fn abort_role(&mut self, id: &str) {
        let i = self.roles.iter().position(|r| r.0 == id).expect("role exists");
        let (_, _, h) = self.roles.remove(i);
        h.abort();
    }

    pub fn client(&self) -> Client {
        Client::new(&self.api, Some(ADMIN_TOKEN.into())).unwrap()
    }

    pub async fn redis_con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for (_, _, h) in self.roles.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
    }
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it yields a value or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the task is in `state`.
pub async fn wait_state(client: &Client, id: &str, state: TaskState, within: Duration) -> TaskBody {
    let mut last = None;
    let deadline = Instant::now() + within;
    loop {
        let t = client.get(id).await.unwrap();
        if t.state == state {
            return t;
        }
        if Instant::now() > deadline {
            panic!(
                "task {id} never reached {state:?} within {within:?}; last seen {:?}",
                last.unwrap_or(t)
            );
        }
        last = Some(t);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real `drover` process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: std::path::PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Waits for the process to exit; returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {within:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment that makes a `drover` process join a test cluster.
pub fn proc_env(redis_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DROVER_REDIS_URL", redis_url),
        ("DROVER_SIGNING_KEYS", SIGNING_KEYS),
        ("DROVER_API_TOKENS", &format!("{ADMIN_TOKEN}:admin") as &str),
        ("DROVER_ADMIN_ADDR", "127.0.0.1:0"),
        ("DROVER_HTTP_ADDR", "127.0.0.1:0"),
        ("DROVER_LEASE_TTL", "2s"),
        ("DROVER_ASSIGN_TTL", "2s"),
        ("DROVER_HEARTBEAT", "200ms"),
        ("DROVER_WORKER_TTL", "1s"),
        ("DROVER_LEADER_TTL", "1s"),
        ("DROVER_TICK", "50ms"),
        ("DROVER_BACKOFF_BASE", "100ms"),
        ("DROVER_BACKOFF_MAX", "500ms"),
        ("RUST_LOG", "info,drover=debug"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Starts `drover <args>` with `env`, logging to a temp file.
pub fn spawn(name: &str, args: &[&str], env: &[(String, String)], dir: &std::path::Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    Proc {
        child: cmd.spawn().expect("drover binary starts"),
        name: name.to_string(),
        log,
    }
}

/// Writes a role profile into `dir` and returns its path.
pub fn profile(dir: &std::path::Path, name: &str, toml: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, toml).unwrap();
    p.display().to_string()
}

/// Waits until worker `wid` has read and acknowledged every assign entry
/// on its stream (namespace `drover`). A task is `running` from its
/// assignment on; the worker runs the handler only after it acknowledged
/// the entry. A test that kills or stops a worker "while it runs a task"
/// waits for this first; cut off before it, the worker never ran the task
/// and the attempt is given back.
pub async fn wait_assignments_acknowledged(con: &redis::aio::MultiplexedConnection, wid: &str) {
    let stream = format!("{{drover:0}}:w:{wid}:in");
    eventually(
        Duration::from_secs(10),
        "the worker to acknowledge its assignments",
        || {
            let mut con = con.clone();
            let stream = stream.clone();
            async move {
                let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&stream)
                    .query_async(&mut con)
                    .await
                    .ok()?;
                let read = groups
                    .groups
                    .iter()
                    .find(|g| g.name == "worker")?
                    .last_delivered_id
                    .clone();
                let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut con)
                    .await
                    .ok()?;
                let all_read = newest.ids.first().is_some_and(|e| e.id == read);
                (all_read && pending_count(&mut con, &stream, "worker").await == 0).then_some(())
            }
        },
    )
    .await;
}

/// Entries of `stream` delivered to `group` and not yet acknowledged.
pub async fn pending_count(con: &mut impl redis::aio::ConnectionLike, stream: &str, group: &str) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await
        .unwrap();
    match v {
        redis::Value::Array(parts) => redis::from_redis_value(parts[0].clone()).unwrap(),
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// How the test proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// Forward at once.
    Pass,
    /// Hold each chunk this long before forwarding it (each direction).
    Delay(Duration),
    /// Forward nothing and close nothing: a partition, as the worker sees it.
    Blackhole,
}

/// A TCP proxy in front of Redis, inside the test process, whose link can
/// be slowed down or cut while roles use it.
pub struct Proxy {
    pub port: u16,
    link: std::sync::Arc<std::sync::Mutex<Link>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let link = std::sync::Arc::new(std::sync::Mutex::new(Link::Pass));
        let l = link.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let l = l.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::join!(pump(cr, uw, l.clone()), pump(ur, cw, l));
                });
            }
        });
        Proxy { port, link, task }
    }

    pub fn set(&self, link: Link) {
        *self.link.lock().unwrap() = link;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: std::sync::Arc<std::sync::Mutex<Link>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let mode = *link.lock().unwrap();
            match mode {
                Link::Blackhole => tokio::time::sleep(Duration::from_millis(10)).await,
                Link::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Link::Pass => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The JSON an admin port `port` on this host answers at `path` (`/health`).
pub async fn admin_json(http: &reqwest::Client, port: u16, path: &str) -> serde_json::Value {
    http.get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `/metrics` page of the admin port `port` on this host.
pub async fn metrics_page(http: &reqwest::Client, port: u16) -> String {
    http.get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
