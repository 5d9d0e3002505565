//! A TCP proxy for tests that breaks the network on command: put one [`FaultProxy`] on each
//! directed link between processes on loopback and partition, hang, slow or cut them.
//!
//! Each accepted connection is relayed to the target by one task: a reader and a writer per
//! direction, joined by a queue of at most [`QUEUE_CHUNKS`] chunks. The faults live in one
//! `watch` channel that every relay reads, so a control takes effect at once on existing and
//! new connections. Invariants:
//! - A chunk is judged when it is due for delivery (read time + the delay in force when it was
//!   read): a blackhole holds it, a cut direction drops it, a `drop_after` budget truncates it.
//!   Per direction, chunks are delivered in the order they were read.
//! - Dropped bytes are gone (the stream has a gap); held bytes flow again on [`FaultProxy::heal`],
//!   as TCP would retransmit across a network that recovers.
//! - Every task is on one `TaskTracker` and ends when the proxy's token is cancelled (drop or
//!   [`FaultProxy::stop`]); [`FaultProxy::close_all`] cancels a child token that every connection
//!   of that generation holds. Closing a connection drops both of its sockets (FIN, or RST when
//!   unread bytes remain).
//! - Reads and writes have no deadline on purpose: the proxy is transparent and the endpoints
//!   own their idle timeouts; any connection ends when the proxy closes it.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::ACCEPT_ERROR_BACKOFF;

/// The most bytes one read takes from a socket.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// The most chunks waiting for delivery per direction of a connection.
pub const QUEUE_CHUNKS: usize = 16;
/// The most connections relayed at once; beyond it a connection is accepted and closed.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long the proxy waits to connect to its target before closing the client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side to the target.
    ClientToServer,
    /// From the target back to the connecting side.
    ServerToClient,
}

impl Direction {
    /// Its slot in the per-direction arrays.
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// The faults in force; `Default` is a healthy link.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    cut: bool,
    blackhole: bool,
    /// Per [`Direction::index`]: that direction's bytes are dropped.
    dropping: [bool; 2],
    delay: Duration,
    /// Client→server bytes each connection may still pass, counted from `drop_after_epoch`.
    drop_after: Option<u64>,
    /// Bumped by every `drop_after` call so each connection restarts its count.
    drop_after_epoch: u64,
}

impl Faults {
    /// Connections must close now (and new ones at once).
    fn is_severed(&self) -> bool {
        self.cut || self.drop_after == Some(0)
    }
}

/// Adds `bytes` to the counter of `direction`.
fn count(counters: &[AtomicU64; 2], direction: Direction, bytes: usize) {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    counters[direction.index()].fetch_add(bytes, Ordering::Relaxed);
}

/// What the proxy's tasks share.
#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    faults: watch::Sender<Faults>,
    stopped: CancellationToken,
    /// A child of `stopped` that the connections of the current generation hold.
    generation: Mutex<CancellationToken>,
    connections: AtomicU64,
    /// Bytes delivered, per [`Direction::index`].
    forwarded: [AtomicU64; 2],
    /// Bytes dropped by `cut_direction`, per [`Direction::index`].
    dropped: [AtomicU64; 2],
}

