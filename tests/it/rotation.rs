//! Key rotation under load, by rolling restarts of real processes: add a
//! second key, switch signing to it, retire the first. No accepted task
//! fails during the overlap, and afterwards a message signed with the
//! retired key is refused.

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::envelope::Keyring;
use drover::messages::{AssignBody, ASSIGN};
use drover::redis_server::Persistence;
use drover::task::TaskState;
use std::time::{Duration, Instant};

const K1: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "k2:2222222222222222222222222222222222222222222222222222222222222222";

struct Roles {
    dir: tempfile::TempDir,
    url: String,
    api_port: u16,
    worker_admin: u16,
    procs: Vec<Proc>,
}

impl Roles {
    fn env(&self, keys: &str, active: &str, role: &str) -> Vec<(String, String)> {
        let mut extra = vec![
            ("DROVER_SIGNING_KEYS", keys.to_string()),
            ("DROVER_SIGNING_KEY_ID", active.to_string()),
        ];
        match role {
            "coordinator" => extra.push(("DROVER_HTTP_ADDR", format!("127.0.0.1:{}", self.api_port))),
            "worker" => extra.push(("DROVER_ADMIN_ADDR", format!("127.0.0.1:{}", self.worker_admin))),
            _ => {}
        }
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        proc_env(&self.url, &extra)
    }

    fn spawn(&self, role: &str, keys: &str, active: &str) -> Proc {
        let prof = profile(
            self.dir.path(),
            "worker",
            "[handlers]\nsleep = { kind = \"builtin\" }\n",
        );
        let args: Vec<&str> = match role {
            "worker" => vec!["worker", "--config", &prof, "--id", "w1"],
            other => vec![other, "--id", other],
        };
        spawn(
            &format!("{role}-{active}-{}", self.procs.len()),
            &args,
            &self.env(keys, active, role),
            self.dir.path(),
        )
    }

    /// Starts the three roles and waits until the API lists the worker.
    /// The API and admin ports are picked free just before the roles bind
    /// them, so another test's process can take one meanwhile: a role that
    /// exits during start-up is logged and the three start again on new
    /// ports (up to 3 times). A timeout shows every role's log.
    async fn start(&mut self, keys: &str, active: &str) -> Client {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        for _ in 0..3 {
            self.procs.clear(); // Drop kills them
            self.api_port = free();
            self.worker_admin = free();
            for role in ["worker", "distributor", "coordinator"] {
                let p = self.spawn(role, keys, active);
                self.procs.push(p);
            }
            let client = Client::new(&format!("http://127.0.0.1:{}", self.api_port), Some(ADMIN_TOKEN.into())).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if client.workers().await.is_ok_and(|w| !w.workers.is_empty()) {
                    return client;
                }
                if let Some(p) = self
                    .procs
                    .iter_mut()
                    .find_map(|p| p.child.try_wait().unwrap().map(|_| &*p))
                {
                    eprintln!(
                        "{} exited during start-up; starting again. Log:\n{}",
                        p.name,
                        p.log_text()
                    );
                    break;
                }
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("--- {}\n{}", p.name, p.log_text()))
                    .collect();
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not start within 60 s:\n{}",
                    logs.join("\n")
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("the cluster did not start in 3 attempts");
    }

    /// Restarts every role, one at a time, with a new keyring.
    fn roll(&mut self, keys: &str, active: &str) {
        for (i, role) in ["worker", "distributor", "coordinator"].iter().enumerate() {
            self.procs[i].signal(libc::SIGTERM);
            let st = self.procs[i].wait_exit(Duration::from_secs(40));
            assert_eq!(st.code(), Some(0), "{}", self.procs[i].log_text());
            self.procs[i] = self.spawn(role, keys, active);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_signing_key_under_load_fails_no_task() {
    let Some(redis) = redis(Persistence::None) else { return };
    let mut roles = Roles {
        dir: tempfile::tempdir().unwrap(),
        url: redis.url(),
        api_port: 0,
        worker_admin: 0,
        procs: Vec::new(),
    };
    let client = roles.start(K1, "k1").await;

    // Steady load for the whole rotation; refused submissions (while the
    // coordinator restarts) are not promises.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            while !stop.is_cancelled() {
                if let Ok(b) = client.submit_batch(vec![task("sleep", serde_json::json!(5)); 10]).await {
                    accepted.extend(b.tasks.into_iter().map(|t| t.id));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            accepted
        })
    };
    tokio::task::block_in_place(|| {
        std::thread::sleep(Duration::from_millis(500));
        roles.roll(&format!("{K1},{K2}"), "k1");
        roles.roll(&format!("{K1},{K2}"), "k2");
        roles.roll(K2, "k2");
        std::thread::sleep(Duration::from_millis(500));
    });
    stop.cancel();
    let accepted = load.await.unwrap();
    assert!(accepted.len() > 100, "load ran: {}", accepted.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &accepted {
        let t = client
            .wait(id, deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    }

    // The retired key opens nothing any more: an assignment signed with
    // it is refused by the worker.
    let stream = "{drover:0}:w:w1:in";
    let body = serde_json::to_vec(&AssignBody {}).unwrap();
    let old = Keyring::parse(K1, None)
        .unwrap()
        .sign(stream, ASSIGN, u64::MAX / 2, &body);
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("m")
        .arg(old)
        .query_async(&mut con)
        .await
        .unwrap();
    let metrics_url = format!("http://127.0.0.1:{}/metrics", roles.worker_admin);
    eventually(
        Duration::from_secs(30),
        "the old-key message refused by signature",
        || async {
            let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
            let line = text
                .lines()
                .find(|l| l.starts_with("drover_messages_rejected_total{reason=\"signature\"}"))?;
            (line.split(' ').next_back()? != "0").then_some(())
        },
    )
    .await;
}
