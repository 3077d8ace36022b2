//! [`StormError`]: why a storm could not run at all. A storm that runs
//! always ends in a [`Report`](crate::report::Report), failed boots
//! included; this type is only for bad arguments and the emulator's own
//! sockets and threads.

use std::net::Ipv4Addr;

/// Why [`run`](crate::run) could not run the storm.
///
/// The messages name the flag at fault as the user typed it; an I/O
/// error's cause is its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum StormError {
    /// The flags contradict each other or are out of range.
    #[error("{0}")]
    Args(String),
    /// `--mac-base` has six parts but one is not a hex byte.
    #[error("--mac-base {mac}")]
    MacBase {
        /// The value given.
        mac: String,
        /// The part that did not parse.
        #[source]
        source: std::num::ParseIntError,
    },
    /// The DHCP client (or flood) socket could not be bound.
    #[error(
        "binding the DHCP client socket {ip}:{port} (port 68 needs root; use --dhcp-client-port 0 on loopback)"
    )]
    BindDhcp {
        /// Local address.
        ip: Ipv4Addr,
        /// Local port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A socket or thread of the emulator itself.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A task driving the clients panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// A client thread ended without reporting.
    #[error("a storm thread ended without a result")]
    ThreadLost,
}

/// `Err(StormError::Args(msg))` unless `cond`.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), StormError> {
    if cond {
        Ok(())
    } else {
        Err(StormError::Args(msg()))
    }
}
