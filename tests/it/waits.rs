//! Long-polls of `/v1/tasks/{id}/wait` against a real coordinator process:
//! waits whose clients go away leave nothing behind, the number of open
//! waits is capped (429 past the cap), and open waits add no Redis load of
//! their own (the events stream wakes them, nothing polls per wait).

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::redis_server::{Persistence, RedisServer};
use std::time::Duration;

/// A coordinator process (no distributor, no worker: tasks stay queued)
/// accepting handler `never`; returns it with its API and admin ports.
fn coordinator(redis: &RedisServer, dir: &std::path::Path, max_waits: &str) -> (Proc, u16, u16) {
    let (api, admin) = (free_port(), free_port());
    let env = proc_env(
        &redis.url(),
        &[
            ("DROVER_HTTP_ADDR", &format!("127.0.0.1:{api}")),
            ("DROVER_ADMIN_ADDR", &format!("127.0.0.1:{admin}")),
            ("DROVER_HANDLERS", "never"),
            ("DROVER_MAX_WAITS", max_waits),
            ("RUST_LOG", "warn"),
        ],
    );
    (spawn("coord", &["coordinator"], &env, dir), api, admin)
}

/// The coordinator's `drover_api_waits` gauge.
async fn open_waits(http: &reqwest::Client, admin: u16) -> Option<u64> {
    let page = http
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix("drover_api_waits "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Starts `n` waits of up to a minute on task `id`, each its own request.
fn start_waits(http: &reqwest::Client, api: u16, id: &str, n: usize) -> Vec<tokio::task::JoinHandle<Option<u16>>> {
    (0..n)
        .map(|_| {
            let req = http
                .get(format!("http://127.0.0.1:{api}/v1/tasks/{id}/wait?timeout=60s"))
                .bearer_auth(ADMIN_TOKEN);
            tokio::spawn(async move { req.send().await.ok().map(|r| r.status().as_u16()) })
        })
        .collect()
}

async fn started(api: u16) -> (Client, String) {
    let client = Client::new(&format!("http://127.0.0.1:{api}"), Some(ADMIN_TOKEN.into())).unwrap();
    let id = eventually(Duration::from_secs(60), "the coordinator to take a task", || async {
        client
            .submit_one(&task("never", serde_json::Value::Null))
            .await
            .ok()
            .map(|s| s.id)
    })
    .await;
    (client, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_waits_dropped_by_their_clients_leave_nothing_behind() {
    let Some(redis) = redis(Persistence::None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (coord, api, admin) = coordinator(&redis, dir.path(), "1000");
    let (_client, id) = started(api).await;
    let http = reqwest::Client::new();
    // Ten rounds of a thousand, each at the cap, so a leak of any round
    // would also make the next one's waits refused.
    for round in 0..10 {
        let waits = start_waits(&http, api, &id, 1000);
        eventually(Duration::from_secs(60), "a thousand open waits", || async {
            (open_waits(&http, admin).await == Some(1000)).then_some(())
        })
        .await;
        for w in &waits {
            w.abort();
        }
        for w in waits {
            let _ = w.await;
        }
        let left = eventually(Duration::from_secs(20), "the dropped waits to be released", || async {
            let n = open_waits(&http, admin).await?;
            (n == 0).then_some(n)
        })
        .await;
        assert_eq!(left, 0, "round {round}: {}", coord.log_text());
    }
}

/// Total calls per command, from INFO commandstats.
async fn command_calls(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(con).await.unwrap();
    info.lines()
        .filter_map(|l| l.split_once("calls=")?.1.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Redis commands the cluster sends over `window`, measured from one
/// second on, so each wait's first read of its task is behind us (what is
/// measured is what open waits cost while they wait).
async fn calls_over(con: &mut redis::aio::MultiplexedConnection, window: Duration) -> u64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = command_calls(con).await;
    tokio::time::sleep(window).await;
    command_calls(con).await - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_waits_cost_redis_no_more_than_one_and_the_next_is_refused() {
    let Some(redis) = redis(Persistence::None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_coord, api, admin) = coordinator(&redis, dir.path(), "1000");
    let (client, id) = started(api).await;
    let http = reqwest::Client::new();
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let window = Duration::from_secs(3);

    let one = start_waits(&http, api, &id, 1);
    eventually(Duration::from_secs(10), "one open wait", || async {
        (open_waits(&http, admin).await == Some(1)).then_some(())
    })
    .await;
    let with_one = calls_over(&mut con, window).await;

    let many = start_waits(&http, api, &id, 999);
    eventually(Duration::from_secs(60), "a thousand open waits", || async {
        (open_waits(&http, admin).await == Some(1000)).then_some(())
    })
    .await;
    let with_many = calls_over(&mut con, window).await;
    eprintln!("Redis commands in {window:?}: {with_one} with one open wait, {with_many} with a thousand");
    // Polling each wait once a second would be about 3000 reads more.
    assert!(
        with_many < with_one + 500,
        "{with_one} Redis commands in {window:?} with one wait, {with_many} with a thousand"
    );

    // At the cap the next wait is refused at once, with Retry-After.
    let refused = http
        .get(format!("http://127.0.0.1:{api}/v1/tasks/{id}/wait?timeout=60s"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_waits", "{body}");

    // An event still wakes every one of them at once.
    client.cancel(&id).await.unwrap();
    for w in one.into_iter().chain(many) {
        assert_eq!(w.await.unwrap(), Some(200));
    }
    eventually(Duration::from_secs(10), "no open waits", || async {
        (open_waits(&http, admin).await == Some(0)).then_some(())
    })
    .await;
}
