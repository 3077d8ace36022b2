//! The agent's configuration: command-line flags ([`args`]) and the TOML
//! file ([`file`](mod@file)), merged with the flags winning, into an
//! [`AgentConfig`](settings::AgentConfig).

pub mod args;
pub mod file;
pub mod settings;