/// A fault-injecting TCP proxy on `127.0.0.1`, relaying every connection to one target.
///
/// Dropping it cancels every task at once (they end at their next poll); [`FaultProxy::stop`]
/// also waits until they have.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and relays each accepted connection to `target`.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let stopped = CancellationToken::new();
        let shared = Arc::new(Shared {
            target,
            faults: watch::Sender::new(Faults::default()),
            generation: Mutex::new(stopped.child_token()),
            stopped,
            connections: AtomicU64::new(0),
            forwarded: Default::default(),
            dropped: Default::default(),
        });
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(listener, Arc::clone(&shared), tracker.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            tracker,
        })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Link down: closes every connection; new ones are accepted and closed at once.
    pub fn cut(&self) {
        self.shared.faults.send_modify(|f| f.cut = true);
    }

    /// Undoes every fault; bytes held by [`FaultProxy::blackhole`] flow again.
    pub fn heal(&self) {
        // The epoch survives, so a later `drop_after` still restarts every connection's count.
        self.shared.faults.send_modify(|f| {
            *f = Faults {
                drop_after_epoch: f.drop_after_epoch,
                ..Faults::default()
            }
        });
    }

    /// Hung link: connections stay open but no byte passes either way (held, not dropped);
    /// new connections are accepted and stay silent, and reach the target only after a heal.
    pub fn blackhole(&self) {
        self.shared.faults.send_modify(|f| f.blackhole = true);
    }

    /// Silently drops the bytes of `direction` (they never arrive); the other one flows.
    pub fn cut_direction(&self, direction: Direction) {
        let slot = direction.index();
        self.shared.faults.send_modify(|f| f.dropping[slot] = true);
    }

    /// Delivers each chunk read from now on `delay` after it was read; zero removes the delay.
    pub fn delay(&self, delay: Duration) {
        self.shared.faults.send_modify(|f| f.delay = delay);
    }

    /// Closes each connection, existing or new, once `bytes` more bytes have passed client→server
    /// (server→client bytes do not count): exactly `bytes` are delivered, then both sockets drop.
    /// Zero closes every connection at once. The count restarts at each call.
    pub fn drop_after(&self, bytes: u64) {
        self.shared.faults.send_modify(|f| {
            f.drop_after = Some(bytes);
            f.drop_after_epoch = f.drop_after_epoch.wrapping_add(1);
        });
    }

    /// Closes every current connection once; later ones are relayed as usual.
    pub fn close_all(&self) {
        let shared = &self.shared;
        let mut generation = shared
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        generation.cancel();
        *generation = shared.stopped.child_token();
    }

    /// Connections accepted so far, including those closed at once.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Bytes delivered in `direction` so far.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.shared.forwarded[direction.index()].load(Ordering::Relaxed)
    }

    /// Bytes dropped by [`FaultProxy::cut_direction`] in `direction` so far.
    pub fn dropped(&self, direction: Direction) -> u64 {
        self.shared.dropped[direction.index()].load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection, and waits until every task has ended.
    pub async fn stop(self) {
        self.shared.stopped.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            () = shared.stopped.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _peer)) => client,
            Err(error) => {
                tracing::warn!(%error, "fault proxy: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        // The accept loop itself is one of the tracked tasks.
        if shared.faults.borrow().is_severed() || tracker.len() > MAX_CONNECTIONS {
            continue; // `client` drops here: accepted, then closed.
        }
        let generation = shared
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let closed = generation.clone();
        drop(generation);
        tracker.spawn(serve(client, Arc::clone(&shared), closed));
    }
}

/// Relays one connection until it ends or the proxy closes it (both sockets drop on return).
async fn serve(client: TcpStream, shared: Arc<Shared>, closed: CancellationToken) {
    let mut severed = shared.faults.subscribe();
    tokio::select! {
        biased;
        () = closed.cancelled() => {}
        _ = severed.wait_for(Faults::is_severed) => {}
        () = relay(client, &shared) => {}
    }
}

async fn relay(mut client: TcpStream, shared: &Shared) {
    let mut faults = shared.faults.subscribe();
    // A hung network lets no SYN through: reach the target only once it recovers.
    if faults.wait_for(|f| !f.blackhole).await.is_err() {
        return;
    }
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.target));
    let mut server = match connect
        .await
        .unwrap_or_else(|_| Err(ErrorKind::TimedOut.into()))
    {
        Ok(server) => server,
        Err(error) => {
            tracing::debug!(%error, target = %shared.target, "fault proxy: connect failed");
            return;
        }
    };
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let c2s = pump(client_read, server_write, Direction::ClientToServer, shared);
    let s2c = pump(server_read, client_write, Direction::ServerToClient, shared);
    // The first failure (or exhausted budget) closes both directions; EOFs pass on one by one.
    let _ = tokio::try_join!(c2s, s2c);
}

/// The connection must close: an I/O error, the proxy going away, or an exhausted budget.
struct Severed;

