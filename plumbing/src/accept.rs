//! The accept loop every listener shares: a cap on connections served at once, and a short
//! backoff when `accept` fails (EMFILE and friends) instead of a spin.
//!
//! Two policies for a connection beyond the cap: [`WhenFull::Wait`] leaves it in the kernel's
//! accept queue until a slot frees (HTTP listeners: the client sees a slow connect, then an
//! answer), [`WhenFull::Refuse`] accepts it and hands it back as [`Accepted::OverCap`] so the
//! server can say "busy" in its own protocol and close it (the broker).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long to wait after a failed `accept` before the next one.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What to do with a connection beyond the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Stop accepting until a slot frees.
    Wait,
    /// Accept it and return it as [`Accepted::OverCap`].
    Refuse,
}

/// A connection within the cap: serve it, holding `slot` until the connection ends.
#[derive(Debug)]
pub struct Admitted {
    /// The connection.
    pub stream: TcpStream,
    /// Its peer.
    pub peer: SocketAddr,
    /// Its place under the cap; dropping it frees the place.
    pub slot: OwnedSemaphorePermit,
}

/// A connection taken from the listener.
#[derive(Debug)]
pub enum Accepted {
    /// Within the cap.
    Admitted(Admitted),
    /// Beyond the cap under [`WhenFull::Refuse`]: refuse it and close it.
    OverCap {
        /// The connection.
        stream: TcpStream,
        /// Its peer.
        peer: SocketAddr,
    },
}

/// A listener with a connection cap.
#[derive(Debug)]
pub struct CappedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    when_full: WhenFull,
}

impl CappedListener {
    /// Serves at most `max_connections` (at least 1) connections of `listener` at once.
    pub fn new(listener: TcpListener, max_connections: usize, when_full: WhenFull) -> Self {
        Self::with_slots(
            listener,
            Arc::new(Semaphore::new(max_connections.max(1))),
            when_full,
        )
    }

    /// Shares one cap among several listeners (one per runtime worker, say).
    pub fn with_slots(listener: TcpListener, slots: Arc<Semaphore>, when_full: WhenFull) -> Self {
        Self {
            listener,
            slots,
            when_full,
        }
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, or `None` once `shutdown` is cancelled. A failed accept is logged
    /// and retried after [`ACCEPT_ERROR_BACKOFF`]; it never ends the loop.
    pub async fn accept(&self, shutdown: &CancellationToken) -> Option<Accepted> {
        let mut slot = match self.when_full {
            WhenFull::Wait => Some(tokio::select! {
                () = shutdown.cancelled() => return None,
                p = Arc::clone(&self.slots).acquire_owned() => p.ok()?,
            }),
            WhenFull::Refuse => None,
        };
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return None,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; backing off");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            };
            let slot = match slot.take() {
                Some(s) => s,
                None => match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(s) => s,
                    Err(_) => return Some(Accepted::OverCap { stream, peer }),
                },
            };
            return Some(Accepted::Admitted(Admitted { stream, peer, slot }));
        }
    }

    /// The next connection within the cap, or `None` once `shutdown` is cancelled: for a
    /// [`WhenFull::Wait`] listener, which never has one beyond it (were one to come, it is
    /// closed).
    pub async fn admit(&self, shutdown: &CancellationToken) -> Option<Admitted> {
        loop {
            match self.accept(shutdown).await? {
                Accepted::Admitted(a) => return Some(a),
                Accepted::OverCap { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn refuse_hands_back_what_is_over_the_cap_and_admits_again_once_a_slot_frees() {
        let (l, addr) = listener().await;
        let capped = CappedListener::new(l, 1, WhenFull::Refuse);
        let stop = CancellationToken::new();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let first = capped.accept(&stop).await.unwrap();
        assert!(matches!(first, Accepted::Admitted(_)));
        let _c2 = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            capped.accept(&stop).await.unwrap(),
            Accepted::OverCap { .. }
        ));
        drop(first);
        let _c3 = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            capped.accept(&stop).await.unwrap(),
            Accepted::Admitted(_)
        ));
    }

    #[tokio::test]
    async fn wait_takes_no_connection_while_full_and_stops_on_shutdown() {
        let (l, addr) = listener().await;
        let capped = CappedListener::new(l, 1, WhenFull::Wait);
        let stop = CancellationToken::new();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let first = capped.admit(&stop).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(100), capped.admit(&stop)).await;
        assert!(waiting.is_err(), "a full listener must not accept");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), capped.admit(&stop))
            .await
            .expect("a freed slot admits the waiting connection");
        assert!(second.is_some());
        stop.cancel();
        assert!(capped.admit(&stop).await.is_none());
    }
}
