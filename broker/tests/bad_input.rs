//! Peer input the broker must refuse with a clear status: bytes that are not protobuf on a
//! stream, sends to system topics, sends that would create a retry or dead-letter topic.

mod common;

use bytes::{Buf, BufMut};
use common::*;
use rocketlog_proto::v2;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A codec carrying raw bytes both ways, so a test can put anything in a gRPC frame.
#[derive(Default, Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Field 1 (settings) as a length-delimited record claiming 100 bytes it does not carry.
const NOT_A_TELEMETRY_COMMAND: &[u8] = &[0x0a, 0x64, 0x01, 0x02];

#[tokio::test]
async fn undecodable_telemetry_command_ends_the_stream_with_an_error() {
    let broker = TestBroker::start(|_| {}).await;
    let mut grpc = tonic::client::Grpc::new(plain_channel(broker.addr).await);
    grpc.ready().await.expect("ready");
    let outbound = tokio_stream::iter(vec![NOT_A_TELEMETRY_COMMAND.to_vec()]);
    let path =
        http::uri::PathAndQuery::from_static("/apache.rocketmq.v2.MessagingService/Telemetry");
    let response = tokio::time::timeout(WAIT, grpc.streaming(req(outbound), path, RawCodec))
        .await
        .expect("answered in time");
    let status = match response {
        // The status may come as the response itself or as the stream's trailers.
        Err(status) => status,
        Ok(response) => {
            let mut inbound = response.into_inner();
            match tokio::time::timeout(WAIT, inbound.message())
                .await
                .expect("stream ends in time")
            {
                Err(status) => status,
                Ok(other) => panic!("expected an error status, stream gave {other:?}"),
            }
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("TelemetryCommand"),
        "names what failed to decode: {status:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn sends_to_system_topics_are_refused() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    for topic in ["RMQ_SYS_TRANS_HALF_TOPIC", "rmq_sys_wheel_timer", "TBW102"] {
        let r = send(&mut client, message(topic, b"x", None, &[], None)).await;
        assert_eq!(code(&r.status), v2::Code::IllegalTopic, "{topic}: {r:?}");
        let route = client
            .query_route(req(v2::QueryRouteRequest {
                topic: resource(topic),
                endpoints: None,
            }))
            .await
            .expect("route rpc")
            .into_inner();
        assert_eq!(code(&route.status), v2::Code::IllegalTopic, "{topic}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_send_never_creates_a_retry_or_dead_letter_topic() {
    // Auto-creation is on (the default), so an ordinary unknown topic would be created.
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    for topic in ["%RETRY%some-group", "%DLQ%some-group"] {
        let r = send(&mut client, message(topic, b"x", None, &[], None)).await;
        assert_eq!(code(&r.status), v2::Code::TopicNotFound, "{topic}: {r:?}");
    }
    // A route query for a dead-letter topic creates it (consumers may read dead letters), one
    // for a retry topic does not.
    for topic in ["%RETRY%some-group"] {
        let route = client
            .query_route(req(v2::QueryRouteRequest {
                topic: resource(topic),
                endpoints: None,
            }))
            .await
            .expect("route rpc")
            .into_inner();
        assert_eq!(code(&route.status), v2::Code::TopicNotFound, "{topic}");
    }
    let r = send(&mut client, message("ordinary", b"x", None, &[], None)).await;
    assert_eq!(code(&r.status), v2::Code::Ok, "{r:?}");
    broker.stop().await;
}
