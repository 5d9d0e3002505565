//! An async client for the broker protocol.
//!
//! One [`Client`] is one TCP connection; requests are pipelined on it (any number in flight,
//! matched to responses by correlation id), so a single client can be shared by many tasks.
//! [`Client::connect`] retries with backoff until its deadline. A client whose connection
//! broke fails every call with [`ClientError::Closed`]; make a new one (leases held by the old
//! connection are handed to other consumers by the broker).
//!
//! A cluster: `addr` may name several brokers, comma-separated. `connect` tries them in turn,
//! asks the one it reached who leads (Metadata), and connects to the leader. When the broker
//! answers `not_leader` (leadership moved), the client closes its connection after passing
//! the error on: a caller that reconnects reaches the new leader, and one that re-sends its
//! produce with dedup ids has it appended once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), broker::client::ClientError> {
//! use broker::client::{Client, ClientConfig, Consumer};
//! use broker::protocol::{FetchMode, Record};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:7070")).await?;
//! client.create_topic("jobs", 4).await?;
//! let ack = client.produce("jobs", Record::new("hello").with_key("k1")).await?;
//! let consumer = Consumer::new(client.clone(), "jobs", "workers", FetchMode::Shared);
//! for d in consumer.fetch().await? {
//!     consumer.ack(&[d.delivery_id]).await?;
//! }
//! # let _ = ack; Ok(()) }
//! ```

use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::codec::Reader;
use crate::protocol::frame::{
    RESPONSE_HEADER_BYTES, RequestHeader, begin_request, finish_frame, parse_response_header,
    split_frame,
};
use crate::protocol::{
    AckStatus, DEFAULT_MAX_FRAME_BYTES, Delivery, ErrorCode, FetchMode, FetchRequest, NackStatus,
    PROTOCOL_VERSION, ProduceAck, Record, Request, Response,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made before the deadline.
    #[error("cannot connect to broker at {addr}: {cause}")]
    Connect {
        /// The address.
        addr: String,
        /// The last cause.
        cause: std::io::Error,
    },
    /// No answer in time.
    #[error("broker did not answer {op} within {after:?}")]
    Timeout {
        /// The request.
        op: &'static str,
        /// The time waited.
        after: Duration,
    },
    /// The connection is gone.
    #[error("connection to the broker is closed")]
    Closed,
    /// The broker answered with an error.
    #[error("broker error {name} ({code}): {message}")]
    Server {
        /// The raw error code.
        code: u16,
        /// Its name.
        name: &'static str,
        /// The broker's message.
        message: String,
    },
    /// The broker's answer could not be decoded.
    #[error("bad response from the broker: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The broker's error code, when the broker answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => ErrorCode::from_u16(*code),
            _ => None,
        }
    }

    /// Whether trying again (possibly on a new connection) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Closed => true,
            Self::Server { .. } => self.error_code().is_some_and(ErrorCode::is_retriable),
            Self::Protocol(_) => false,
        }
    }
}

/// How long `connect` tries the leader that the broker it reached names.
const LEADER_HOP_TIMEOUT: Duration = Duration::from_millis(250);
/// How much longer than a request's timeout a Drain may take (the broker waits for another
/// to be elected, up to ten election timeouts).
const DRAIN_WAIT: Duration = Duration::from_secs(60);

/// Whether `host_port` (a name or an address) names `peer`.
async fn is_address_of(host_port: &str, peer: std::net::SocketAddr) -> bool {
    if host_port.parse::<std::net::SocketAddr>().ok() == Some(peer) {
        return true;
    }
    match tokio::time::timeout(LEADER_HOP_TIMEOUT, tokio::net::lookup_host(host_port)).await {
        Ok(Ok(mut addrs)) => addrs.any(|a| a == peer),
        _ => false,
    }
}

