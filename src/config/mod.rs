//! Configuration: defaults < `--config` TOML file < `DROVER_*` env < flags,
//! validated once at start. Every setting has one row in [`KEYS`]; a bad value
//! fails with one line naming the key, where it came from and what is wrong.
//! Secrets (signing keys, API tokens, the Redis password) can come from
//! files, are wrapped so they never print, and need never sit in the TOML.
//!
//! - `keys`: the table of settings ([`KEYS`]).
//! - `layers`: [`Layers`], the text of every key from each source, with its [`Origin`].
//! - `values`: parsers from one key's text to a duration, size, number, address or list.
//! - `resolve`: [`Layers::resolve`], typing and checking everything into [`Settings`].
//! - `settings`: the typed [`Settings`] and the secret wrappers.

mod keys;
mod layers;
mod resolve;
mod settings;
mod values;

pub use keys::{KeyDef, KEYS};
pub use layers::Layers;
pub use settings::{
    redact_url, CoordinatorSettings, DistributorSettings, HttpTls, RedisTls, Secret, Settings, Timing, WorkerSettings,
};
pub use values::split_list;

/// A configuration error: which key, from where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}{origin}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, origin: &Origin, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            origin: origin.describe(),
            problem: problem.into(),
        }
    }
}

/// Where a value came from, for error messages and `config check`.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Default,
    File(String),
    Env(&'static str),
    Flag(&'static str),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Default => String::new(),
            Origin::File(p) => format!(" (in {p})"),
            Origin::Env(v) => format!(" (from {v})"),
            Origin::Flag(f) => format!(" (from {f})"),
        }
    }
}
