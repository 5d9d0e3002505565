//! One client connection: frames in, responses out, requests served concurrently.
//!
//! The reader splits frames and decodes them in order. A produce is handed to its partitions'
//! writers before the next frame is read, so pipelined produces on one connection keep their
//! order; everything that waits (the sync of a produce, a long-poll fetch) runs as its own
//! task, so a waiting fetch never holds up an ack behind it. At most `MAX_IN_FLIGHT` requests
//! per connection are in progress; past that the reader stops reading (backpressure).
//!
//! A frame that cannot be split (over the size limit, shorter than a header) or a failed
//! authentication is answered with an error and the connection is closed: the byte stream can
//! no longer be trusted. An unknown api key or a malformed body is answered with an error and
//! the connection goes on, since the frame boundary is intact.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{Broker, EngineError};
use crate::protocol::frame::{
    FrameError, REQUEST_HEADER_BYTES, ResponseHeader, begin_response, finish_frame,
    parse_request_header, split_frame,
};
use crate::protocol::{ApiKey, ErrorCode, PROTOCOL_VERSION, Request, Response};

/// Requests in progress per connection before the reader stops reading.
const MAX_IN_FLIGHT: usize = 256;
/// Responses queued for the writer.
const RESPONSE_QUEUE: usize = 512;
/// A peer that does not read its responses for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes gathered into one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// The single place engine errors become wire error codes.
fn error_code(e: &EngineError) -> ErrorCode {
    match e {
        EngineError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        EngineError::UnknownGroup { .. } | EngineError::Invalid(_) => ErrorCode::InvalidRequest,
        EngineError::GroupMismatch { .. } => ErrorCode::GroupMismatch,
        EngineError::Storage(crate::storage::StorageError::RecordTooLarge { .. }) => {
            ErrorCode::InvalidRequest
        }
        EngineError::Storage(crate::storage::StorageError::Closed) => ErrorCode::ShuttingDown,
        EngineError::Storage(_) => ErrorCode::Storage,
        EngineError::ShuttingDown => ErrorCode::ShuttingDown,
    }
}

fn encode_ok(correlation_id: u32, resp: &Response) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    let at = begin_response(
        &mut out,
        ResponseHeader {
            correlation_id,
            error_code: 0,
        },
    );
    resp.encode_body(&mut out);
    finish_frame(&mut out, at);
    out.freeze()
}

/// An error response: the code and a message naming the problem.
pub fn encode_error(correlation_id: u32, code: ErrorCode, message: &str) -> Bytes {
    use crate::codec::WriteExt;
    let mut out = BytesMut::with_capacity(16 + message.len());
    let at = begin_response(
        &mut out,
        ResponseHeader {
            correlation_id,
            error_code: code as u16,
        },
    );
    out.put_str(message);
    finish_frame(&mut out, at);
    out.freeze()
}

