//! The API over HTTPS: a real `drover coordinator` process serving TLS from
//! certificate files made with openssl. A client trusting the CA gets
//! answers, one trusting another CA and plain HTTP are refused, a certificate
//! rewritten in place is served without a restart (a broken one in between
//! keeps the old), and with a client CA a client must show a certificate it
//! signed. The CLI reaches the API with `--ca-file`. Failed handshakes,
//! reloads and the served certificate's expiry show on the admin port.

use crate::support::*;
use crate::support_certs::{make_ca, make_cert, make_client_cert, make_server_cert, openssl_available};
use drover::client::{Client, ClientTls};
use drover::redis_server::{Persistence, RedisServer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Redis and openssl, or a loud skip.
fn tools() -> Option<RedisServer> {
    if !openssl_available() {
        skip_or_fail("openssl is not installed");
        return None;
    }
    redis(Persistence::None)
}

fn tls(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> ClientTls {
    ClientTls {
        ca_file: ca,
        cert_file: cert,
        key_file: key,
    }
}

fn client(api: &str, tls: &ClientTls) -> Client {
    Client::with_tls(api, Some(ADMIN_TOKEN.into()), tls).unwrap()
}

/// A coordinator with TLS from `dir`'s `api.crt` and `api.key` (and
/// `extra` env) on a port of its own; returns it and its https:// URL.
fn coordinator(redis: &RedisServer, dir: &Path, extra: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cert = dir.join("api.crt").display().to_string();
    let key = dir.join("api.key").display().to_string();
    let mut env = vec![
        ("DROVER_HTTP_ADDR", addr.as_str()),
        ("DROVER_HTTP_TLS_CERT_FILE", cert.as_str()),
        ("DROVER_HTTP_TLS_KEY_FILE", key.as_str()),
    ];
    env.extend_from_slice(extra);
    let p = spawn(
        "coordinator",
        &["coordinator", "--id", "c1"],
        &proc_env(&redis.url(), &env),
        dir,
    );
    (p, port)
}

/// Copies `<name>.crt` and `<name>.key` over `api.crt` and `api.key`, in
/// place and one after the other, as a careless rotation would.
fn install(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("api.crt"),
        std::fs::read(dir.join(format!("{name}.crt"))).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("api.key"),
        std::fs::read(dir.join(format!("{name}.key"))).unwrap(),
    )
    .unwrap();
}

/// The value of the series `series` (name and labels as printed) on a
/// metrics page.
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} on the metrics page:\n{page}"))
}

