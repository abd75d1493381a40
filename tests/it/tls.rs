//! TLS to Redis: a redis-server listening with TLS (certificates made by the
//! test with openssl), roles connecting with `rediss://` through rustls with
//! verification on; a role given the wrong CA refuses the server and says why.

use crate::lifecycle::task;
use crate::support::*;
use crate::support_certs::{make_ca, make_server_cert, openssl_available};
use drover::client::Client;
use drover::redis_server::RedisServer;
use drover::task::TaskState;
use std::time::Duration;

#[tokio::test]
async fn roles_talk_to_redis_over_verified_tls_and_refuse_a_wrong_ca() {
    if !openssl_available() {
        skip_or_fail("openssl is not installed");
        return;
    }
    if !drover::redis_server::available() {
        skip_or_fail("redis-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    make_server_cert(d, "ca");
    let (_redis, tls_port) =
        RedisServer::start_tls(&d.join("server.crt"), &d.join("server.key"), &d.join("ca.crt")).unwrap();
    let url = format!("rediss://localhost:{tls_port}");
    let ca = d.join("ca.crt").display().to_string();
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = |ca: &str, extra: &[(&str, &str)]| {
        let mut e = vec![("DROVER_REDIS_CA_FILE", ca)];
        e.extend_from_slice(extra);
        proc_env(&url, &e)
    };
    let api_addr = format!("127.0.0.1:{api}");
    let _c = spawn(
        "coordinator",
        &["coordinator", "--id", "c1"],
        &env(&ca, &[("DROVER_HTTP_ADDR", &api_addr)]),
        d,
    );
    let _d = spawn("distributor", &["distributor", "--id", "d1"], &env(&ca, &[]), d);
    let prof = profile(d, "worker", "[handlers]\nnoop = { kind = \"builtin\" }\n");
    let _w = spawn(
        "worker",
        &["worker", "--config", &prof, "--id", "w1"],
        &env(&ca, &[]),
        d,
    );
    let client = Client::new(&format!("http://{api_addr}"), Some(ADMIN_TOKEN.into())).unwrap();
    eventually(Duration::from_secs(60), "the cluster over TLS", || async {
        client
            .workers()
            .await
            .ok()
            .filter(|w| !w.workers.is_empty())
            .map(|_| ())
    })
    .await;
    let batch = client
        .submit_batch(vec![task("noop", serde_json::Value::Null); 20])
        .await
        .unwrap();
    for s in &batch.tasks {
        assert_eq!(
            client.wait(&s.id, Duration::from_secs(20)).await.unwrap().state,
            TaskState::Succeeded
        );
    }

    // A worker that trusts another CA never connects, and says why.
    let other = d.join("other-ca.crt").display().to_string();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let wrong = spawn(
        "wrong-ca",
        &["worker", "--config", &prof, "--id", "w2"],
        &env(&other, &[("DROVER_ADMIN_ADDR", &admin_addr)]),
        d,
    );
    let log = eventually(Duration::from_secs(15), "the certificate error", || async {
        let log = wrong.log_text();
        (log.contains("redis unreachable") && log.to_lowercase().contains("certificate")).then_some(log)
    })
    .await;
    let ready = reqwest::get(format!("http://{admin_addr}/ready")).await.unwrap();
    assert_eq!(ready.status(), 503, "{log}");
    assert!(client.workers().await.unwrap().workers.iter().all(|w| w.id != "w2"));
}
