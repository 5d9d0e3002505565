//! One client connection: frames in, responses out, requests served concurrently.
//!
//! One task reads, serves and writes. It splits frames and decodes them in order. A produce is
//! appended before the next frame is read, so pipelined produces on one connection keep their
//! order; one whose records are committed already (repeats by dedup id) is answered at once,
//! and one that waits for its write and sync waits inside this task, beside the reads. Requests that may wait long (a
//! long-poll fetch) or that touch a group's journal run as their own tasks and hand their
//! responses back, so a waiting fetch never holds up an ack behind it. Every response that is
//! ready when the task runs out of input goes out in one write. At most `MAX_IN_FLIGHT`
//! requests per connection are in progress; past that the task stops reading (backpressure).
//!
//! A frame that cannot be split (over the size limit, shorter than a header) or a failed
//! authentication is answered with an error and the connection is closed: the byte stream can
//! no longer be trusted. An unknown api key or a malformed body is answered with an error and
//! the connection goes on, since the frame boundary is intact.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::node::Cluster;
use crate::engine::produce::{Pending, Produced};
use crate::engine::{Broker, EngineError};
use crate::metrics::Metrics;
use crate::protocol::frame::{
    FrameError, REQUEST_HEADER_BYTES, ResponseHeader, begin_response, finish_frame,
    parse_request_header, split_frame,
};
use crate::protocol::peer::Metadata;
use crate::protocol::{ApiKey, ErrorCode, PROTOCOL_VERSION, Request, Response};

/// Requests in progress per connection before the reader stops reading.
const MAX_IN_FLIGHT: usize = 256;
/// Responses of spawned requests waiting to be written (above `MAX_IN_FLIGHT`: a spawned
/// request never waits to hand its response back).
const RESPONSE_QUEUE: usize = 512;
/// A peer that does not read its responses for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The output buffer's usual size; one that grew past `OUT_SHRINK_BYTES` for a large response
/// is given back.
const OUT_BYTES: usize = 64 * 1024;
const OUT_SHRINK_BYTES: usize = 1024 * 1024;

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
        EngineError::Storage(crate::storage::StorageError::NotLeader)
        | EngineError::NotLeader(_) => ErrorCode::NotLeader,
        EngineError::Storage(_) => ErrorCode::Storage,
        EngineError::ShuttingDown => ErrorCode::ShuttingDown,
    }
}

fn encode_ok_into(out: &mut BytesMut, correlation_id: u32, resp: &Response) {
    let at = begin_response(
        out,
        ResponseHeader {
            correlation_id,
            error_code: 0,
        },
    );
    resp.encode_body(out);
    finish_frame(out, at);
}

fn encode_error_into(out: &mut BytesMut, correlation_id: u32, code: ErrorCode, message: &str) {
    use crate::codec::WriteExt;
    let at = begin_response(
        out,
        ResponseHeader {
            correlation_id,
            error_code: code as u16,
        },
    );
    out.put_str(message);
    finish_frame(out, at);
}

/// An error response: the code and a message naming the problem.
pub fn encode_error(correlation_id: u32, code: ErrorCode, message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + message.len());
    encode_error_into(&mut out, correlation_id, code, message);
    out.freeze()
}

fn count_error(metrics: &Metrics, code: ErrorCode) {
    metrics
        .protocol_errors
        .get_or_create(&vec![("code", code.name().to_string())])
        .inc();
}

/// How a decoded request is answered: its correlation id, and what the metrics need.
struct Reply {
    api: ApiKey,
    corr: u32,
    started: Instant,
}

impl Reply {
    /// Counts the request and appends its response to `out`.
    fn encode_into(
        &self,
        out: &mut BytesMut,
        metrics: &Metrics,
        result: Result<Response, EngineError>,
    ) {
        metrics.observe(
            self.api,
            result.is_ok(),
            self.started.elapsed().as_secs_f64(),
        );
        match result {
            Ok(resp) => encode_ok_into(out, self.corr, &resp),
            Err(e) => {
                let code = error_code(&e);
                count_error(metrics, code);
                encode_error_into(out, self.corr, code, &e.to_string());
            }
        }
    }

