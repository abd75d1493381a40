//! The README's "Running the roles separately" block, run as written: its
//! `export` lines through `sh` (so `$(drover keygen …)` runs as a reader's
//! shell runs it), each `drover …` line as a real process from the
//! repository root, with the roles' profiles and ports as they are. The only
//! change is the Redis URL, pointed at this test's own redis-server. Every
//! role must come up on the admin port the README names, and a task
//! submitted to the README's API address must succeed on its worker; then
//! SIGTERM stops all three cleanly. A README that drifts from the profiles
//! (or from what the binary does) fails here.

use crate::lifecycle::task;
use crate::support::*;
use drover::client::Client;
use drover::redis_server::Persistence;
use drover::task::TaskState;
use std::process::Command;
use std::time::{Duration, Instant};

/// The heading of the README section whose `sh` block is run.
const SECTION: &str = "## Running the roles separately";

/// The Redis URL of the README's block; the test's Redis takes its place.
const README_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// One `drover …` line of the block.
#[derive(Debug)]
struct RoleLine {
    /// The words after `drover`, split as `sh` splits them (the line has no
    /// quotes or expansions: `parse` refuses those).
    args: Vec<String>,
    /// The ports its comment names: `API on :7070`, `admin on :9090`.
    api: Option<u16>,
    admin: u16,
}

impl RoleLine {
    fn role(&self) -> &str {
        &self.args[0]
    }
}

#[derive(Debug)]
struct Block {
    /// The `export` lines, for `sh` to run as they are.
    exports: Vec<String>,
    roles: Vec<RoleLine>,
}

/// The first ```` ```sh ```` block of the README section [`SECTION`].
fn section_block(readme: &str) -> &str {
    let start = readme
        .find(&format!("\n{SECTION}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {SECTION:?}"));
    // Up to the next section of the same level (### subsections belong to it).
    let section = readme[start + 1 + SECTION.len()..].split("\n## ").next().unwrap();
    let body = section
        .split_once("```sh\n")
        .unwrap_or_else(|| panic!("README.md {SECTION:?} has no ```sh block"))
        .1;
    body.split_once("\n```").expect("the ```sh block ends").0
}

/// The number after `label` in a line's comment, e.g. `admin on :9090`.
fn port_after(comment: &str, label: &str) -> Option<u16> {
    let rest = &comment[comment.find(label)? + label.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(digits.parse().expect("a port number"))
}

/// Splits the block into its export lines and its `drover` lines; any other
/// line is a change this test does not know how to run, so it fails.
fn parse(block: &str) -> Block {
    let mut parsed = Block {
        exports: Vec::new(),
        roles: Vec::new(),
    };
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("export ") {
            parsed.exports.push(line.to_string());
            continue;
        }
        let (cmd, comment) = line.split_once(" #").unwrap_or((line, ""));
        let cmd = cmd.trim();
        let cmd = cmd.strip_suffix('&').unwrap_or(cmd).trim();
        assert!(
            !cmd.contains(['\'', '"', '$', '`', ';', '|', '<', '>', '\\']),
            "README line {line:?}: a drover line with shell syntax; this test splits it on spaces"
        );
        let mut words = cmd.split_whitespace().map(str::to_string);
        assert_eq!(
            words.next().as_deref(),
            Some("drover"),
            "README line {line:?}: neither an export nor a drover command"
        );
        let admin = port_after(comment, "admin on :")
            .unwrap_or_else(|| panic!("README line {line:?}: the comment names no \"admin on :PORT\""));
        parsed.roles.push(RoleLine {
            args: words.collect(),
            api: port_after(comment, "API on :"),
            admin,
        });
    }
    parsed
}

/// Runs the export lines in `sh` (with this build's `drover` first on PATH)
/// and returns the variables they export.
fn run_exports(exports: &[String]) -> Vec<(String, String)> {
    let names: Vec<&str> = exports
        .iter()
        .map(|l| l["export ".len()..].split('=').next().unwrap().trim())
        .collect();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_drover")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("{}\nenv -0\n", exports.join("\n"));
    let out = Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for name in names {
        let value = env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert!(value.is_some_and(|v| !v.is_empty()), "{name} is empty after {script}");
    }
    env
}

/// The value of `name` in `env`.
fn var<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("the README exports {name}"))
        .1
}

