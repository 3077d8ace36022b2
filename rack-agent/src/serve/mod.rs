//! Serving the rack: shells that move bytes and time between sockets and
//! the sans-IO cores (DHCP, TFTP, IPv6 router advertisements), the HTTP
//! boot server and the syslog receiver. Nothing here waits on the
//! coordinator.

pub mod dhcp;
pub mod http;
pub mod net;
pub mod router_advert;
pub mod syslog;
pub mod tftp;