    /// Counts the request and returns its response frame.
    fn encode(&self, metrics: &Metrics, result: Result<Response, EngineError>) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        self.encode_into(&mut out, metrics, result);
        out.freeze()
    }
}

/// A produce waiting for its commit, and the response it becomes.
struct WaitingProduce {
    reply: Reply,
    metrics: Arc<Metrics>,
    pending: Pending,
}

impl Future for WaitingProduce {
    type Output = Bytes;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Bytes> {
        let result = ready!(self.pending.as_mut().poll(cx));
        Poll::Ready(
            self.reply
                .encode(&self.metrics, result.map(Response::Produce)),
        )
    }
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
    cluster: Option<Arc<Cluster>>,
    id: u64,
    peer: SocketAddr,
    /// Responses ready to write.
    out: BytesMut,
    /// Where spawned requests hand back their responses.
    tx: mpsc::Sender<Bytes>,
    tasks: JoinSet<()>,
    produces: FuturesUnordered<WaitingProduce>,
    authed: bool,
    joined: HashSet<(String, String)>,
    cancel: CancellationToken,
}

impl Conn {
    fn in_flight(&self) -> usize {
        self.tasks.len() + self.produces.len()
    }

    fn count(&self, api: ApiKey, ok: bool, started: Instant) {
        self.broker
            .metrics()
            .observe(api, ok, started.elapsed().as_secs_f64());
    }

    fn send_error(&mut self, correlation_id: u32, code: ErrorCode, message: &str) {
        count_error(self.broker.metrics(), code);
        tracing::debug!(peer = %self.peer, code = code.name(), message, "error response");
        encode_error_into(&mut self.out, correlation_id, code, message);
    }

    /// Writes every response that is ready; false if the peer is gone or does not read.
    async fn flush(&mut self, wr: &mut OwnedWriteHalf) -> bool {
        let mut written = 0;
        let mut ok = true;
        while written < self.out.len() {
            match wr.try_write(self.out.get(written..).unwrap_or_default()) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let rest = self.out.get(written..).unwrap_or_default();
                    ok = matches!(
                        tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(rest)).await,
                        Ok(Ok(()))
                    );
                    break;
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        self.out.clear();
        if self.out.capacity() > OUT_SHRINK_BYTES {
            self.out = BytesMut::with_capacity(OUT_BYTES);
        }
        ok
    }

