//! Local storage: the verified blob cache ([`cache`]), files served from
//! disk ([`disk`]), the table of files the servers serve ([`files`]), node log lines waiting for the coordinator
//! ([`logspool`]), the persisted rack view ([`view_file`]) and the
//! probe-token secret ([`probe_key`]).

pub mod cache;
pub mod disk;
pub mod files;
pub mod logspool;
pub mod probe_key;
pub mod view_file;
