//! The process itself: binding sockets, starting every task in order,
//! reloading on SIGHUP and stopping cleanly ([`agent`]).

pub mod agent;
