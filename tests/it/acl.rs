//! `drover redis-acl`: the generated users loaded into a real Redis. Each
//! role runs as its own user, as a real process and through every store
//! method it calls, with no denial in `ACL LOG`; each user is refused
//! FLUSHALL, CONFIG, KEYS and the writes that belong to another role; and
//! the ACL-file form loads at Redis start.

use crate::lifecycle::task;
use crate::support::*;
use drover::acl::{self, Format, GeneratedUser, Options};
use drover::client::Client;
use drover::context::Context;
use drover::redis_server::{Persistence, RedisServer};
use drover::store::{
    CancelOutcome, Completion, FinishedState, Heartbeat, Outcome, RenewStatus, RestoreOutcome, StartReply, StartedTask,
    SubmitReply, SubmitStatus,
};
use drover::task::{NewTask, TaskId, TaskState};
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const P: &str = "{drover:0}:";

const WORKER_PROFILE: &str = "[handlers]\nsleep = { kind = \"builtin\" }\nnoop = { kind = \"builtin\" }\n\
                              echo = { kind = \"builtin\" }\nfail = { kind = \"builtin\" }\n";

fn has_redis_cli() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Loads the generated `ACL SETUSER` lines as the default user: through
/// redis-cli, as an operator would, or line by line through redis-rs when
/// redis-cli is missing.
async fn load(redis: &RedisServer, rules: &str) {
    if has_redis_cli() {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &redis.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "redis-cli: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            vec!["OK"; rules.lines().count()],
            "every line loads:\n{rules}"
        );
    } else {
        let mut con = admin(redis).await;
        for line in rules.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let _: () = redis::cmd(words[0])
                .arg(&words[1..])
                .query_async(&mut con)
                .await
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
}

async fn admin(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn url_of(redis: &RedisServer, u: &GeneratedUser) -> String {
    format!("redis://{}:{}@127.0.0.1:{}", u.name, u.password, redis.port())
}

async fn con_as(redis: &RedisServer, u: &GeneratedUser) -> MultiplexedConnection {
    redis::Client::open(url_of(redis, u))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{} cannot connect: {e}", u.name))
}

fn user<'a>(users: &'a [GeneratedUser], name: &str) -> &'a GeneratedUser {
    users
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("no user {name}"))
}

/// `ACL LOG` entries of drover's users, as "user reason context object".
async fn denials(redis: &RedisServer) -> Vec<String> {
    let mut con = admin(redis).await;
    let log: Vec<HashMap<String, Value>> = redis::cmd("ACL").arg("LOG").query_async(&mut con).await.unwrap();
    let s = |m: &HashMap<String, Value>, k: &str| {
        m.get(k)
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            .unwrap_or_default()
    };
    log.iter()
        .filter(|m| s(m, "username").starts_with("drover-"))
        .map(|m| {
            format!(
                "{} {} {} {}",
                s(m, "username"),
                s(m, "reason"),
                s(m, "context"),
                s(m, "object")
            )
        })
        .collect()
}

/// Runs `args` as the connection's user and expects NOPERM.
async fn refused(con: &mut MultiplexedConnection, who: &str, args: &[&str]) {
    let r: redis::RedisResult<Value> = redis::cmd(args[0]).arg(&args[1..]).query_async(con).await;
    match r {
        Err(e) if e.code() == Some("NOPERM") => {}
        other => panic!("{who}: {args:?} was not refused with NOPERM: {other:?}"),
    }
}