/// The addresses of a comma-separated list.
fn bootstrap(addrs: &str) -> Vec<String> {
    addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port`, or several, comma-separated (the brokers of a cluster).
    pub addr: String,
    /// The broker's token, if it has one.
    pub token: Option<String>,
    /// A name for the broker's logs.
    pub client_id: String,
    /// How long `connect` keeps retrying.
    pub connect_timeout: Duration,
    /// How long a request may take (a fetch gets its wait on top).
    pub request_timeout: Duration,
    /// Largest response frame accepted.
    pub max_frame_bytes: usize,
    /// In a cluster, connect to the leader rather than to the broker reached (true by default;
    /// false to talk to one broker, e.g. for its own stats).
    pub follow_leader: bool,
}

impl ClientConfig {
    /// Defaults: 10 s to connect, 30 s per request, no token.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            client_id: format!("ticketrush-client/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES + 64 * 1024,
            follow_leader: true,
        }
    }

    /// Sets the token.
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }
}

type Reply = oneshot::Sender<Result<(u16, Bytes), ClientError>>;

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u32, Reply>>,
    next_id: AtomicU32,
    closed: CancellationToken,
    request_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// A connection to the broker; cheap to clone, shared by all clones.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// The broker's address.
    peer: Option<std::net::SocketAddr>,
}

impl Client {
    /// Connects (retrying with backoff until `connect_timeout`, over every address given) and
    /// says Hello; in a cluster, then connects to the leader if it is another broker.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let client = Self::connect_any(&config, &bootstrap(&config.addr), deadline).await?;
        if !config.follow_leader {
            return Ok(client);
        }
        // A broker of a cluster names its leader; any other broker (or an older one that does
        // not know Metadata) is the one to talk to.
        let Ok(Response::Metadata(m)) = client.call(Request::Metadata, Duration::ZERO).await else {
            return Ok(client);
        };
        let Some((_, leader)) = m.leader.filter(|(_, a)| !a.is_empty()) else {
            return Ok(client);
        };
        if let Some(peer) = client.peer
            && is_address_of(&leader, peer).await
        {
            return Ok(client);
        }
        // One short try: the leader named may be the one that just died (the others have not
        // elected its successor yet), and the broker reached answers `not_leader` meanwhile.
        let hop = deadline.min(tokio::time::Instant::now() + LEADER_HOP_TIMEOUT);
        match Self::connect_any(&config, std::slice::from_ref(&leader), hop).await {
            Ok(leader_client) => Ok(leader_client),
            Err(e) => {
                tracing::debug!(leader, error = %e, "cannot reach the leader; keeping the broker reached");
                Ok(client)
            }
        }
    }

    async fn connect_any(
        config: &ClientConfig,
        addrs: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<Self, ClientError> {
        let mut backoff = Duration::from_millis(25);
        // From a random one: clients spread over the brokers, and one that keeps sending them
        // elsewhere is not always tried first.
        let first = rand::random::<u64>() as usize % addrs.len().max(1);
        let mut tries = addrs.iter().cycle().skip(first);
        let stream = loop {
            let Some(addr) = tries.next() else {
                return Err(ClientError::Connect {
                    addr: config.addr.clone(),
                    cause: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"),
                });
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = tokio::time::timeout(
                left.max(Duration::from_millis(1)),
                TcpStream::connect(addr.as_str()),
            )
            .await;
            let err = match attempt {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            };
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(ClientError::Connect {
                    addr: config.addr.clone(),
                    cause: err,
                });
            }
            let jitter =
                Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        };
        let _ = stream.set_nodelay(true);
        let client = Self::start(stream, config);
        client
            .call(
                Request::Hello {
                    max_version: PROTOCOL_VERSION,
                    client_id: config.client_id.clone(),
                    token: config.token.clone().unwrap_or_default(),
                },
                Duration::ZERO,
            )
            .await?;
        Ok(client)
    }

    fn start(stream: TcpStream, config: &ClientConfig) -> Self {
        let peer = stream.peer_addr().ok();
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
        let closed = CancellationToken::new();
        let inner = Arc::new(Inner {
            tx,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            closed: closed.clone(),
            request_timeout: config.request_timeout,
        });
        let weak = Arc::downgrade(&inner);
        let stop = closed.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                let first = tokio::select! {
                    f = rx.recv() => match f { Some(f) => f, None => break },
                    () = stop.cancelled() => break,
                };
                buf.clear();
                buf.extend_from_slice(&first);
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => buf.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            stop.cancel();
            let _ = wr.shutdown().await;
        });
        let stop = closed;
        let max_frame = config.max_frame_bytes;
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            'read: loop {
                loop {
                    match split_frame(&mut buf, max_frame, RESPONSE_HEADER_BYTES) {
                        Ok(Some(frame)) => {
                            let Some((h, body)) = parse_response_header(&frame) else {
                                break 'read;
                            };
                            let Some(inner) = weak.upgrade() else {
                                break 'read;
                            };
                            let waiter = inner
                                .pending
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&h.correlation_id);
                            match waiter {
                                Some(w) => {
                                    let _ = w.send(Ok((h.error_code, body)));
                                }
                                None if h.correlation_id == 0 && h.error_code != 0 => {
                                    // A connection-level error (limit reached, bad frame).
                                    tracing::warn!(
                                        code = h.error_code,
                                        "broker closed the connection"
                                    );
                                }
                                None => {}
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
                tokio::select! {
                    r = rd.read_buf(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                    () = stop.cancelled() => break,
                }
            }
            stop.cancel();
            if let Some(inner) = weak.upgrade() {
                let waiters: Vec<Reply> = inner
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain()
                    .map(|(_, w)| w)
                    .collect();
                for w in waiters {
                    let _ = w.send(Err(ClientError::Closed));
                }
            }
        });
        Self { inner, peer }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    async fn call(&self, req: Request, extra: Duration) -> Result<Response, ClientError> {
        let api = req.api_key();
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, reply);
        let mut out = BytesMut::with_capacity(64);
        let at = begin_request(
            &mut out,
            RequestHeader {
                api_key: api as u16,
                version: PROTOCOL_VERSION,
                correlation_id: id,
            },
        );
        req.encode_body(&mut out);
        finish_frame(&mut out, at);
        let forget = || {
            self.inner
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        };
        if self.inner.tx.send(out.freeze()).await.is_err() {
            forget();
            return Err(ClientError::Closed);
        }
        let limit = self.inner.request_timeout + extra;
        let (code, body) = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(ClientError::Closed),
            Err(_) => {
                forget();
                return Err(ClientError::Timeout {
                    op: api.name(),
                    after: limit,
                });
            }
        };
        if code != 0 {
            let message = Reader::new(&body).str("message").unwrap_or_default();
            if code == ErrorCode::NotLeader as u16 {
                // Leadership moved: this connection is of no more use (see the module docs).
                self.inner.closed.cancel();
            }
            let name = ErrorCode::from_u16(code).map_or("unknown", ErrorCode::name);
            return Err(ClientError::Server {
                code,
                name,
                message,
            });
        }
        Response::decode_body(api, &body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends any request and waits for its answer (within the request timeout): what the
    /// typed methods below use, and what brokers of a cluster use among themselves.
    ///
    /// # Errors
    /// When the connection is gone, the answer is late, or the broker answers with an error.
    pub async fn request(&self, req: Request) -> Result<Response, ClientError> {
        self.call(req, Duration::ZERO).await
    }

    /// Who leads the cluster (a single broker answers `clustered: false`).
    ///
    /// # Errors
    /// When the call fails.
    pub async fn metadata(&self) -> Result<crate::protocol::peer::Metadata, ClientError> {
        match self.call(Request::Metadata, Duration::ZERO).await? {
            Response::Metadata(m) => Ok(m),
            _ => Err(Self::unexpected("metadata")),
        }
    }

    /// Drains the broker this client is connected to (`drain`: it gives up leading and
    /// stands for no election; answered once another broker leads), or takes it back. Connect
    /// with `follow_leader` off to name the broker. Returns whether it is drained, and who
    /// leads.
    ///
    /// # Errors
    /// When the broker is not in a cluster, or no other broker was elected in time.
    pub async fn drain(
        &self,
        drain: bool,
    ) -> Result<(bool, crate::protocol::peer::Metadata), ClientError> {
        match self.call(Request::Drain { drain }, DRAIN_WAIT).await? {
            Response::Drain { draining, metadata } => Ok((draining, metadata)),
            _ => Err(Self::unexpected("drain")),
        }
    }

    fn unexpected(api: &str) -> ClientError {
        ClientError::Protocol(format!("response of the wrong kind to {api}"))
    }

    /// Creates a topic with defaults for retention; returns false if it existed.
    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<bool, ClientError> {
        self.create_topic_with(name, partitions, 0, 0).await
    }

    /// Creates a topic with retention by size (per partition) and age; 0 = broker default.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        retention_bytes: u64,
        retention_ms: u64,
    ) -> Result<bool, ClientError> {
        match self
            .call(
                Request::CreateTopic {
                    name: name.to_string(),
                    partitions,
                    retention_bytes,
                    retention_ms,
                },
                Duration::ZERO,
            )
            .await?
        {
            Response::CreateTopic { created, .. } => Ok(created),
            _ => Err(Self::unexpected("create_topic")),
        }
    }

    /// Appends one record; returns where it landed once it is durable.
    pub async fn produce(&self, topic: &str, record: Record) -> Result<ProduceAck, ClientError> {
        self.produce_batch(topic, vec![record])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Self::unexpected("produce"))
    }

    /// Appends records in one request; acks come back in the same order.
    pub async fn produce_batch(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<ProduceAck>, ClientError> {
        let n = records.len();
        match self
            .call(
                Request::Produce {
                    topic: topic.to_string(),
                    records,
                },
                Duration::ZERO,
            )
            .await?
        {
            Response::Produce(acks) if acks.len() == n => Ok(acks),
            _ => Err(Self::unexpected("produce")),
        }
    }

    /// Long-polls for deliveries.
    pub async fn fetch(&self, req: FetchRequest) -> Result<Vec<Delivery>, ClientError> {
        let wait = Duration::from_millis(u64::from(req.max_wait_ms));
        match self.call(Request::Fetch(req), wait).await? {
            Response::Fetch(d) => Ok(d),
            _ => Err(Self::unexpected("fetch")),
        }
    }

    /// Acknowledges deliveries.
    pub async fn ack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
    ) -> Result<Vec<AckStatus>, ClientError> {
        match self
            .call(
                Request::Ack {
                    topic: topic.to_string(),
                    group: group.to_string(),
                    ids: ids.to_vec(),
                },
                Duration::ZERO,
            )
            .await?
        {
            Response::Ack(s) if s.len() == ids.len() => Ok(s),
            _ => Err(Self::unexpected("ack")),
        }
    }

    /// Hands deliveries back for a retry after `delay`.
    pub async fn nack(
        &self,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay: Duration,
        reason: &str,
    ) -> Result<Vec<NackStatus>, ClientError> {
        match self
            .call(
                Request::Nack {
                    topic: topic.to_string(),
                    group: group.to_string(),
                    delay_ms: u32::try_from(delay.as_millis()).unwrap_or(u32::MAX),
                    reason: reason.to_string(),
                    ids: ids.to_vec(),
                },
                Duration::ZERO,
            )
            .await?
        {
            Response::Nack(s) if s.len() == ids.len() => Ok(s),
            _ => Err(Self::unexpected("nack")),
        }
    }

    /// Stats as JSON (one topic, or all when `topic` is empty).
    pub async fn stats(&self, topic: &str) -> Result<serde_json::Value, ClientError> {
        match self
            .call(
                Request::Stats {
                    topic: topic.to_string(),
                },
                Duration::ZERO,
            )
            .await?
        {
            Response::Stats(json) => serde_json::from_slice(&json)
                .map_err(|e| ClientError::Protocol(format!("stats JSON: {e}"))),
            _ => Err(Self::unexpected("stats")),
        }
    }
}

/// A member of a consumer group: a client plus the group's fetch settings.
#[derive(Debug, Clone)]
pub struct Consumer {
    client: Client,
    request: FetchRequest,
}

impl Consumer {
    /// A consumer of `topic` in `group`; defaults: 100 records, 1 s wait, broker defaults for
    /// lease, attempts and prefetch.
    pub fn new(client: Client, topic: &str, group: &str, mode: FetchMode) -> Self {
        Self {
            client,
            request: FetchRequest {
                topic: topic.to_string(),
                group: group.to_string(),
                mode,
                max_records: 100,
                max_wait_ms: 1000,
                lease_ms: 0,
                max_attempts: 0,
                prefetch: 0,
            },
        }
    }

    /// Most records per fetch.
    #[must_use]
    pub fn max_records(mut self, n: u32) -> Self {
        self.request.max_records = n;
        self
    }

    /// Longest wait per fetch.
    #[must_use]
    pub fn wait(mut self, d: Duration) -> Self {
        self.request.max_wait_ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        self
    }

    /// Visibility timeout (used when this consumer creates the group).
    #[must_use]
    pub fn lease(mut self, d: Duration) -> Self {
        self.request.lease_ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        self
    }

    /// Deliveries before dead-lettering (used when this consumer creates the group).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.request.max_attempts = n;
        self
    }

    /// Unacknowledged deliveries allowed (used when this consumer creates the group).
    #[must_use]
    pub fn prefetch(mut self, n: u32) -> Self {
        self.request.prefetch = n;
        self
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Fetches the next deliveries (empty when none arrived within the wait).
    pub async fn fetch(&self) -> Result<Vec<Delivery>, ClientError> {
        self.client.fetch(self.request.clone()).await
    }

    /// Acknowledges deliveries.
    pub async fn ack(&self, ids: &[u64]) -> Result<Vec<AckStatus>, ClientError> {
        self.client
            .ack(&self.request.topic, &self.request.group, ids)
            .await
    }

    /// Hands deliveries back.
    pub async fn nack(
        &self,
        ids: &[u64],
        delay: Duration,
        reason: &str,
    ) -> Result<Vec<NackStatus>, ClientError> {
        self.client
            .nack(&self.request.topic, &self.request.group, ids, delay, reason)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_leader_named_by_address_or_by_name_is_recognised() {
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 7070).into();
        assert!(is_address_of("127.0.0.1:7070", peer).await);
        assert!(is_address_of("localhost:7070", peer).await);
        assert!(!is_address_of("localhost:7071", peer).await);
        assert!(!is_address_of("127.0.0.2:7070", peer).await);
    }

    #[test]
    fn a_bootstrap_list_drops_blanks() {
        assert_eq!(
            bootstrap(" a:1, ,b:2,"),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
    }
}
