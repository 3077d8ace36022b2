//! The process itself: binding sockets, starting every task in order,
//! reloading on SIGHUP and stopping cleanly ([`agent`]); live changes on SIGHUP ([`reload`]).

pub mod agent;
pub mod reload;
