//! The layering itself: defaults, then the `--config` TOML file, then the
//! `DROVER_*` environment, then flags, each value kept as text with the
//! place it came from, so a later error or `drover config check` can name
//! it. Typing the values is `resolve`'s job.

use super::keys::KEYS;
use super::settings::redact_url;
use super::{ConfigError, Origin};
use crate::handlers::HandlerSpec;
use serde::Deserialize as _;
use std::collections::BTreeMap;
use std::path::Path;

/// Values layered from all sources, before typing.
#[derive(Default)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Origin)>,
    pub(super) handlers: BTreeMap<String, HandlerSpec>,
    pub(super) file: Option<String>,
}

impl Layers {
    /// Defaults, then the file (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Layers, ConfigError> {
        let mut layers = Layers::default();
        for def in KEYS {
            layers
                .values
                .insert(def.key, (def.default.to_string(), Origin::Default));
        }
        if let Some(path) = file {
            layers.apply_file(path)?;
        }
        for def in KEYS {
            if let Ok(v) = std::env::var(def.env) {
                layers.values.insert(def.key, (v, Origin::Env(def.env)));
            }
        }
        Ok(layers)
    }

    /// A flag given on the command line wins over everything.
    pub fn set_flag(&mut self, key: &'static str, flag: &'static str, value: Option<String>) {
        if let Some(v) = value {
            self.values.insert(key, (v, Origin::Flag(flag)));
        }
    }

    /// True when no file, env variable or flag set `key`.
    pub fn is_default(&self, key: &str) -> bool {
        matches!(self.values.get(key), Some((_, Origin::Default)))
    }

    /// A value set by the program itself (e.g. `drover dev`), as a default.
    pub fn set_default(&mut self, key: &'static str, value: impl Into<String>) {
        if let Some((_, Origin::Default)) = self.values.get(key) {
            self.values.insert(key, (value.into(), Origin::Default));
        }
    }

    /// Handlers written in the profile; empty when the file has none.
    pub fn set_handlers_if_empty(&mut self, handlers: BTreeMap<String, HandlerSpec>) {
        if self.handlers.is_empty() {
            self.handlers = handlers;
        }
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        let origin = Origin::File(shown.clone());
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", &Origin::Default, format!("cannot read {shown}: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("--config", &origin, e.message().to_string()))?;
        for (name, value) in table {
            match value {
                toml::Value::Table(section) if name == "handlers" => {
                    for (h, spec) in section {
                        let parsed = HandlerSpec::deserialize(spec)
                            .map_err(|e| ConfigError::new(format!("handlers.{h}"), &origin, e.message().to_string()))?;
                        self.handlers.insert(h, parsed);
                    }
                }
                toml::Value::Table(section) => {
                    for (leaf, v) in section {
                        self.set_file_value(&format!("{name}.{leaf}"), v, &origin)?;
                    }
                }
                v => self.set_file_value(&name, v, &origin)?,
            }
        }
        self.file = Some(shown);
        Ok(())
    }

    fn set_file_value(&mut self, key: &str, value: toml::Value, origin: &Origin) -> Result<(), ConfigError> {
        let def = KEYS
            .iter()
            .find(|d| d.key == key)
            .ok_or_else(|| ConfigError::new(key, origin, "unknown setting"))?;
        if def.secret {
            return Err(ConfigError::new(
                key,
                origin,
                format!(
                    "secrets do not belong in the config file: use {} or {}_FILE",
                    def.env, def.env
                ),
            ));
        }
        let text = toml_text(value).map_err(|problem| ConfigError::new(key, origin, problem))?;
        self.values.insert(def.key, (text, origin.clone()));
        Ok(())
    }

    /// The layered text of `key` and where it came from.
    pub(super) fn raw(&self, key: &str) -> (&str, &Origin) {
        let (v, o) = self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("setting {key} is missing from KEYS"));
        (v.as_str(), o)
    }

    /// The effective values with their origins, secrets redacted, for
    /// `drover config check`.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = KEYS
            .iter()
            .map(|def| {
                let (v, o) = self.raw(def.key);
                let shown = if def.secret && !v.is_empty() {
                    "<redacted>".to_string()
                } else if def.key == "redis_url" {
                    redact_url(v)
                } else {
                    v.to_string()
                };
                let origin = match o {
                    Origin::Default => "default".to_string(),
                    Origin::File(p) => p.clone(),
                    Origin::Env(e) => (*e).to_string(),
                    Origin::Flag(f) => (*f).to_string(),
                };
                (def.key.to_string(), shown, origin)
            })
            .collect();
        for (name, spec) in &self.handlers {
            let shown = serde_json::to_string(spec).unwrap_or_default();
            rows.push((format!("handlers.{name}"), shown, self.file.clone().unwrap_or_default()));
        }
        rows
    }
}

/// A TOML value as the text env variables and flags would give: lists of
/// strings join with commas, as `DROVER_WORKER_TAGS=a,b` is written.
fn toml_text(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    toml::Value::String(s) => out.push(s),
                    other => return Err(format!("expected strings in the list, found {other}")),
                }
            }
            Ok(out.join(","))
        }
        other => Err(format!("unexpected value {other}")),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write;

    /// Layers loaded from a profile holding `text`; the file lives as long
    /// as the returned handle.
    pub(in crate::config) fn with_file(text: &str) -> (tempfile::NamedTempFile, Layers) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let layers = Layers::load(Some(f.path())).unwrap();
        (f, layers)
    }

    #[test]
    fn file_values_override_defaults_and_flags_override_files() {
        let (_f, mut layers) = with_file(
            "namespace = \"ns1\"\n[worker]\ncapacity = 7\ntags = [\"gpu\", \"eu\"]\n[handlers]\nnoop = { kind = \"builtin\" }\n",
        );
        let s = layers.resolve().unwrap();
        assert_eq!(s.namespace, "ns1");
        assert_eq!(s.worker.capacity, 7);
        assert_eq!(s.worker.tags, vec!["gpu", "eu"]);
        assert!(s.worker.handlers.contains_key("noop"));
        layers.set_flag("worker.capacity", "--capacity", Some("9".into()));
        assert_eq!(layers.resolve().unwrap().worker.capacity, 9);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused_by_name() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"[worker]\ncapacty = 3\n").unwrap();
        let err = Layers::load(Some(f.path())).err().unwrap().to_string();
        assert!(
            err.contains("worker.capacty") && err.contains("unknown setting"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_refused_in_files_and_redacted_in_descriptions() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"api_tokens = \"abc:read\"\n").unwrap();
        let err = Layers::load(Some(f.path())).err().unwrap().to_string();
        assert!(err.contains("DROVER_API_TOKENS"), "{err}");

        let mut layers = Layers::load(None).unwrap();
        layers.set_flag("redis_url", "--redis-url", Some("redis://:hunter2@h:1".into()));
        let rows = layers.describe();
        let url = rows.iter().find(|r| r.0 == "redis_url").unwrap();
        assert!(!url.1.contains("hunter2"), "{url:?}");
    }
}
