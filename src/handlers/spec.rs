//! The `[handlers]` section of a worker profile as written: [`HandlerSpec`] (one
//! entry, tagged by `kind`), the [`SpecError`]s an entry can be refused with, and
//! the checks every kind shares (durations, output bounds, `env` tables), so each
//! kind's own `from_spec` only validates what is particular to it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::units::{parse_duration, parse_size};
use serde::{Deserialize, Serialize};

use super::builtin::{BuiltinSpec, BUILTIN_NAMES};
use super::container::ContainerSpec;
use super::exec::ExecSpec;
use super::handler::RESERVED_ENV;
use super::http::HttpSpec;
use super::mcp::McpSpec;

/// `max_output` when the profile does not set one.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

/// One `[handlers]` entry as written in the profile.
///
/// Each kind's fields live in its own struct next to its handler, so adding a kind
/// is a new variant plus an arm in
/// [`Registry::from_specs`](super::Registry::from_specs), and the compiler points at
/// every `match` that must learn about it. An unknown `kind` is rejected by
/// deserialization ("unknown variant `wasm`, expected one of `builtin`, `exec`,
/// `http`, `container`"), as is any key the kind does not define.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HandlerSpec {
    Builtin(BuiltinSpec),
    Exec(ExecSpec),
    Http(HttpSpec),
    Container(ContainerSpec),
    Mcp(McpSpec),
}

/// A `[handlers]` entry that cannot be turned into a handler. Every message starts
/// with the profile key at fault (`handlers.NAME.KEY`) so operators can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("handlers: handler names must not be empty")]
    EmptyName,
    #[error("handlers.{handler}.command: must not be empty")]
    EmptyCommand { handler: String },
    #[error("handlers.{handler}.builtin: unknown builtin {name:?} (expected one of {})", BUILTIN_NAMES.join(", "))]
    UnknownBuiltin { handler: String, name: String },
    #[error("handlers.{handler}.{key}: {value:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)")]
    BadDuration {
        handler: String,
        key: &'static str,
        value: String,
    },
    #[error("handlers.{handler}.{key}: {value:?} is not a size (e.g. 512, 64KiB, 1MiB, 10kB)")]
    BadSize {
        handler: String,
        key: &'static str,
        value: String,
    },
    /// A zero timeout or output bound would make every run fail, which is never
    /// what the operator meant.
    #[error("handlers.{handler}.{key}: must be greater than zero")]
    Zero { handler: String, key: &'static str },
    #[error("handlers.{handler}.url: {reason}")]
    BadUrl { handler: String, reason: String },
    /// A bad entry inside a list or table key: `command`, `env` or `headers`.
    #[error("handlers.{handler}.{key}.{entry}: {reason}")]
    BadEntry {
        handler: String,
        key: &'static str,
        entry: String,
        reason: String,
    },
    /// The shared HTTP client could not be built (e.g. no TLS roots could be loaded).
    #[error("handlers.{handler}: cannot build the HTTP client: {reason}")]
    HttpClient { handler: String, reason: String },
    /// A value of the right type that is out of range or malformed, e.g. container
    /// `cpus = 0` or a `docker_host` with an unknown scheme.
    #[error("handlers.{handler}.{key}: {reason}")]
    Invalid {
        handler: String,
        key: &'static str,
        reason: String,
    },
}

/// Checks a profile's `command`: a non-empty program name, and no NUL in any
/// argument (every spawn would fail on one; better to say so at startup).
pub(crate) fn check_command(handler: &str, command: &[String]) -> Result<(), SpecError> {
    if command.first().is_none_or(String::is_empty) {
        return Err(SpecError::EmptyCommand {
            handler: handler.to_owned(),
        });
    }
    if let Some(i) = command.iter().position(|a| a.contains('\0')) {
        return Err(SpecError::BadEntry {
            handler: handler.to_owned(),
            key: "command",
            entry: i.to_string(),
            reason: "must not contain NUL bytes".to_owned(),
        });
    }
    Ok(())
}

/// Checks a profile's `env` table: names non-empty without `=` or NUL, no
/// reserved name, values without NUL (every spawn would fail on one).
pub(crate) fn check_env(handler: &str, env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    let bad = |entry: &str, reason: &str| SpecError::BadEntry {
        handler: handler.to_owned(),
        key: "env",
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(bad(name, "names must be non-empty and contain neither '=' nor NUL"));
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            return Err(bad(name, "is set by drover"));
        }
        if value.contains('\0') {
            return Err(bad(name, "must not contain NUL bytes"));
        }
    }
    Ok(())
}

/// Parses an optional duration key of a profile entry; zero is rejected.
pub(crate) fn spec_duration(
    handler: &str,
    key: &'static str,
    value: Option<&str>,
) -> Result<Option<Duration>, SpecError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match parse_duration(value) {
        None => Err(SpecError::BadDuration {
            handler: handler.to_owned(),
            key,
            value: value.to_owned(),
        }),
        Some(d) if d.is_zero() => Err(SpecError::Zero {
            handler: handler.to_owned(),
            key,
        }),
        Some(d) => Ok(Some(d)),
    }
}

/// Parses an optional output bound of a profile entry, defaulting to
/// [`DEFAULT_MAX_OUTPUT`]; zero and sizes beyond the address space are rejected.
pub(crate) fn spec_max_output(handler: &str, key: &'static str, value: Option<&str>) -> Result<usize, SpecError> {
    let Some(value) = value else {
        return Ok(DEFAULT_MAX_OUTPUT);
    };
    match parse_size(value).map(usize::try_from) {
        Some(Ok(0)) => Err(SpecError::Zero {
            handler: handler.to_owned(),
            key,
        }),
        Some(Ok(n)) => Ok(n),
        _ => Err(SpecError::BadSize {
            handler: handler.to_owned(),
            key,
            value: value.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_round_trip_through_serialize() {
        let spec = HandlerSpec::Http(HttpSpec {
            url: "https://example.test/hook".into(),
            timeout: None,
            headers: BTreeMap::new(),
            max_output: Some("64KiB".into()),
        });
        let value = serde_json::to_value(&spec).expect("serialize");
        assert_eq!(value["kind"], "http");
        let back: HandlerSpec = serde_json::from_value(value).expect("deserialize");
        assert_eq!(back, spec);
    }

    #[test]
    fn unknown_kinds_and_keys_are_rejected() {
        let err = serde_json::from_value::<HandlerSpec>(json!({"kind": "wasm"}))
            .expect_err("unknown kind")
            .to_string();
        assert!(err.contains("unknown variant `wasm`"), "{err}");
        assert!(err.contains("`builtin`, `exec`, `http`, `container`"), "{err}");

        let err = serde_json::from_value::<HandlerSpec>(json!({"kind": "container"}))
            .expect_err("container without an image")
            .to_string();
        assert!(err.contains("missing field `image`"), "{err}");

        let err = serde_json::from_value::<HandlerSpec>(json!({"command": ["x"]}))
            .expect_err("missing kind")
            .to_string();
        assert!(err.contains("missing field `kind`"), "{err}");

        for entry in [
            json!({"kind": "exec", "command": ["x"], "shell": true}),
            json!({"kind": "builtin", "command": ["x"]}),
            json!({"kind": "http", "url": "http://h/", "method": "GET"}),
            json!({"kind": "container", "image": "x", "privileged": true}),
        ] {
            let err = serde_json::from_value::<HandlerSpec>(entry.clone())
                .expect_err("unknown key")
                .to_string();
            assert!(err.contains("unknown field"), "{entry}: {err}");
        }
    }
}