/// What no drover user may do, and what each may not do because another
/// role does it.
async fn check_refusals(redis: &RedisServer, users: &[GeneratedUser]) {
    let p = |k: &str| format!("{P}{k}");
    for u in users {
        let mut con = con_as(redis, u).await;
        let who = u.name.as_str();
        for args in [
            vec!["FLUSHALL"],
            vec!["FLUSHDB"],
            vec!["CONFIG", "GET", "*"],
            vec!["CONFIG", "SET", "appendonly", "no"],
            vec!["KEYS", "*"],
            vec!["SHUTDOWN", "NOSAVE"],
            vec!["ACL", "LIST"],
            vec!["ACL", "SETUSER", who, "+@all"],
            vec!["MODULE", "LIST"],
            vec!["SCRIPT", "FLUSH"],
            vec!["EVAL", "return 1", "0"],
            vec!["SELECT", "1"],
            vec!["MONITOR"],
            // Keys outside drover's namespace.
            vec!["SET", "unrelated", "x"],
            vec!["GET", "{other:0}:leader"],
        ] {
            refused(&mut con, who, &args).await;
        }
        // DEBUG is refused before the ACL check unless enable-debug-command
        // is set: ask the ACL itself.
        let mut root = admin(redis).await;
        let verdict: String = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg(who)
            .arg("DEBUG")
            .arg("SLEEP")
            .arg("0")
            .query_async(&mut root)
            .await
            .unwrap();
        assert!(
            verdict.contains("no permissions to run the 'debug' command"),
            "{who}: {verdict}"
        );
        let t = p("t:00000000-0000-7000-8000-000000000000");
        let own: Vec<Vec<String>> = match u.role {
            acl::Role::Worker => {
                let mut v = vec![
                    vec!["SET".into(), p("leader"), "x".into()],
                    vec!["GET".into(), p("leader")],
                    vec!["SET".into(), p("idem:k"), "x".into()],
                    vec!["DEL".into(), t.clone()],
                    vec!["HDEL".into(), t.clone(), "res".into()],
                    // The backlog: a worker may not take from it, empty it,
                    // or pause, limit or drop a queue.
                    vec!["LPOP".into(), p("q:default:ready:c:0")],
                    vec!["DEL".into(), p("q:default:ready:c:0")],
                    vec!["HSET".into(), p("q:default:meta"), "paused".into(), "1".into()],
                    vec!["SREM".into(), p("active"), "default c".into()],
                    vec!["XTRIM".into(), p("wake"), "MAXLEN".into(), "0".into()],
                    vec!["XADD".into(), p("w:w9:in"), "*".into(), "m".into(), "x".into()],
                    vec!["HSET".into(), p("counts"), "queued".into(), "0".into()],
                    vec!["ZREM".into(), p("workers"), "w9".into()],
                    vec!["SCAN".into(), "0".into()],
                    vec!["XREAD".into(), "STREAMS".into(), p("events"), "0".into()],
                ];
                if let Some(id) = &u.worker_id {
                    // Limited to its own hash and stream.
                    v.push(vec!["HSET".into(), p("w:w9"), "cap".into(), "100".into()]);
                    v.push(vec!["XACK".into(), p("w:w9:in"), "worker".into(), "0-1".into()]);
                    v.push(vec!["XTRIM".into(), p("w:w9:in"), "MAXLEN".into(), "0".into()]);
                    v.push(vec!["HINCRBY".into(), p("w:w9"), "used".into(), "-1".into()]);
                    assert_ne!(id, "w9");
                }
                v
            }
            acl::Role::Distributor => vec![
                vec!["SET".into(), p("leader"), "x".into()],
                vec!["XADD".into(), p("events"), "*".into(), "m".into(), "x".into()],
                vec!["ZADD".into(), p("scheduled"), "1".into(), "x".into()],
                vec!["ZADD".into(), p("workers"), "1".into(), "x".into()],
                vec!["HSET".into(), p("handlers"), "x".into(), "1".into()],
                vec!["HSET".into(), p("w:w1"), "cap".into(), "100".into()],
                vec!["XACK".into(), p("w:w1:in"), "worker".into(), "0-1".into()],
                vec!["XGROUP".into(), "DESTROY".into(), p("w:w1:in"), "worker".into()],
                // It takes from the backlog, never adds to it or drops it.
                vec!["RPUSH".into(), p("q:default:ready:c:0"), "x".into()],
                vec!["DEL".into(), p("q:default:ready:c:0")],
                vec!["XADD".into(), p("wake"), "*".into(), "n".into(), "1".into()],
                vec!["HSET".into(), p("backlogs"), "default c".into(), "x".into()],
                vec!["DEL".into(), t.clone()],
                vec!["PEXPIRE".into(), t.clone(), "1".into()],
                vec!["SET".into(), p("idem:k"), "x".into()],
                vec!["SCAN".into(), "0".into()],
            ],
            acl::Role::Coordinator => vec![
                vec!["HSET".into(), p("epoch"), "epoch".into(), "1".into()],
                vec!["HMGET".into(), p("epoch"), "epoch".into()],
                vec!["XACK".into(), p("w:w1:in"), "worker".into(), "0-1".into()],
                // Taking from the backlog is the distributor's.
                vec!["LPOP".into(), p("q:default:ready:c:0")],
                vec!["SREM".into(), p("active"), "default c".into()],
                vec![
                    "XGROUP".into(),
                    "DELCONSUMER".into(),
                    p("w:w1:in"),
                    "worker".into(),
                    "w1".into(),
                ],
                vec![
                    "XGROUP".into(),
                    "CREATE".into(),
                    p("w:w1:in"),
                    "g".into(),
                    "0".into(),
                    "MKSTREAM".into(),
                ],
                vec![
                    "XREADGROUP".into(),
                    "GROUP".into(),
                    "worker".into(),
                    "w1".into(),
                    "STREAMS".into(),
                    p("w:w1:in"),
                    ">".into(),
                ],
                // (XTRIM on events is the janitor's: limits.events_retention.)
                vec!["XTRIM".into(), p("intake"), "MAXLEN".into(), "0".into()],
                vec!["DEL".into(), p("intake")],
                vec!["DEL".into(), t.clone()],
                vec!["ZADD".into(), p("leases"), "1".into(), "x".into()],
                vec!["ZADD".into(), p("workers"), "1".into(), "x".into()],
                vec!["HSET".into(), p("handlers"), "x".into(), "1".into()],
            ],
        };
        for args in own {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            refused(&mut con, who, &args).await;
        }
        // A script runs with its caller's rights: loading one does not
        // help. A key given in KEYS is refused before the script runs...
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return redis.call('SET', KEYS[1], 'x')")
            .query_async(&mut con)
            .await
            .unwrap();
        let not_its_own = if u.role == acl::Role::Coordinator {
            "epoch"
        } else {
            "leader"
        };
        let r: redis::RedisResult<Value> = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(p(not_its_own))
            .query_async(&mut con)
            .await;
        assert!(matches!(&r, Err(e) if e.code() == Some("NOPERM")), "{who}: {r:?}");
        // ...and a command inside it is checked like one sent directly.
        let inner: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(format!("return redis.call('DEL', '{P}t:x')"))
            .query_async(&mut con)
            .await
            .unwrap();
        let r: redis::RedisResult<Value> = redis::cmd("EVALSHA").arg(&inner).arg(0).query_async(&mut con).await;
        let e = r.expect_err(&format!("{who}: DEL of a task inside a script"));
        assert!(
            e.to_string().contains("The user executing the script can't"),
            "{who}: {e}"
        );
    }
}

