//! The `kind = "container"` profile entry and its validation: [`ContainerSpec`] as
//! written, [`docker_host`] for the engine it names, and
//! [`ContainerHandler::from_spec`], which checks every key and turns the limits
//! into the typed values Docker takes, so a bad entry stops the worker at startup
//! rather than failing each task.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::units::parse_size;
use serde::{Deserialize, Serialize};

use super::{ContainerHandler, DockerEngine, Inner};
use crate::handlers::spec::{check_command, check_env, spec_max_output};
use crate::handlers::SpecError;

/// The user containers run as unless the profile says otherwise: `nobody`, by
/// number, so it works in images that have no `/etc/passwd`.
pub const DEFAULT_USER: &str = "65534:65534";

/// The process limit unless the profile says otherwise: enough for a program and
/// its helpers, small enough that a fork bomb only hurts its own container.
pub const DEFAULT_PIDS: i64 = 128;

/// The engine used when neither the profile's `docker_host` nor `DOCKER_HOST` is set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Docker refuses memory limits below 6 MiB; saying so at profile load beats
/// failing every task.
const MIN_MEMORY: u64 = 6 << 20;

/// A `kind = "container"` profile entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub image: String,
    /// Replaces the image's `CMD`; `None` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// CPUs the container may use, e.g. `0.5` or `2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. `"512Mi"` or `"64MiB"`; swap is not allowed on top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Process limit; [`DEFAULT_PIDS`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Whether the container gets Docker's default network; otherwise it has none.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network: bool,
    /// `uid[:gid]` or a name; [`DEFAULT_USER`] when unset, the image's own when "".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether a missing image may be pulled from its registry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pull: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<String>,
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; defaults to
    /// `DOCKER_HOST`, then [`DEFAULT_DOCKER_HOST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The Docker endpoint a profile entry uses: its `docker_host`, else `DOCKER_HOST`,
/// else [`DEFAULT_DOCKER_HOST`]. A bare absolute path means a unix socket. TLS
/// endpoints (`https://`, `DOCKER_TLS_VERIFY`) are not supported.
pub fn docker_host(handler: &str, spec: &ContainerSpec) -> Result<String, SpecError> {
    let (raw, origin) = match &spec.docker_host {
        Some(host) => (host.trim().to_owned(), ""),
        None => match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.trim().is_empty() => (host.trim().to_owned(), " (from DOCKER_HOST)"),
            _ => (DEFAULT_DOCKER_HOST.to_owned(), ""),
        },
    };
    let invalid = |reason: &str| SpecError::Invalid {
        handler: handler.to_owned(),
        key: "docker_host",
        reason: format!("{raw:?}{origin}: {reason}"),
    };
    if raw.starts_with('/') {
        return Ok(format!("unix://{raw}"));
    }
    if let Some(path) = raw.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(invalid("the socket path must be absolute"));
        }
        return Ok(raw);
    }
    for scheme in ["tcp://", "http://"] {
        if let Some(addr) = raw.strip_prefix(scheme) {
            if addr.is_empty() || addr.contains(char::is_whitespace) {
                return Err(invalid("expected host:port after the scheme"));
            }
            return Ok(raw);
        }
    }
    Err(invalid(
        "expected unix:///path/to/docker.sock, tcp://host:port or http://host:port (TLS is not supported)",
    ))
}

impl ContainerHandler {
    /// Validates a profile entry named `handler`, to run on `engine` (see
    /// [`docker_host`]). The `timeout` key is not read here: the worker folds it
    /// into [`TaskContext::timeout`](crate::handlers::TaskContext::timeout).
    /// Containers are labelled with an empty worker id until
    /// [`ContainerHandler::for_worker`] names the worker.
    pub fn from_spec(
        handler: &str,
        spec: &ContainerSpec,
        engine: Arc<DockerEngine>,
    ) -> Result<ContainerHandler, SpecError> {
        // Checked in the order the keys are documented, so the first bad one is named.
        let image = image(handler, &spec.image)?;
        if let Some(command) = &spec.command {
            check_command(handler, command)?;
        }
        check_env(handler, &spec.env)?;
        if let Some(dir) = &spec.workdir {
            check_workdir(handler, dir)?;
        }
        let nano_cpus = nano_cpus(handler, spec.cpus)?;
        let memory = memory_limit(handler, spec.memory.as_deref())?;
        let pids = pids_limit(handler, spec.pids)?;
        let user = user(handler, spec.user.as_deref())?;
        let max_output = spec_max_output(handler, "max_output", spec.max_output.as_deref())?;
        Ok(ContainerHandler {
            inner: Arc::new(Inner {
                handler: handler.to_owned(),
                image: image.to_owned(),
                command: spec.command.clone(),
                env: spec.env.clone(),
                workdir: spec.workdir.clone(),
                nano_cpus,
                memory,
                pids,
                network: spec.network,
                user,
                pull: spec.pull,
                max_output,
                worker_id: String::new(),
                engine,
            }),
        })
    }
}

