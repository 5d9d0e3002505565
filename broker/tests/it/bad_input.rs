use std::time::Duration;

use broker::client::ClientConfig;
use broker::protocol::{ErrorCode, Record};
use broker::testing::TestBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and reads the first response frame: (correlation id, error code, message),
/// and whether the server then closed the connection.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (u32, u16, String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut head = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("the server answers")
        .unwrap();
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let corr = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let code = u16::from_be_bytes([head[8], head[9]]);
    let mut rest = vec![0u8; len - 6];
    s.read_exact(&mut rest).await.unwrap();
    let msg = String::from_utf8_lossy(rest.get(2..).unwrap_or_default()).to_string();
    let mut probe = [0u8; 1];
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut probe)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    (corr, code, msg, closed)
}

fn frame(api: u16, version: u16, corr: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    v.extend_from_slice(&api.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&corr.to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn each_kind_of_bad_input_gets_a_named_error_and_others_are_still_served() {
    let b = TestBroker::start_with(|c| c.max_frame_bytes = 64 * 1024).await;
    let good = b.client().await.unwrap();
    good.create_topic("t", 1).await.unwrap();

    // An oversized length: error, then the connection is closed.
    let (_, code, msg, closed) =
        raw(b.addr, &[0x7F, 0xFF, 0xFF, 0xFF, 0, 2, 0, 1, 0, 0, 0, 9]).await;
    assert_eq!(code, ErrorCode::FrameTooLarge as u16);
    assert!(msg.contains("over the limit"), "{msg}");
    assert!(closed);

    // Garbage: read as a huge length too.
    let (_, code, _, closed) = raw(b.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, ErrorCode::FrameTooLarge as u16);
    assert!(closed);

    // A frame shorter than its header.
    let (_, code, _, closed) = raw(b.addr, &[0, 0, 0, 3, 1, 2, 3]).await;
    assert_eq!(code, ErrorCode::FrameTooShort as u16);
    assert!(closed);

    // An unknown api key: error naming it, connection kept.
    let (corr, code, msg, closed) = raw(b.addr, &frame(99, 1, 42, b"")).await;
    assert_eq!((corr, code), (42, ErrorCode::UnknownApi as u16));
    assert!(msg.contains("99"), "{msg}");
    assert!(!closed);

    // A malformed body: error naming the field, connection kept.
    let (corr, code, msg, closed) = raw(
        b.addr,
        &frame(2, 1, 7, &[0, 1, b't', 0xFF, 0xFF, 0xFF, 0xFF]),
    )
    .await;
    assert_eq!((corr, code), (7, ErrorCode::Malformed as u16));
    assert!(msg.contains("produce.records"), "{msg}");
    assert!(!closed);

    // An unsupported version.
    let (_, code, _, _) = raw(b.addr, &frame(6, 9, 1, &[0, 0])).await;
    assert_eq!(code, ErrorCode::UnsupportedVersion as u16);

    // The well-behaved client was never disturbed.
    let ack = good.produce("t", Record::new("still fine")).await.unwrap();
    assert_eq!(ack.offset, 0);
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let b = TestBroker::start_with(|c| c.token = Some("s3cret".into())).await;
    // No Hello: refused and closed.
    let (_, code, _, closed) = raw(b.addr, &frame(6, 1, 1, &[0, 0])).await;
    assert_eq!(code, ErrorCode::Unauthorized as u16);
    assert!(closed);
    // Wrong token.
    let err = broker::client::Client::connect(b.client_config().with_token(Some("nope".into())))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::Unauthorized));
    // Right token.
    let mut cfg: ClientConfig = b.client_config().with_token(Some("s3cret".into()));
    cfg.connect_timeout = Duration::from_secs(2);
    let c = broker::client::Client::connect(cfg).await.unwrap();
    c.create_topic("t", 1).await.unwrap();
}

#[tokio::test]
async fn a_record_over_the_frame_limit_is_refused_not_stored() {
    let b = TestBroker::start_with(|c| c.max_frame_bytes = 4096).await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    let err = c
        .produce("t", Record::new(vec![b'x'; 10_000]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            broker::client::ClientError::Closed | broker::client::ClientError::Server { .. }
        ),
        "{err}"
    );
    let c = b.client().await.unwrap();
    let stats = c.stats("t").await.unwrap();
    assert_eq!(stats["topics"][0]["end_offset"], 0);
}

#[tokio::test]
async fn cluster_requests_to_a_single_broker_are_refused_by_name() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    let err = c.drain(true).await.unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(err.to_string().contains("not in a cluster"), "{err}");
    // A request between brokers (ReadGroups, key 13: epoch 1, topic "t") is refused the same way.
    let mut body = 1u64.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, b't']);
    let (_, code, msg, _) = raw(b.addr, &frame(13, 1, 7, &body)).await;
    assert_eq!(code, ErrorCode::InvalidRequest as u16);
    assert!(msg.contains("read_groups"), "{msg}");
}