/// Moves one direction: reads chunks, and delivers each when due and allowed.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    direction: Direction,
    shared: &Shared,
) -> Result<(), Severed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (queue, mut queued) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let delays = shared.faults.subscribe();
    let read = async move {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(CHUNK_BYTES);
            match from.read_buf(&mut buf).await {
                Ok(0) => return Ok(()), // drops `queue`: the writer passes the EOF on
                Ok(_) => {}
                Err(_) => return Err(Severed),
            }
            let due = Instant::now() + delays.borrow().delay;
            let chunk = buf.split().freeze();
            queue.send((due, chunk)).await.map_err(|_| Severed)?;
        }
    };
    let write = async move {
        let mut faults = shared.faults.subscribe();
        // `(drop_after_epoch, bytes left)` of this connection's `drop_after` budget.
        let mut budget: Option<(u64, u64)> = None;
        while let Some((due, mut chunk)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            let now = match faults.wait_for(|f| !f.blackhole).await {
                Ok(now) => *now,
                Err(_) => return Err(Severed),
            };
            if now.dropping[direction.index()] {
                count(&shared.dropped, direction, chunk.len());
                continue;
            }
            let mut exhausted = false;
            if let (Direction::ClientToServer, Some(limit)) = (direction, now.drop_after) {
                let epoch = now.drop_after_epoch;
                let left = match budget {
                    Some((seen, left)) if seen == epoch => left,
                    _ => limit,
                };
                chunk.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left.saturating_sub(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
                budget = Some((epoch, left));
                exhausted = left == 0;
            }
            to.write_all(&chunk).await.map_err(|_| Severed)?;
            count(&shared.forwarded, direction, chunk.len());
            if exhausted {
                return Err(Severed);
            }
        }
        to.shutdown().await.map_err(|_| Severed)
    };
    tokio::try_join!(read, write).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wait_until;

    const LIMIT: Duration = Duration::from_secs(5);
    /// How long a read must stay unanswered to count as silence.
    const SILENCE: Duration = Duration::from_millis(300);
    const C2S: Direction = Direction::ClientToServer;
    const S2C: Direction = Direction::ServerToClient;

    /// `fut` within [`LIMIT`], unwrapped.
    async fn within<T, E: std::fmt::Debug>(fut: impl Future<Output = Result<T, E>>) -> T {
        tokio::time::timeout(LIMIT, fut)
            .await
            .expect("in time")
            .expect("ok")
    }

    /// A proxy in front of an echo server.
    async fn echo_proxy() -> FaultProxy {
        let listener = within(TcpListener::bind("127.0.0.1:0")).await;
        let proxy = within(FaultProxy::start(listener.local_addr().unwrap())).await;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        proxy
    }

    /// A proxy to a listener the test holds, and both ends of one connection through it.
    async fn pair() -> (FaultProxy, TcpStream, TcpStream) {
        let listener = within(TcpListener::bind("127.0.0.1:0")).await;
        let proxy = within(FaultProxy::start(listener.local_addr().unwrap())).await;
        let client = within(TcpStream::connect(proxy.addr())).await;
        let (server, _) = within(listener.accept()).await;
        (proxy, client, server)
    }

    async fn expect(s: &mut TcpStream, want: &[u8]) {
        let mut got = vec![0; want.len()];
        within(s.read_exact(&mut got)).await;
        assert_eq!(got, want);
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
        let (mut r, mut w) = s.split();
        let mut got = vec![0; msg.len()];
        within(async { tokio::try_join!(w.write_all(msg), r.read_exact(&mut got)) }).await;
        assert_eq!(got, msg);
    }

    async fn assert_closed(s: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(LIMIT, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {}
            other => panic!("expected EOF or reset, got {other:?}"),
        }
    }

    async fn assert_silent(s: &mut TcpStream) {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(SILENCE, s.read(&mut buf)).await;
        assert!(read.is_err(), "expected silence, got {read:?}");
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_are_counted() {
        let proxy = echo_proxy().await;
        let mut s = within(TcpStream::connect(proxy.addr())).await;
        let big: Vec<u8> = (0..200_000u32).map(|i| i.to_le_bytes()[0]).collect();
        round_trip(&mut s, b"hello").await;
        round_trip(&mut s, &big).await;
        let total = 5 + 200_000;
        wait_until("both counters are full", LIMIT, async || {
            proxy.bytes(C2S) == total && proxy.bytes(S2C) == total
        })
        .await;
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn cut_closes_and_refuses_and_heal_restores() {
        let proxy = echo_proxy().await;
        let mut s = within(TcpStream::connect(proxy.addr())).await;
        round_trip(&mut s, b"up").await;
        proxy.cut();
        assert_closed(&mut s).await;
        let mut refused = within(TcpStream::connect(proxy.addr())).await;
        assert_closed(&mut refused).await;
        proxy.heal();
        let mut s = within(TcpStream::connect(proxy.addr())).await;
        round_trip(&mut s, b"back").await;
        assert_eq!(proxy.connections(), 3);
    }

    #[tokio::test]
    async fn blackhole_is_silence_not_eof_and_heal_releases() {
        let (proxy, mut client, mut server) = pair().await;
        proxy.blackhole();
        within(client.write_all(b"held")).await;
        within(server.write_all(b"back")).await;
        tokio::join!(assert_silent(&mut client), assert_silent(&mut server));
        let mut fresh = within(TcpStream::connect(proxy.addr())).await;
        within(fresh.write_all(b"x")).await;
        assert_silent(&mut fresh).await;
        proxy.heal();
        expect(&mut server, b"held").await;
        expect(&mut client, b"back").await;
    }

    #[tokio::test]
    async fn cut_direction_drops_one_way_only() {
        let (proxy, mut client, mut server) = pair().await;
        for direction in [C2S, S2C] {
            let (from, to) = match direction {
                Direction::ClientToServer => (&mut client, &mut server),
                Direction::ServerToClient => (&mut server, &mut client),
            };
            proxy.cut_direction(direction);
            within(from.write_all(b"lost")).await;
            wait_until("4 bytes dropped", LIMIT, async || {
                proxy.dropped(direction) == 4
            })
            .await;
            within(to.write_all(b"flow")).await;
            expect(from, b"flow").await;
            proxy.heal();
            within(from.write_all(b"kept")).await;
            expect(to, b"kept").await; // not "lost": dropped, not buffered
        }
    }

    #[tokio::test]
    async fn delay_delays_each_direction() {
        let proxy = echo_proxy().await;
        let mut s = within(TcpStream::connect(proxy.addr())).await;
        let delay = Duration::from_millis(200);
        proxy.delay(delay);
        let started = Instant::now();
        round_trip(&mut s, b"slow").await;
        assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn drop_after_closes_after_n_more_bytes() {
        let (proxy, mut client, mut server) = pair().await;
        within(client.write_all(b"12345")).await;
        expect(&mut server, b"12345").await;
        proxy.drop_after(100);
        within(client.write_all(b"abc")).await;
        expect(&mut server, b"abc").await;
        proxy.heal(); // a new budget after a heal counts from its own call, not the old one
        proxy.drop_after(10);
        within(client.write_all(&[7; 25])).await;
        let mut got = Vec::new();
        within(server.read_to_end(&mut got)).await;
        assert_eq!(got, [7; 10]);
        assert_closed(&mut client).await;
        assert_eq!(proxy.bytes(C2S), 18);
    }

    #[tokio::test]
    async fn close_all_closes_current_connections_once() {
        let proxy = echo_proxy().await;
        let mut a = within(TcpStream::connect(proxy.addr())).await;
        let mut b = within(TcpStream::connect(proxy.addr())).await;
        round_trip(&mut a, b"a").await;
        round_trip(&mut b, b"b").await;
        proxy.close_all();
        assert_closed(&mut a).await;
        assert_closed(&mut b).await;
        let mut c = within(TcpStream::connect(proxy.addr())).await;
        round_trip(&mut c, b"c").await;
        assert_eq!(proxy.connections(), 3);
    }

    #[tokio::test]
    async fn stop_closes_connections_and_the_listener() {
        let proxy = echo_proxy().await;
        let addr = proxy.addr();
        let mut s = within(TcpStream::connect(addr)).await;
        round_trip(&mut s, b"up").await;
        tokio::time::timeout(LIMIT, proxy.stop()).await.unwrap();
        assert_closed(&mut s).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