/// Waits until `proc` answers 200 on its admin port's `/ready`; fails at once,
/// with its log, if it exits instead (a taken port ends it that way).
async fn wait_ready(http: &reqwest::Client, proc: &mut Proc, line: &RoleLine) {
    let url = format!("http://127.0.0.1:{}/ready", line.admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            panic!(
                "`drover {}` exited ({status}):\n{}",
                line.args.join(" "),
                proc.log_text()
            );
        }
        if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`drover {}`: {url} not 200 within 60 s:\n{}",
            line.args.join(" "),
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_readme_roles_run_side_by_side_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = section_block(&readme);
    assert_eq!(
        block.matches(README_REDIS_URL).count(),
        1,
        "{SECTION}: one {README_REDIS_URL}"
    );
    let parsed = parse(block);
    let roles: Vec<&str> = parsed.roles.iter().map(RoleLine::role).collect();
    assert_eq!(roles, ["coordinator", "distributor", "worker"], "{SECTION}");
    let api = parsed.roles[0].api.expect("the coordinator line names its API port");
    // The README's fixed ports: another process holding one would end a role
    // for a reason that is not the README's.
    let ports = parsed.roles.iter().flat_map(|r| [Some(r.admin), r.api]).flatten();
    for port in ports {
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
            skip_or_fail(&format!(
                "port {port} is in use on this machine; the README's commands need it"
            ));
            return;
        }
    }
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    // The profiles' relative paths (roles/…) are the repository's, as for a
    // reader in their clone; cargo runs tests from the package root.
    assert_eq!(
        std::env::current_dir().unwrap(),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        "tests run from the repository root"
    );
    let exports: Vec<String> = parsed
        .exports
        .iter()
        .map(|l| l.replace(README_REDIS_URL, &redis.url()))
        .collect();
    let env = run_exports(&exports);
    let path = std::env::var("PATH").unwrap_or_default();
    let env: Vec<(String, String)> = env.into_iter().chain([("PATH".to_string(), path)]).collect();

    let dir = tempfile::tempdir().unwrap();
    let mut procs: Vec<Proc> = parsed
        .roles
        .iter()
        .map(|r| {
            let args: Vec<&str> = r.args.iter().map(String::as_str).collect();
            spawn(r.role(), &args, &env, dir.path())
        })
        .collect();
    let http = reqwest::Client::new();
    for (line, proc) in parsed.roles.iter().zip(procs.iter_mut()) {
        wait_ready(&http, proc, line).await;
        let health = admin_json(&http, line.admin, "/health").await;
        assert_eq!(health["role"], line.role(), "admin port {}: {health}", line.admin);
    }

    let token = var(&env, "DROVER_API_TOKENS").split_once(':').expect("TOKEN:SCOPE").0;
    let client = Client::new(&format!("http://127.0.0.1:{api}"), Some(token.into())).unwrap();
    let input = serde_json::json!({"hello": "readme"});
    let s = client.submit_one(&task("echo", input.clone())).await.unwrap();
    let t = client.wait(&s.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.result, Some(input), "{t:?}");
    let worker_id = parsed.roles[2]
        .args
        .iter()
        .skip_while(|a| *a != "--id")
        .nth(1)
        .expect("the worker line's --id");
    let workers: Vec<String> = client
        .workers()
        .await
        .unwrap()
        .workers
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(workers, [worker_id.as_str()], "the README's worker, alone");
    let worker_admin = parsed.roles[2].admin;
    let metrics = metrics_page(&http, worker_admin).await;
    assert!(
        metrics.contains("drover_tasks_finished_total{outcome=\"succeeded\"} 1"),
        "the worker on :{worker_admin} ran it: {metrics}"
    );

    // `kill %1 %2 %3`, as the README says: SIGTERM, and each role drains and exits 0.
    for p in &procs {
        p.signal(libc::SIGTERM);
    }
    for p in &mut procs {
        let status = p.wait_exit(Duration::from_secs(45));
        assert!(status.success(), "{} after SIGTERM: {status}\n{}", p.name, p.log_text());
    }
}

#[test]
fn a_readme_line_the_test_cannot_run_fails_it() {
    let block = "export A=1\ndrover worker --config roles/worker.toml &    # admin on :9092\n";
    let parsed = parse(block);
    assert_eq!(parsed.exports, ["export A=1"]);
    assert_eq!(parsed.roles[0].args, ["worker", "--config", "roles/worker.toml"]);
    assert_eq!((parsed.roles[0].admin, parsed.roles[0].api), (9092, None));
    for bad in [
        "cargo run -- worker   # admin on :9092",
        "drover worker --config \"$HOME/w.toml\"   # admin on :9092",
        "drover worker",
    ] {
        assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "{bad:?} was accepted");
    }
}
