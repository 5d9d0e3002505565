//! Protocol switches (WebSocket and other `Upgrade`s): after the backend answers 101, both
//! sides' connections are joined and bytes copied both ways until either side closes, no
//! byte moves either way for the idle timeout, or the balancer stops. The tunnel is tracked
//! with client connections, so a drain waits for it (up to the drain timeout).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::state::BalancerState;
use crate::upstream::Exchange;

/// Spawns the byte tunnel for an accepted upgrade; `exchange` keeps the backend's
/// in-flight count until the tunnel ends.
pub fn spawn_tunnel(
    shared: &Arc<BalancerState>,
    down: OnUpgrade,
    up: OnUpgrade,
    exchange: Exchange,
    idle: Duration,
) {
    let stop = shared.hard_stop.clone();
    let backend = exchange.backend().addr();
    shared.conns.spawn(async move {
        let _exchange = exchange;
        let joined = tokio::time::timeout(idle, async { tokio::try_join!(down, up) }).await;
        let (down, up) = match joined {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => {
                tracing::debug!(%backend, %error, "upgrade failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%backend, "upgrade handshake timed out");
                return;
            }
        };
        let clock = Activity::new();
        let mut down = Tracked::new(TokioIo::new(down), &clock);
        let mut up = Tracked::new(TokioIo::new(up), &clock);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut down, &mut up) => {
                if let Err(error) = r {
                    tracing::debug!(%backend, %error, "tunnel closed with error");
                }
            }
            _ = clock.idle_for(idle) => {
                tracing::debug!(%backend, ?idle, "tunnel idle: closing");
            }
            _ = stop.cancelled() => {}
        }
    });
}

/// When bytes last moved through a tunnel, in milliseconds since it opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`. Wakes at most every `idle` to check, so a
    /// busy tunnel pays one atomic store per read or write, not a timer reset.
    async fn idle_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
        loop {
            let quiet = self
                .now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if quiet >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
        }
    }
}

/// An I/O half that records activity on every successful read or write.
struct Tracked<T> {
    inner: T,
    clock: Arc<Activity>,
}

impl<T> Tracked<T> {
    fn new(inner: T, clock: &Arc<Activity>) -> Self {
        Self {
            inner,
            clock: Arc::clone(clock),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.clock.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            this.clock.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
