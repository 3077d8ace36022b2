//! Serving the rack: shells that move bytes and time between sockets and
//! the sans-IO cores (DHCP, TFTP), the HTTP boot server, the syslog
//! receiver, and the admission guards they share. Nothing here waits on the
//! coordinator.

pub mod dhcp;
pub mod guard;
pub mod http;
pub mod net;
pub mod syslog;
pub mod tftp;