    /// Handles one frame; returns false when the connection must close.
    fn dispatch(&mut self, frame: Bytes) -> bool {
        let Some((header, body)) = parse_request_header(&frame) else {
            self.send_error(0, ErrorCode::FrameTooShort, "frame shorter than its header");
            return false;
        };
        let corr = header.correlation_id;
        let Some(api) = ApiKey::from_u16(header.api_key) else {
            self.send_error(
                corr,
                ErrorCode::UnknownApi,
                &format!("unknown api key {}", header.api_key),
            );
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
            );
            return true;
        }
        if !self.authed && api != ApiKey::Hello {
            self.send_error(
                corr,
                ErrorCode::Unauthorized,
                "this broker requires a token: send Hello with it first",
            );
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
                );
                return true;
            }
        };
        let reply = Reply { api, corr, started };
        let broker = Arc::clone(&self.broker);
        let id = self.id;
        if let Some(cluster) = &self.cluster
            && matches!(
                api,
                ApiKey::Produce | ApiKey::Fetch | ApiKey::Ack | ApiKey::Nack | ApiKey::CreateTopic
            )
            && let Err(e) = cluster.check_serving()
        {
            reply.encode_into(&mut self.out, broker.metrics(), Err(e));
            return true;
        }
        if api.is_peer() && self.cluster.is_none() {
            reply.encode_into(
                &mut self.out,
                broker.metrics(),
                Err(EngineError::Invalid(format!(
                    "{} is a request between brokers of a cluster, and this broker is not in one",
                    api.name()
                ))),
            );
            return true;
        }
        match req {
            Request::Hello {
                max_version,
                token,
                client_id,
            } => {
                if let Some(expected) = &self.broker.config().token
                    && !constant_time_eq(expected.as_bytes(), token.as_bytes())
                {
                    self.count(api, false, started);
                    tracing::warn!(peer = %self.peer, client_id, "bad token");
                    self.send_error(corr, ErrorCode::Unauthorized, "bad token");
                    return false;
                }
                if max_version < PROTOCOL_VERSION {
                    self.count(api, false, started);
                    self.send_error(
                        corr,
                        ErrorCode::UnsupportedVersion,
                        &format!("client speaks up to version {max_version}; this broker needs {PROTOCOL_VERSION}"),
                    );
                    return false;
                }
                self.authed = true;
                tracing::debug!(peer = %self.peer, client_id, "hello");
                let resp = Response::Hello {
                    version: PROTOCOL_VERSION,
                    server: format!("ticketrush-broker/{}", env!("CARGO_PKG_VERSION")),
                };
                reply.encode_into(&mut self.out, broker.metrics(), Ok(resp));
            }
            Request::Produce { topic, records } => match broker.produce(&topic, records) {
                Produced::Ready(r) => {
                    reply.encode_into(&mut self.out, broker.metrics(), r.map(Response::Produce));
                }
                Produced::Waiting(pending) => self.produces.push(WaitingProduce {
                    reply,
                    metrics: Arc::clone(broker.metrics()),
                    pending,
                }),
            },
            Request::Fetch(f) => {
                self.joined.insert((f.topic.clone(), f.group.clone()));
                let cancel = self.cancel.clone();
                self.spawn(reply, async move {
                    broker.fetch(id, f, cancel).await.map(Response::Fetch)
                });
            }
            Request::Ack { topic, group, ids } => {
                self.spawn(reply, async move {
                    broker
                        .ack(id, &topic, &group, &ids)
                        .await
                        .map(Response::Ack)
                });
            }
            Request::Nack {
                topic,
                group,
                delay_ms,
                reason,
                ids,
            } => {
                self.spawn(reply, async move {
                    broker
                        .nack(id, &topic, &group, &ids, delay_ms, &reason)
                        .await
                        .map(Response::Nack)
                });
            }
            Request::CreateTopic {
                name,
                partitions,
                retention_bytes,
                retention_ms,
            } => {
                let cluster = self.cluster.clone();
                self.spawn(reply, async move {
                    let created = match cluster {
                        Some(c) => {
                            c.create_topic(&name, partitions, retention_bytes, retention_ms)
                                .await
                        }
                        None => {
                            broker
                                .create_topic(&name, partitions, retention_bytes, retention_ms)
                                .await
                        }
                    };
                    created.map(|(created, partitions)| Response::CreateTopic {
                        created,
                        partitions,
                    })
                });
            }
            Request::Metadata => {
                let m = self
                    .cluster
                    .as_ref()
                    .map_or_else(Metadata::default, |c| c.metadata());
                reply.encode_into(&mut self.out, broker.metrics(), Ok(Response::Metadata(m)));
            }
            Request::Raft { kind, json } => self.spawn_peer(reply, move |c| async move {
                c.raft_message(kind, &json).await.map(Response::Raft)
            }),
            Request::Promise(p) => self.spawn_peer(reply, move |c| async move {
                c.promise(p.epoch, &p.partition.topic, p.partition.partition)
                    .await
                    .map(Response::Peer)
            }),
            Request::Replicate(r) => self.spawn_peer(reply, move |c| async move {
                c.replicate(r).await.map(Response::Peer)
            }),
            Request::ReadReplica(r) => self.spawn_peer(reply, move |c| async move {
                c.read_replica(r).await.map(Response::Peer)
            }),
            Request::GroupProgress(g) => self.spawn_peer(reply, move |c| async move {
                c.group_progress(g).await.map(Response::Peer)
            }),
            Request::ReadGroups(g) => self.spawn_peer(reply, move |c| async move {
                c.read_groups(g).await.map(Response::Peer)
            }),
            Request::Drain { drain } => {
                let cluster = self.cluster.clone();
                self.spawn(reply, async move {
                    let c = cluster.ok_or_else(|| {
                        EngineError::Invalid(
                            "drain moves a cluster's leadership, and this broker is not in a cluster"
                                .into(),
                        )
                    })?;
                    let metadata = c.drain(drain).await?;
                    Ok(Response::Drain {
                        draining: c.is_draining(),
                        metadata,
                    })
                });
            }
            Request::Stats { topic } => {
                let r = broker.stats(&topic).map(|mut v| {
                    if let Some(c) = &self.cluster {
                        v["cluster"] = c.status();
                    }
                    Response::Stats(Bytes::from(v.to_string()))
                });
                reply.encode_into(&mut self.out, broker.metrics(), r);
            }
        }
        true
    }

    /// Runs a request between brokers as its own task, on this broker's cluster (checked
    /// before the request is dispatched).
    fn spawn_peer<F, Fut>(&mut self, reply: Reply, work: F)
    where
        F: FnOnce(Arc<Cluster>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response, EngineError>> + Send + 'static,
    {
        let cluster = self.cluster.clone();
        self.spawn(reply, async move {
            work(cluster.ok_or(EngineError::ShuttingDown)?).await
        });
    }

    /// Runs a request as its own task; its response comes back through `tx`.
    fn spawn(
        &mut self,
        reply: Reply,
        work: impl Future<Output = Result<Response, EngineError>> + Send + 'static,
    ) {
        let tx = self.tx.clone();
        let metrics = Arc::clone(self.broker.metrics());
        self.tasks.spawn(async move {
            let frame = reply.encode(&metrics, work.await);
            let _ = tx.send(frame).await;
        });
    }
}

