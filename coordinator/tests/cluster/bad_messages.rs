//! Oversized and malformed gRPC messages against a running replica: raw
//! bytes sent as the request of a real method (a codec that does not
//! encode, so the bytes reach the server as they are). Each is refused with
//! a status that names the problem; the replica neither crashes nor stalls
//! and answers normal calls after every one.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use rackboot_coordinator::server::MAX_MESSAGE;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use crate::harness::{Cluster, Opts, exclusive};

/// Sends and receives message bodies as raw bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

async fn call(ch: &Channel, path: &'static str, body: Bytes) -> Result<Bytes, Status> {
    let mut g = tonic::client::Grpc::new(ch.clone())
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    g.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    g.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_are_refused_and_change_nothing() {
    let _one = exclusive();
    let mut cluster = Cluster::new(1, Opts::default());
    cluster.start_all();
    let ep = cluster.endpoints();
    ep.wait_leader(Duration::from_secs(15))
        .await
        .expect("a leader");
    let ch = ep.channel(1);
    let before = ep.status(1).await.expect("status").revision;

    const GET_NODE: &str = "/rackboot.v1.NodeService/GetNode";
    let oversized = Bytes::from(vec![0x0a_u8; MAX_MESSAGE + 1]);
    let cases: Vec<(&str, &'static str, Bytes, &[tonic::Code])> = vec![
        (
            "not protobuf at all",
            GET_NODE,
            Bytes::from_static(&[0xff; 32]),
            &[tonic::Code::Internal, tonic::Code::InvalidArgument],
        ),
        (
            "a length-delimited field longer than the message",
            GET_NODE,
            Bytes::from_static(&[0x0a, 0xff, 0xff, 0x03, 0x01]),
            &[tonic::Code::Internal, tonic::Code::InvalidArgument],
        ),
        (
            "a varint that never ends",
            GET_NODE,
            Bytes::from_static(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ]),
            &[tonic::Code::Internal, tonic::Code::InvalidArgument],
        ),
        (
            "the number field with the wrong wire type",
            GET_NODE,
            Bytes::from_static(&[0x0d, 1, 2, 3]),
            &[tonic::Code::Internal, tonic::Code::InvalidArgument],
        ),
        (
            "node number 0 (well-formed, invalid)",
            GET_NODE,
            Bytes::new(),
            &[tonic::Code::InvalidArgument, tonic::Code::NotFound],
        ),
        (
            "a message one byte over the size cap",
            GET_NODE,
            oversized,
            &[tonic::Code::ResourceExhausted, tonic::Code::OutOfRange],
        ),
        (
            "a method that does not exist",
            "/rackboot.v1.NodeService/NoSuchMethod",
            Bytes::new(),
            &[tonic::Code::Unimplemented],
        ),
    ];
    let mut report = Vec::new();
    for (what, path, body, expected) in cases {
        let len = body.len();
        let got = call(&ch, path, body).await;
        let status = match got {
            Ok(reply) => panic!("{what}: answered with {} bytes", reply.len()),
            Err(s) => s,
        };
        assert!(
            expected.contains(&status.code()),
            "{what} ({len} bytes): {:?} {}",
            status.code(),
            status.message()
        );
        // Still serving, after each one.
        let s = ep.status(1).await;
        assert!(s.is_some(), "{what}: the replica stopped answering");
        assert!(cluster.running(1), "{what}: the replica exited");
        report.push(format!("{what}: {:?}", status.code()));
    }
    let after = ep.status(1).await.expect("status").revision;
    assert_eq!(before, after, "refused messages changed the state");
    println!("bad_messages: {}", report.join("; "));
}