/// `handlers.NAME.KEY: reason`, for a value of the right type that is out of range
/// or malformed.
fn invalid(handler: &str, key: &'static str, reason: &str) -> SpecError {
    SpecError::Invalid {
        handler: handler.to_owned(),
        key,
        reason: reason.to_owned(),
    }
}

/// The image reference, trimmed: not empty, and one word.
fn image<'a>(handler: &str, image: &'a str) -> Result<&'a str, SpecError> {
    let image = image.trim();
    if image.is_empty() {
        return Err(invalid(handler, "image", "must not be empty"));
    }
    if image.contains(|c: char| c.is_whitespace() || c == '\0') {
        return Err(invalid(handler, "image", "must not contain spaces or NUL bytes"));
    }
    Ok(image)
}

fn check_workdir(handler: &str, dir: &str) -> Result<(), SpecError> {
    // Docker rejects relative working directories at create time; say so now.
    if !dir.starts_with('/') || dir.contains('\0') {
        return Err(invalid(handler, "workdir", "must be an absolute path"));
    }
    Ok(())
}

/// `cpus` as Docker's `NanoCpus` (billionths of a CPU).
fn nano_cpus(handler: &str, cpus: Option<f64>) -> Result<Option<i64>, SpecError> {
    match cpus {
        None => Ok(None),
        Some(cpus) if !cpus.is_finite() => Err(invalid(handler, "cpus", "must be a number")),
        Some(cpus) if cpus < 0.01 => Err(invalid(handler, "cpus", "must be at least 0.01")),
        // Far beyond any machine: stops a typo like 1e12 from overflowing.
        Some(cpus) if cpus > 1_000_000.0 => Err(invalid(handler, "cpus", "must be at most 1000000")),
        // The guards above keep the product well inside i64.
        Some(cpus) => Ok(Some((cpus * 1e9).round() as i64)),
    }
}

/// `memory` in bytes, with the text as written for messages ("killed at the memory
/// limit of 8Mi").
fn memory_limit(handler: &str, memory: Option<&str>) -> Result<Option<(i64, String)>, SpecError> {
    let Some(text) = memory else {
        return Ok(None);
    };
    match parse_size(text) {
        Some(0) => Err(SpecError::Zero {
            handler: handler.to_owned(),
            key: "memory",
        }),
        Some(bytes) if bytes < MIN_MEMORY => {
            Err(invalid(handler, "memory", "must be at least 6MiB (Docker's minimum)"))
        }
        // Docker takes an i64; anything beyond is no size a machine has.
        Some(bytes) if i64::try_from(bytes).is_ok() => Ok(Some((bytes as i64, text.trim().to_owned()))),
        _ => Err(SpecError::BadSize {
            handler: handler.to_owned(),
            key: "memory",
            value: text.to_owned(),
        }),
    }
}

/// `pids`, or [`DEFAULT_PIDS`]; zero or less would let nothing run.
fn pids_limit(handler: &str, pids: Option<i64>) -> Result<i64, SpecError> {
    match pids {
        None => Ok(DEFAULT_PIDS),
        Some(n) if n <= 0 => Err(SpecError::Zero {
            handler: handler.to_owned(),
            key: "pids",
        }),
        Some(n) => Ok(n),
    }
}

