//! Local storage: the verified blob cache ([`cache`]), the table of files
//! the servers serve ([`files`]), node log lines waiting for the coordinator
//! ([`logspool`]) and the persisted rack view ([`view_file`]).

pub mod cache;
pub mod files;
pub mod logspool;
pub mod view_file;
