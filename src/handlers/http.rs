//! `http` handlers: POST each task's input to a URL fixed by the profile.
//!
//! The request body is the input JSON, with `Content-Type: application/json`, the
//! profile's `headers`, and `X-Drover-Task-Id`, `X-Drover-Attempt` and
//! `X-Drover-Fence` (the `epoch.fence` token) so the receiver can deduplicate and
//! fence. A 2xx response's body is the result: parsed as JSON, `null` when empty,
//! and the trimmed text as a JSON string when it is not JSON; bodies beyond
//! `max_output` fail the run. Any other status is a failure carrying the status and
//! the start of the body. Redirects are not followed (a 3xx is a failure), so a
//! profile's URL is the only place task input can be sent.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{redirect, Client, Response, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::outcome::{lossy_excerpt, parse_output, supervise};
use super::spec::spec_max_output;
use super::{Handler, HandlerError, HandlerFuture, SpecError, TaskContext};

/// How much of a non-2xx response body goes into the failure message.
pub const ERROR_BODY_EXCERPT: usize = 512;

/// Headers drover sets itself; a profile setting them would either be overwritten
/// or, worse, let it forge the identity of the task.
const RESERVED_HEADERS: [&str; 4] = ["content-type", "content-length", "transfer-encoding", "host"];
const RESERVED_HEADER_PREFIX: &str = "x-drover-";

/// A `kind = "http"` profile entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<String>,
}

/// Builds the client http handlers share: one per [`Registry`](super::Registry),
/// so they share a connection pool. Redirects are off (see the module docs) and no
/// client-wide timeout is set because each run is bounded by its task's timeout.
pub fn build_client() -> reqwest::Result<Client> {
    Client::builder().redirect(redirect::Policy::none()).build()
}

/// POSTs task input to one fixed URL; see the module documentation.
#[derive(Debug, Clone)]
pub struct HttpHandler {
    // Shared with every run's future, which must be 'static.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    url: Url,
    headers: HeaderMap,
    max_output: usize,
}

impl HttpHandler {
    /// Validates a profile entry named `handler`; requests go through `client`
    /// (normally from [`build_client`]). The `timeout` key is not read here: the
    /// worker folds it into [`TaskContext::timeout`].
    pub fn from_spec(handler: &str, spec: &HttpSpec, client: Client) -> Result<HttpHandler, SpecError> {
        let bad_url = |reason: String| SpecError::BadUrl {
            handler: handler.to_owned(),
            reason,
        };
        let url = Url::parse(&spec.url).map_err(|e| bad_url(format!("{:?} is not a URL ({e})", spec.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_url("must be http:// or https://".into()));
        }

        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let bad_header = |reason: &str| SpecError::BadEntry {
                handler: handler.to_owned(),
                key: "headers",
                entry: name.clone(),
                reason: reason.to_owned(),
            };
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad_header("not a valid header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) || header.as_str().starts_with(RESERVED_HEADER_PREFIX) {
                return Err(bad_header("is set by drover"));
            }
            let value = HeaderValue::from_str(value).map_err(|_| bad_header("not a valid header value"))?;
            headers.insert(header, value);
        }

        Ok(HttpHandler {
            inner: Arc::new(Inner {
                client,
                url,
                headers,
                max_output: spec_max_output(handler, "max_output", spec.max_output.as_deref())?,
            }),
        })
    }
}

impl Handler for HttpHandler {
    fn run(&self, ctx: TaskContext, input: Value) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        // Dropping the request future on timeout or cancel aborts the request.
        Box::pin(async move { supervise(&ctx, inner.post(&ctx, input)).await })
    }
}

impl Inner {
    async fn post(&self, ctx: &TaskContext, input: Value) -> Result<Value, HandlerError> {
        let mut response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("X-Drover-Task-Id", &ctx.task_id)
            .header("X-Drover-Attempt", ctx.attempt.to_string())
            .header("X-Drover-Fence", ctx.fence_token())
            .header(CONTENT_TYPE, "application/json")
            .body(input.to_string())
            .send()
            .await
            .map_err(|e| HandlerError::Failed(error_chain(&e)))?;

        let status = response.status();
        if !status.is_success() {
            // The body is only an excerpt for the message; an error reading it
            // must not hide the status, so it just ends the excerpt.
            let body = read_up_to(&mut response, ERROR_BODY_EXCERPT).await.unwrap_or_default();
            let excerpt = lossy_excerpt(&body, ERROR_BODY_EXCERPT);
            let code = status.as_u16();
            return Err(HandlerError::Failed(if excerpt.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {excerpt}")
            }));
        }

        let limit = self.max_output;
        // A declared length over the bound fails without reading anything.
        if response
            .content_length()
            .is_some_and(|len| len > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(HandlerError::OutputTooLarge { limit });
        }
        let body = read_up_to(&mut response, limit.saturating_add(1))
            .await
            .map_err(|e| HandlerError::Failed(format!("reading response body: {}", error_chain(&e))))?;
        if body.len() > limit {
            return Err(HandlerError::OutputTooLarge { limit });
        }
        parse_output(&body)
    }
}

/// Reads the body chunk by chunk until it ends or `limit` bytes have been read, so
/// an oversized or endless body is never buffered whole. The result holds at most
/// `limit` bytes.
async fn read_up_to(response: &mut Response, limit: usize) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while body.len() < limit {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body)
}

