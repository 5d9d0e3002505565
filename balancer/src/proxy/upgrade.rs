//! Protocol switches (WebSocket and other `Upgrade`s): after the backend answers 101, both
//! sides' connections are joined and bytes copied both ways until either side closes, the
//! upgrade handshake takes longer than the idle timeout, or the balancer stops. The tunnel is tracked with
//! client connections, so a drain waits for it (up to the drain timeout).

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::state::Shared;
use crate::upstream::Exchange;

/// Spawns the byte tunnel for an accepted upgrade; `exchange` keeps the backend's
/// in-flight count until the tunnel ends.
pub fn spawn_tunnel(
    shared: &Arc<Shared>,
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
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut down, &mut up) => {
                if let Err(error) = r {
                    tracing::debug!(%backend, %error, "tunnel closed with error");
                }
            }
            _ = stop.cancelled() => {}
        }
    });
}