/// The user to run as: [`DEFAULT_USER`] when unset, `None` (the image's own) for "".
fn user(handler: &str, user: Option<&str>) -> Result<Option<String>, SpecError> {
    match user.map(str::trim) {
        None => Ok(Some(DEFAULT_USER.to_owned())),
        Some("") => Ok(None),
        Some(user) if user.contains(|c: char| c.is_whitespace() || c == '\0') => {
            Err(invalid(handler, "user", "must not contain spaces or NUL bytes"))
        }
        Some(user) => Ok(Some(user.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::handlers::HandlerSpec;
    use serde_json::json;

    /// One edit of [`base_spec`] (which is valid) per case, and what `from_spec`
    /// must answer for it: the message of the error, or `Ok` for values at the
    /// edge of what is allowed.
    #[test]
    fn spec_validation() {
        type Edit = fn(&mut ContainerSpec);
        let cases: &[(Edit, Result<(), &str>)] = &[
            (|_| {}, Ok(())),
            (|s| s.image = " ".into(), Err("handlers.box.image: must not be empty")),
            (
                |s| s.image = "a b".into(),
                Err("handlers.box.image: must not contain spaces or NUL bytes"),
            ),
            (
                |s| s.command = Some(vec![]),
                Err("handlers.box.command: must not be empty"),
            ),
            (
                |s| s.command = Some(vec!["sh".into(), "a\0".into()]),
                Err("handlers.box.command.1: must not contain NUL bytes"),
            ),
            (
                |s| s.env = BTreeMap::from([("DROVER_FENCE".into(), "1.1".into())]),
                Err("handlers.box.env.DROVER_FENCE: is set by drover"),
            ),
            (
                |s| s.env = BTreeMap::from([("A=B".into(), "1".into())]),
                Err("handlers.box.env.A=B: names must be non-empty and contain neither '=' nor NUL"),
            ),
            (
                |s| s.workdir = Some("work".into()),
                Err("handlers.box.workdir: must be an absolute path"),
            ),
            (|s| s.workdir = Some("/work".into()), Ok(())),
            (|s| s.cpus = Some(0.0), Err("handlers.box.cpus: must be at least 0.01")),
            (|s| s.cpus = Some(0.01), Ok(())),
            (|s| s.cpus = Some(f64::NAN), Err("handlers.box.cpus: must be a number")),
            (
                |s| s.cpus = Some(1e12),
                Err("handlers.box.cpus: must be at most 1000000"),
            ),
            (|s| s.cpus = Some(1_000_000.0), Ok(())),
            (
                |s| s.memory = Some("lots".into()),
                Err(r#"handlers.box.memory: "lots" is not a size (e.g. 512, 64KiB, 1MiB, 10kB)"#),
            ),
            (
                |s| s.memory = Some("0".into()),
                Err("handlers.box.memory: must be greater than zero"),
            ),
            (
                |s| s.memory = Some("4Mi".into()),
                Err("handlers.box.memory: must be at least 6MiB (Docker's minimum)"),
            ),
            (|s| s.memory = Some("6MiB".into()), Ok(())),
            (
                |s| s.memory = Some("10000000TiB".into()),
                Err(r#"handlers.box.memory: "10000000TiB" is not a size (e.g. 512, 64KiB, 1MiB, 10kB)"#),
            ),
            (
                |s| s.pids = Some(0),
                Err("handlers.box.pids: must be greater than zero"),
            ),
            (|s| s.pids = Some(1), Ok(())),
            (
                |s| s.user = Some("no body".into()),
                Err("handlers.box.user: must not contain spaces or NUL bytes"),
            ),
            (|s| s.user = Some(String::new()), Ok(())),
            (
                |s| s.max_output = Some("0".into()),
                Err("handlers.box.max_output: must be greater than zero"),
            ),
        ];
        for (edit, expected) in cases {
            let mut spec = base_spec();
            edit(&mut spec);
            let engine = Arc::new(DockerEngine::new(DEFAULT_DOCKER_HOST));
            let got = ContainerHandler::from_spec("box", &spec, engine)
                .map(drop)
                .map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{spec:?}");
        }
    }

    #[test]
    fn docker_host_forms() {
        let host = |h: &str| {
            docker_host(
                "box",
                &ContainerSpec {
                    docker_host: Some(h.into()),
                    ..base_spec()
                },
            )
        };
        assert_eq!(host("unix:///run/d.sock").unwrap(), "unix:///run/d.sock");
        assert_eq!(host("/run/d.sock").unwrap(), "unix:///run/d.sock");
        assert_eq!(host("tcp://10.0.0.1:2375").unwrap(), "tcp://10.0.0.1:2375");
        assert_eq!(host("http://docker:2375").unwrap(), "http://docker:2375");
        assert_eq!(
            host("https://docker:2376").unwrap_err().to_string(),
            "handlers.box.docker_host: \"https://docker:2376\": expected \
             unix:///path/to/docker.sock, tcp://host:port or http://host:port (TLS is not supported)"
        );
        assert_eq!(
            host("unix://run/d.sock").unwrap_err().to_string(),
            "handlers.box.docker_host: \"unix://run/d.sock\": the socket path must be absolute"
        );
        assert_eq!(
            host("tcp://").unwrap_err().to_string(),
            "handlers.box.docker_host: \"tcp://\": expected host:port after the scheme"
        );
    }

    #[test]
    fn profile_entry_deserializes_with_defaults() {
        let spec: HandlerSpec = serde_json::from_value(json!({
            "kind": "container", "image": "renderer:1", "cpus": 1.0, "memory": "512Mi",
        }))
        .expect("deserialize");
        let HandlerSpec::Container(spec) = spec else {
            panic!("not a container spec: {spec:?}");
        };
        assert_eq!(spec.image, "renderer:1");
        assert_eq!(spec.cpus, Some(1.0));
        assert!(!spec.network && !spec.pull);
        let handler = ContainerHandler::from_spec("render", &spec, Arc::new(DockerEngine::new(DEFAULT_DOCKER_HOST)))
            .expect("valid");
        let inner = &handler.inner;
        assert_eq!(inner.nano_cpus, Some(1_000_000_000));
        assert_eq!(inner.memory, Some((512 << 20, "512Mi".to_owned())));
        assert_eq!(inner.pids, DEFAULT_PIDS);
        assert_eq!(inner.user.as_deref(), Some(DEFAULT_USER));
        assert_eq!(inner.max_output, crate::handlers::DEFAULT_MAX_OUTPUT);

        // Round trip, and the defaults stay out of the serialized form.
        let value = serde_json::to_value(HandlerSpec::Container(spec.clone())).expect("serialize");
        assert_eq!(
            value,
            json!({"kind": "container", "image": "renderer:1", "cpus": 1.0, "memory": "512Mi"})
        );

        // `user = ""` keeps the image's own user.
        let own_user = ContainerSpec {
            user: Some(String::new()),
            ..spec
        };
        let handler =
            ContainerHandler::from_spec("render", &own_user, Arc::new(DockerEngine::new(DEFAULT_DOCKER_HOST)))
                .expect("valid");
        assert_eq!(handler.inner.user, None);
    }
}