async fn answers(client: &Client) -> Result<(), String> {
    client.workers().await.map(|_| ()).map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn the_api_serves_https_that_clients_verify_and_rotates_without_a_restart() {
    let Some(redis) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    make_server_cert(d, "ca");
    install(d, "server");
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let (mut coord, port) = coordinator(&redis, d, &[("DROVER_ADMIN_ADDR", &admin_addr)]);
    let http = reqwest::Client::new();
    let api = format!("https://localhost:{port}");
    let ca = d.join("ca.crt");
    let trusting = client(&api, &tls(Some(ca.clone()), None, None));
    eventually(Duration::from_secs(30), "the API over HTTPS", || async {
        answers(&trusting).await.ok()
    })
    .await;
    // By IP address too: the certificate names 127.0.0.1.
    answers(&client(
        &format!("https://127.0.0.1:{port}"),
        &tls(Some(ca.clone()), None, None),
    ))
    .await
    .unwrap();

    // A client trusting another CA refuses the server, and says why.
    let other = client(&api, &tls(Some(d.join("other-ca.crt")), None, None));
    let err = answers(&other).await.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // With no CA file only the built-in web roots are trusted: refused too.
    assert!(answers(&client(&api, &ClientTls::default())).await.is_err());

    // Plain HTTP to the TLS port gets no answer, and the server goes on.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/workers"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that connects and says nothing does not hold up others.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    answers(&trusting).await.unwrap();
    let page = metrics_page(&http, admin).await;
    assert!(
        metric(&page, "drover_api_tls_handshake_failures_total") >= 3.0,
        "{page}"
    );
    let first_expiry = metric(&page, "drover_api_tls_cert_expiry_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (first_expiry - (now + 2.0 * 86_400.0)).abs() < 600.0,
        "{first_expiry} vs {now}"
    );

    // The CLI reaches it with --ca-file (and DROVER_API_CA_FILE).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "workers",
            "--json",
            "--api",
            &api,
            "--ca-file",
            &ca.display().to_string(),
        ])
        .env("DROVER_API_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["workers", "--json", "--api", &api])
        .env("DROVER_API_TOKEN", ADMIN_TOKEN)
        .env("DROVER_API_CA_FILE", d.join("other-ca.crt"))
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A broken certificate file keeps the served one, with a warning.
    std::fs::write(d.join("api.crt"), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    eventually(Duration::from_secs(15), "the refusal of the broken file", || async {
        coord.log_text().contains("new TLS certificate refused").then_some(())
    })
    .await;
    answers(&trusting).await.unwrap();

    // Rotation to a certificate of the other CA, rewritten in place: served
    // by the same process once it has seen the files change.
    make_cert(
        d,
        "other-ca",
        "rotated",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        30,
    );
    install(d, "rotated");
    let new_ca = client(&api, &tls(Some(d.join("other-ca.crt")), None, None));
    eventually(Duration::from_secs(15), "the rotated certificate", || async {
        answers(&new_ca).await.ok()
    })
    .await;
    // A new connection (`trusting` keeps its open one, as it should).
    let fresh = client(&api, &tls(Some(ca.clone()), None, None));
    assert!(answers(&fresh).await.is_err(), "the old certificate is still served");
    assert!(coord.child.try_wait().unwrap().is_none(), "the coordinator restarted");
    assert!(coord.log_text().contains("TLS certificate reloaded"));
    let page = metrics_page(&http, admin).await;
    assert!(
        metric(&page, r#"drover_api_tls_reloads_total{outcome="refused"}"#) >= 1.0,
        "{page}"
    );
    assert_eq!(
        metric(&page, r#"drover_api_tls_reloads_total{outcome="reloaded"}"#),
        1.0,
        "{page}"
    );
    let expiry = metric(&page, "drover_api_tls_cert_expiry_timestamp_seconds");
    assert!(
        (expiry - first_expiry - 28.0 * 86_400.0).abs() < 600.0,
        "{expiry} after {first_expiry}"
    );

    // It still drains on SIGTERM over TLS.
    coord.signal(libc::SIGTERM);
    assert!(
        coord.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        coord.log_text()
    );
}

#[tokio::test]
async fn with_a_client_ca_the_api_refuses_clients_without_a_certificate_it_signed() {
    let Some(redis) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "client-ca");
    make_ca(d, "other-ca");
    make_server_cert(d, "ca");
    install(d, "server");
    make_client_cert(d, "client-ca", "alice");
    make_client_cert(d, "other-ca", "mallory");
    let client_ca = d.join("client-ca.crt").display().to_string();
    let (_coord, port) = coordinator(&redis, d, &[("DROVER_HTTP_TLS_CLIENT_CA_FILE", &client_ca)]);
    let api = format!("https://localhost:{port}");
    let ca = Some(d.join("ca.crt"));

    // With its certificate and key in two files, or both in one.
    let alice = client(
        &api,
        &tls(ca.clone(), Some(d.join("alice.crt")), Some(d.join("alice.key"))),
    );
    eventually(Duration::from_secs(30), "the API with a client certificate", || async {
        answers(&alice).await.ok()
    })
    .await;
    let both = d.join("alice.pem");
    let mut pem = std::fs::read(d.join("alice.crt")).unwrap();
    pem.extend(std::fs::read(d.join("alice.key")).unwrap());
    std::fs::write(&both, pem).unwrap();
    answers(&client(&api, &tls(ca.clone(), Some(both), None)))
        .await
        .unwrap();

    let anonymous = answers(&client(&api, &tls(ca.clone(), None, None))).await;
    let err = anonymous.expect_err("a client without a certificate was answered");
    assert!(err.to_lowercase().contains("certificaterequired"), "{err}");
    let mallory = client(
        &api,
        &tls(ca.clone(), Some(d.join("mallory.crt")), Some(d.join("mallory.key"))),
    );
    let err = answers(&mallory)
        .await
        .expect_err("a certificate of another CA was accepted");
    assert!(err.contains("alert"), "{err}");
    answers(&alice).await.unwrap();
}

#[tokio::test]
async fn a_certificate_without_its_key_or_with_another_key_stops_the_start() {
    let Some(redis) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_server_cert(d, "ca");
    let cert = d.join("server.crt").display().to_string();
    let start = |extra: &[(&str, &str)]| {
        let mut env = vec![("DROVER_HTTP_TLS_CERT_FILE", cert.as_str())];
        env.extend_from_slice(extra);
        let mut p = spawn("coordinator", &["coordinator"], &proc_env(&redis.url(), &env), d);
        assert!(!p.wait_exit(Duration::from_secs(20)).success());
        p.log_text()
    };
    let log = start(&[]);
    assert!(
        log.contains("config: coordinator.tls_cert_file (from DROVER_HTTP_TLS_CERT_FILE): set both"),
        "{log}"
    );
    // The CA's key is PEM, but not the key of this certificate.
    let wrong_key = d.join("ca.key").display().to_string();
    let log = start(&[("DROVER_HTTP_TLS_KEY_FILE", &wrong_key)]);
    assert!(log.contains("API TLS: ") && log.contains("KeyMismatch"), "{log}");
}
