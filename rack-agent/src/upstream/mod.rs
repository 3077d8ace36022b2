//! Talking to the coordinator: following the rack view and asking it to
//! number machines ([`follow`]), shipping logs and boot sessions
//! ([`logship`]), over channels made by [`channel`]. Everything here runs in
//! the background: the servers never wait on it.

pub mod channel;
pub mod follow;
pub mod logship;