/// Serves one connection until the peer leaves, it misbehaves, or `shutdown` fires.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    cluster: Option<Arc<Cluster>>,
    id: u64,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    broker.metrics().connections.inc();
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel(RESPONSE_QUEUE);
    let cancel = shutdown.child_token();
    let max_frame = broker.config().max_frame_bytes;
    let idle_timeout = broker.config().idle_timeout;
    let mut conn = Conn {
        authed: broker.config().token.is_none(),
        broker: Arc::clone(&broker),
        cluster,
        id,
        peer,
        out: BytesMut::with_capacity(OUT_BYTES),
        tx,
        tasks: JoinSet::new(),
        produces: FuturesUnordered::new(),
        joined: HashSet::new(),
        cancel: cancel.clone(),
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // One timer for the connection's life, pushed back only when it fires: arming a timer per
    // read cost a produce more than its append.
    let mut last_read = Instant::now();
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    'conn: loop {
        while conn.in_flight() < MAX_IN_FLIGHT {
            match split_frame(&mut buf, max_frame, REQUEST_HEADER_BYTES) {
                Ok(Some(frame)) => {
                    if !conn.dispatch(frame) {
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
                    conn.send_error(corr, code, &e.to_string());
                    break 'conn;
                }
            }
        }
        if !conn.out.is_empty() && !conn.flush(&mut wr).await {
            break;
        }
        let reading = conn.in_flight() < MAX_IN_FLIGHT;
        tokio::select! {
            read = rd.read_buf(&mut buf), if reading => match read {
                Ok(0) => break,
                Ok(_) => last_read = Instant::now(),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "read failed");
                    break;
                }
            },
            Some(frame) = conn.produces.next(), if !conn.produces.is_empty() => {
                conn.out.extend_from_slice(&frame);
            }
            Some(frame) = rx.recv() => conn.out.extend_from_slice(&frame),
            Some(_) = conn.tasks.join_next(), if !conn.tasks.is_empty() => {}
            () = &mut idle => {
                if last_read.elapsed() >= idle_timeout {
                    tracing::debug!(%peer, "idle timeout");
                    break;
                }
                idle.as_mut().reset((last_read + idle_timeout).into());
            }
            () = &mut cancelled => break,
        }
    }
    // Finish what was accepted: fetches see the token and return at once; produces and acks
    // complete and are answered before the socket closes.
    cancel.cancel();
    while conn.in_flight() > 0 {
        tokio::select! {
            Some(frame) = conn.produces.next(), if !conn.produces.is_empty() => {
                conn.out.extend_from_slice(&frame);
            }
            Some(frame) = rx.recv() => conn.out.extend_from_slice(&frame),
            Some(_) = conn.tasks.join_next(), if !conn.tasks.is_empty() => {}
        }
    }
    while let Ok(frame) = rx.try_recv() {
        conn.out.extend_from_slice(&frame);
    }
    if conn.flush(&mut wr).await {
        let _ = wr.shutdown().await;
    }
    for (topic, group) in std::mem::take(&mut conn.joined) {
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
