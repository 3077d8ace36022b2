//! The TFTP server core fed arbitrary datagrams on the listener and on a
//! transfer: never panics, and only ever sends what the file source holds.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rackboot_tftp_core::{Config, Local, OpenError, SafePath, Server};

fuzz_target!(|data: &[u8]| {
    let files = |p: &SafePath, _c: SocketAddr| -> Result<Bytes, OpenError> {
        if p.as_str() == "boot" { Ok(Bytes::from_static(&[7u8; 3000])) } else { Err(OpenError::NotFound) }
    };
    let mut server = Server::new(Config::default());
    let t0 = Instant::now();
    let client: SocketAddr = "10.0.0.9:2000".parse().expect("addr");
    for (i, chunk) in data.split(|b| *b == 0xff).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 37);
        let local = if i % 2 == 0 { Local::Listener } else {
            match server.transfers().next() { Some(t) => Local::Transfer(t.id), None => Local::Listener }
        };
        server.handle_datagram(now, local, client, chunk, &files);
        server.handle_timeout(now);
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
    }
});