/// Answers a connection over the limit with `Busy` and closes it.
pub async fn refuse(mut stream: TcpStream) {
    let frame = encode_error(0, ErrorCode::Busy, "connection limit reached; retry later");
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Conn {
    broker: Arc<Broker>,
    id: u64,
    peer: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    tasks: JoinSet<()>,
    in_flight: Arc<Semaphore>,
    authed: bool,
    joined: HashSet<(String, String)>,
    cancel: CancellationToken,
}

impl Conn {
    fn count(&self, api: ApiKey, ok: bool, started: Instant) {
        self.broker
            .metrics()
            .observe(api, ok, started.elapsed().as_secs_f64());
    }

    async fn send_error(&self, correlation_id: u32, code: ErrorCode, message: &str) {
        self.broker
            .metrics()
            .protocol_errors
            .get_or_create(&vec![("code", code.name().to_string())])
            .inc();
        tracing::debug!(peer = %self.peer, code = code.name(), message, "error response");
        let _ = self
            .tx
            .send(encode_error(correlation_id, code, message))
            .await;
    }

    /// Handles one frame; returns false when the connection must close.
    async fn dispatch(&mut self, frame: Bytes) -> bool {
        let Some((header, body)) = parse_request_header(&frame) else {
            self.send_error(0, ErrorCode::FrameTooShort, "frame shorter than its header")
                .await;
            return false;
        };
        let corr = header.correlation_id;
        let Some(api) = ApiKey::from_u16(header.api_key) else {
            self.send_error(
                corr,
                ErrorCode::UnknownApi,
                &format!("unknown api key {}", header.api_key),
            )
            .await;
            return true;
        };
        if header.version != PROTOCOL_VERSION {
            self.send_error(
                corr,
                ErrorCode::UnsupportedVersion,
                &format!(
                    "request version {} is not supported; this broker speaks version {PROTOCOL_VERSION}",
                    header.version
                ),
            )
            .await;
            return true;
        }
        if !self.authed && api != ApiKey::Hello {
            self.send_error(
                corr,
                ErrorCode::Unauthorized,
                "this broker requires a token: send Hello with it first",
            )
            .await;
            return false;
        }
        let started = Instant::now();
        let req = match Request::decode_body(api, &body) {
            Ok(r) => r,
            Err(e) => {
                self.count(api, false, started);
                self.send_error(
                    corr,
                    ErrorCode::Malformed,
                    &format!("{} body: {e}", api.name()),
                )
                .await;
                return true;
            }
        };
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return false;
        };
        let broker = Arc::clone(&self.broker);
        let tx = self.tx.clone();
        let id = self.id;
        let metrics = Arc::clone(self.broker.metrics());
        let finish = move |result: Result<Response, EngineError>| {
            let m = &metrics;
            m.observe(api, result.is_ok(), started.elapsed().as_secs_f64());
            match result {
                Ok(resp) => encode_ok(corr, &resp),
                Err(e) => {
                    let code = error_code(&e);
                    m.protocol_errors
                        .get_or_create(&vec![("code", code.name().to_string())])
                        .inc();
                    encode_error(corr, code, &e.to_string())
                }
            }
        };
        match req {
            Request::Hello {
                max_version,
                token,
                client_id,
            } => {
                drop(permit);
                if let Some(expected) = &self.broker.config().token
                    && !constant_time_eq(expected.as_bytes(), token.as_bytes())
                {
                    self.count(api, false, started);
                    tracing::warn!(peer = %self.peer, client_id, "bad token");
                    self.send_error(corr, ErrorCode::Unauthorized, "bad token")
                        .await;
                    return false;
                }
                if max_version < PROTOCOL_VERSION {
                    self.count(api, false, started);
                    self.send_error(
                        corr,
                        ErrorCode::UnsupportedVersion,
                        &format!("client speaks up to version {max_version}; this broker needs {PROTOCOL_VERSION}"),
                    )
                    .await;
                    return false;
                }
                self.authed = true;
                tracing::debug!(peer = %self.peer, client_id, "hello");
                let frame = finish(Ok(Response::Hello {
                    version: PROTOCOL_VERSION,
                    server: format!("ticketrush-broker/{}", env!("CARGO_PKG_VERSION")),
                }));
                let _ = self.tx.send(frame).await;
            }
            Request::Produce { topic, records } => {
                // Staged here, in frame order; awaited in its own task.
                let fut = broker.produce(&topic, records);
                self.tasks.spawn(async move {
                    let r = fut.await.map(Response::Produce);
                    let _ = tx.send(finish(r)).await;
                    drop(permit);
                });
            }
            Request::Fetch(f) => {
                self.joined.insert((f.topic.clone(), f.group.clone()));
                let cancel = self.cancel.clone();
                self.tasks.spawn(async move {
                    let r = broker.fetch(id, f, cancel).await.map(Response::Fetch);
                    let _ = tx.send(finish(r)).await;
                    drop(permit);
                });
            }
            Request::Ack { topic, group, ids } => {
                self.tasks.spawn(async move {
                    let r = broker
                        .ack(id, &topic, &group, &ids)
                        .await
                        .map(Response::Ack);
                    let _ = tx.send(finish(r)).await;
                    drop(permit);
                });
            }
            Request::Nack {
                topic,
                group,
                delay_ms,
                reason,
                ids,
            } => {
                self.tasks.spawn(async move {
                    let r = broker
                        .nack(id, &topic, &group, &ids, delay_ms, &reason)
                        .await
                        .map(Response::Nack);
                    let _ = tx.send(finish(r)).await;
                    drop(permit);
                });
            }
            Request::CreateTopic {
                name,
                partitions,
                retention_bytes,
                retention_ms,
            } => {
                self.tasks.spawn(async move {
                    let r = broker
                        .create_topic(&name, partitions, retention_bytes, retention_ms)
                        .await
                        .map(|(created, partitions)| Response::CreateTopic {
                            created,
                            partitions,
                        });
                    let _ = tx.send(finish(r)).await;
                    drop(permit);
                });
            }
            Request::Stats { topic } => {
                let r = broker
                    .stats(&topic)
                    .map(|v| Response::Stats(Bytes::from(v.to_string())));
                let _ = tx.send(finish(r)).await;
                drop(permit);
            }
        }
        true
    }
}

async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                cancel.cancel();
                return;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Serves one connection until the peer leaves, it misbehaves, or `shutdown` fires.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    id: u64,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    broker.metrics().connections.inc();
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
    let cancel = shutdown.child_token();
    let writer = tokio::spawn(write_loop(wr, rx, cancel.clone()));
    let max_frame = broker.config().max_frame_bytes;
    let idle = broker.config().idle_timeout;
    let mut conn = Conn {
        authed: broker.config().token.is_none(),
        broker: Arc::clone(&broker),
        id,
        peer,
        tx,
        tasks: JoinSet::new(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        joined: HashSet::new(),
        cancel: cancel.clone(),
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'conn: loop {
        loop {
            match split_frame(&mut buf, max_frame, REQUEST_HEADER_BYTES) {
                Ok(Some(frame)) => {
                    if !conn.dispatch(frame).await {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let corr = peek_correlation(&buf);
                    let code = match e {
                        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                        FrameError::TooShort { .. } => ErrorCode::FrameTooShort,
                    };
                    tracing::warn!(%peer, error = %e, "closing connection: unframeable input");
                    conn.send_error(corr, code, &e.to_string()).await;
                    break 'conn;
                }
            }
        }
        tokio::select! {
            read = tokio::time::timeout(idle, rd.read_buf(&mut buf)) => match read {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "read failed");
                    break;
                }
                Err(_) => {
                    tracing::debug!(%peer, "idle timeout");
                    break;
                }
            },
            () = cancel.cancelled() => break,
            Some(_) = conn.tasks.join_next(), if !conn.tasks.is_empty() => {}
        }
    }
    // Finish what was accepted: fetches see the token and return at once; produces and acks
    // complete and are answered before the socket closes.
    cancel.cancel();
    while conn.tasks.join_next().await.is_some() {}
    let Conn { tx, joined, .. } = conn;
    drop(tx);
    let _ = writer.await;
    for (topic, group) in joined {
        broker.leave(id, &topic, &group).await;
    }
    broker.metrics().connections.dec();
}

/// The correlation id of a frame whose length was rejected, if its header bytes are here.
fn peek_correlation(buf: &BytesMut) -> u32 {
    match buf.get(4 + 4..4 + 8) {
        Some(c) => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
        None => 0,
    }
}
