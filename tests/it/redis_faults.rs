//! Redis itself failing under load: kill -9 and restart with AOF
//! `appendfsync always` (no accepted task may be lost), with `everysec`
//! (every task still known ends; none is left stuck), and restarted empty
//! (the roles carry on without a restart, lost tasks read as unknown, and
//! fencing tokens are never reused).

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::handlers::Registry;
use drover::redis_server::Persistence;
use drover::task::TaskState;
use std::time::{Duration, Instant};

/// Submits small batches for `for_how_long`; returns the ids the API
/// accepted (a 202 is a promise; refused batches are not).
fn submit_steadily(client: Client, for_how_long: Duration) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut refused = 0;
        let t0 = Instant::now();
        while t0.elapsed() < for_how_long {
            match client.submit_batch(vec![task("sleep", serde_json::json!(5)); 20]).await {
                Ok(b) => accepted.extend(b.tasks.into_iter().map(|t| t.id)),
                Err(_) => refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (accepted, refused)
    })
}

/// Final state of each task; `None` for a task Redis no longer knows.
async fn settle(client: &Client, ids: &[String], within: Duration) -> Vec<Option<TaskState>> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        loop {
            match client.get(id).await {
                Ok(t) if t.state.is_terminal() => {
                    out.push(Some(t.state));
                    break;
                }
                Err(e) if e.to_string().contains("404") => {
                    out.push(None);
                    break;
                }
                other => {
                    assert!(Instant::now() < deadline, "task {id} never settled: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    out
}

async fn cluster_on(persistence: Persistence) -> Option<Cluster> {
    let redis = redis(persistence)?;
    let mut c = Cluster::start_with(redis, &[("coordinator.handlers", "sleep")]).await?;
    c.add_distributor("dist-1");
    c.add_worker("w1", 32, &[], Registry::builtins()).await;
    Some(c)
}

/// Kills Redis (-9) after `after` and restarts it after `down`, on the same
/// port and directory.
fn crash_redis(c: &mut Cluster, after: Duration, down: Duration) {
    std::thread::sleep(after);
    c.redis.kill();
    std::thread::sleep(down);
    c.redis.restart().expect("redis restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_with_aof_always_loses_no_accepted_task() {
    let Some(mut c) = cluster_on(Persistence::AofAlways).await else {
        return;
    };
    let client = c.client();
    let load = submit_steadily(client.clone(), Duration::from_secs(4));
    tokio::task::block_in_place(|| crash_redis(&mut c, Duration::from_millis(1500), Duration::from_millis(500)));
    let (accepted, refused) = load.await.unwrap();
    assert!(refused > 0, "the outage was seen by the API");
    assert!(
        accepted.len() > 200,
        "load ran on both sides of the crash: {}",
        accepted.len()
    );
    let states = settle(&client, &accepted, Duration::from_secs(90)).await;
    let lost = states.iter().filter(|s| s.is_none()).count();
    assert_eq!(lost, 0, "with appendfsync always an accepted task is never lost");
    assert!(states.iter().all(|s| *s == Some(TaskState::Succeeded)), "{states:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_with_aof_everysec_leaves_no_task_stuck() {
    let Some(mut c) = cluster_on(Persistence::AofEverySec).await else {
        return;
    };
    let client = c.client();
    let load = submit_steadily(client.clone(), Duration::from_secs(4));
    tokio::task::block_in_place(|| crash_redis(&mut c, Duration::from_millis(1500), Duration::from_millis(500)));
    let (accepted, _) = load.await.unwrap();
    // Up to a second of writes may be gone: such tasks read as unknown;
    // every task Redis still knows reaches a terminal state (a task and its
    // place in its ready list are written by one script, and Redis drops an
    // unfinished transaction at the end of a truncated AOF: both or
    // neither are kept).
    let states = settle(&client, &accepted, Duration::from_secs(90)).await;
    let known: Vec<_> = states.iter().flatten().collect();
    assert!(known.len() > 100);
    assert!(known.iter().all(|s| **s == TaskState::Succeeded), "{known:?}");
    eprintln!(
        "aof everysec: {} accepted, {} unknown after the crash",
        accepted.len(),
        states.len() - known.len()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_is_survived_without_restarting_roles() {
    let Some(mut c) = cluster_on(Persistence::None).await else {
        return;
    };
    let client = c.client();
    let before = client.submit_one(&task("sleep", serde_json::json!(5))).await.unwrap();
    let first = client.wait(&before.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.state, TaskState::Succeeded);
    let old_epoch: u64 = first
        .fence
        .as_deref()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    tokio::task::block_in_place(|| crash_redis(&mut c, Duration::ZERO, Duration::from_millis(300)));
    // The old task is gone, and the API says so rather than inventing a state.
    let err = eventually(Duration::from_secs(10), "the API to answer again", || async {
        match client.get(&before.id).await {
            Err(e) if e.to_string().contains("404") => Some(e.to_string()),
            _ => None,
        }
    })
    .await;
    assert!(err.contains("not_found"), "{err}");
    // New work flows through the same roles: groups, worker registration
    // and scripts are recreated on demand.
    let after = eventually(Duration::from_secs(20), "a submission to be accepted", || async {
        client.submit_one(&task("sleep", serde_json::json!(5))).await.ok()
    })
    .await;
    let t = client.wait(&after.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let new_epoch: u64 = t.fence.as_deref().unwrap().split('.').next().unwrap().parse().unwrap();
    assert!(
        new_epoch > old_epoch,
        "a new epoch: tokens from before can never match ({old_epoch} → {new_epoch})"
    );
    c.stop().await;
}
