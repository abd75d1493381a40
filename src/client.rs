//! The CLI's HTTP client: `submit`, `status`, `cancel`, `tasks`, `workers`
//! against `DROVER_API` with `DROVER_API_TOKEN`, over `https://` trusting
//! `DROVER_API_CA_FILE` when it is set ([`ClientTls`]). Output is a short
//! text for people, or the API's JSON with `--json` for scripts. API errors
//! are shown with their code and message and make the command exit non-zero.

use crate::api::TaskBody;
use crate::api::{
    BatchRequest, BatchResponse, CancelResponse, Discarded, Purged, QueueBody, QueueLimitsBody, QueueList, Retried,
    RetriedDead, SubmitRequest, Submitted, TaskList, WorkerList,
};
use crate::task::TaskState;
use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tasks per batch request.
const BATCH: usize = 500;
/// Long-polls in flight at once while waiting.
const WAITERS: usize = 64;

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// What the client trusts and shows over `https://`: by default the
/// built-in web roots and no certificate of its own.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA certificates to trust instead of the built-in roots (a
    /// private CA, as an API behind cert-manager usually has).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain to present to an API that requires client
    /// certificates; it may hold the key too.
    pub cert_file: Option<PathBuf>,
    /// PEM key of that certificate, when not in `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Client> {
        Self::with_tls(base, token, &ClientTls::default())
    }

    /// A client that trusts and presents what `tls` names.
    pub fn with_tls(base: &str, token: Option<String>, tls: &ClientTls) -> anyhow::Result<Client> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(120));
        if let Some(ca) = &tls.ca_file {
            let pem = read_pem(ca, "CA file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("CA file {}: not PEM certificates", ca.display()))?;
            if certs.is_empty() {
                bail!("CA file {}: holds no PEM certificate", ca.display());
            }
            // Only the given CA: trusting the web roots as well would let
            // any public certificate for the host stand in for the API's.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&tls.cert_file, &tls.key_file) {
            (None, None) => {}
            (None, Some(_)) => bail!("a client key needs its client certificate (--client-cert)"),
            (Some(cert), key) => {
                let mut pem = read_pem(cert, "client certificate")?;
                if let Some(key) = key {
                    pem.push(b'\n');
                    pem.extend(read_pem(key, "client key")?);
                }
                let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                    format!(
                        "client certificate {}: needs a PEM certificate and its key",
                        cert.display()
                    )
                })?;
                builder = builder.identity(identity);
            }
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the drover API at {}", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    let e = v.get("error")?;
                    Some(format!(
                        "{} ({})",
                        e.get("message")?.as_str()?,
                        e.get("code")?.as_str()?
                    ))
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("API error {}: {msg}", status.as_u16());
        }
        serde_json::from_slice(&body).context("the API answered with unexpected JSON")
    }

    pub async fn submit_one(&self, req: &SubmitRequest) -> anyhow::Result<Submitted> {
        let mut rb = self.req(reqwest::Method::POST, "/v1/tasks").json(req);
        if let Some(k) = &req.idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        self.send(rb).await
    }

    pub async fn submit_batch(&self, tasks: Vec<SubmitRequest>) -> anyhow::Result<BatchResponse> {
        self.send(
            self.req(reqwest::Method::POST, "/v1/tasks/batch")
                .json(&BatchRequest { tasks }),
        )
        .await
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<TaskBody> {
        self.send(self.req(reqwest::Method::GET, &format!("/v1/tasks/{id}")))
            .await
    }

    pub async fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<TaskBody> {
        let path = format!("/v1/tasks/{id}/wait?timeout={}ms", timeout.as_millis());
        self.send(self.req(reqwest::Method::GET, &path)).await
    }

    pub async fn cancel(&self, id: &str) -> anyhow::Result<CancelResponse> {
        self.send(self.req(reqwest::Method::POST, &format!("/v1/tasks/{id}/cancel")))
            .await
    }

    pub async fn list(
        &self,
        state: Option<&str>,
        queue: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> anyhow::Result<TaskList> {
        let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(s) = state {
            q.push(("state", s.to_string()));
        }
        if let Some(name) = queue {
            q.push(("queue", name.to_string()));
        }
        if let Some(c) = cursor {
            q.push(("cursor", c.to_string()));
        }
        self.send(self.req(reqwest::Method::GET, "/v1/tasks").query(&q)).await
    }

    pub async fn workers(&self) -> anyhow::Result<WorkerList> {
        self.send(self.req(reqwest::Method::GET, "/v1/workers")).await
    }

    pub async fn queues(&self) -> anyhow::Result<QueueList> {
        self.send(self.req(reqwest::Method::GET, "/v1/queues")).await
    }

    pub async fn queue(&self, queue: &str) -> anyhow::Result<QueueBody> {
        self.send(self.req(reqwest::Method::GET, &format!("/v1/queues/{queue}")))
            .await
    }

    /// Pauses, resumes or drains a queue: `action` is `pause`, `resume`
    /// or `drain`.
    pub async fn change_queue(&self, queue: &str, action: &str) -> anyhow::Result<QueueBody> {
        self.send(self.req(reqwest::Method::POST, &format!("/v1/queues/{queue}/{action}")))
            .await
    }

    /// Sets every limit of a queue (one left out is removed).
    pub async fn set_queue_limits(&self, queue: &str, limits: &QueueLimitsBody) -> anyhow::Result<QueueBody> {
        let rb = self.req(reqwest::Method::PUT, &format!("/v1/queues/{queue}/limits"));
        self.send(rb.json(limits)).await
    }

    pub async fn retry(&self, id: &str) -> anyhow::Result<Retried> {
        self.send(self.req(reqwest::Method::POST, &format!("/v1/tasks/{id}/retry")))
            .await
    }

    pub async fn discard(&self, id: &str) -> anyhow::Result<Discarded> {
        self.send(self.req(reqwest::Method::DELETE, &format!("/v1/tasks/{id}")))
            .await
    }

    pub async fn retry_dead(&self, queue: &str) -> anyhow::Result<RetriedDead> {
        self.send(self.req(reqwest::Method::POST, &format!("/v1/queues/{queue}/retry-dead")))
            .await
    }

    pub async fn purge(&self, queue: &str, state: &str) -> anyhow::Result<Purged> {
        let rb = self.req(reqwest::Method::POST, &format!("/v1/queues/{queue}/purge"));
        self.send(rb.query(&[("state", state)])).await
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Submits `count` copies of `req` (batched), and with `wait` waits for all
/// of them and reports how many succeeded, died, were cancelled or are
/// still pending. Exits non-zero unless every task succeeded.
pub async fn submit(
    client: &Client,
    req: SubmitRequest,
    count: usize,
    wait: Option<Duration>,
    json: bool,
) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--count: must be at least 1");
    }
    if count > 1 && req.idempotency_key.is_some() {
        bail!("--idempotency-key: only with a single task (--count 1)");
    }
    let started = Instant::now();
    let mut ids = Vec::with_capacity(count);
    if count == 1 {
        ids.push(client.submit_one(&req).await?.id);
    } else {
        let mut left = count;
        while left > 0 {
            let n = left.min(BATCH);
            let resp = client.submit_batch(vec![req.clone(); n]).await?;
            ids.extend(resp.tasks.into_iter().map(|t| t.id));
            left -= n;
        }
    }
    let submit_secs = started.elapsed().as_secs_f64();
    let Some(timeout) = wait else {
        if json {
            return print_json(&serde_json::json!({ "submitted": ids.len(), "ids": ids }));
        }
        if ids.len() == 1 {
            println!("{}", ids[0]);
        } else {
            println!("submitted {} tasks in {submit_secs:.2}s", ids.len());
        }
        return Ok(());
    };
    let states = wait_all(client, &ids, timeout).await?;
    let mut tally: HashMap<&str, usize> = HashMap::new();
    for s in states.values() {
        *tally
            .entry(if s.is_terminal() { s.as_str() } else { "pending" })
            .or_default() += 1;
    }
    let pending = ids.len() - states.values().filter(|s| s.is_terminal()).count();
    let succeeded = tally.get("succeeded").copied().unwrap_or(0);
    let total_secs = started.elapsed().as_secs_f64();
    if json {
        print_json(&serde_json::json!({
            "submitted": ids.len(),
            "succeeded": succeeded,
            "dead": tally.get("dead").copied().unwrap_or(0),
            "cancelled": tally.get("cancelled").copied().unwrap_or(0),
            "pending": pending,
            "submit_seconds": submit_secs,
            "total_seconds": total_secs,
        }))?;
    } else {
        println!(
            "{} submitted: {succeeded} succeeded, {} dead, {} cancelled, {pending} pending ({total_secs:.2}s, {:.0} tasks/s)",
            ids.len(),
            tally.get("dead").copied().unwrap_or(0),
            tally.get("cancelled").copied().unwrap_or(0),
            ids.len() as f64 / total_secs.max(0.001)
        );
    }
    if succeeded != ids.len() {
        std::process::exit(1);
    }
    Ok(())
}

/// Long-polls every task until it ends or `timeout` passes; returns the
/// last state seen of each.
async fn wait_all(client: &Client, ids: &[String], timeout: Duration) -> anyhow::Result<HashMap<String, TaskState>> {
    let deadline = Instant::now() + timeout;
    let states = Arc::new(tokio::sync::Mutex::new(HashMap::new()));
    let queue = Arc::new(tokio::sync::Mutex::new(ids.to_vec()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..WAITERS.min(ids.len()) {
        let (client, states, queue) = (client.clone(), states.clone(), queue.clone());
        set.spawn(async move {
            loop {
                let Some(id) = queue.lock().await.pop() else {
                    return Ok(());
                };
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let task = client.wait(&id, left.min(Duration::from_secs(30))).await?;
                    let done = task.state.is_terminal();
                    states.lock().await.insert(id.clone(), task.state);
                    if done || left.is_zero() {
                        break;
                    }
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(anyhow::Error::from).and_then(|r: anyhow::Result<()>| r)?;
    }
    let states = states.lock().await.clone();
    Ok(states)
}

pub async fn status(client: &Client, id: &str, wait: Option<Duration>, json: bool) -> anyhow::Result<()> {
    let t = match wait {
        Some(w) => client.wait(id, w).await?,
        None => client.get(id).await?,
    };
    if json {
        return print_json(&t);
    }
    println!(
        "{}  {}  handler={}  attempts={}/{}",
        t.id, t.state, t.handler, t.attempts, t.max_attempts
    );
    if let Some(r) = &t.result {
        println!("result: {r}");
    }
    if let Some(e) = &t.error {
        println!("error: {e}");
    }
    Ok(())
}

pub async fn cancel(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let r = client.cancel(id).await?;
    if json {
        return print_json(&r);
    }
    if r.cancel_requested {
        println!("{}: cancel requested; the worker is stopping it", r.id);
    } else {
        println!("{}: {}", r.id, r.state);
    }
    Ok(())
}

pub async fn tasks(
    client: &Client,
    state: Option<&str>,
    queue: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let page = client.list(state, queue, limit, cursor).await?;
    if json {
        return print_json(&page);
    }
    for t in &page.tasks {
        println!(
            "{}  {:<9}  {}  {}  attempts={}/{}",
            t.id,
            t.state.as_str(),
            t.queue,
            t.handler,
            t.attempts,
            t.max_attempts
        );
    }
    if let Some(c) = page.next_cursor {
        println!("# more: --cursor {c}");
    }
    Ok(())
}

/// Prints `v` as JSON, or as the line `text` makes of it.
pub fn print_either<T: serde::Serialize>(v: &T, json: bool, text: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    println!("{}", text(v));
    Ok(())
}

pub async fn workers(client: &Client, json: bool) -> anyhow::Result<()> {
    let list = client.workers().await?;
    if json {
        return print_json(&list);
    }
    for w in &list.workers {
        println!(
            "{}  slots {}/{}  handlers={}  tags={}{}",
            w.id,
            w.used,
            w.capacity,
            w.handlers.join(","),
            w.tags.join(","),
            if w.draining { "  (draining)" } else { "" }
        );
    }
    Ok(())
}

/// Why [`Client::call`] got no answer it could use: the API's own error
/// (status, code and message as it sent them), or no usable answer at all.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    Api { status: u16, code: String, message: String },
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api { status, code, message } => write!(f, "API error {status}: {message} ({code})"),
            CallError::Transport(why) => f.write_str(why),
        }
    }
}

impl Client {
    /// One API call with its answer as JSON, for callers that pass the
    /// API's documents on as they are (`drover mcp`) and need its error
    /// code as a value rather than in a message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        idempotency_key: Option<&str>,
    ) -> Result<serde_json::Value, CallError> {
        let mut rb = self.req(method, path).query(query);
        if let Some(body) = body {
            rb = rb.json(body);
        }
        if let Some(key) = idempotency_key {
            rb = rb.header("Idempotency-Key", key);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("cannot reach the drover API at {}: {e}", self.base)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CallError::Transport(format!("reading the API's answer: {e}")))?;
        let value: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return value.ok_or_else(|| CallError::Transport("the API answered with something not JSON".into()));
        }
        let error = value.as_ref().and_then(|v| v.get("error"));
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Err(CallError::Api {
            status: status.as_u16(),
            code: field("code").unwrap_or_else(|| "unknown".into()),
            message: field("message").unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned()),
        })
    }
}

/// The bytes of a PEM file the client was pointed at.
fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}
