//! Snapshots: `drover snapshot export` writes every live task (and, with
//! `--results`, finished ones with their results) to a JSON-lines file;
//! `drover snapshot import` writes them into an empty namespace, where the
//! live ones come back queued (or scheduled) and run, except those whose
//! cancel was requested, which come back cancelled. "Empty" is decided by a
//! whole SCAN of the keyspace, not one step of it. A complement to Redis'
//! own RDB/AOF backups: portable across Redis versions and namespaces, and
//! readable. The first line is a header naming the format and version.

use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

const FORMAT: &str = "drover-snapshot";
const VERSION: u32 = 1;
const BATCH: usize = 500;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    namespace: String,
    exported_ms: u64,
    results: bool,
}

#[derive(Serialize, Deserialize)]
struct Line {
    id: String,
    fields: HashMap<String, String>,
}

fn terminal(fields: &HashMap<String, String>) -> bool {
    matches!(
        fields.get("state").map(String::as_str),
        Some("succeeded" | "dead" | "cancelled")
    )
}

/// Writes the snapshot; returns (live, finished) task counts.
pub async fn export(store: &Store, namespace: &str, path: &Path, results: bool) -> anyhow::Result<(u64, u64)> {
    let file = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mut out = BufWriter::new(file);
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        namespace: namespace.into(),
        exported_ms: store.clock().now_ms(),
        results,
    };
    writeln!(out, "{}", serde_json::to_string(&header)?)?;
    let (mut live, mut finished) = (0, 0);
    let mut cursor = "0".to_string();
    loop {
        let (next, tasks) = store.scan_tasks(&cursor, BATCH).await?;
        for (id, fields) in tasks {
            if terminal(&fields) {
                if !results {
                    continue;
                }
                finished += 1;
            } else {
                live += 1;
            }
            writeln!(out, "{}", serde_json::to_string(&Line { id, fields })?)?;
        }
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    out.flush()?;
    Ok((live, finished))
}

/// Reads a snapshot into the namespace. Refuses a namespace that already
/// holds tasks unless `force` (then tasks whose id exists are left alone).
/// Returns how many tasks were restored per outcome.
pub async fn import(store: &Store, path: &Path, force: bool) -> anyhow::Result<HashMap<String, u64>> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header: Header = match lines.next() {
        Some(line) => serde_json::from_str(&line?)
            .map_err(|e| anyhow::anyhow!("{}: not a drover snapshot: {e}", path.display()))?,
        None => anyhow::bail!("{}: empty file, not a drover snapshot", path.display()),
    };
    if header.format != FORMAT || header.version != VERSION {
        anyhow::bail!(
            "{}: format {:?} version {} is not {FORMAT} version {VERSION}",
            path.display(),
            header.format,
            header.version
        );
    }
    if !force && store.holds_any_task().await? {
        anyhow::bail!("the namespace already holds tasks: import into an empty one, or pass --force (tasks whose id exists are left alone)");
    }
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), n + 2))?;
        if crate::task::TaskId::parse(&l.id).is_none() || !l.fields.contains_key("state") {
            anyhow::bail!("{}: line {}: not a task record", path.display(), n + 2);
        }
        batch.push((l.id, l.fields));
        if batch.len() == BATCH {
            for (_, outcome) in store.restore(&batch).await? {
                *counts.entry(outcome.label().to_string()).or_default() += 1;
            }
            batch.clear();
        }
    }
    for (_, outcome) in store.restore(&batch).await? {
        *counts.entry(outcome.label().to_string()).or_default() += 1;
    }
    Ok(counts)
}
