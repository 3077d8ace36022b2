//! # rackboot-config
//!
//! What the coordinator's and the agent's configuration files share: a TOML
//! file is read into a serde struct (unknown keys refused by the caller's
//! `#[serde(deny_unknown_fields)]`), and every problem — a syntax error, an
//! unknown key, a wrong type, an invalid value found later by the caller's
//! validation — becomes a [`ConfigError`] naming the file (or the command
//! line), the dotted key and what is wrong.
//!
//! ## Invariants
//! - Every error names where (file or command line) and which key.
//!
//! ## Must never depend on
//! either daemon, tokio or sockets: both daemons' settings crates and their
//! fuzz targets use it.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A configuration problem: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: key `{key}`: {problem}")]
pub struct ConfigError {
    /// The file (`config /path`) or `command line`.
    pub source_name: String,
    /// The offending key (`peers.2`, `tick_ms`, ...).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// A configuration file.
    File(&'a Path),
    /// A command-line flag.
    Flag,
}

impl Origin<'_> {
    /// A problem with `key` from this origin.
    pub fn err(self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            source_name: match self {
                Origin::File(p) => format!("config {}", p.display()),
                Origin::Flag => "command line".to_string(),
            },
            key: key.to_string(),
            problem: problem.into(),
        }
    }
}

/// Parse a configuration file's text (`path` only names it in errors).
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let key = e
            .span()
            .map(|span| key_at(text, span.start))
            .unwrap_or_else(|| "?".to_string());
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let mut problem = e.message().to_string();
        if let Some(line) = line {
            problem = format!("{problem} (line {line})");
        }
        Origin::File(path).err(&key, problem)
    })
}

/// The dotted key whose line contains byte `offset` of `text`.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let mut table = String::new();
    let mut key = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
            table = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            key.clear();
        } else if let Some((k, _)) = trimmed.split_once('=') {
            key = k.trim().trim_matches('"').to_string();
        }
        if offset < pos + line.len() {
            break;
        }
        pos += line.len();
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// Read and parse a configuration file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source_name: format!("config {}", path.display()),
        key: "-".to_string(),
        problem: format!("cannot read: {e}"),
    })?;
    parse_toml(path, &text)
}
