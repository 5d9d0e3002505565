//! One connection's life: pipelining past the in-flight limit, answers in order, the idle
//! timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use broker::protocol::frame::{begin_request, finish_frame, parse_response_header, split_frame};
use broker::protocol::{ApiKey, PROTOCOL_VERSION, Record, Request, RequestHeader, Response};
use broker::testing::TestBroker;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn produce_frame(out: &mut BytesMut, corr: u32, payload: &str) {
    let at = begin_request(
        out,
        RequestHeader {
            api_key: ApiKey::Produce as u16,
            version: PROTOCOL_VERSION,
            correlation_id: corr,
        },
    );
    Request::Produce {
        topic: "t".into(),
        records: vec![Record::new(payload.to_string()).with_key("one-partition")],
    }
    .encode_body(out);
    finish_frame(out, at);
}

/// More produces than a connection keeps in flight (256), written in one go before any answer
/// is read: every one is answered, and the offsets follow the order they were sent in.
#[tokio::test]
async fn pipelined_produces_past_the_in_flight_limit_are_all_answered_in_order() {
    const N: u32 = 700;
    let b = TestBroker::start().await;
    b.client()
        .await
        .unwrap()
        .create_topic("t", 4)
        .await
        .unwrap();
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    let mut out = BytesMut::new();
    for corr in 0..N {
        produce_frame(&mut out, corr, &format!("r{corr}"));
    }
    let (mut rd, mut wr) = s.split();
    let (written, answers) = tokio::join!(wr.write_all(&out), async {
        let mut buf = BytesMut::new();
        let mut offsets = BTreeMap::new();
        while offsets.len() < N as usize {
            let n = tokio::time::timeout(Duration::from_secs(20), rd.read_buf(&mut buf))
                .await
                .expect("answers keep coming")
                .unwrap();
            assert!(n > 0, "the broker closed the connection");
            while let Some(frame) = split_frame(&mut buf, 1 << 20, 6).unwrap() {
                let (header, body) = parse_response_header(&frame).unwrap();
                assert_eq!(header.error_code, 0);
                let Response::Produce(acks) =
                    Response::decode_body(ApiKey::Produce, &body).unwrap()
                else {
                    panic!("not a produce response");
                };
                assert!(
                    offsets
                        .insert(header.correlation_id, acks[0].offset)
                        .is_none(),
                    "answered twice"
                );
            }
        }
        offsets
    });
    written.unwrap();
    let in_sent_order: Vec<u64> = answers.values().copied().collect();
    assert_eq!(in_sent_order, (0..u64::from(N)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_connection_silent_past_the_idle_timeout_is_closed_and_a_talking_one_is_not() {
    let b = TestBroker::start_with(|c| c.idle_timeout = Duration::from_millis(300)).await;
    let talking = b.client().await.unwrap();
    let mut silent = TcpStream::connect(b.addr).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        talking.stats("").await.unwrap();
    }
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
        .await
        .expect("the silent connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    talking.stats("").await.expect("the talking one is served");
}
