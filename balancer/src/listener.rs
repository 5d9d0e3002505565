//! The client-facing side: bind (SO_REUSEPORT so each worker runtime can own a listener),
//! accept within the connection limit, optionally terminate TLS, and serve: HTTP/1.x with
//! the balancer's own server ([`crate::downstream`]) until a request needs more, then (and
//! for h2 by ALPN or h2c prior knowledge from the start) with hyper-util's auto builder.
//!
//! Limits enforced here: at most `max_connections` open connections (the accept loop waits
//! for a slot, leaving excess connections in the kernel backlog); the request head must arrive
//! within the header timeout (slowloris; it also bounds keep-alive idle time) and fit in
//! `max_header_bytes` (431 otherwise); TLS handshakes share the header timeout.
//! On shutdown the loop stops accepting and each connection finishes its in-flight request
//! then closes (HTTP/1.1 `Connection: close`, h2 GOAWAY).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use plumbing::accept::{Admitted, CappedListener, WhenFull};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::downstream::{self, Prefixed, Served};
use crate::proxy::{ConnInfo, handle};
use crate::smuggling::GuardedIo;
use crate::state::BalancerState;

/// Accept backlog.
pub const BACKLOG: i32 = 1024;

/// Binds a listener with SO_REUSEADDR and, when `reuse_port`, SO_REUSEPORT.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts and serves until shutdown.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<BalancerState>,
    worker: usize,
    slots: Arc<Semaphore>,
) {
    let listener = CappedListener::with_slots(listener, slots, WhenFull::Wait);
    while let Some(Admitted { stream, peer, slot }) = listener.admit(&shared.shutdown).await {
        let _ = stream.set_nodelay(true);
        shared.metrics.connection_opened();
        let shared2 = Arc::clone(&shared);
        shared.conns.spawn(async move {
            // No tracing span per connection: entering one on every poll measurably cost
            // throughput; events carry the peer as a field instead.
            let _slot = slot;
            serve_tcp(stream, peer, Arc::clone(&shared2), worker).await;
            shared2.metrics.connection_closed();
        });
    }
    tracing::debug!(worker, "accept loop stopped");
}

async fn serve_tcp(stream: TcpStream, peer: SocketAddr, shared: Arc<BalancerState>, worker: usize) {
    match shared.tls.load_full() {
        None => serve_io(stream, peer, shared, worker, false, false).await,
        // Boxed: the handshake and a TLS stream make this branch's future several KiB, and
        // inline it would size every connection's task by it, plain TCP included, for as long
        // as the connection lives (idle keep-alive time too).
        Some(acceptor) => Box::pin(serve_tls(stream, acceptor, peer, shared, worker)).await,
    }
}

async fn serve_tls(
    stream: TcpStream,
    acceptor: Arc<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
    shared: Arc<BalancerState>,
    worker: usize,
) {
    let timeout = shared.config.load().timeouts.header_read;
    let handshake = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
    };
    match handshake {
        Ok(Ok(tls)) => {
            shared.metrics.tls_handshake(true);
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            serve_io(tls, peer, shared, worker, true, h2).await;
        }
        Ok(Err(error)) => {
            shared.metrics.tls_handshake(false);
            tracing::debug!(%peer, %error, "TLS handshake failed");
        }
        Err(_) => {
            shared.metrics.tls_handshake(false);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Serves one connection; `h2`: ALPN chose HTTP/2, so hyper's server takes it at once.
async fn serve_io<I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<BalancerState>,
    worker: usize,
    is_tls: bool,
    h2: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ambiguous = Arc::new(AtomicBool::new(false));
    let info = Arc::new(ConnInfo {
        shared: Arc::clone(&shared),
        peer,
        is_tls,
        worker,
        peer_ip: crate::proxy::headers::ip_header_value(peer.ip()),
        ambiguous: Arc::clone(&ambiguous),
    });
    let (io, read) = if h2 {
        (io, Bytes::new())
    } else {
        match downstream::serve(io, &info).await {
            Served::Closed => return,
            Served::Handover(io, read) => (io, read),
        }
    };
    // Boxed: hyper's connection is a large future, and inline it would size every
    // connection's task by it, idle time included, though few connections ever get there.
    Box::pin(serve_hyper(io, read, ambiguous, info)).await;
}

/// hyper's server from here (h2, and HTTP/1.1 connections the balancer's own server handed
/// over with the bytes it had read). The smuggling scanner watches what hyper reads, from
/// the start of the handed-over request (the own server checks framing as it parses).
async fn serve_hyper<I>(io: I, read: Bytes, ambiguous: Arc<AtomicBool>, info: Arc<ConnInfo>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(&info.shared);
    let peer = info.peer;
    let io = GuardedIo::new(Prefixed::new(io, read), ambiguous);
    let cfg = shared.config.load_full();
    // Boxed: hyper keeps room for the service's future in every connection from the start
    // (`Box<Option<Future>>`), so an inline request future (~4 KiB) would be held by each
    // idle keep-alive connection; boxed, it is allocated per request and freed with it.
    let service = service_fn(move |req| Box::pin(handle(req, Arc::clone(&info))));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.timeouts.header_read)
        .max_buf_size(cfg.limits.max_header_bytes)
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(cfg.limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(cfg.timeouts.idle))
        .keep_alive_timeout(cfg.timeouts.header_read);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = shared.hard_stop.cancelled() => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        // hyper answers an oversized head with 431 itself; count it here, where it surfaces.
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            shared
                .metrics
                .reject(crate::metrics::Rejection::HeaderTooLarge);
        }
        tracing::debug!(%peer, %error, "connection ended with error");
    }
}