/// The three roles as real processes, each under its own user, through
/// submit, placement, success, failure and retry, a delayed task, an
/// idempotent repeat, cancels of a running and a scheduled task, a lease
/// that expires on a killed worker, the janitor forgetting that worker, and
/// a worker handing a task back when it stops.
#[tokio::test]
async fn each_role_runs_end_to_end_under_its_own_acl_user() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let generated = acl::run(&Options {
        worker_ids: vec!["w1".into()],
        password_dir: Some(dir.path().join("passwords")),
        ..Options::default()
    })
    .unwrap();
    load(&redis, &generated.rules).await;
    let users = &generated.users;
    let coordinator = user(users, "drover-coordinator");
    let distributor = user(users, "drover-distributor");
    let shared_worker = user(users, "drover-worker");
    let worker_w1 = user(users, "drover-worker-w1");
    let port = redis.port();
    // The coordinator carries its password in the URL; the others name
    // the user in the URL and read the password from the file.
    let by_file = |u: &GeneratedUser, extra: &[(&str, &str)]| {
        let file = u.password_file.as_ref().unwrap().display().to_string();
        let mut env = proc_env(&format!("redis://{}@127.0.0.1:{port}", u.name), extra);
        env.push(("DROVER_REDIS_PASSWORD_FILE".into(), file));
        env
    };
    let api_port = free_port();
    let api_addr = format!("127.0.0.1:{api_port}");
    let _coord = spawn(
        "coordinator",
        &["coordinator", "--id", "c1"],
        &proc_env(
            &url_of(&redis, coordinator),
            &[("DROVER_HTTP_ADDR", &api_addr), ("DROVER_FORGET_WORKER_AFTER", "2s")],
        ),
        dir.path(),
    );
    let prof = profile(dir.path(), "worker", WORKER_PROFILE);
    let w_gone = spawn(
        "w-gone",
        &["worker", "--config", &prof, "--id", "w-gone"],
        &by_file(shared_worker, &[]),
        dir.path(),
    );
    let client = Client::new(&format!("http://{api_addr}"), Some(ADMIN_TOKEN.into())).unwrap();
    let con = admin(&redis).await;
    let _dist = spawn(
        "d1",
        &["distributor", "--id", "d1"],
        &by_file(distributor, &[]),
        dir.path(),
    );
    eventually(Duration::from_secs(20), "the first worker", || async {
        let w = client.workers().await.ok()?;
        w.workers.iter().any(|w| w.id == "w-gone").then_some(())
    })
    .await;

    // A long task lands on the only worker, which is then killed: the
    // lease runs out, the reaper schedules a retry, which runs on w1.
    let long = client
        .submit_one(&task("sleep", serde_json::json!(2500)))
        .await
        .unwrap();
    let running = wait_state(&client, &long.id, TaskState::Running, Duration::from_secs(10)).await;
    assert_eq!(running.worker.as_deref(), Some("w-gone"));
    wait_assignments_acknowledged(&con, "w-gone").await;
    w_gone.signal(libc::SIGKILL);
    let mut w1 = spawn(
        "w1",
        &["worker", "--config", &prof, "--id", "w1"],
        &by_file(worker_w1, &[("DROVER_WORKER_GRACE", "1s")]),
        dir.path(),
    );

    let ok = client
        .submit_one(&task("echo", serde_json::json!({"a": 1})))
        .await
        .unwrap();
    let mut idem = task("noop", serde_json::Value::Null);
    idem.idempotency_key = Some("acl-test-1".into());
    let first = client.submit_one(&idem).await.unwrap();
    let again = client.submit_one(&idem).await.unwrap();
    assert_eq!(first.id, again.id, "the repeat is the same task");
    let mut delayed = task("noop", serde_json::Value::Null);
    delayed.delay = Some("1s".into());
    let delayed = client.submit_one(&delayed).await.unwrap();
    let mut failing = task("fail", serde_json::json!({"message": "no"}));
    failing.max_attempts = Some(2);
    let failing = client.submit_one(&failing).await.unwrap();
    let mut far = task("noop", serde_json::Value::Null);
    far.delay = Some("1h".into());
    let far = client.submit_one(&far).await.unwrap();
    assert_eq!(client.get(&far.id).await.unwrap().state, TaskState::Scheduled);
    client.cancel(&far.id).await.unwrap();
    let to_cancel = client
        .submit_one(&task("sleep", serde_json::json!(30_000)))
        .await
        .unwrap();

    // Tasks placed on w-gone in the second before its silence showed are
    // running there, never accepted: the reaper queues them again after
    // the lease, without charging an attempt, and w1 runs them.
    eventually(Duration::from_secs(20), "the long sleep running on w1", || async {
        let t = client.get(&to_cancel.id).await.ok()?;
        (t.state == TaskState::Running && t.worker.as_deref() == Some("w1")).then_some(())
    })
    .await;
    client.cancel(&to_cancel.id).await.unwrap();
    for (id, state, attempts) in [
        (&ok.id, TaskState::Succeeded, 1),
        (&first.id, TaskState::Succeeded, 1),
        (&delayed.id, TaskState::Succeeded, 1),
        (&failing.id, TaskState::Dead, 2),
        (&far.id, TaskState::Cancelled, 0),
        (&to_cancel.id, TaskState::Cancelled, 1),
        (&long.id, TaskState::Succeeded, 2),
    ] {
        let t = client.wait(id, Duration::from_secs(30)).await.unwrap();
        assert_eq!((t.state, t.attempts), (state, attempts), "{t:?}");
    }
    assert_eq!(
        client.get(&long.id).await.unwrap().worker,
        None,
        "finished tasks hold no worker"
    );
    assert!(w1.log_text().contains(&long.id), "w1 ran the retry");

    // The janitor forgets the killed worker (its hash and stream).
    eventually(Duration::from_secs(20), "the janitor's turn", || async {
        let mut con = con.clone();
        let n: i64 = redis::cmd("EXISTS")
            .arg(format!("{P}w:w-gone"))
            .arg(format!("{P}w:w-gone:in"))
            .query_async(&mut con)
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await;

    // w1 stops with a task running: after its grace it hands it back.
    let back = client
        .submit_one(&task("sleep", serde_json::json!(30_000)))
        .await
        .unwrap();
    wait_state(&client, &back.id, TaskState::Running, Duration::from_secs(10)).await;
    w1.signal(libc::SIGTERM);
    assert!(w1.wait_exit(Duration::from_secs(20)).success(), "{}", w1.log_text());
    let t = wait_state(&client, &back.id, TaskState::Queued, Duration::from_secs(10)).await;
    assert_eq!(t.attempts, 0, "a handed-back attempt is not charged: {t:?}");
    client.cancel(&back.id).await.unwrap();
    assert_eq!(client.get(&back.id).await.unwrap().state, TaskState::Cancelled);

    let denied = denials(&redis).await;
    assert!(
        denied.is_empty(),
        "the roles needed more than their users allow: {denied:#?}"
    );
    check_refusals(&redis, users).await;
}

fn new_task(handler: &str, run_at_ms: Option<u64>, idem: Option<&str>) -> NewTask {
    NewTask {
        run_at_ms,
        idempotency_key: idem.map(String::from),
        ..crate::taking::new_task(handler)
    }
}

/// Reads the worker's stream and accepts what each entry assigns.
async fn start_all(ctx: &Context, wid: &str) -> Vec<StartedTask> {
    let stream = ctx.store.keys.worker_stream(wid);
    let entries = ctx
        .store
        .read_group(&stream, "worker", wid, 100, None, false)
        .await
        .unwrap();
    let mut out = Vec::new();
    for e in &entries {
        for r in crate::taking::claim(ctx, wid, e).await {
            match r {
                StartReply::Started(t) => out.push(*t),
                StartReply::Refused(why) => panic!("claim refused: {why}"),
            }
        }
    }
    out
}

fn done(task: &StartedTask, outcome: Outcome) -> Completion {
    Completion {
        task: task.clone(),
        outcome,
        payload: if outcome == Outcome::Succeeded {
            "1".into()
        } else {
            "err".into()
        },
        retry_delay_ms: 0,
    }
}

/// Every store method each role calls, every branch of every script it
/// runs, under the role's own user (a worker both under the shared worker
/// user and under a user limited to its id).
#[tokio::test]
async fn every_store_call_of_each_role_passes_under_its_user() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let generated = acl::run(&Options {
        worker_ids: vec!["w2".into()],
        ..Options::default()
    })
    .unwrap();
    load(&redis, &generated.rules).await;
    let ctx_of = |name: &str| {
        let u = user(&generated.users, name);
        Context::new(settings(&url_of(&redis, u), &[]), name, name).unwrap()
    };
    let coord = ctx_of("drover-coordinator");
    let dist = ctx_of("drover-distributor");
    let wk = ctx_of("drover-worker");
    let w2 = ctx_of("drover-worker-w2");
    for c in [&coord, &dist, &wk, &w2] {
        c.store.ping().await.unwrap();
    }
    let keys = coord.store.keys.clone();
    let handlers = vec!["noop".to_string()];
    let beat = |wid: &'static str| Heartbeat {
        worker_id: wid,
        capacity: 10,
        handlers: &handlers,
        tags: &[],
        queues: &[],
        in_flight: 0,
        draining: false,
    };
    for (ctx, wid) in [(&wk, "w1"), (&w2, "w2"), (&wk, "w3")] {
        ctx.store
            .ensure_group(&keys.worker_stream(wid), "worker")
            .await
            .unwrap();
        ctx.store.heartbeat(&beat(wid)).await.unwrap();
    }
    assert!(wk.store.trim(&keys.worker_stream("w1"), "worker").await.is_ok());

    // Coordinator: submit (queued, scheduled, idempotent and its repeat).
    let now = coord.store.clock().now_ms();
    let ts: Vec<NewTask> = (0..8).map(|_| new_task("noop", None, None)).collect();
    let soon = new_task("noop", Some(now + 150), None);
    let later = new_task("noop", Some(now + 3_600_000), None);
    let keyed = new_task("noop", None, Some("key-1"));
    // Queued in this order, which is the order assign takes them in.
    let mut batch = ts[..5].to_vec();
    batch.push(keyed.clone());
    batch.extend(ts[5..].iter().cloned());
    batch.extend([soon.clone(), later.clone()]);
    coord.store.submit(&batch).await.unwrap();
    let repeat = coord
        .store
        .submit(&[new_task("noop", None, Some("key-1"))])
        .await
        .unwrap();
    assert_eq!(
        repeat[0],
        SubmitReply {
            id: keyed.id.to_string(),
            status: SubmitStatus::Duplicate
        }
    );
    assert!(coord.store.known_handlers().await.unwrap().contains_key("noop"));
    coord.store.counts().await.unwrap();
    coord.store.memory().await.unwrap();
    assert_eq!(coord.store.workers(Duration::from_secs(10)).await.unwrap().len(), 3);
    coord.store.list_tasks(None, None, "0", 100).await.unwrap();
    coord.store.get_task(&ts[0].id).await.unwrap().unwrap();
    let last = coord.store.last_event_id().await.unwrap();
    coord.store.trim_events(Duration::from_secs(600)).await.unwrap();
    coord.store.read_events(&last, Duration::from_millis(10)).await.unwrap();

    // Distributor: the backlogs, the wake-up streams, placement.
    let names = dist.store.active_backlogs().await.unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
    let backlogs = dist.store.describe_backlogs(&names).await.unwrap();
    let backlog = backlogs[0].clone().expect("described");
    assert_eq!(dist.store.ready_count(&backlog).await.unwrap(), 9);
    let mut cursor = dist.store.wake_cursor().await.unwrap();
    dist.store
        .wait_for_wake(&mut cursor, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(dist.store.workers(Duration::from_secs(10)).await.unwrap().len(), 3);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let take = async |wid: &str, want: usize, lease: Duration| {
        dist.store.assign(wid, want, &names, lease).await.unwrap().taken
    };
    let ttl = Duration::from_secs(10);
    assert_eq!(take("w1", 3, ttl).await, 3, "ts[0..3]");
    assert_eq!(take("w1", 1, ttl).await, 1, "ts[3]");
    // A 1 ms lease, taken at assignment: it runs out before the reaper looks.
    assert_eq!(take("w2", 2, Duration::from_millis(1)).await, 2, "ts[4] and keyed");
    // Assigned with no lease left: the reaper charges the attempt.
    assert_eq!(take("w3", 1, Duration::ZERO).await, 1, "ts[5]");
    // Assigned to a worker that never reads its stream: running there, so
    // a cancel is requested through that stream.
    assert_eq!(take("w3", 1, ttl).await, 1, "ts[6]");
    let gone = dist.store.assign("nobody", 1, &names, ttl).await.unwrap();
    assert_eq!(gone.worker, drover::store::WorkerRoom::Gone);

    // Worker w1, shared user: claim (two entries), renew, complete.
    let first = start_all(&wk, "w1").await;
    assert_eq!(first.len(), 4);
    let renewed = wk
        .store
        .renew("w1", &[(first[0].id.clone(), first[0].token)], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(renewed, vec![RenewStatus::Ok]);
    let states = wk
        .store
        .complete(
            "w1",
            &[done(&first[0], Outcome::Succeeded), done(&first[1], Outcome::Failed)],
        )
        .await
        .unwrap();
    assert_eq!(states, vec![FinishedState::Succeeded, FinishedState::Scheduled]);
    // A cancel requested while running reaches w1 through its stream.
    let running = first.iter().find(|t| t.id == ts[2].id.as_str()).unwrap().clone();
    assert_eq!(coord.store.cancel(&ts[2].id).await.unwrap(), CancelOutcome::Requested);
    let renewed = wk
        .store
        .renew("w1", &[(running.id.clone(), running.token)], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(renewed, vec![RenewStatus::CancelRequested]);
    let control = wk
        .store
        .read_group(&keys.worker_stream("w1"), "worker", "w1", 10, None, false)
        .await
        .unwrap();
    assert_eq!(control.len(), 1);
    wk.store
        .ack(&keys.worker_stream("w1"), "worker", &[control[0].id.clone()])
        .await
        .unwrap();
    assert_eq!(
        wk.store
            .complete("w1", &[done(&running, Outcome::Cancelled)])
            .await
            .unwrap(),
        vec![FinishedState::Cancelled]
    );
    wk.store.trim(&keys.worker_stream("w1"), "worker").await.unwrap();

    // Worker w2, its own user: hands one task back; the lease of the other
    // (1 ms) runs out.
    let second = start_all(&w2, "w2").await;
    assert_eq!(second.len(), 2);
    let keyed_run = second.iter().find(|t| t.id == keyed.id.as_str()).unwrap();
    assert_eq!(
        w2.store
            .complete("w2", &[done(keyed_run, Outcome::Released)])
            .await
            .unwrap(),
        vec![FinishedState::Queued]
    );
    w2.store.trim(&keys.worker_stream("w2"), "worker").await.unwrap();
    w2.store.heartbeat(&beat("w2")).await.unwrap();

    // Coordinator as leader: the lease of ts[3] (w1, 10 s) has not run
    // out; ts[4]'s (w2, 1 ms) has, and so has ts[5]'s (w3, 0 ms).
    assert!(coord.store.lead("c1", Duration::from_secs(5)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = coord.store.reap(100, |_| 0).await.unwrap();
    // w3 never read its stream: ts[5] goes back without using an attempt.
    assert_eq!(stats.requeued, 1, "{stats:?}");
    assert_eq!(stats.lease_expired, 1, "{stats:?}");
    assert!(
        coord.store.promote(100).await.unwrap() >= 2,
        "the retry and the delayed task"
    );
    assert_eq!(
        coord.store.cancel(&ts[0].id).await.unwrap(),
        CancelOutcome::AlreadyFinished(TaskState::Succeeded)
    );
    assert_eq!(coord.store.cancel(&later.id).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(coord.store.cancel(&ts[5].id).await.unwrap(), CancelOutcome::Cancelled);
    // ts[6] runs on w3 (the lease came with the assignment), which never
    // reads its stream: the cancel is a request sent there.
    let t6 = coord.store.get_task(&ts[6].id).await.unwrap().unwrap();
    assert_eq!(t6.state, TaskState::Running, "{t6:?}");
    assert_eq!(coord.store.cancel(&ts[6].id).await.unwrap(), CancelOutcome::Requested);

    // The reconciler moves a queued task of an earlier build's intake
    // stream into its ready list, and the stream goes after a clean pass.
    let mut admin_con = admin(&redis).await;
    let _: () = redis::cmd("HSET")
        .arg(keys.task(ts[7].id.as_str()))
        .arg("ent")
        .arg("1-0")
        .query_async(&mut admin_con)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(keys.intake())
        .arg("*")
        .arg("m")
        .arg("x")
        .query_async(&mut admin_con)
        .await
        .unwrap();
    let (_, moved) = coord.store.reconcile("0", 1000).await.unwrap();
    assert_eq!(moved, 1);
    coord.store.retire_intake().await.unwrap();
    // Snapshot export and import use the coordinator's user.
    let (_, tasks) = coord.store.scan_tasks("0", 1000).await.unwrap();
    assert!(!tasks.is_empty());
    // A task as an export holds it, queued (not one with a cancel
    // requested: restore ends such a task as cancelled).
    let (_, mut fields) = tasks
        .into_iter()
        .find(|(_, f)| f.get("state").map(String::as_str) == Some("succeeded"))
        .expect("a succeeded task in the export");
    fields.insert("state".into(), "queued".into());
    let restored = coord
        .store
        .restore(&[(TaskId::generate().to_string(), fields)])
        .await
        .unwrap();
    assert_eq!(restored[0].1, RestoreOutcome::Queued);
    // The janitor.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let gone = coord.store.forget_workers(Duration::ZERO).await.unwrap();
    assert_eq!(gone.len(), 3, "{gone:?}");
    assert!(!coord.store.lead("c1", Duration::ZERO).await.unwrap());

    let denied = denials(&redis).await;
    assert!(
        denied.is_empty(),
        "the roles needed more than their users allow: {denied:#?}"
    );
}

/// The `aclfile` form: Redis loads it at start, and the users work.
#[tokio::test]
async fn the_acl_file_form_loads_when_redis_starts() {
    if !drover::redis_server::available() {
        skip_or_fail("redis-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let generated = acl::run(&Options {
        namespace: "other-ns".into(),
        worker_ids: vec!["w-7".into()],
        format: Format::AclFile,
        ..Options::default()
    })
    .unwrap();
    let file = dir.path().join("users.acl");
    std::fs::write(
        &file,
        format!("user default on nopass ~* &* +@all\n{}", generated.rules),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(dir.path())
        .arg("--aclfile")
        .arg(&file)
        .arg("--logfile")
        .arg(dir.path().join("redis.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = |u: &GeneratedUser| format!("redis://{}:{}@127.0.0.1:{port}", u.name, u.password);
    let ready = async {
        for _ in 0..250 {
            if let Ok(c) = redis::Client::open(format!("redis://127.0.0.1:{port}")) {
                if c.get_multiplexed_async_connection().await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    let up = ready.await;
    let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
    if !up {
        let _ = child.kill();
        panic!("redis-server did not start with the ACL file:\n{log}");
    }
    for u in &generated.users {
        let mut con = redis::Client::open(url(u))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", u.name));
        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
        let r: redis::RedisResult<Value> = redis::cmd("GET").arg("{drover:0}:leader").query_async(&mut con).await;
        assert!(matches!(&r, Err(e) if e.code() == Some("NOPERM")), "{}: {r:?}", u.name);
    }
    let names: Vec<&str> = generated.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "other-ns-coordinator",
            "other-ns-distributor",
            "other-ns-worker",
            "other-ns-worker-w-7"
        ]
    );
    let _ = child.kill();
    let _ = child.wait();
}