/// reqwest's own message is terse ("error sending request for url ..."); the cause,
/// such as "Connection refused", is in the source chain.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::json;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    fn ctx(timeout: Duration) -> TaskContext {
        TaskContext {
            task_id: "task-7".into(),
            handler: "notify".into(),
            attempt: 4,
            epoch: 3,
            fence: 99,
            timeout,
            cancel: CancellationToken::new(),
        }
    }

    fn header(headers: &AxumHeaders, name: &str) -> Value {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map_or(Value::Null, |v| json!(v))
    }

    /// Echoes what the server received, so the test checks it as the server saw it.
    async fn echo(headers: AxumHeaders, body: String) -> Json<Value> {
        Json(json!({
            "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            "task_id": header(&headers, "x-drover-task-id"),
            "attempt": header(&headers, "x-drover-attempt"),
            "fence": header(&headers, "x-drover-fence"),
            "content_type": header(&headers, "content-type"),
            "team": header(&headers, "x-team"),
        }))
    }

    async fn server() -> SocketAddr {
        let app = Router::new()
            .route("/echo", post(echo))
            .route("/text", post(|| async { "  accepted \n" }))
            .route("/empty", post(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/fail",
                post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database down") }),
            )
            .route(
                "/unavailable",
                post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "e".repeat(2000)) }),
            )
            .route(
                "/redirect",
                post(|| async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/echo")]) }),
            )
            .route("/big", post(|| async { "x".repeat(2048) }))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn handler(url: String, max_output: Option<&str>) -> HttpHandler {
        let spec = HttpSpec {
            url,
            timeout: None,
            headers: BTreeMap::from([("X-Team".into(), "a".into())]),
            max_output: max_output.map(str::to_owned),
        };
        HttpHandler::from_spec("notify", &spec, build_client().expect("client")).expect("valid spec")
    }

    async fn call(addr: SocketAddr, path: &str, input: Value) -> Result<Value, HandlerError> {
        handler(format!("http://{addr}{path}"), None)
            .run(ctx(Duration::from_secs(10)), input)
            .await
    }

    #[tokio::test]
    async fn posts_input_with_drover_and_profile_headers() {
        let addr = server().await;
        let input = json!({"user": 12, "event": "signup"});
        let out = call(addr, "/echo", input.clone()).await.unwrap();
        assert_eq!(
            out,
            json!({
                "body": input,
                "task_id": "task-7",
                "attempt": "4",
                "fence": "3.99",
                "content_type": "application/json",
                "team": "a",
            })
        );
    }

    #[tokio::test]
    async fn text_and_empty_bodies() {
        let addr = server().await;
        assert_eq!(call(addr, "/text", Value::Null).await.unwrap(), json!("accepted"));
        assert_eq!(call(addr, "/empty", Value::Null).await.unwrap(), Value::Null);
    }

    #[tokio::test]
    async fn non_2xx_is_a_failure_with_the_body_start() {
        let addr = server().await;
        let out = call(addr, "/fail", Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m == "HTTP 500: database down"),
            "{out:?}"
        );

        let out = call(addr, "/unavailable", Value::Null).await;
        let expected = format!("HTTP 503: {}", "e".repeat(ERROR_BODY_EXCERPT));
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if *m == expected),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let addr = server().await;
        let out = call(addr, "/redirect", Value::Null).await;
        assert!(
            matches!(&out, Err(HandlerError::Failed(m)) if m == "HTTP 307"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn body_is_bounded() {
        let addr = server().await;
        let out = handler(format!("http://{addr}/big"), Some("1KiB"))
            .run(ctx(Duration::from_secs(10)), Value::Null)
            .await;
        assert!(
            matches!(out, Err(HandlerError::OutputTooLarge { limit: 1024 })),
            "{out:?}"
        );

        let out = handler(format!("http://{addr}/big"), Some("2KiB"))
            .run(ctx(Duration::from_secs(10)), Value::Null)
            .await;
        assert_eq!(out.unwrap(), json!("x".repeat(2048)), "exactly the limit is fine");
    }

    /// A raw server whose chunked response body never ends and declares no length,
    /// so only reading in bounded chunks can stop it.
    async fn endless_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = format!("400\r\n{}\r\n", "y".repeat(0x400));
            // Bounded so the test server always stops by itself.
            for _ in 0..100_000 {
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn endless_body_stops_at_the_bound() {
        let addr = endless_server().await;
        let start = Instant::now();
        let out = handler(format!("http://{addr}/"), Some("64KiB"))
            .run(ctx(Duration::from_secs(20)), Value::Null)
            .await;
        assert!(
            matches!(out, Err(HandlerError::OutputTooLarge { limit: 65536 })),
            "{out:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn timeout_and_cancel() {
        let addr = server().await;
        let slow = handler(format!("http://{addr}/slow"), None);

        let start = Instant::now();
        let out = slow.run(ctx(Duration::from_millis(300)), Value::Null).await;
        assert!(
            matches!(out, Err(HandlerError::Timeout(d)) if d == Duration::from_millis(300)),
            "{out:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());

        let ctx = ctx(Duration::from_secs(60));
        let cancel = ctx.cancel.clone();
        let run = tokio::spawn(slow.run(ctx, Value::Null));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        cancel.cancel();
        let out = run.await.expect("join");
        assert!(matches!(out, Err(HandlerError::Cancelled)), "{out:?}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn connect_error_is_a_failure() {
        // Bind then drop a listener: the port is then (almost certainly) closed.
        let addr = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr")
        };
        let out = call(addr, "/echo", Value::Null).await;
        match out {
            Err(HandlerError::Failed(m)) => {
                assert!(m.contains(&addr.to_string()), "{m}");
                assert!(m.to_lowercase().contains("connect"), "{m}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn https_urls_are_accepted() {
        let spec = HttpSpec {
            url: "https://hooks.example/notify".into(),
            timeout: Some("10s".into()),
            headers: BTreeMap::new(),
            max_output: None,
        };
        let handler = HttpHandler::from_spec("n", &spec, build_client().expect("client")).expect("valid");
        assert_eq!(handler.inner.max_output, super::super::DEFAULT_MAX_OUTPUT);
    }
}
