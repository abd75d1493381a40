//! The value parsers: each reads one layered key as a type (duration, size,
//! bounded number, boolean, address, list) and, when the text does not fit, fails
//! with a [`ConfigError`] naming the key, where it came from and an example
//! of what would.

use super::{ConfigError, Layers};
use crate::units::{parse_duration, parse_size};
use std::net::SocketAddr;
use std::time::Duration;

impl Layers {
    pub(super) fn string(&self, key: &str) -> String {
        self.raw(key).0.trim().to_string()
    }

    pub(super) fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        let (v, o) = self.raw(key);
        let d = parse_duration(v.trim())
            .ok_or_else(|| ConfigError::new(key, o, format!("{v:?} is not a duration (e.g. 500ms, 30s, 5m, 1h)")))?;
        if d.is_zero() {
            return Err(ConfigError::new(key, o, "must be greater than zero"));
        }
        Ok(d)
    }

    pub(super) fn size(&self, key: &str) -> Result<u64, ConfigError> {
        let (v, o) = self.raw(key);
        parse_size(v.trim())
            .filter(|s| *s > 0)
            .ok_or_else(|| ConfigError::new(key, o, format!("{v:?} is not a positive size (e.g. 512KiB, 1MiB)")))
    }

    pub(super) fn number(&self, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let (v, o) = self.raw(key);
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                key,
                o,
                format!("{v:?} is not a whole number from {min} to {max}"),
            )),
        }
    }

    pub(super) fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        let (v, o) = self.raw(key);
        match v.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::new(key, o, format!("{v:?} is not true or false"))),
        }
    }

    pub(super) fn addr(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        let (v, o) = self.raw(key);
        v.trim()
            .parse()
            .map_err(|_| ConfigError::new(key, o, format!("{v:?} is not an address like 127.0.0.1:7070")))
    }

    /// A comma-separated list: see [`split_list`].
    pub(super) fn list(&self, key: &str) -> Vec<String> {
        split_list(self.raw(key).0)
    }
}

/// A comma-separated list as settings and flags write it (`gpu, eu`): items
/// trimmed, empty items dropped.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::layers::tests::with_file;
    use super::*;

    fn with_flag(key: &'static str, value: &str) -> Layers {
        let mut layers = Layers::load(None).unwrap();
        layers.set_flag(key, "--flag", Some(value.into()));
        layers
    }

    #[test]
    fn parsers_type_the_text_and_refuse_what_does_not_fit() {
        let l = with_flag("timing.tick", " 250ms ");
        assert_eq!(l.duration("timing.tick").unwrap(), Duration::from_millis(250));
        let err = with_flag("timing.tick", "0s").duration("timing.tick").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: timing.tick (from --flag): must be greater than zero"
        );

        assert_eq!(
            with_flag("limits.max_message", "2KiB")
                .size("limits.max_message")
                .unwrap(),
            2048
        );
        assert!(with_flag("limits.max_message", "0").size("limits.max_message").is_err());

        let l = with_flag("worker.capacity", "0");
        let err = l.number("worker.capacity", 1, 10).unwrap_err().to_string();
        assert!(err.ends_with("\"0\" is not a whole number from 1 to 10"), "{err}");

        assert!(with_flag("admin_addr", "localhost").addr("admin_addr").is_err());
        assert_eq!(with_flag("worker.tags", " a, ,b ,").list("worker.tags"), ["a", "b"]);
    }

    #[test]
    fn file_lists_read_as_comma_separated_text() {
        let (_f, layers) = with_file("[coordinator]\nhandlers = [\"a\", \"b\"]\n");
        assert_eq!(layers.list("coordinator.handlers"), ["a", "b"]);
    }
}
