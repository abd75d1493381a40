//! A `kind = "mcp"` profile entry ([`McpSpec`]) and its checks: which
//! server (a `command` to start, or a `url`), which `tool`, and the keys
//! every kind has (`timeout`, `env`, `max_output`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::spec::{check_command, check_env, spec_max_output, SpecError};

/// A `kind = "mcp"` profile entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpSpec {
    /// The stdio server to start and keep: program and arguments, no shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A server over streamable HTTP, at this one URL (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The tool each task calls.
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The server's environment, on top of `PATH`: nothing else of the worker's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The largest result (the tool's result as JSON) a task may return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<String>,
}

/// Where the server is.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// Started and kept by the worker, on stdio.
    Command(Vec<String>),
    /// Running elsewhere, over streamable HTTP.
    Url(reqwest::Url),
}

/// An entry checked whole: what a handler is built from.
#[derive(Debug, Clone)]
pub(super) struct Checked {
    pub target: Target,
    pub tool: String,
    pub env: BTreeMap<String, String>,
    pub max_output: usize,
}

impl McpSpec {
    pub(super) fn check(&self, handler: &str) -> Result<Checked, SpecError> {
        let invalid = |key: &'static str, reason: &str| SpecError::Invalid {
            handler: handler.to_owned(),
            key,
            reason: reason.to_owned(),
        };
        let target = match (&self.command, &self.url) {
            (Some(_), Some(_)) => return Err(invalid("url", "give either command or url, not both")),
            (None, None) => return Err(invalid("command", "give the server's command (or a url)")),
            (None, Some(url)) => {
                let bad_url = |reason: String| SpecError::BadUrl {
                    handler: handler.to_owned(),
                    reason,
                };
                let url = reqwest::Url::parse(url).map_err(|e| bad_url(format!("{url:?} is not a URL ({e})")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(bad_url("must be http:// or https://".into()));
                }
                Target::Url(url)
            }
            (Some(command), None) => {
                check_command(handler, command)?;
                Target::Command(command.clone())
            }
        };
        check_env(handler, &self.env)?;
        if matches!(target, Target::Url(_)) && !self.env.is_empty() {
            return Err(invalid("env", "only for a server started with command"));
        }
        if self.tool.is_empty() || self.tool.len() > 128 {
            return Err(invalid("tool", "must be a tool name of 1-128 characters"));
        }
        Ok(Checked {
            target,
            tool: self.tool.clone(),
            env: self.env.clone(),
            max_output: spec_max_output(handler, "max_output", self.max_output.as_deref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::HandlerSpec;
    use super::super::McpHandler;
    use serde_json::json;

    fn error(entry: serde_json::Value) -> String {
        let spec: HandlerSpec = serde_json::from_value(entry).expect("deserializes");
        let HandlerSpec::Mcp(spec) = spec else {
            panic!("not mcp")
        };
        McpHandler::from_spec("m", &spec).expect_err("refused").to_string()
    }

    #[test]
    fn entries_name_one_server_and_a_tool() {
        let spec: HandlerSpec =
            toml::from_str("kind = \"mcp\"\ncommand = [\"srv\", \"--stdio\"]\ntool = \"t\"").unwrap();
        let HandlerSpec::Mcp(spec) = spec else {
            panic!("not mcp")
        };
        assert!(McpHandler::from_spec("m", &spec).is_ok());
        assert_eq!(
            error(json!({"kind": "mcp", "tool": "t"})),
            "handlers.m.command: give the server's command (or a url)"
        );
        assert_eq!(
            error(json!({"kind": "mcp", "command": ["s"], "url": "http://h/mcp", "tool": "t"})),
            "handlers.m.url: give either command or url, not both"
        );
        let spec: HandlerSpec = toml::from_str("kind = \"mcp\"\nurl = \"https://h/mcp\"\ntool = \"t\"").unwrap();
        let HandlerSpec::Mcp(spec) = spec else {
            panic!("not mcp")
        };
        assert!(McpHandler::from_spec("m", &spec).is_ok());
        assert_eq!(
            error(json!({"kind": "mcp", "url": "ftp://h/mcp", "tool": "t"})),
            "handlers.m.url: must be http:// or https://"
        );
        assert_eq!(
            error(json!({"kind": "mcp", "command": [], "tool": "t"})),
            "handlers.m.command: must not be empty"
        );
        assert_eq!(
            error(json!({"kind": "mcp", "command": ["s"], "tool": ""})),
            "handlers.m.tool: must be a tool name of 1-128 characters"
        );
        assert_eq!(
            error(json!({"kind": "mcp", "command": ["s"], "tool": "t", "env": {"DROVER_FENCE": "1"}})),
            "handlers.m.env.DROVER_FENCE: is set by drover"
        );
        let missing = serde_json::from_value::<HandlerSpec>(json!({"kind": "mcp", "command": ["s"]})).unwrap_err();
        assert!(missing.to_string().contains("missing field `tool`"), "{missing}");
    }
}
